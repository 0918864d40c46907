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

/// Debits an order's amount if the request is on time (`now`, payments' clock, not past its
/// deadline) and the account exists and holds enough, and records the decision either way — in
/// one statement: the conditional `UPDATE`, the `payments` row, and the debit's ledger row if the
/// `UPDATE` took the money. The caller must have checked that no decision exists for this order
/// yet; a concurrent decision for the same order fails this transaction on the `payments`
/// primary key.
pub async fn debit(
    db: &mut PgConnection,
    request: &PaymentRequest,
    now: OffsetDateTime,
) -> sqlx::Result<Debit> {
    let on_time = request.deadline.is_none_or(|deadline| now <= deadline);
    let reason: Option<FailureReason> = sqlx::query_scalar(
        "WITH debited AS ( \
           UPDATE accounts SET balance = balance - $3 \
           WHERE user_id = $2 AND balance >= $3 AND $4 RETURNING user_id), \
         decision AS ( \
           SELECT CASE WHEN EXISTS (SELECT FROM debited) THEN NULL \
                       WHEN NOT $4 THEN $5 \
                       WHEN EXISTS (SELECT FROM accounts WHERE user_id = $2) THEN $6 \
                       ELSE $7 END AS reason), \
         decided AS ( \
           INSERT INTO payments (order_id, user_id, amount, status, reason) \
           SELECT $1, $2, $3, CASE WHEN reason IS NULL THEN $8 ELSE $9 END, reason \
           FROM decision), \
         entry AS ( \
           INSERT INTO ledger (user_id, kind, amount, order_id) \
           SELECT user_id, $10, $3, $1 FROM debited) \
         SELECT reason FROM decision",
    )
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
    Ok(reason.map_or(Debit::Debited, Debit::Declined))
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
