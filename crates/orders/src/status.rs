//! Where an order stands, and the moves between: the order's state machine.
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
//! [`OrderStatus::may_become`] and [`RefundState::may_follow`] are the diagram; the database
//! refuses every other move with a trigger of the same table, whatever the statement.

use gozon_contract::messages::FailureReason;
use serde::{Deserialize, Serialize};

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
    pub const ALL: [Self; 5] = [
        Self::New,
        Self::Finished,
        Self::Cancelled,
        Self::Refunding,
        Self::Refunded,
    ];

    /// Whether the order has reached the end of its way (a refund may still be completing for a
    /// cancelled one).
    pub fn is_final(self) -> bool {
        !matches!(self, Self::New | Self::Refunding)
    }

    /// Whether an order may go from this status to `next` (staying is always allowed).
    pub fn may_become(self, next: Self) -> bool {
        use OrderStatus::*;
        self == next
            || matches!(
                (self, next),
                (New, Finished) | (New, Cancelled) | (Finished, Refunding) | (Refunding, Refunded)
            )
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
    pub fn by_orders(self) -> bool {
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

impl RefundState {
    /// Whether an order's refund may go from `before` (none yet: `None`) to `after`.
    pub fn may_follow(before: Option<Self>, after: Option<Self>) -> bool {
        before == after
            || matches!(
                (before, after),
                (None, Some(Self::Requested)) | (Some(Self::Requested), Some(Self::Completed))
            )
    }
}

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
    pub const ALL: [Self; 8] = [
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

#[cfg(test)]
mod tests {
    use super::*;
    use OrderStatus::*;

    #[test]
    fn an_order_moves_only_along_the_diagram() {
        let allowed: Vec<(OrderStatus, OrderStatus)> = OrderStatus::ALL
            .into_iter()
            .flat_map(|from| OrderStatus::ALL.map(|to| (from, to)))
            .filter(|&(from, to)| from != to && from.may_become(to))
            .collect();
        assert_eq!(
            allowed,
            [
                (New, Finished),
                (New, Cancelled),
                (Finished, Refunding),
                (Refunding, Refunded)
            ]
        );
    }

    #[test]
    fn a_final_status_has_no_way_out_but_a_paid_orders_refund() {
        for status in OrderStatus::ALL.into_iter().filter(|s| s.is_final()) {
            let exits: Vec<_> = OrderStatus::ALL
                .into_iter()
                .filter(|&to| to != status && status.may_become(to))
                .collect();
            let expected: &[OrderStatus] = if status == Finished {
                &[Refunding]
            } else {
                &[]
            };
            assert_eq!(exits, expected, "{status:?}");
        }
    }

    #[test]
    fn a_refund_is_requested_then_completed_and_never_undone() {
        use RefundState::*;
        assert!(RefundState::may_follow(None, Some(Requested)));
        assert!(RefundState::may_follow(Some(Requested), Some(Completed)));
        assert!(!RefundState::may_follow(None, Some(Completed)));
        assert!(!RefundState::may_follow(Some(Completed), Some(Requested)));
        assert!(!RefundState::may_follow(Some(Requested), None));
    }
}
