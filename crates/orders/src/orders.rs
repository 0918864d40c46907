//! The order record: its types, its state machine, and all the SQL on `orders` and its history,
//! `order_events`.
//!
//! ```text
//! NEW ──paid──────────▶ FINISHED ──cancel──▶ REFUNDING ──refunded──▶ REFUNDED
//!  ├─declined─────────▶ CANCELLED (insufficient_funds | account_not_found | payment_timeout)
//!  ├─cancel───────────▶ CANCELLED (cancelled)
//!  └─deadline passed──▶ CANCELLED (payment_timeout)
//! ```
//! A debit that succeeds after orders cancelled the order (by its owner or its deadline) leaves
//! it `CANCELLED` and asks for a refund (`refund`: `REQUESTED` → `COMPLETED`).
//!
//! Every transition is one guarded statement: it changes only an order still in the state the
//! transition leaves, and writes the transition's history rows in the same statement, so in the
//! same transaction. The schema refuses the rest: a trigger any move off the diagram, CHECKs a
//! refund of an order that was not paid, the history's keys a second payment outcome.

use crate::placing::Placement;
use gozon_contract::{
    domain::{Amount, OrderId, UserId},
    messages::{FailureReason, PaymentResult, RefundRequest, RefundResult},
};
use gozon_messaging::{batch, outbox};
use gozon_runtime::idempotency::KeyedResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sqlx::{PgConnection, PgExecutor};
use std::time::Duration;
use time::OffsetDateTime;

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Placed; its payment is under way.
    New,
    /// Paid.
    Finished,
    /// Not paid (or paid and given back), for the order's `reason`.
    Cancelled,
    /// Paid, cancelled by its owner; the money is on its way back.
    Refunding,
    /// Paid, and the money given back.
    Refunded,
}

gozon_contract::stored_as_text!(OrderStatus, "order status", {
    New => "NEW",
    Finished => "FINISHED",
    Cancelled => "CANCELLED",
    Refunding => "REFUNDING",
    Refunded => "REFUNDED",
});

impl OrderStatus {
    /// Whether the order has reached the end of its way (a refund may still be completing for a
    /// cancelled one).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::New | Self::Refunding)
    }
}

/// Why an order is `CANCELLED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelReason {
    /// Payments declined: the balance was too low.
    InsufficientFunds,
    /// Payments declined: the user has no account.
    AccountNotFound,
    /// The payment deadline passed (seen by orders, or by payments when the request arrived).
    PaymentTimeout,
    /// Its owner cancelled it.
    Cancelled,
}

gozon_contract::stored_as_text!(CancelReason, "cancel reason", {
    InsufficientFunds => "insufficient_funds",
    AccountNotFound => "account_not_found",
    PaymentTimeout => "payment_timeout",
    Cancelled => "cancelled",
});

impl From<FailureReason> for CancelReason {
    fn from(reason: FailureReason) -> Self {
        match reason {
            FailureReason::InsufficientFunds => Self::InsufficientFunds,
            FailureReason::AccountNotFound => Self::AccountNotFound,
            FailureReason::PaymentTimeout => Self::PaymentTimeout,
        }
    }
}

impl CancelReason {
    /// Whether orders cancelled the order itself (so a payment may still have been in flight),
    /// rather than payments declining it.
    fn by_orders(self) -> bool {
        matches!(self, Self::Cancelled | Self::PaymentTimeout)
    }
}

/// The refund of an order's debit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundState {
    /// Asked of payments (the request is in the outbox or on its way).
    Requested,
    /// The money is back on the account.
    Completed,
}

gozon_contract::stored_as_text!(RefundState, "refund state", {
    Requested => "REQUESTED",
    Completed => "COMPLETED",
});

/// What happened to an order, as its history lists it. Each happens at most once per order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderEvent {
    Placed,
    PaymentRequested,
    Paid,
    Declined,
    CancelRequested,
    RefundRequested,
    Refunded,
    DeadlinePassed,
}

gozon_contract::stored_as_text!(OrderEvent, "order event", {
    Placed => "placed",
    PaymentRequested => "payment_requested",
    Paid => "paid",
    Declined => "declined",
    CancelRequested => "cancel_requested",
    RefundRequested => "refund_requested",
    Refunded => "refunded",
    DeadlinePassed => "deadline_passed",
});

