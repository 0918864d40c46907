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
use sqlx::PgConnection;
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
    fresh: bool,
    earlier_user_id: Option<String>,
    earlier_amount: Option<i64>,
    earlier_reason: Option<FailureReason>,
    reason: Option<FailureReason>,
}

/// The statement of [`debit`]: the inbox row first; then, only for a new message id and an
/// order not decided before, the conditional `UPDATE`, the `payments` decision with its reason,
/// and the debit's ledger row if the `UPDATE` took the money.
static DEBIT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH fresh AS ({record} RETURNING message_id), \
         earlier AS ( \
           SELECT user_id, amount, reason FROM payments \
           WHERE order_id = $2 AND EXISTS (SELECT FROM fresh)), \
         deciding AS (SELECT WHERE EXISTS (SELECT FROM fresh) AND NOT EXISTS (SELECT FROM earlier)), \
         debited AS ( \
           UPDATE accounts SET balance = balance - $4 \
           WHERE user_id = $3 AND balance >= $4 AND $5 AND EXISTS (SELECT FROM deciding) \
           RETURNING user_id), \
         decision AS ( \
           SELECT CASE WHEN EXISTS (SELECT FROM debited) THEN NULL \
                       WHEN NOT $5 THEN $6 \
                       WHEN EXISTS (SELECT FROM accounts WHERE user_id = $3) THEN $7 \
                       ELSE $8 END AS reason \
           FROM deciding), \
         decided AS ( \
           INSERT INTO payments (order_id, user_id, amount, status, reason) \
           SELECT $2, $3, $4, CASE WHEN reason IS NULL THEN $9 ELSE $10 END, reason \
           FROM decision), \
         entry AS ( \
           INSERT INTO ledger (user_id, kind, amount, order_id) \
           SELECT user_id, $11, $4, $2 FROM debited) \
         SELECT EXISTS (SELECT FROM fresh) AS fresh, \
                (SELECT user_id FROM earlier) AS earlier_user_id, \
                (SELECT amount FROM earlier) AS earlier_amount, \
                (SELECT reason FROM earlier) AS earlier_reason, \
                (SELECT reason FROM decision) AS reason",
        record = crate::inbox::RECORD,
    )
});

/// Records the request's `message_id` in the inbox and, unless it was recorded before or the
/// order was decided before, debits the order's amount if the request is on time (`now`,
/// payments' clock, not past its deadline) and the account exists and holds enough, and records
/// the decision either way — all in one statement. A concurrent decision for the same order
/// fails this transaction on the `payments` primary key (a conflict: the consumer retries, and
/// then finds it decided before).
pub async fn debit(
    db: &mut PgConnection,
    message_id: &str,
    request: &PaymentRequest,
    now: OffsetDateTime,
) -> sqlx::Result<Decided> {
    let on_time = request.deadline.is_none_or(|deadline| now <= deadline);
    let row: DecidedRow = sqlx::query_as(sqlx::AssertSqlSafe(DEBIT.as_str()))
        .bind(message_id)
        .bind(request.order_id)
        .bind(request.user_id.as_str())
        .bind(request.amount.kopecks())
        .bind(on_time)
        .bind(FailureReason::PaymentTimeout)
        .bind(FailureReason::InsufficientFunds)
        .bind(FailureReason::AccountNotFound)
        .bind(PaymentStatus::Succeeded)
        .bind(PaymentStatus::Failed)
        .bind(Entry::Debit)
        .fetch_one(db)
        .await?;
    let debit = |reason: Option<FailureReason>| reason.map_or(Debit::Debited, Debit::Declined);
    Ok(match row {
        DecidedRow { fresh: false, .. } => Decided::Duplicate,
        DecidedRow {
            earlier_user_id: Some(user_id),
            earlier_amount: Some(amount),
            earlier_reason,
            ..
        } => Decided::Before {
            user_id,
            amount,
            debit: debit(earlier_reason),
        },
        DecidedRow { reason, .. } => Decided::Now(debit(reason)),
    })
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
