//! The only code that moves money.
//!
//! Each movement is one conditional `UPDATE` of the balance — the database adds or subtracts,
//! never a read-modify-write in the application — plus its ledger row, in the caller's
//! transaction. The schema backs every rule: `balance >= 0` is a CHECK; a debit must name a
//! recorded payment decision; an order has at most one debit and at most one refund; and a
//! refund row must match its order's debit row — same account, same amount (a foreign key).
//! So for every account balance = Σ deposits − Σ debits + Σ refunds; and a user's debits are
//! decided in the order of their orders ([`crate::sequences`]).

use gozon_contract::{
    domain::{Amount, OrderId, UserId},
    messages::{FailureReason, PaymentOutcome, PaymentRequest, PaymentStatus, RefundRequest},
};
use gozon_messaging::batch;
use sqlx::{PgConnection, Postgres, QueryBuilder};
use std::collections::{HashMap, HashSet};

/// The kinds of ledger rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    Deposit,
    Debit,
    Refund,
}

gozon_contract::stored_as_text!(Entry, "ledger entry kind", {
    Deposit => "DEPOSIT",
    Debit => "DEBIT",
    Refund => "REFUND",
});

/// What a deposit did.
#[derive(Debug, PartialEq, Eq)]
pub enum Deposit {
    /// Credited; the new balance.
    Credited(i64),
    AccountNotFound,
    /// The balance would exceed `i64::MAX`; nothing was credited.
    WouldOverflow,
}

/// Credits `amount` to the account of `user_id`.
pub async fn deposit(
    db: &mut PgConnection,
    user_id: &UserId,
    amount: Amount,
) -> sqlx::Result<Deposit> {
    let balance: Option<i64> = sqlx::query_scalar(
        "UPDATE accounts SET balance = balance + $2 \
         WHERE user_id = $1 AND balance <= 9223372036854775807 - $2 RETURNING balance",
    )
    .bind(user_id)
    .bind(amount)
    .fetch_optional(&mut *db)
    .await?;
    let Some(balance) = balance else {
        return Ok(if account_exists(db, user_id).await? {
            Deposit::WouldOverflow
        } else {
            Deposit::AccountNotFound
        });
    };
    sqlx::query("INSERT INTO ledger (user_id, kind, amount) VALUES ($1, $3, $2)")
        .bind(user_id.as_str())
        .bind(amount.kopecks())
        .bind(Entry::Deposit)
        .execute(&mut *db)
        .await?;
    Ok(Deposit::Credited(balance))
}

/// A payment request to decide now, in its user's line ([`crate::sequences`]).
#[derive(Debug, Clone, Copy)]
pub struct ToDecide<'a> {
    pub request: &'a PaymentRequest,
    /// `false` for a request past its deadline (by this service's clock), or of a place in line
    /// that was passed over: it is declined with `payment_timeout` unless decided before.
    pub in_time: bool,
}

/// What [`debit`] found or decided for a payment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// The order was decided before (under another message id): that decision, of that user
    /// and amount as stored.
    Before {
        user_id: UserId,
        amount: Amount,
        outcome: PaymentOutcome,
    },
    /// Decided now.
    Now(PaymentOutcome),
}

#[derive(sqlx::FromRow)]
struct DecidedRow {
    order_id: OrderId,
    earlier_user_id: Option<UserId>,
    earlier_amount: Option<Amount>,
    earlier_reason: Option<FailureReason>,
    reason: Option<FailureReason>,
}

