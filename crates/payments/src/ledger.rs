//! The only code that moves money.
//!
//! Each movement is one conditional `UPDATE` of the balance — the database adds or subtracts,
//! never a read-modify-write in the application — plus its ledger row, in the caller's
//! transaction. The schema backs every rule: `balance >= 0` is a CHECK; a debit must name a
//! recorded payment decision; an order has at most one debit and at most one refund; and a
//! refund row must match its order's debit row — same account, same amount (a foreign key).
//! So for every account balance = Σ deposits − Σ debits + Σ refunds.

use gozon_contract::{
    domain::{Amount, UserId},
    messages::{FailureReason, PaymentRequest, PaymentStatus, RefundRequest},
};
use gozon_messaging::batch;
use sqlx::PgConnection;
use std::collections::{HashMap, HashSet};
use time::OffsetDateTime;

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

/// What a debit did: the money moved, or why not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Debit {
    Debited,
    Declined(FailureReason),
}

impl Debit {
    /// The payment's status and reason, as a result message and the `payments` table say them.
    pub fn outcome(self) -> (PaymentStatus, Option<FailureReason>) {
        match self {
            Self::Debited => (PaymentStatus::Succeeded, None),
            Self::Declined(reason) => (PaymentStatus::Failed, Some(reason)),
        }
    }
}

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
    .bind(user_id.as_str())
    .bind(amount.kopecks())
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

/// What [`debit`] found or decided for a payment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decided {
    /// Its message id was recorded before: the message was processed already.
    Duplicate,
    /// The order was decided before (under another message id): that decision, of that user
    /// and amount as stored.
    Before {
        user_id: String,
        amount: i64,
        debit: Debit,
    },
    /// Decided now.
    Now(Debit),
}

#[derive(sqlx::FromRow)]
struct DecidedRow {
    message_id: String,
    fresh: bool,
    earlier_user_id: Option<String>,
    earlier_amount: Option<i64>,
    earlier_reason: Option<FailureReason>,
    reason: Option<FailureReason>,
}

/// The statement of [`debit`] for a round of `requests` requests `r` ([`batch::rows`]), of
/// distinct message ids, orders and users: the inbox rows first; then, for each request with a new message id and an order not decided
/// before, the conditional `UPDATE` of its account, the `payments` decision with its reason, and
/// the debit's ledger row if the `UPDATE` took the money; and, per request, what happened.
///
/// An earlier decision is looked up request by request (`LATERAL … LIMIT 1`: a probe of the
/// primary key each). Written as a join or `IN`, the plan may hash the whole `payments` table
/// instead — chosen while the table was small (a fresh database, no statistics yet), and kept for
/// as long as the connection lives.
fn debit_sql(requests: usize) -> String {
    format!(
        "WITH r AS ({rows}), \
         fresh AS ({record} RETURNING message_id), \
         earlier AS ( \
           SELECT p.* FROM r, LATERAL ( \
             SELECT order_id, user_id, amount, reason FROM payments \
             WHERE order_id = r_order LIMIT 1) AS p), \
         deciding AS ( \
           SELECT * FROM r WHERE r_message IN (SELECT message_id FROM fresh) \
             AND r_order NOT IN (SELECT order_id FROM earlier)), \
         debited AS ( \
           UPDATE accounts SET balance = balance - r_amount FROM deciding \
           WHERE user_id = r_user AND balance >= r_amount AND r_on_time \
           RETURNING r_order, r_user, r_amount), \
         decision AS ( \
           SELECT r_order AS d_order, r_user AS d_user, r_amount AS d_amount, \
                  CASE WHEN r_order IN (SELECT r_order FROM debited) THEN NULL \
                       WHEN NOT r_on_time THEN $6 \
                       WHEN EXISTS (SELECT FROM accounts WHERE user_id = r_user) THEN $7 \
                       ELSE $8 END AS d_reason \
           FROM deciding), \
         decided AS ( \
           INSERT INTO payments (order_id, user_id, amount, status, reason) \
           SELECT d_order, d_user, d_amount, CASE WHEN d_reason IS NULL THEN $9 ELSE $10 END, \
                  d_reason \
           FROM decision), \
         entry AS ( \
           INSERT INTO ledger (user_id, kind, amount, order_id) \
           SELECT r_user, $11, r_amount, r_order FROM debited) \
         SELECT r_message AS message_id, \
                r_message IN (SELECT message_id FROM fresh) AS fresh, \
                e.user_id AS earlier_user_id, e.amount AS earlier_amount, \
                e.reason AS earlier_reason, d_reason AS reason \
         FROM r LEFT JOIN earlier e ON e.order_id = r_order \
                LEFT JOIN decision ON d_order = r_order",
        rows = batch::rows(
            "unnest($1::text[], $2::uuid[], $3::text[], $4::bigint[], $5::bool[]) \
             AS r(r_message, r_order, r_user, r_amount, r_on_time)",
            requests
        ),
        record = crate::inbox::record_each("SELECT r_message FROM r"),
    )
}