impl OrderEvent {
    /// In the order they happen; events at the same instant are listed in this order.
    const ALL: [Self; 8] = [
        Self::Placed,
        Self::PaymentRequested,
        Self::DeadlinePassed,
        Self::CancelRequested,
        Self::Paid,
        Self::Declined,
        Self::RefundRequested,
        Self::Refunded,
    ];
}

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Order {
    pub id: OrderId,
    pub user_id: String,
    pub amount: i64,
    pub description: String,
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<CancelReason>,
    /// The refund of a paid order, once asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund: Option<RefundState>,
    #[serde(with = "timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "timestamp")]
    pub updated_at: OffsetDateTime,
    /// After it, payments declines the order's request and orders cancels it if still `NEW`.
    #[serde(skip)]
    pub payment_deadline: Option<OffsetDateTime>,
}

impl Order {
    /// The request that gives back this order's debit.
    pub fn refund_request(&self) -> Result<RefundRequest, String> {
        Ok(RefundRequest {
            order_id: self.id,
            user_id: UserId::parse(self.user_id.clone())?,
            amount: Amount::parse(self.amount)?,
        })
    }
}

/// The columns of [`Order`], for every statement that returns orders.
const COLUMNS: &str = "id, user_id, amount, description, status, reason, refund, created_at, \
                       updated_at, payment_deadline";

// RFC 3339 in UTC with microseconds, always six digits.
time::serde::format_description!(
    timestamp,
    OffsetDateTime,
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

/// One line of an order's history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HistoryEntry {
    #[serde(with = "timestamp")]
    pub at: OffsetDateTime,
    pub event: OrderEvent,
    pub detail: sqlx::types::Json<Value>,
}

/// A new order, for its owner.
#[derive(Debug, Serialize)]
pub struct NewOrder {
    pub user_id: UserId,
    pub amount: Amount,
    pub description: Description,
}

/// An order's free-text description: at most 1000 characters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 1000;
}

impl TryFrom<String> for Description {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(format!(
                "description must be at most {} characters",
                Self::MAX_CHARS
            ));
        }
        // PostgreSQL text cannot hold NUL: refused here, not by the database as a 5xx.
        if raw.contains('\0') {
            return Err("description must not contain a NUL character".into());
        }
        Ok(Self(raw))
    }
}

impl Order {
    /// A new order of `new`'s user, due to be paid within `deadline`, as [`place`] writes it:
    /// stamped now by this service's clock (as PostgreSQL stores it, to the microsecond), so that
    /// its response is known before it is written.
    pub fn placing(new: &NewOrder, deadline: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        let now = now.replace_microsecond(now.microsecond()).unwrap_or(now);
        Self {
            id: OrderId::new(),
            user_id: new.user_id.as_str().to_owned(),
            amount: new.amount.kopecks(),
            description: new.description.0.clone(),
            status: OrderStatus::New,
            reason: None,
            refund: None,
            created_at: now,
            updated_at: now,
            payment_deadline: Some(now + deadline),
        }
    }
}

