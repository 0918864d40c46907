//! The order as the API shows it and the database returns it, and what a client asks for.

use crate::status::{CancelReason, OrderEvent, OrderStatus, RefundState};
use gozon_contract::{
    domain::{Amount, OrderId, UserId},
    messages::{RefundRequest, Seq},
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::time::Duration;
use time::OffsetDateTime;

/// An order, as the database returns it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Order {
    pub id: OrderId,
    pub user_id: UserId,
    pub amount: Amount,
    pub description: String,
    pub status: OrderStatus,
    pub reason: Option<CancelReason>,
    /// The refund of a paid order, once asked for.
    pub refund: Option<RefundState>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// After it, payments declines the order's request and orders cancels it if still `NEW`.
    pub payment_deadline: OffsetDateTime,
    /// Its place among its user's orders: payments decides them in this order.
    pub seq: Seq,
}

/// An order as the API shows it — the one shape of every response that carries an order.
#[derive(Serialize)]
pub struct Shown<'a> {
    id: OrderId,
    user_id: &'a UserId,
    amount: Amount,
    description: &'a str,
    status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<CancelReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    refund: Option<RefundState>,
    #[serde(with = "timestamp")]
    created_at: OffsetDateTime,
    #[serde(with = "timestamp")]
    updated_at: OffsetDateTime,
}

impl Serialize for Order {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Shown {
            id: self.id,
            user_id: &self.user_id,
            amount: self.amount,
            description: &self.description,
            status: self.status,
            reason: self.reason,
            refund: self.refund,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
        .serialize(serializer)
    }
}

/// The columns of [`Order`], for every statement that returns orders.
pub const COLUMNS: &str = "id, user_id, amount, description, status, reason, refund, created_at, \
                           updated_at, payment_deadline, seq";

impl Order {
    /// The request that gives back this order's debit.
    pub fn refund_request(&self) -> RefundRequest {
        RefundRequest {
            order_id: self.id,
            user_id: self.user_id.clone(),
            amount: self.amount,
        }
    }
}

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

/// A new order's id and times, as placing writes them: stamped now by this service's clock (as
/// PostgreSQL stores it, to the microsecond), so that its response is known before it is
/// written. Its place among the user's orders is given when it is written.
#[derive(Debug, Clone)]
pub struct Stamp {
    pub id: OrderId,
    pub created_at: OffsetDateTime,
    pub payment_deadline: OffsetDateTime,
}

impl Stamp {
    pub fn now(deadline: Duration) -> Self {
        let now = OffsetDateTime::now_utc();
        let now = now.replace_microsecond(now.microsecond()).unwrap_or(now);
        Self {
            id: OrderId::new(),
            created_at: now,
            payment_deadline: now + deadline,
        }
    }

    /// The order `new` placed so, as the API shows it once written.
    pub fn shown<'a>(&self, new: &'a NewOrder) -> Shown<'a> {
        Shown {
            id: self.id,
            user_id: &new.user_id,
            amount: new.amount,
            description: new.description.as_str(),
            status: OrderStatus::New,
            reason: None,
            refund: None,
            created_at: self.created_at,
            updated_at: self.created_at,
        }
    }
}

/// An order's free-text description: at most 1000 characters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 1000;

    pub fn as_str(&self) -> &str {
        &self.0
    }
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

// RFC 3339 in UTC with microseconds, always six digits.
time::serde::format_description!(
    timestamp,
    OffsetDateTime,
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

/// `at` in RFC 3339, as history details show times.
pub fn rfc3339(at: OffsetDateTime) -> Option<String> {
    at.format(&time::format_description::well_known::Rfc3339)
        .ok()
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