/// For each `(message_id, request)`, in order: records the message id in the inbox and, unless
/// it was recorded before or the order was decided before, debits the order's amount if the
/// request is on time (`now`, payments' clock, not past its deadline) and the account exists and
/// holds enough, and records the decision either way.
///
/// One statement decides a round of requests that share no message id, order or account; a
/// request related so to an earlier one (directly, or through one left for later) waits for the
/// next round. So a batch of requests from few accounts takes as many statements as the busiest
/// account has requests in it, and requests related to each other are decided in their order. A
/// concurrent decision for the same order fails the transaction on the `payments` primary key (a
/// conflict: the consumer retries, and then finds it decided before).
pub async fn debit(
    db: &mut PgConnection,
    requests: &[(&str, &PaymentRequest)],
    now: OffsetDateTime,
) -> sqlx::Result<Vec<Decided>> {
    let mut decided: Vec<Option<Decided>> = vec![None; requests.len()];
    loop {
        let (mut ids, mut orders, mut users) = (HashSet::new(), HashSet::new(), HashSet::new());
        let round: Vec<usize> = (0..requests.len())
            .filter(|&index| decided[index].is_none())
            .filter(|&index| {
                let (message_id, request) = requests[index];
                // Every key of a request left for later is marked too, so that nothing related
                // to it is decided before it.
                let new_id = ids.insert(message_id);
                let new_order = orders.insert(request.order_id);
                let new_user = users.insert(request.user_id.as_str());
                new_id && new_order && new_user
            })
            .collect();
        if round.is_empty() {
            break;
        }
        let mut found = debit_round(db, requests, &round, now).await?;
        for &index in &round {
            decided[index] = found.remove(requests[index].0);
        }
        // The statement answers every request of its round; if it ever did not, stop rather
        // than ask again.
        if round.iter().all(|&index| decided[index].is_none()) {
            return Err(sqlx::Error::RowNotFound);
        }
    }
    Ok(decided.into_iter().flatten().collect())
}

/// One statement deciding the requests at `round` (no two of which share a message id, order or
/// account), by message id.
async fn debit_round(
    db: &mut PgConnection,
    requests: &[(&str, &PaymentRequest)],
    round: &[usize],
    now: OffsetDateTime,
) -> sqlx::Result<HashMap<String, Decided>> {
    let chosen = || round.iter().map(|&index| requests[index]);
    let rows: Vec<DecidedRow> = sqlx::query_as(sqlx::AssertSqlSafe(debit_sql(round.len())))
        .bind(chosen().map(|(id, _)| id).collect::<Vec<_>>())
        .bind(
            chosen()
                .map(|(_, r)| r.order_id.as_uuid())
                .collect::<Vec<_>>(),
        )
        .bind(
            chosen()
                .map(|(_, r)| r.user_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(
            chosen()
                .map(|(_, r)| r.amount.kopecks())
                .collect::<Vec<_>>(),
        )
        .bind(
            chosen()
                .map(|(_, r)| r.deadline.is_none_or(|deadline| now <= deadline))
                .collect::<Vec<_>>(),
        )
        .bind(FailureReason::PaymentTimeout)
        .bind(FailureReason::InsufficientFunds)
        .bind(FailureReason::AccountNotFound)
        .bind(PaymentStatus::Succeeded)
        .bind(PaymentStatus::Failed)
        .bind(Entry::Debit)
        .fetch_all(db)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| (row.message_id.clone(), row.into()))
        .collect())
}

impl From<DecidedRow> for Decided {
    fn from(row: DecidedRow) -> Self {
        let debit = |reason: Option<FailureReason>| reason.map_or(Debit::Debited, Debit::Declined);
        match row {
            DecidedRow { fresh: false, .. } => Self::Duplicate,
            DecidedRow {
                earlier_user_id: Some(user_id),
                earlier_amount: Some(amount),
                earlier_reason,
                ..
            } => Self::Before {
                user_id,
                amount,
                debit: debit(earlier_reason),
            },
            DecidedRow { reason, .. } => Self::Now(debit(reason)),
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