/// For each request, in order: unless its order was decided before, debits the order's amount
/// if the request is in time and the account exists and holds enough, records the decision
/// either way, and moves its user's line on to its place (a parked request leaves
/// `parked_requests`).
///
/// One statement decides a round of requests that share no order or account; a request related
/// so to an earlier one (directly, or through one left for later) waits for the next round. So
/// a batch from few accounts takes as many statements as the busiest account has requests in
/// it, and requests of one user are decided in the order given. A concurrent decision for the
/// same order, or for the same place in its user's line, fails the transaction on a unique key
/// (a conflict: the consumer retries).
pub async fn debit(db: &mut PgConnection, requests: &[ToDecide<'_>]) -> sqlx::Result<Vec<Decided>> {
    let mut decided: Vec<Option<Decided>> = vec![None; requests.len()];
    loop {
        let (mut orders, mut users) = (HashSet::new(), HashSet::new());
        let round: Vec<usize> = (0..requests.len())
            .filter(|&index| decided[index].is_none())
            .filter(|&index| {
                let request = requests[index].request;
                // Every key of a request left for later is marked too, so that nothing related
                // to it is decided before it.
                let new_order = orders.insert(request.order_id);
                let new_user = users.insert(request.user_id.as_str());
                new_order && new_user
            })
            .collect();
        if round.is_empty() {
            break;
        }
        let mut found = debit_round(db, requests, &round).await?;
        for &index in &round {
            decided[index] = found.remove(&requests[index].request.order_id);
        }
        // The statement answers every request of its round; if it ever did not, stop rather
        // than ask again.
        if round.iter().all(|&index| decided[index].is_none()) {
            return Err(sqlx::Error::RowNotFound);
        }
    }
    Ok(decided.into_iter().flatten().collect())
}

/// One statement deciding the requests at `round` (no two of which share an order or account),
/// by order.
///
/// An earlier decision is looked up request by request (`LATERAL … LIMIT 1`: a probe of the
/// primary key each): written as a join, a plan made while the table was young may hash all of
/// `payments`, and a prepared statement keeps its plan.
async fn debit_round(
    db: &mut PgConnection,
    requests: &[ToDecide<'_>],
    round: &[usize],
) -> sqlx::Result<HashMap<OrderId, Decided>> {
    let chosen = || round.iter().map(|&index| requests[index]);
    let mut query = QueryBuilder::<Postgres>::new("WITH r AS (SELECT * FROM unnest(");
    query.push_bind(chosen().map(|r| r.request.order_id).collect::<Vec<_>>());
    query.push("::uuid[], ");
    query.push_bind(chosen().map(|r| &r.request.user_id).collect::<Vec<_>>());
    query.push("::text[], ");
    query.push_bind(chosen().map(|r| r.request.amount).collect::<Vec<_>>());
    query.push("::bigint[], ");
    query.push_bind(chosen().map(|r| r.request.seq).collect::<Vec<_>>());
    query.push("::bigint[], ");
    query.push_bind(chosen().map(|r| r.in_time).collect::<Vec<_>>());
    query.push(format_args!(
        "::bool[]) AS r(r_order, r_user, r_amount, r_seq, r_in_time) LIMIT {}), \
         earlier AS ( \
           SELECT p.* FROM r, LATERAL ( \
             SELECT order_id, user_id, amount, reason FROM payments \
             WHERE order_id = r_order LIMIT 1) AS p), \
         deciding AS (SELECT * FROM r WHERE r_order NOT IN (SELECT order_id FROM earlier)), \
         debited AS ( \
           UPDATE accounts SET balance = balance - r_amount FROM deciding \
           WHERE user_id = r_user AND balance >= r_amount AND r_in_time \
           RETURNING r_order, r_user, r_amount), \
         decision AS ( \
           SELECT r_order AS d_order, r_user AS d_user, r_amount AS d_amount, r_seq AS d_seq, \
                  CASE WHEN r_order IN (SELECT r_order FROM debited) THEN NULL \
                       WHEN NOT r_in_time THEN ",
        batch::size_class(round.len())
    ));
    query.push_bind(FailureReason::PaymentTimeout);
    query.push(" WHEN EXISTS (SELECT FROM accounts WHERE user_id = r_user) THEN ");
    query.push_bind(FailureReason::InsufficientFunds);
    query.push(" ELSE ");
    query.push_bind(FailureReason::AccountNotFound);
    query.push(
        " END AS d_reason FROM deciding), \
         decided AS ( \
           INSERT INTO payments (order_id, user_id, seq, amount, status, reason) \
           SELECT d_order, d_user, d_seq, d_amount, CASE WHEN d_reason IS NULL THEN ",
    );
    query.push_bind(PaymentStatus::Succeeded);
    query.push(" ELSE ");
    query.push_bind(PaymentStatus::Failed);
    query.push(
        " END, d_reason FROM decision), \
         entry AS ( \
           INSERT INTO ledger (user_id, kind, amount, order_id) SELECT r_user, ",
    );
    query.push_bind(Entry::Debit);
    query.push(
        ", r_amount, r_order FROM debited), \
         drained AS ( \
           DELETE FROM parked_requests p USING r WHERE p.user_id = r_user AND p.seq = r_seq \
           RETURNING p.user_id), \
         advanced AS ( \
           UPDATE payment_sequences s SET decided_through = greatest(s.decided_through, r_seq), \
             parked = s.parked - (SELECT count(*) FROM drained d WHERE d.user_id = s.user_id) \
           FROM r WHERE s.user_id = r_user) \
         SELECT r_order AS order_id, e.user_id AS earlier_user_id, e.amount AS earlier_amount, \
                e.reason AS earlier_reason, d_reason AS reason \
         FROM r LEFT JOIN earlier e ON e.order_id = r_order \
                LEFT JOIN decision ON d_order = r_order",
    );
    let rows: Vec<DecidedRow> = query.build_query_as().fetch_all(db).await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.order_id, row.into()))
        .collect())
}

