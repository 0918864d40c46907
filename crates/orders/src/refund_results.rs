//! The consumer of `refund.status`: records that an order's money is back, once.
//!
//! A `REFUNDING` order becomes `REFUNDED`; a `CANCELLED` order whose late debit was refunded
//! stays `CANCELLED`, its refund marked complete. A result delivered again changes nothing; one
//! for an order with no refund asked, or whose user or amount differ, is dead-lettered.

use crate::{
    live,
    orders::{self, Refunded},
};
use gozon_contract::{domain::OrderId, messages::RefundResult};
use gozon_messaging::{
    consumer::{Handler, HandlerError},
    outgoing::Outgoing,
};
use gozon_telemetry::trace::TraceParent;
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
        match orders::complete_refund(db, result).await? {
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
