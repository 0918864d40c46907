//! The consumer of `payment.status`: applies payments' decision to its order, once.
//!
//! A `NEW` order becomes `FINISHED` or `CANCELLED`. An order orders had already cancelled (by
//! its owner, or its deadline) while the payment was in flight stays `CANCELLED`; if the debit
//! succeeded nevertheless, its refund request goes to the outbox in the same transaction. A result
//! delivered again changes nothing. A result for an order this service does not know, one whose
//! user or amount disagree with the order, or one that contradicts the outcome already applied
//! (payments decides each order once, so a real one never does: it is forged, or a bug) can
//! never be applied: it is dead-lettered for an operator to look at, and counted
//! (`payment_results_contradicting_total` for the last kind).

use crate::{
    live,
    orders::{self, Order, Payment, Settle},
};
use gozon_contract::{
    domain::OrderId,
    messages::{PaymentResult, PaymentStatus},
};
use gozon_messaging::{
    consumer::{Handler, HandlerError, Incoming},
    outbox::Wakeup,
    outgoing::Outgoing,
};
use gozon_telemetry::trace::TraceParent;
use sqlx::PgConnection;

/// Applies payment results to orders.
pub struct ApplyPaymentResults {
    /// The queue consumed, for metric labels.
    pub payment_status_queue: String,
    /// Where refunds of late debits are asked for.
    pub order_refunds_queue: String,
    pub wakeup: Wakeup,
}

impl ApplyPaymentResults {
    /// Every counter of this handler, at 0 from the start (see the consumer's counters).
    pub fn count_from_zero() {
        metrics::counter!("payment_results_contradicting_total").increment(0);
        metrics::counter!("late_debits_refunded_total").increment(0);
    }
}

impl Handler for ApplyPaymentResults {
    type Message = PaymentResult;
    /// One worker applies the results of a given order; batches update orders in id order.
    type Key = OrderId;

    fn key(result: &PaymentResult) -> OrderId {
        result.order_id
    }

    async fn handle(
        &self,
        db: &mut PgConnection,
        message_id: &str,
        trace: &TraceParent,
        result: &PaymentResult,
        out: &mut Outgoing,
    ) -> Result<(), HandlerError> {
        let order_id = result.order_id;
        match orders::settle(db, result, payment_of(result)?).await? {
            Settle::Settled(order) => settled(out, &order, message_id)?,
            Settle::RefundLateDebit(order) => {
                let refund = order.refund_request().map_err(HandlerError::Poison)?;
                out.publish(&self.order_refunds_queue, &refund, trace)?;
                metrics::counter!("late_debits_refunded_total").increment(1);
                tracing::warn!(%order_id, message_id, "paid after it was cancelled; refund requested");
            }
            Settle::DeclinedAfterCancel => {
                tracing::info!(%order_id, message_id, "declined after it was cancelled");
            }
            Settle::Duplicate => {
                tracing::debug!(%order_id, message_id, "duplicate payment result ignored");
                metrics::counter!("messages_duplicate_total", "queue" => self.payment_status_queue.clone()).increment(1);
            }
            Settle::Contradicts(status) => {
                metrics::counter!("payment_results_contradicting_total").increment(1);
                return Err(HandlerError::Poison(format!(
                    "payment result {} for order {order_id} contradicts the outcome applied to it (now {})",
                    result.status.as_str(),
                    status.as_str()
                )));
            }
            Settle::Unknown => {
                return Err(HandlerError::Poison(format!(
                    "no order {order_id} of user {} and amount {} to apply a payment result to",
                    result.user_id,
                    result.amount.kopecks()
                )));
            }
        }
        Ok(())
    }

    /// The common case — a `NEW` order settled — for the whole batch in one statement
    /// ([`orders::settle_new`]); `handle` applies the rest.
    async fn handle_together(
        &self,
        db: &mut PgConnection,
        batch: &[Incoming<'_, PaymentResult>],
        out: &mut Outgoing,
    ) -> Result<Vec<bool>, HandlerError> {
        let mut applied = vec![false; batch.len()];
        // A result whose status and reason disagree is left to `handle`, which dead-letters it.
        let valid: Vec<(usize, Payment)> = batch
            .iter()
            .enumerate()
            .filter_map(|(index, incoming)| Some((index, payment_of(incoming.message).ok()?)))
            .collect();
        let results: Vec<(&PaymentResult, Payment)> = valid
            .iter()
            .map(|&(index, payment)| (batch[index].message, payment))
            .collect();
        for order in orders::settle_new(db, &results).await? {
            // Of several results of one order, the first was applied.
            let Some(&(index, _)) = valid
                .iter()
                .find(|&&(index, _)| batch[index].message.order_id == order.id)
            else {
                continue;
            };
            applied[index] = true;
            let incoming = &batch[index];
            incoming
                .span
                .in_scope(|| settled(out, &order, incoming.message_id))?;
        }
        Ok(applied)
    }

    fn committed(&self) {
        self.wakeup.notify();
    }
}

/// What follows an order's settling: its live notice, its settle time, a log line.
fn settled(out: &mut Outgoing, order: &Order, message_id: &str) -> Result<(), HandlerError> {
    live::announce(out, order)?;
    metrics::histogram!("order_settle_seconds")
        .record((order.updated_at - order.created_at).as_seconds_f64());
    tracing::info!(order_id = %order.id, message_id, status = order.status.as_str(), "order settled");
    Ok(())
}

/// The decision a payment result states; a result whose status and reason disagree is poison.
fn payment_of(result: &PaymentResult) -> Result<Payment, HandlerError> {
    match (result.status, result.reason) {
        (PaymentStatus::Succeeded, None) => Ok(Payment::Paid),
        (PaymentStatus::Failed, Some(reason)) => Ok(Payment::Declined(reason)),
        (PaymentStatus::Succeeded, Some(_)) => Err(HandlerError::Poison(
            "a SUCCEEDED payment result must not carry a reason".into(),
        )),
        (PaymentStatus::Failed, None) => Err(HandlerError::Poison(
            "a FAILED payment result must carry a reason".into(),
        )),
    }
}
