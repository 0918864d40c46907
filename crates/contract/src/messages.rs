//! The messages exchanged over RabbitMQ (SPEC sections 4 and 3b), as the wire carries them.
//! More fields are allowed on receipt and ignored.
//!
//! | queue | from → to | message |
//! | --- | --- | --- |
//! | `order.payments` | orders → payments | [`PaymentRequest`] |
//! | `payment.status` | payments → orders | [`PaymentResult`] |
//! | `order.refunds` | orders → payments | [`RefundRequest`] |
//! | `refund.status` | payments → orders | [`RefundResult`] |

use crate::domain::{Amount, OrderId, UserId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// `order.payments`: orders asks payments to debit an order once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub amount: Amount,
    /// After this moment (RFC 3339) payments declines the request with `payment_timeout`
    /// instead of debiting. Absent: no deadline (a request from before deadlines existed).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub deadline: Option<OffsetDateTime>,
}

/// `order.refunds`: orders asks payments to give back what it debited for an order — sent only
/// after orders has seen that debit succeed. Payments refunds each order at most once, of
/// exactly the debited amount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRequest {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub amount: Amount,
}

/// `refund.status`: the money of an order is back on its account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundResult {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub amount: Amount,
    pub status: RefundStatus,
}

/// A refund has one outcome: a refund request names a debit that exists, so it cannot fail;
/// one that does not is dead-lettered, not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    Refunded,
}

/// `payment.status`: the outcome of a payment request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentResult {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub amount: Amount,
    pub status: PaymentStatus,
    /// Why the payment failed; `null` when it succeeded.
    pub reason: Option<FailureReason>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Succeeded,
    Failed,
}

crate::spelled!(PaymentStatus, "payment status", {
    Succeeded => "SUCCEEDED",
    Failed => "FAILED",
});
#[cfg(feature = "sqlx")]
crate::text_column!(PaymentStatus);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    InsufficientFunds,
    AccountNotFound,
    /// The request reached payments after its deadline.
    PaymentTimeout,
}

crate::spelled!(FailureReason, "failure reason", {
    InsufficientFunds => "insufficient_funds",
    AccountNotFound => "account_not_found",
    PaymentTimeout => "payment_timeout",
});
#[cfg(feature = "sqlx")]
crate::text_column!(FailureReason);

impl FailureReason {
    pub const ALL: [Self; 3] = [
        Self::InsufficientFunds,
        Self::AccountNotFound,
        Self::PaymentTimeout,
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payment_result_reads_as_the_contract_writes_it() {
        let wire = r#"{"order_id":"0190b7c4-1c1d-7000-8000-000000000001","user_id":"u-1",
            "amount":1500,"status":"FAILED","reason":"insufficient_funds","extra":true}"#;
        let result: PaymentResult = serde_json::from_str(wire).expect("parses");
        assert_eq!(result.status, PaymentStatus::Failed);
        assert_eq!(result.reason, Some(FailureReason::InsufficientFunds));
    }

    #[test]
    fn a_payment_request_with_a_bad_amount_does_not_parse() {
        let wire =
            r#"{"order_id":"0190b7c4-1c1d-7000-8000-000000000001","user_id":"u","amount":0}"#;
        assert!(serde_json::from_str::<PaymentRequest>(wire).is_err());
    }

    #[test]
    fn a_payment_request_carries_its_deadline_and_reads_without_one() {
        let request = PaymentRequest {
            order_id: uuid::Uuid::nil().into(),
            user_id: UserId::parse("u").expect("valid"),
            amount: Amount::parse(1).expect("valid"),
            deadline: Some(time::macros::datetime!(2026-11-29 18:00:00.25 UTC)),
        };
        let wire = serde_json::to_string(&request).expect("serializes");
        assert!(
            wire.contains(r#""deadline":"2026-11-29T18:00:00.25Z""#),
            "{wire}"
        );
        assert_eq!(
            serde_json::from_str::<PaymentRequest>(&wire).ok(),
            Some(request)
        );
        let old = r#"{"order_id":"0190b7c4-1c1d-7000-8000-000000000001","user_id":"u","amount":1}"#;
        let old: PaymentRequest = serde_json::from_str(old).expect("parses");
        assert_eq!(old.deadline, None);
    }
}
