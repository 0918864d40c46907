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
    /// instead of debiting.
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
    /// The order's place among its user's orders (1, 2, …, in the order they were placed):
    /// payments decides a user's requests in this order.
    pub seq: Seq,
}

/// A payment request as orders writes it, before it knows the order's place: the statement that
/// numbers the order adds `seq` to it, making a [`PaymentRequest`].
#[derive(Debug, Clone, Serialize)]
pub struct UnnumberedPaymentRequest<'a> {
    pub order_id: OrderId,
    pub user_id: &'a UserId,
    pub amount: Amount,
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
}

/// An order's place among its user's orders, from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Seq(i64);

impl Seq {
    pub const FIRST: Self = Self(1);

    pub fn parse(raw: i64) -> Result<Self, String> {
        if raw < 1 {
            return Err(format!("seq must be 1 or more, got {raw}"));
        }
        Ok(Self(raw))
    }

    pub fn get(self) -> i64 {
        self.0
    }

    /// The place before this one, if there is one.
    pub fn previous(self) -> Option<Self> {
        (self.0 > 1).then(|| Self(self.0 - 1))
    }
}

#[cfg(feature = "sqlx")]
crate::parsed_column!(Seq, i64, |seq: &Seq| seq.0);

impl TryFrom<i64> for Seq {
    type Error = String;
    fn try_from(raw: i64) -> Result<Self, Self::Error> {
        Self::parse(raw)
    }
}

impl From<Seq> for i64 {
    fn from(seq: Seq) -> Self {
        seq.0
    }
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

/// `payment.status`: the outcome of a payment request. On the wire a `status`, and a `reason`
/// exactly when it failed; a message with one and not the other does not parse.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "WirePaymentResult", into = "WirePaymentResult")]
pub struct PaymentResult {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub amount: Amount,
    pub outcome: PaymentOutcome,
}

/// What payments decided for an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentOutcome {
    Paid,
    Declined(FailureReason),
}

impl PaymentOutcome {
    /// The status and reason the wire and the `payments` table say it with.
    pub fn status(self) -> (PaymentStatus, Option<FailureReason>) {
        match self {
            Self::Paid => (PaymentStatus::Succeeded, None),
            Self::Declined(reason) => (PaymentStatus::Failed, Some(reason)),
        }
    }

    /// The outcome a status and a reason state, if they agree.
    pub fn of(status: PaymentStatus, reason: Option<FailureReason>) -> Result<Self, String> {
        match (status, reason) {
            (PaymentStatus::Succeeded, None) => Ok(Self::Paid),
            (PaymentStatus::Failed, Some(reason)) => Ok(Self::Declined(reason)),
            (PaymentStatus::Succeeded, Some(_)) => {
                Err("a SUCCEEDED payment result must not carry a reason".into())
            }
            (PaymentStatus::Failed, None) => {
                Err("a FAILED payment result must carry a reason".into())
            }
        }
    }
}

/// [`PaymentResult`] as the wire spells it.
#[derive(Serialize, Deserialize)]
struct WirePaymentResult {
    order_id: OrderId,
    user_id: UserId,
    amount: Amount,
    status: PaymentStatus,
    reason: Option<FailureReason>,
}

impl TryFrom<WirePaymentResult> for PaymentResult {
    type Error = String;
    fn try_from(wire: WirePaymentResult) -> Result<Self, String> {
        Ok(Self {
            order_id: wire.order_id,
            user_id: wire.user_id,
            amount: wire.amount,
            outcome: PaymentOutcome::of(wire.status, wire.reason)?,
        })
    }
}

impl From<PaymentResult> for WirePaymentResult {
    fn from(result: PaymentResult) -> Self {
        let (status, reason) = result.outcome.status();
        Self {
            order_id: result.order_id,
            user_id: result.user_id,
            amount: result.amount,
            status,
            reason,
        }
    }
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
        assert_eq!(
            result.outcome,
            PaymentOutcome::Declined(FailureReason::InsufficientFunds)
        );
        let written = serde_json::to_value(&result).expect("serializes");
        assert_eq!(written["status"], "FAILED");
        assert_eq!(written["reason"], "insufficient_funds");
    }

    #[test]
    fn a_payment_result_whose_status_and_reason_disagree_does_not_parse() {
        for (status, reason) in [("SUCCEEDED", "\"insufficient_funds\""), ("FAILED", "null")] {
            let wire = format!(
                r#"{{"order_id":"0190b7c4-1c1d-7000-8000-000000000001","user_id":"u",
                "amount":1,"status":"{status}","reason":{reason}}}"#
            );
            assert!(
                serde_json::from_str::<PaymentResult>(&wire).is_err(),
                "{status} {reason}"
            );
        }
    }

    #[test]
    fn a_payment_request_with_a_bad_amount_or_no_place_does_not_parse() {
        let order = r#""order_id":"0190b7c4-1c1d-7000-8000-000000000001","user_id":"u""#;
        let deadline = r#""deadline":"2026-11-29T18:00:00Z""#;
        for bad in [
            format!(r#"{{{order},"amount":0,{deadline},"seq":1}}"#),
            format!(r#"{{{order},"amount":1,{deadline}}}"#),
            format!(r#"{{{order},"amount":1,{deadline},"seq":0}}"#),
            format!(r#"{{{order},"amount":1,"seq":1}}"#),
        ] {
            assert!(
                serde_json::from_str::<PaymentRequest>(&bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_unnumbered_request_with_its_seq_added_is_a_payment_request() {
        let user_id = UserId::parse("u").expect("valid");
        let unnumbered = UnnumberedPaymentRequest {
            order_id: uuid::Uuid::nil().into(),
            user_id: &user_id,
            amount: Amount::parse(5).expect("valid"),
            deadline: time::macros::datetime!(2026-11-29 18:00:00.25 UTC),
        };
        let mut wire = serde_json::to_value(&unnumbered).expect("serializes");
        wire["seq"] = serde_json::json!(7);
        let request: PaymentRequest = serde_json::from_value(wire).expect("parses");
        assert_eq!(request.seq, Seq::parse(7).expect("valid"));
        assert_eq!(request.user_id, user_id);
    }

    #[test]
    fn a_payment_request_carries_its_deadline_and_its_place() {
        let request = PaymentRequest {
            order_id: uuid::Uuid::nil().into(),
            user_id: UserId::parse("u").expect("valid"),
            amount: Amount::parse(1).expect("valid"),
            deadline: time::macros::datetime!(2026-11-29 18:00:00.25 UTC),
            seq: Seq::parse(3).expect("valid"),
        };
        let wire = serde_json::to_string(&request).expect("serializes");
        assert!(
            wire.contains(r#""deadline":"2026-11-29T18:00:00.25Z""#),
            "{wire}"
        );
        assert!(wire.contains(r#""seq":3"#), "{wire}");
        assert_eq!(
            serde_json::from_str::<PaymentRequest>(&wire).ok(),
            Some(request)
        );
    }
}
