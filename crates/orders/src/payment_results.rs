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
    order::{COLUMNS, Order},
    status::{CancelReason, OrderEvent, OrderStatus, RefundState},
    transitions::{self, Move, Remind},
};
use gozon_contract::{
    domain::OrderId,
    messages::{PaymentOutcome, PaymentResult},
};
use gozon_messaging::{
    batch,
    consumer::{Handler, HandlerError, Incoming},
    outbox::Wakeup,
    outgoing::Outgoing,
};
use gozon_telemetry::trace::TraceParent;
use serde_json::{Value, json};
use sqlx::{PgConnection, Postgres, QueryBuilder};
use std::time::Duration;

/// Applies payment results to orders.
pub struct ApplyPaymentResults {
    /// The queue consumed, for metric labels.
    pub payment_status_queue: String,
    /// Where refunds of late debits are asked for.
    pub order_refunds_queue: String,
    pub wakeup: Wakeup,
    /// How long to wait for a refund's answer before asking again.
    pub remind_after: Duration,
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
    /// Results of one order are applied one batch at a time; batches update orders in id order.
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
        match settle(db, result, self.remind_after).await? {
            Settle::Settled(order) => settled(out, &order, message_id)?,
            Settle::RefundLateDebit(order) => {
                out.publish(&self.order_refunds_queue, &order.refund_request(), trace)?;
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
                let (said, _) = result.outcome.status();
                return Err(HandlerError::Poison(format!(
                    "payment result {} for order {order_id} contradicts the outcome applied to it (now {})",
                    said.as_str(),
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
    /// ([`settle_new`]); `handle` applies the rest.
    async fn handle_together(
        &self,
        db: &mut PgConnection,
        batch: &[Incoming<'_, PaymentResult>],
        out: &mut Outgoing,
    ) -> Result<Vec<bool>, HandlerError> {
        let mut applied = vec![false; batch.len()];
        let results: Vec<&PaymentResult> = batch.iter().map(|incoming| incoming.message).collect();
        for order in settle_new(db, &results).await? {
            // Of several results of one order, the first was applied.
            let Some(index) = batch
                .iter()
                .position(|incoming| incoming.message.order_id == order.id)
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

/// What a payment outcome makes of a `NEW` order: its status, reason, history event and detail.
fn applied(outcome: PaymentOutcome) -> (OrderStatus, Option<CancelReason>, OrderEvent, Value) {
    match outcome {
        PaymentOutcome::Paid => (OrderStatus::Finished, None, OrderEvent::Paid, json!({})),
        PaymentOutcome::Declined(reason) => {
            let reason = CancelReason::from(reason);
            (
                OrderStatus::Cancelled,
                Some(reason),
                OrderEvent::Declined,
                json!({ "reason": reason }),
            )
        }
    }
}

/// What applying a payment result did.
#[derive(Debug)]
pub enum Settle {
    /// `NEW` became `FINISHED` or `CANCELLED`.
    Settled(Order),
    /// Paid after orders had cancelled it: its refund is now requested (the caller sends it).
    RefundLateDebit(Order),
    /// Declined after orders had cancelled it: nothing to give back.
    DeclinedAfterCancel,
    /// This outcome was applied before.
    Duplicate,
    /// The other outcome was applied before.
    Contradicts(OrderStatus),
    /// No such order, or its user or amount differ from the result's.
    Unknown,
}

/// The common case of [`settle`], for many results at once and in one statement: every result
/// whose order is still `NEW` and of the result's user and amount is applied with its history
/// line (of several results of one order, the first); returns the orders settled. [`settle`]
/// applies any other result, one at a time.
///
/// A batch of several results is planned afresh each time (its best plan depends on how large
/// `orders` is by now); one result alone is always one probe of the primary key, and that
/// statement is kept.
pub async fn settle_new(
    db: &mut PgConnection,
    results: &[&PaymentResult],
) -> sqlx::Result<Vec<Order>> {
    let mut seen = std::collections::HashSet::with_capacity(results.len());
    let firsts: Vec<&PaymentResult> = results
        .iter()
        .copied()
        .filter(|result| seen.insert(result.order_id))
        .collect();
    let outcomes: Vec<_> = firsts.iter().map(|r| applied(r.outcome)).collect();
    let mut query = QueryBuilder::<Postgres>::new(
        "WITH changed AS ( \
           UPDATE orders SET status = r_status, reason = r_reason, remind_at = NULL, \
             updated_at = clock_timestamp() \
           FROM (SELECT * FROM unnest(",
    );
    query.push_bind(
        firsts
            .iter()
            .map(|r| r.order_id.as_uuid())
            .collect::<Vec<_>>(),
    );
    query.push("::uuid[], ");
    query.push_bind(
        firsts
            .iter()
            .map(|r| r.user_id.as_str())
            .collect::<Vec<_>>(),
    );
    query.push("::text[], ");
    query.push_bind(
        firsts
            .iter()
            .map(|r| r.amount.kopecks())
            .collect::<Vec<_>>(),
    );
    query.push("::bigint[], ");
    query.push_bind(outcomes.iter().map(|o| o.0.as_str()).collect::<Vec<_>>());
    query.push("::text[], ");
    query.push_bind(
        outcomes
            .iter()
            .map(|o| o.1.map(CancelReason::as_str))
            .collect::<Vec<_>>(),
    );
    query.push("::text[], ");
    query.push_bind(outcomes.iter().map(|o| o.2.as_str()).collect::<Vec<_>>());
    query.push("::text[], ");
    query.push_bind(outcomes.iter().map(|o| o.3.clone()).collect::<Vec<_>>());
    query.push(format_args!(
        "::jsonb[]) AS r(r_id, r_user, r_amount, r_status, r_reason, r_event, r_detail) \
           LIMIT {}) AS r \
           WHERE id = r_id AND status = ",
        batch::size_class(firsts.len())
    ));
    query.push_bind(OrderStatus::New);
    query.push(format_args!(
        " AND user_id = r_user AND amount = r_amount \
           RETURNING {COLUMNS}, r_event, r_detail), \
         history AS ( \
           INSERT INTO order_events (order_id, at, event, detail) \
           SELECT id, updated_at, r_event, r_detail FROM changed) \
         SELECT {COLUMNS} FROM changed"
    ));
    query
        .build_query_as()
        .persistent(firsts.len() == 1)
        .fetch_all(db)
        .await
}

/// Applies payments' decision on order `result.order_id` (whose user and amount must match).
/// A late debit's refund is reminded after `remind_after` if no answer comes.
pub async fn settle(
    db: &mut PgConnection,
    result: &PaymentResult,
    remind_after: Duration,
) -> sqlx::Result<Settle> {
    let (_, _, outcome, detail) = applied(result.outcome);
    // The common case first: a NEW order of this user and amount.
    if let Some(order) = settle_new(db, &[result]).await?.pop() {
        return Ok(Settle::Settled(order));
    }

    let Some(current) = transitions::lock(db, result.order_id).await? else {
        return Ok(Settle::Unknown);
    };
    if !current.is_of(&result.user_id, result.amount) {
        return Ok(Settle::Unknown);
    }
    match current.outcome {
        Some(applied) if applied == outcome => return Ok(Settle::Duplicate),
        Some(_) => return Ok(Settle::Contradicts(current.status)),
        None => {}
    }
    // Not applied yet, and not NEW: orders cancelled it while the payment was in flight.
    match (current.status, current.reason, outcome) {
        (OrderStatus::Cancelled, Some(reason), OrderEvent::Paid) if reason.by_orders() => {
            let change = Move {
                from: OrderStatus::Cancelled,
                refund_was: None,
                status: OrderStatus::Cancelled,
                reason: Some(reason),
                refund: Some(RefundState::Requested),
                remind: Remind::After(remind_after),
            };
            let events = [
                (OrderEvent::Paid, json!({ "after": reason })),
                (
                    OrderEvent::RefundRequested,
                    json!({ "amount": current.amount }),
                ),
            ];
            Ok(
                transitions::transition(db, result.order_id, change, &events)
                    .await?
                    .map_or(Settle::Duplicate, Settle::RefundLateDebit),
            )
        }
        (OrderStatus::Cancelled, Some(reason), OrderEvent::Declined) if reason.by_orders() => {
            // Nothing to give back, and nothing outstanding any more.
            let answered = Move {
                from: OrderStatus::Cancelled,
                refund_was: None,
                status: OrderStatus::Cancelled,
                reason: Some(reason),
                refund: None,
                remind: Remind::Never,
            };
            transitions::transition(db, result.order_id, answered, &[(outcome, detail)]).await?;
            Ok(Settle::DeclinedAfterCancel)
        }
        (status, ..) => Ok(Settle::Contradicts(status)),
    }
}