impl From<DecidedRow> for Decided {
    fn from(row: DecidedRow) -> Self {
        let outcome = |reason: Option<FailureReason>| {
            reason.map_or(PaymentOutcome::Paid, PaymentOutcome::Declined)
        };
        match row {
            DecidedRow {
                earlier_user_id: Some(user_id),
                earlier_amount: Some(amount),
                earlier_reason,
                ..
            } => Self::Before {
                user_id,
                amount,
                outcome: outcome(earlier_reason),
            },
            DecidedRow { reason, .. } => Self::Now(outcome(reason)),
        }
    }
}

/// What a refund did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refund {
    /// The debited amount is back on the account.
    Refunded,
    /// It was given back before (under another message): nothing moved now.
    AlreadyRefunded,
    /// The order was refunded before, but to another account or of another amount than this
    /// request says: the request is not one orders sent.
    Contradicts,
}

/// Gives back the debit of `request.order_id` — once. The ledger row comes first: the database
/// refuses it unless a debit of that order, account and amount exists (a refund request that
/// names anything else fails this transaction as poison), and a second refund of the order
/// finds the first and moves nothing.
pub async fn refund(db: &mut PgConnection, request: &RefundRequest) -> sqlx::Result<Refund> {
    let recorded = sqlx::query(
        "INSERT INTO ledger (user_id, kind, amount, order_id) VALUES ($1, $4, $2, $3) \
         ON CONFLICT (order_id, kind) DO NOTHING",
    )
    .bind(request.user_id.as_str())
    .bind(request.amount.kopecks())
    .bind(request.order_id)
    .bind(Entry::Refund)
    .execute(&mut *db)
    .await?
    .rows_affected();
    if recorded == 0 {
        let same: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM ledger \
             WHERE order_id = $1 AND kind = $2 AND user_id = $3 AND amount = $4)",
        )
        .bind(request.order_id)
        .bind(Entry::Refund)
        .bind(request.user_id.as_str())
        .bind(request.amount.kopecks())
        .fetch_one(&mut *db)
        .await?;
        return Ok(if same {
            Refund::AlreadyRefunded
        } else {
            Refund::Contradicts
        });
    }
    sqlx::query("UPDATE accounts SET balance = balance + $2 WHERE user_id = $1")
        .bind(request.user_id.as_str())
        .bind(request.amount.kopecks())
        .execute(&mut *db)
        .await?;
    Ok(Refund::Refunded)
}

async fn account_exists(db: &mut PgConnection, user_id: &UserId) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE user_id = $1)")
        .bind(user_id.as_str())
        .fetch_one(db)
        .await
}
