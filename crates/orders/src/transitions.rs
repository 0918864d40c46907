//! How an order changes: every move is one guarded statement — it changes only an order still in
//! the state the move leaves, and writes the move's history lines in the same statement — and
//! the database refuses any move off the diagram ([`crate::status`]) whatever the statement.
//! The moves themselves are where their cause is handled: placing ([`crate::placing`]), a
//! payment result ([`crate::payment_results`]), a cancel ([`crate::cancelling`]), a refund
//! result ([`crate::refund_results`]), the deadline ([`crate::deadlines`]).

use crate::{
    order::{COLUMNS, Order},
    status::{CancelReason, OrderEvent, OrderStatus, RefundState},
};
use gozon_contract::domain::{Amount, OrderId, UserId};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, Postgres, QueryBuilder};
use std::time::Duration;
use time::OffsetDateTime;

/// Where an order goes in one move.
pub struct Move {
    pub from: OrderStatus,
    /// Only if its refund is (still) this.
    pub refund_was: Option<RefundState>,
    pub status: OrderStatus,
    pub reason: Option<CancelReason>,
    pub refund: Option<RefundState>,
    /// Whether an answer of payments is outstanding after the move ([`crate::reminders`]).
    pub remind: Remind,
}

/// What a move does to the order's reminder.
#[derive(Debug, Clone, Copy)]
pub enum Remind {
    /// Something was asked of payments: ask again after this long if no answer came.
    After(Duration),
    /// Nothing is outstanding any more.
    Never,
    /// As it was.
    Unchanged,
}

/// Makes `change` to order `id`, only if it is still `change.from` (and its refund
/// `change.refund_was`), writing `events` with it; `None` if it was not. `updated_at` changes
/// with the status only.
pub async fn transition(
    db: &mut PgConnection,
    id: OrderId,
    change: Move,
    events: &[(OrderEvent, Value)],
) -> sqlx::Result<Option<Order>> {
    let mut query = QueryBuilder::<Postgres>::new("WITH changed AS (UPDATE orders SET status = ");
    query.push_bind(change.status);
    query.push(", reason = ");
    query.push_bind(change.reason);
    query.push(", refund = ");
    query.push_bind(change.refund);
    query.push(", updated_at = CASE WHEN status = ");
    query.push_bind(change.status);
    query.push(" THEN updated_at ELSE clock_timestamp() END");
    push_remind(&mut query, change.remind);
    query.push(" WHERE id = ");
    query.push_bind(id);
    query.push(" AND status = ");
    query.push_bind(change.from);
    query.push(" AND refund IS NOT DISTINCT FROM ");
    query.push_bind(change.refund_was);
    query.push(format_args!(" RETURNING {COLUMNS}), "));
    push_history(&mut query, "changed", "clock_timestamp()", events);
    query.push(" SELECT * FROM changed");
    let order: Option<Order> = query.build_query_as().fetch_optional(&mut *db).await?;
    if let Some(order) = &order {
        tracing::debug!(order_id = %id, from = change.from.as_str(), to = order.status.as_str(), "order moved");
    }
    Ok(order)
}

/// Pushes the `SET` assignments of `remind` (nothing for [`Remind::Unchanged`]).
pub fn push_remind(query: &mut QueryBuilder<Postgres>, remind: Remind) {
    match remind {
        Remind::After(after) => {
            query.push(", reminders = 0, remind_at = clock_timestamp() + ");
            query.push_bind(after.as_secs_f64());
            query.push(" * interval '1 second'");
        }
        Remind::Never => {
            query.push(", remind_at = NULL");
        }
        Remind::Unchanged => {}
    }
}

/// Pushes the CTE `history` that writes `lines` for each order of the relation `changed` (with
/// its `id`), stamped `at` — an expression over that relation's row.
pub fn push_history(
    query: &mut QueryBuilder<Postgres>,
    changed: &str,
    at: &str,
    lines: &[(OrderEvent, Value)],
) {
    let (events, details): (Vec<&str>, Vec<Value>) = lines
        .iter()
        .map(|(event, detail)| (event.as_str(), detail.clone()))
        .unzip();
    query.push(format_args!(
        "history AS (INSERT INTO order_events (order_id, at, event, detail) \
         SELECT {changed}.id, {at}, e.event, e.detail FROM {changed}, unnest("
    ));
    query.push_bind(events);
    query.push("::text[], ");
    query.push_bind(details);
    query.push("::jsonb[]) AS e(event, detail))");
}

/// Writes history lines of one order, at `at`, on their own (where no statement changes the
/// order with them).
pub async fn record(
    db: impl PgExecutor<'_>,
    id: OrderId,
    at: OffsetDateTime,
    lines: &[(OrderEvent, Value)],
) -> sqlx::Result<()> {
    let (events, details): (Vec<&str>, Vec<Value>) = lines
        .iter()
        .map(|(event, detail)| (event.as_str(), detail.clone()))
        .unzip();
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

/// The order's state, locked for this transaction, with the payment outcome already applied.
#[derive(Debug, sqlx::FromRow)]
pub struct Locked {
    pub status: OrderStatus,
    pub reason: Option<CancelReason>,
    pub refund: Option<RefundState>,
    pub user_id: UserId,
    pub amount: Amount,
    /// The payment outcome recorded in its history, if any.
    pub outcome: Option<OrderEvent>,
}

/// Order `id`, locked for the caller's transaction; `None` if there is none.
pub async fn lock(db: &mut PgConnection, id: OrderId) -> sqlx::Result<Option<Locked>> {
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
    /// Whether it is `user_id`'s order of `amount`.
    pub fn is_of(&self, user_id: &UserId, amount: Amount) -> bool {
        self.user_id == *user_id && self.amount == amount
    }
}