/// Writes each of `placements` in one statement: the order (made by [`Order::placing`]) with its
/// first two history lines, the outbox row of its payment request, and — for a keyed request —
/// the key with its response (the caller commits, and answers only then). Returns the orders
/// written, in no particular order; a keyed request whose order is not among them wrote
/// nothing, its key was used before, and
/// [`idempotency::replay`](gozon_runtime::idempotency::replay) answers. The keys of one call must
/// differ ([`KeyedResponse::ADMITTED`]).
pub async fn place(db: &mut PgConnection, placements: &[&Placement]) -> sqlx::Result<Vec<Order>> {
    let events = [OrderEvent::Placed, OrderEvent::PaymentRequested].map(OrderEvent::as_str);
    let sql = format!(
        "WITH {admitted}, \
         input AS ( \
           SELECT * FROM unnest($7::uuid[], $8::text[], $9::bigint[], $10::text[], \
             $11::timestamptz[], $12::timestamptz[], $13::jsonb[], $14::jsonb[]) \
             WITH ORDINALITY AS i(id, user_id, amount, description, payment_deadline, \
               created_at, placed, requested, n)), \
         changed AS ( \
           INSERT INTO orders (id, user_id, amount, description, payment_deadline, created_at, \
             updated_at) \
           SELECT id, user_id, amount, description, payment_deadline, created_at, created_at \
           FROM input JOIN admitted USING (n) \
           RETURNING {COLUMNS}), \
         history AS ( \
           INSERT INTO order_events (order_id, at, event, detail) \
           SELECT changed.id, changed.created_at, e.event, e.detail \
           FROM changed JOIN input i ON i.id = changed.id, \
             unnest($15::text[], ARRAY[i.placed, i.requested]) AS e(event, detail)), \
         sent AS ({sent}) \
         SELECT * FROM changed",
        admitted = KeyedResponse::ADMITTED,
        sent = outbox::Message::insert_each("admitted", 16),
    );
    let keyed = each(placements, |p| &p.keyed);
    let requests = each(placements, |p| &p.payment_request);
    let query = KeyedResponse::bind_all(&keyed, sqlx::query_as(sqlx::AssertSqlSafe(sql)))
        .bind(each(placements, |p| p.order.id))
        .bind(each(placements, |p| p.order.user_id.as_str()))
        .bind(each(placements, |p| p.order.amount))
        .bind(each(placements, |p| p.order.description.as_str()))
        .bind(each(placements, |p| p.order.payment_deadline))
        .bind(each(placements, |p| p.order.created_at))
        .bind(each(placements, |p| json!({ "amount": p.order.amount })))
        .bind(each(
            placements,
            |p| json!({ "deadline": rfc3339(p.order.payment_deadline) }),
        ))
        .bind(events.to_vec());
    outbox::Message::bind_all(&requests, query)
        .fetch_all(db)
        .await
}

/// One column of `placements`, as an array to bind.
fn each<'p, T>(placements: &[&'p Placement], column: impl Fn(&'p Placement) -> T) -> Vec<T> {
    placements.iter().map(|&p| column(p)).collect()
}

