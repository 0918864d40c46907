//! The consumer of `refund.status`: records that an order's money is back, once.
//!
//! A `REFUNDING` order becomes `REFUNDED`; a `CANCELLED` order whose late debit was refunded
//! stays `CANCELLED`, its refund marked complete. A result delivered again changes nothing; one
//! for an order with no refund asked, or whose user or amount differ, is dead-lettered.

use crate::{
    live,
    order::Order,
    status::{OrderEvent, OrderStatus, RefundState},
    transitions::{self, Move, Remind},
};
use gozon_contract::{domain::OrderId, messages::RefundResult};
use gozon_messaging::{
    consumer::{Handler, HandlerError},
    outgoing::Outgoing,
};
use gozon_telemetry::trace::TraceParent;
use serde_json::json;
use sqlx::PgConnection;

/// Applies refund results to orders.
pub struct ApplyRefundResults {
    /// The queue consumed, for metric labels.
    pub refund_status_queue: String,
}

impl Handler for ApplyRefundResults {
    type Message = RefundResult;
    type Key = OrderId;

    fn key(result: &RefundResult) -> OrderId {
        result.order_id
    }

    async fn handle(
        &self,
        db: &mut PgConnection,
        message_id: &str,
        _trace: &TraceParent,
        result: &RefundResult,
        out: &mut Outgoing,
    ) -> Result<(), HandlerError> {
        let order_id = result.order_id;
        match complete_refund(db, result).await? {
            Refunded::Refunded(order) => {
                live::announce(out, &order)?;
                tracing::info!(%order_id, message_id, "order refunded");
            }
            Refunded::CompletedAfterCancel => {
                tracing::info!(%order_id, message_id, "late debit of a cancelled order refunded");
            }
            Refunded::Duplicate => {
                tracing::debug!(%order_id, message_id, "duplicate refund result ignored");
                metrics::counter!("messages_duplicate_total", "queue" => self.refund_status_queue.clone()).increment(1);
            }
            Refunded::NotRequested => {
                return Err(HandlerError::Poison(format!(
                    "refund result for order {order_id}, which asked for no refund"
                )));
            }
            Refunded::Unknown => {
                return Err(HandlerError::Poison(format!(
                    "no order {order_id} of user {} and amount {} to apply a refund result to",
                    result.user_id,
                    result.amount.kopecks()
                )));
            }
        }
        Ok(())
    }
}

/// What applying a refund result did.
#[derive(Debug)]
pub enum Refunded {
    /// `REFUNDING` became `REFUNDED`.
    Refunded(Order),
    /// The refund of a `CANCELLED` order is complete (its status stays).
    CompletedAfterCancel,
    /// Applied before.
    Duplicate,
    /// No refund was asked for this order.
    NotRequested,
    /// No such order, or its user or amount differ from the result's.
    Unknown,
}

/// Applies a refund result to its order.
pub async fn complete_refund(
    db: &mut PgConnection,
    result: &RefundResult,
) -> sqlx::Result<Refunded> {
    let Some(current) = transitions::lock(db, result.order_id).await? else {
        return Ok(Refunded::Unknown);
    };
    if !current.is_of(&result.user_id, result.amount) {
        return Ok(Refunded::Unknown);
    }
    let done = (OrderEvent::Refunded, json!({ "amount": current.amount }));
    let change = |from, status| Move {
        from,
        refund_was: Some(RefundState::Requested),
        status,
        reason: current.reason,
        refund: Some(RefundState::Completed),
        remind: Remind::Never,
    };
    Ok(match (current.status, current.refund) {
        (_, None) => Refunded::NotRequested,
        (_, Some(RefundState::Completed)) => Refunded::Duplicate,
        (OrderStatus::Refunding, Some(RefundState::Requested)) => {
            let change = change(OrderStatus::Refunding, OrderStatus::Refunded);
            transitions::transition(db, result.order_id, change, &[done])
                .await?
                .map_or(Refunded::Duplicate, Refunded::Refunded)
        }
        (status, Some(RefundState::Requested)) => {
            transitions::transition(db, result.order_id, change(status, status), &[done])
                .await?
                .map_or(Refunded::Duplicate, |_| Refunded::CompletedAfterCancel)
        }
    })
}
