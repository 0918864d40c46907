//! The two messages exchanged over RabbitMQ (SPEC section 4), as the wire carries them. More
//! fields are allowed on receipt and ignored.

use crate::domain::{Amount, UserId};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// `order.payments`: orders asks payments to debit an order once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRequest {
    pub order_id: Uuid,
    pub user_id: UserId,
    pub amount: Amount,
}

/// `payment.status`: the outcome of a payment request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentResult {
    pub order_id: Uuid,
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

crate::stored_as_text!(PaymentStatus, "payment status", {
    Succeeded => "SUCCEEDED",
    Failed => "FAILED",
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    InsufficientFunds,
    AccountNotFound,
}

crate::stored_as_text!(FailureReason, "failure reason", {
    InsufficientFunds => "insufficient_funds",
    AccountNotFound => "account_not_found",
});

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
}