fn rfc3339(at: Option<OffsetDateTime>) -> Option<String> {
    at.and_then(|at| {
        at.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
}

/// One statement that makes `change` — an `INSERT INTO orders` or an `UPDATE orders` with
/// `params` parameters — and writes the history lines of the order it changed (none if it changed
/// none), stamped `at`, an expression over the changed row `changed`; it returns the order. The
/// lines are its next two parameters, as [`bindable`] makes them.
fn with_history(change: &str, params: usize, at: &str) -> String {
    let (events, details) = (params + 1, params + 2);
    format!(
        "WITH changed AS ({change} RETURNING {COLUMNS}), \
         history AS (INSERT INTO order_events (order_id, at, event, detail) \
           SELECT changed.id, {at}, e.event, e.detail \
           FROM changed, unnest(${events}::text[], ${details}::jsonb[]) AS e(event, detail)) \
         SELECT * FROM changed"
    )
}

/// History lines as [`with_history`] and [`record`] bind them: the events, and their details.
fn bindable(lines: &[(OrderEvent, Value)]) -> (Vec<&'static str>, Vec<Value>) {
    lines
        .iter()
        .map(|(event, detail)| (event.as_str(), detail.clone()))
        .unzip()
}

/// Writes history lines of one order, at `at`, on their own (where no statement changes the
/// order with them).
async fn record(
    db: impl PgExecutor<'_>,
    id: OrderId,
    at: OffsetDateTime,
    lines: &[(OrderEvent, Value)],
) -> sqlx::Result<()> {
    let (events, details) = bindable(lines);
    sqlx::query(
        "INSERT INTO order_events (order_id, at, event, detail) \
         SELECT $1, $2, event, detail FROM unnest($3::text[], $4::jsonb[]) AS e(event, detail)",
    )
    .bind(id)
    .bind(at)
    .bind(events)
    .bind(details)
    .execute(db)
    .await?;
    Ok(())
}

/// Where an order goes in one transition.
struct Move {
    from: OrderStatus,
    status: OrderStatus,
    reason: Option<CancelReason>,
    refund: Option<RefundState>,
}

/// Moves order `id` as `change` says, only if it is still `change.from` (and its refund as
/// `refund_was`), writing `events` with it; `None` if it was not. `updated_at` changes with the
/// status only.
async fn transition(
    db: &mut PgConnection,
    id: OrderId,
    change: Move,
    refund_was: Option<RefundState>,
    events: &[(OrderEvent, Value)],
) -> sqlx::Result<Option<Order>> {
    let (events, details) = bindable(events);
    let order: Option<Order> = sqlx::query_as(sqlx::AssertSqlSafe(with_history(
        "UPDATE orders SET status = $3, reason = $4, refund = $5, \
           updated_at = CASE WHEN status = $3 THEN updated_at ELSE clock_timestamp() END \
         WHERE id = $1 AND status = $2 AND refund IS NOT DISTINCT FROM $6",
        6,
        "clock_timestamp()",
    )))
    .bind(id)
    .bind(change.from)
    .bind(change.status)
    .bind(change.reason)
    .bind(change.refund)
    .bind(refund_was)
    .bind(events)
    .bind(details)
    .fetch_optional(&mut *db)
    .await?;
    if let Some(order) = &order {
        tracing::debug!(order_id = %id, from = change.from.as_str(), to = order.status.as_str(), "order moved");
    }
    Ok(order)
}

/// The order's state, locked for this transaction, with the payment outcome already applied.
#[derive(Debug, sqlx::FromRow)]
struct Locked {
    status: OrderStatus,
    reason: Option<CancelReason>,
    refund: Option<RefundState>,
    user_id: String,
    amount: i64,
    outcome: Option<OrderEvent>,
}

async fn lock(db: &mut PgConnection, id: OrderId) -> sqlx::Result<Option<Locked>> {
    sqlx::query_as(
        "SELECT status, reason, refund, user_id, amount, \
           (SELECT event FROM order_events WHERE order_id = o.id AND event IN ($2, $3)) AS outcome \
         FROM orders o WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .bind(OrderEvent::Paid)
    .bind(OrderEvent::Declined)
    .fetch_optional(db)
    .await
}

impl Locked {
    fn is_of(&self, user_id: &UserId, amount: Amount) -> bool {
        self.user_id == user_id.as_str() && self.amount == amount.kopecks()
    }

    /// The payment outcome applied: recorded in the history, or — for an order settled before
    /// the history existed — told by its status.
    fn applied_outcome(&self) -> Option<OrderEvent> {
        self.outcome.or(match (self.status, self.reason) {
            (OrderStatus::Finished | OrderStatus::Refunding | OrderStatus::Refunded, _) => {
                Some(OrderEvent::Paid)
            }
            (OrderStatus::Cancelled, Some(reason)) if !reason.by_orders() => {
                Some(OrderEvent::Declined)
            }
            _ => None,
        })
    }
}

/// What payments decided for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payment {
    Paid,
    Declined(FailureReason),
}

impl Payment {
    fn event(self) -> OrderEvent {
        match self {
            Self::Paid => OrderEvent::Paid,
            Self::Declined(_) => OrderEvent::Declined,
        }
    }

    /// What it makes of a `NEW` order: its status, reason, and the history line's detail.
    fn applied(self) -> (OrderStatus, Option<CancelReason>, Value) {
        match self {
            Self::Paid => (OrderStatus::Finished, None, json!({})),
            Self::Declined(reason) => {
                let reason = CancelReason::from(reason);
                (
                    OrderStatus::Cancelled,
                    Some(reason),
                    json!({ "reason": reason }),
                )
            }
        }
    }
}

/// What applying a payment result did.
#[derive(Debug)]
pub enum Settle {
    /// `NEW` became `FINISHED` or `CANCELLED`.
    Settled(Order),
    /// Paid after orders had cancelled it: its refund is now requested (the caller sends it).
    RefundLateDebit(Order),
    /// Declined after orders had cancelled it: nothing to give back.
    DeclinedAfterCancel,
    /// This outcome was applied before.
    Duplicate,
    /// The other outcome was applied before.
    Contradicts(OrderStatus),
    /// No such order, or its user or amount differ from the result's.
    Unknown,
}

/// The common case of [`settle`], for many results at once and in one statement: every result
/// whose order is still `NEW` and of the result's user and amount is applied with its history
/// line (of several results of one order, the first); returns the orders settled. [`settle`]
/// applies any other result, one at a time.
///
/// A batch of several results is planned each time it runs (not prepared and kept): its best
/// plan depends on how large `orders` is. A plan made while the table is young — a fresh
/// database, no statistics yet — hashes the batch and scans every `NEW` order (a bitmap scan of
/// `orders_awaiting_payment`, whose entries of settled orders stay until a vacuum), and a kept
/// plan goes on doing that for as long as the connection lives, each batch dearer than the last;
/// planned afresh, it probes the primary key once per result. Planning costs about 0.2 ms per
/// batch; the kept plan cost 1 ms per batch once 20,000 orders had been placed, and more with each
/// order. One result alone — most batches below saturation — is planned as one probe of the
/// primary key whatever the table's size, so that statement is kept.
pub async fn settle_new(
    db: &mut PgConnection,
    results: &[(&PaymentResult, Payment)],
) -> sqlx::Result<Vec<Order>> {
    let mut columns = (
        Vec::with_capacity(results.len()),
        Vec::with_capacity(results.len()),
        Vec::with_capacity(results.len()),
        Vec::with_capacity(results.len()),
        Vec::with_capacity(results.len()),
        Vec::with_capacity(results.len()),
        Vec::with_capacity(results.len()),
    );
    // Of several results of one order, the first; the others are left to `settle`.
    let mut seen = std::collections::HashSet::with_capacity(results.len());
    let firsts = results
        .iter()
        .filter(|(result, _)| seen.insert(result.order_id));
    for (result, payment) in firsts {
        let (status, reason, detail) = payment.applied();
        columns.0.push(result.order_id.as_uuid());
        columns.1.push(result.user_id.as_str());
        columns.2.push(result.amount.kopecks());
        columns.3.push(status.as_str());
        columns.4.push(reason.map(CancelReason::as_str));
        columns.5.push(payment.event().as_str());
        columns.6.push(detail);
    }
    let alone = columns.0.len() == 1;
    let sql = format!(
        "WITH changed AS ( \
           UPDATE orders SET status = r_status, reason = r_reason, \
             updated_at = clock_timestamp() \
           FROM ({rows}) AS r \
           WHERE id = r_id AND status = '{new}' AND user_id = r_user AND amount = r_amount \
           RETURNING {COLUMNS}, r_event, r_detail), \
         history AS ( \
           INSERT INTO order_events (order_id, at, event, detail) \
           SELECT id, updated_at, r_event, r_detail FROM changed) \
         SELECT {COLUMNS} FROM changed",
        rows = batch::rows(
            "unnest($1::uuid[], $2::text[], $3::bigint[], $4::text[], $5::text[], \
                    $6::text[], $7::jsonb[]) \
             AS r(r_id, r_user, r_amount, r_status, r_reason, r_event, r_detail)",
            columns.0.len()
        ),
        new = OrderStatus::New.as_str(),
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(columns.0)
        .bind(columns.1)
        .bind(columns.2)
        .bind(columns.3)
        .bind(columns.4)
        .bind(columns.5)
        .bind(columns.6)
        .persistent(alone)
        .fetch_all(db)
        .await
}

/// Applies payments' decision on order `result.order_id` (whose user and amount must match).
pub async fn settle(
    db: &mut PgConnection,
    result: &PaymentResult,
    payment: Payment,
) -> sqlx::Result<Settle> {
    let outcome = payment.event();
    // The common case first: a NEW order of this user and amount.
    if let Some(order) = settle_new(db, &[(result, payment)]).await?.pop() {
        return Ok(Settle::Settled(order));
    }

    let Some(current) = lock(db, result.order_id).await? else {
        return Ok(Settle::Unknown);
    };
    if !current.is_of(&result.user_id, result.amount) {
        return Ok(Settle::Unknown);
    }
    match current.applied_outcome() {
        Some(applied) if applied == outcome => return Ok(Settle::Duplicate),
        Some(_) => return Ok(Settle::Contradicts(current.status)),
        None => {}
    }
    // Not applied yet, and not NEW: orders cancelled it while the payment was in flight.
    match (current.status, current.reason, outcome) {
        (OrderStatus::Cancelled, Some(reason), OrderEvent::Paid) if reason.by_orders() => {
            let change = Move {
                from: OrderStatus::Cancelled,
                status: OrderStatus::Cancelled,
                reason: Some(reason),
                refund: Some(RefundState::Requested),
            };
            let events = [
                (OrderEvent::Paid, json!({ "after": reason })),
                (
                    OrderEvent::RefundRequested,
                    json!({ "amount": current.amount }),
                ),
            ];
            Ok(transition(db, result.order_id, change, None, &events)
                .await?
                .map_or(Settle::Duplicate, Settle::RefundLateDebit))
        }
        (OrderStatus::Cancelled, Some(reason), OrderEvent::Declined) if reason.by_orders() => {
            record(
                db,
                result.order_id,
                OffsetDateTime::now_utc(),
                &[(outcome, payment.applied().2)],
            )
            .await?;
            Ok(Settle::DeclinedAfterCancel)
        }
        (status, ..) => Ok(Settle::Contradicts(status)),
    }
}

/// What a cancel did.
#[derive(Debug)]
pub enum Cancel {
    /// A `NEW` order is `CANCELLED`; if its payment still succeeds it will be refunded.
    Cancelled(Order),
    /// A `FINISHED` order is `REFUNDING`: its refund is requested (the caller sends it).
    Refunding(Order),
    /// It was `REFUNDING` already.
    AlreadyRefunding(Order),
    /// It is `CANCELLED` or `REFUNDED`: nothing to cancel.
    Closed(OrderStatus),
    /// No order of this owner.
    NotFound,
}

/// Cancels `owner`'s order `id`.
pub async fn cancel(db: &mut PgConnection, id: OrderId, owner: &UserId) -> sqlx::Result<Cancel> {
    let Some(current) = lock(db, id).await? else {
        return Ok(Cancel::NotFound);
    };
    if current.user_id != owner.as_str() {
        return Ok(Cancel::NotFound);
    }
    let requested = (OrderEvent::CancelRequested, json!({}));
    let moved = match current.status {
        OrderStatus::New => {
            let change = Move {
                from: OrderStatus::New,
                status: OrderStatus::Cancelled,
                reason: Some(CancelReason::Cancelled),
                refund: None,
            };
            transition(db, id, change, None, &[requested])
                .await?
                .map(Cancel::Cancelled)
        }
        OrderStatus::Finished => {
            let change = Move {
                from: OrderStatus::Finished,
                status: OrderStatus::Refunding,
                reason: None,
                refund: Some(RefundState::Requested),
            };
            let refund = (
                OrderEvent::RefundRequested,
                json!({ "amount": current.amount }),
            );
            transition(db, id, change, None, &[requested, refund])
                .await?
                .map(Cancel::Refunding)
        }
        OrderStatus::Refunding => find(&mut *db, id, owner)
            .await?
            .map(Cancel::AlreadyRefunding),
        status @ (OrderStatus::Cancelled | OrderStatus::Refunded) => Some(Cancel::Closed(status)),
    };
    // The row is locked: a guarded move of what was just read cannot miss.
    Ok(moved.unwrap_or(Cancel::NotFound))
}

/// What applying a refund result did.
#[derive(Debug)]
pub enum Refunded {
    /// `REFUNDING` became `REFUNDED`.
    Refunded(Order),
    /// The refund of a `CANCELLED` order is complete (its status stays).
    CompletedAfterCancel,
    /// Applied before.
    Duplicate,
    /// No refund was asked for this order.
    NotRequested,
    /// No such order, or its user or amount differ from the result's.
    Unknown,
}

/// Applies a refund result to its order.
pub async fn complete_refund(
    db: &mut PgConnection,
    result: &RefundResult,
) -> sqlx::Result<Refunded> {
    let Some(current) = lock(db, result.order_id).await? else {
        return Ok(Refunded::Unknown);
    };
    if !current.is_of(&result.user_id, result.amount) {
        return Ok(Refunded::Unknown);
    }
    let done = (OrderEvent::Refunded, json!({ "amount": current.amount }));
    let change = |from, status| Move {
        from,
        status,
        reason: current.reason,
        refund: Some(RefundState::Completed),
    };
    Ok(match (current.status, current.refund) {
        (_, None) => Refunded::NotRequested,
        (_, Some(RefundState::Completed)) => Refunded::Duplicate,
        (OrderStatus::Refunding, Some(RefundState::Requested)) => {
            let change = change(OrderStatus::Refunding, OrderStatus::Refunded);
            transition(
                db,
                result.order_id,
                change,
                Some(RefundState::Requested),
                &[done],
            )
            .await?
            .map_or(Refunded::Duplicate, Refunded::Refunded)
        }
        (status, Some(RefundState::Requested)) => transition(
            db,
            result.order_id,
            change(status, status),
            Some(RefundState::Requested),
            &[done],
        )
        .await?
        .map_or(Refunded::Duplicate, |_| Refunded::CompletedAfterCancel),
    })
}

/// Cancels up to `limit` orders still `NEW` past their deadline (by the database's clock), and
/// returns them. Instances sweeping at once each take different orders (`SKIP LOCKED`), and an
/// order settled meanwhile is no longer `NEW` and not touched.
pub async fn cancel_overdue(db: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Order>> {
    let cancelled: Vec<Order> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET status = $2, reason = $3, updated_at = clock_timestamp() \
         WHERE status = $1 AND id IN ( \
           SELECT id FROM orders WHERE status = $1 AND payment_deadline < now() \
           ORDER BY payment_deadline LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING {COLUMNS}"
    )))
    .bind(OrderStatus::New)
    .bind(OrderStatus::Cancelled)
    .bind(CancelReason::PaymentTimeout)
    .bind(limit)
    .fetch_all(&mut *db)
    .await?;
    for order in &cancelled {
        let deadline = json!({ "deadline": rfc3339(order.payment_deadline) });
        let passed = [(OrderEvent::DeadlinePassed, deadline)];
        record(&mut *db, order.id, order.updated_at, &passed).await?;
    }
    Ok(cancelled)
}

/// `owner`'s order `id` (another user's order is not found).
pub async fn find(
    db: impl PgExecutor<'_>,
    id: OrderId,
    owner: &UserId,
) -> sqlx::Result<Option<Order>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE id = $1 AND user_id = $2"
    )))
    .bind(id)
    .bind(owner.as_str())
    .fetch_optional(db)
    .await
}

