//! The consumer of `payment.status`: applies a payment result to its order.
//!
//! An order leaves `NEW` exactly once: the update only matches an order that is still `NEW`, so
//! a result delivered again changes nothing. A result for an order this service does not know,
//! one whose user or amount disagree with the order, or one that contradicts the result already
//! applied (payments decides each order once, so a real one never does: it is forged, or a bug)
//! can never be applied: it is dead-lettered for an operator to look at, and counted
//! (`payment_results_contradicting_total` for the last kind).

use crate::{
    live,
    orders::{Order, OrderStatus},
};
use gozon_shared::{
    consumer::{Handler, HandlerError},
    messages::{FailureReason, PaymentResult, PaymentStatus},
    trace::TraceParent,
};
use sqlx::PgConnection;
use uuid::Uuid;

/// Applies payment results to orders.
pub struct PaymentResults {
    /// The queue consumed, for metric labels.
    pub payment_status_queue: String,
}

impl PaymentResults {
    pub fn new(payment_status_queue: String) -> Self {
        // Exists from the start, at 0 (see the consumer's counters).
        metrics::counter!("payment_results_contradicting_total").increment(0);
        Self {
            payment_status_queue,
        }
    }
}

impl Handler for PaymentResults {
    type Message = PaymentResult;
    /// One worker applies the results of a given order; batches update orders in id order.
    type Key = Uuid;

    fn key(result: &PaymentResult) -> Uuid {
        result.order_id
    }

    async fn handle(
        &self,
        db: &mut PgConnection,
        message_id: &str,
        _trace: &TraceParent,
        result: &PaymentResult,
    ) -> Result<(), HandlerError> {
        let (status, reason) = final_status(result)?;
        let settled: Option<Order> = sqlx::query_as(
            "UPDATE orders SET status = $2, reason = $3, updated_at = clock_timestamp() \
             WHERE id = $1 AND status = $6 AND user_id = $4 AND amount = $5 \
             RETURNING id, user_id, amount, description, status, reason, created_at, updated_at",
        )
        .bind(result.order_id)
        .bind(status)
        .bind(reason)
        .bind(result.user_id.as_str())
        .bind(result.amount.kopecks())
        .bind(OrderStatus::New)
        .fetch_optional(&mut *db)
        .await?;
        if let Some(order) = settled {
            live::announce(db, &order).await?;
            metrics::histogram!("order_settle_seconds")
                .record((order.updated_at - order.created_at).as_seconds_f64());
            tracing::info!(order_id = %result.order_id, message_id, status = status.as_str(), "order settled");
            return Ok(());
        }

        let order: Option<(OrderStatus, String, i64)> =
            sqlx::query_as("SELECT status, user_id, amount FROM orders WHERE id = $1")
                .bind(result.order_id)
                .fetch_optional(&mut *db)
                .await?;
        match order {
            None => Err(HandlerError::Poison(format!(
                "no order {} to apply a payment result to",
                result.order_id
            ))),
            Some((_, user_id, amount))
                if user_id != result.user_id.as_str() || amount != result.amount.kopecks() =>
            {
                Err(HandlerError::Poison(format!(
                    "payment result for order {} names user {} and amount {}, the order has {user_id} and {amount}",
                    result.order_id,
                    result.user_id,
                    result.amount.kopecks()
                )))
            }
            Some((current, ..)) if current != status => {
                metrics::counter!("payment_results_contradicting_total").increment(1);
                Err(HandlerError::Poison(format!(
                    "payment result {} for order {} contradicts its applied status {}",
                    status.as_str(),
                    result.order_id,
                    current.as_str()
                )))
            }
            Some(_) => {
                tracing::debug!(order_id = %result.order_id, message_id, "duplicate payment result ignored");
                metrics::counter!("messages_duplicate_total", "queue" => self.payment_status_queue.clone()).increment(1);
                Ok(())
            }
        }
    }
}

/// The order status and reason a payment result leads to.
fn final_status(
    result: &PaymentResult,
) -> Result<(OrderStatus, Option<FailureReason>), HandlerError> {
    match (result.status, result.reason) {
        (PaymentStatus::Succeeded, None) => Ok((OrderStatus::Finished, None)),
        (PaymentStatus::Failed, Some(reason)) => Ok((OrderStatus::Cancelled, Some(reason))),
        (PaymentStatus::Succeeded, Some(_)) => Err(HandlerError::Poison(
            "a SUCCEEDED payment result must not carry a reason".into(),
        )),
        (PaymentStatus::Failed, None) => Err(HandlerError::Poison(
            "a FAILED payment result must carry a reason".into(),
        )),
    }
}