/// The history of `owner`'s order `id`, oldest first; `None` if there is no such order.
pub async fn history(
    db: &mut PgConnection,
    id: OrderId,
    owner: &UserId,
) -> sqlx::Result<Option<Vec<HistoryEntry>>> {
    if find(&mut *db, id, owner).await?.is_none() {
        return Ok(None);
    }
    let order: Vec<&str> = OrderEvent::ALL.iter().map(|event| event.as_str()).collect();
    sqlx::query_as(
        "SELECT at, event, detail FROM order_events WHERE order_id = $1 \
         ORDER BY at, array_position($2::text[], event)",
    )
    .bind(id)
    .bind(order)
    .fetch_all(db)
    .await
    .map(Some)
}

/// Up to `limit` of `user_id`'s orders, newest first, older than `after` (created_at, id).
pub async fn page(
    db: impl PgExecutor<'_>,
    user_id: &UserId,
    after: Option<(OffsetDateTime, OrderId)>,
    limit: i64,
) -> sqlx::Result<Vec<Order>> {
    let (created_at, id) = after.unzip();
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE user_id = $1 \
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4"
    )))
    .bind(user_id.as_str())
    .bind(created_at)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Where `id` stands in `owner`'s list (another user's order is not found).
pub async fn cursor_of(
    db: impl PgExecutor<'_>,
    id: OrderId,
    owner: &UserId,
) -> sqlx::Result<Option<(OffsetDateTime, OrderId)>> {
    sqlx::query_as("SELECT created_at, id FROM orders WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(owner.as_str())
        .fetch_optional(db)
        .await
}

/// `user_id`'s orders whose status changed after `since_micros` (microseconds since 1970),
/// oldest change first.
pub async fn changed_since(
    db: impl PgExecutor<'_>,
    user_id: &UserId,
    since_micros: i64,
) -> sqlx::Result<Vec<Order>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE user_id = $1 AND status <> $3 \
           AND updated_at > timestamptz 'epoch' + $2 * interval '1 microsecond' \
         ORDER BY updated_at"
    )))
    .bind(user_id.as_str())
    .bind(since_micros)
    .bind(OrderStatus::New)
    .fetch_all(db)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_of_1000_characters_is_accepted_and_1001_is_not() {
        assert!(Description::try_from("ж".repeat(1000)).is_ok());
        assert!(Description::try_from("ж".repeat(1001)).is_err());
    }

    #[test]
    fn a_description_with_a_nul_character_is_refused() {
        assert!(Description::try_from("gift\u{0}".to_owned()).is_err());
    }
}
