//! The consumer of `order.payments`: debits each order at most once and publishes the outcome.
//! A request that arrives after its deadline (by this service's clock) is declined with
//! `payment_timeout`; if orders' clock disagrees, the worst case is a debit of an order orders
//! has already given up, which orders then has refunded — never money kept for nothing.
//!
//! One transaction (the consumer's; several messages may share it) holds all of a message's
//! effects: the inbox row, the payment decision and its debit — one statement,
//! [`ledger::debit`] — and the `payment.status` outbox row. Two layers stop a double charge:
//! - the inbox drops a message id seen before;
//! - the `payments` table answers an order seen before — under any message id — with the
//!   decision already taken, and its primary key (with the ledger's UNIQUE `order_id`) makes the
//!   database refuse a second decision even if two requests race.

use crate::ledger::{self, Debit, Decided};
use gozon_contract::{
    domain::{Amount, UserId},
    messages::{FailureReason, PaymentRequest, PaymentResult},
};
use gozon_messaging::{
    consumer::{Handler, HandlerError, Incoming},
    outbox::Wakeup,
    outgoing::Outgoing,
};
use gozon_telemetry::trace::TraceParent;
use sqlx::PgConnection;
use time::OffsetDateTime;

/// Processes payment requests.
pub struct DecidePayments {
    /// The queue consumed, for metric labels.
    pub payment_requests_queue: String,
    pub wakeup: Wakeup,
    pub payment_status_queue: String,
}

impl DecidePayments {
    /// Every decision's counter, at 0 from the start (see the consumer's counters).
    pub fn count_decisions_from_zero() {
        let outcomes = FailureReason::ALL.map(FailureReason::as_str);
        for outcome in ["succeeded", "repeated"].into_iter().chain(outcomes) {
            metrics::counter!("payment_decisions_total", "outcome" => outcome).increment(0);
        }
    }
}

impl DecidePayments {
    /// Publishes what was decided for `request` (nothing for a duplicate), and counts it.
    fn answer(
        &self,
        message_id: &str,
        request: &PaymentRequest,
        decided: Decided,
        trace: &TraceParent,
        out: &mut Outgoing,
    ) -> Result<(), HandlerError> {
        let order_id = request.order_id;
        let result = match decided {
            Decided::Duplicate => {
                tracing::debug!(message_id, %order_id, "duplicate payment request ignored");
                metrics::counter!("messages_duplicate_total", "queue" => self.payment_requests_queue.clone()).increment(1);
                return Ok(());
            }
            Decided::Before {
                user_id,
                amount,
                debit,
            } => {
                tracing::info!(message_id, %order_id, "order already decided; repeating the decision");
                metrics::counter!("payment_decisions_total", "outcome" => "repeated").increment(1);
                let stored = |what: String| {
                    HandlerError::Poison(format!("stored payment of {order_id} is invalid: {what}"))
                };
                let earlier = PaymentRequest {
                    order_id,
                    user_id: UserId::parse(user_id).map_err(stored)?,
                    amount: Amount::parse(amount).map_err(stored)?,
                    deadline: None,
                };
                result_of(earlier, debit)
            }
            Decided::Now(debit) => {
                let outcome = match debit {
                    Debit::Debited => "succeeded",
                    Debit::Declined(reason) => reason.as_str(),
                };
                metrics::counter!("payment_decisions_total", "outcome" => outcome).increment(1);
                result_of(request.clone(), debit)
            }
        };
        out.publish(&self.payment_status_queue, &result, trace)?;
        tracing::info!(message_id, %order_id, status = ?result.status, reason = ?result.reason, "payment decided");
        Ok(())
    }
}

impl Handler for DecidePayments {
    type Message = PaymentRequest;
    /// Batches debit accounts one worker per account and in user order, so they neither
    /// contend within an instance nor deadlock across instances.
    type Key = UserId;

    fn key(request: &PaymentRequest) -> UserId {
        request.user_id.clone()
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        message_id: &str,
        trace: &TraceParent,
        request: &PaymentRequest,
        out: &mut Outgoing,
    ) -> Result<(), HandlerError> {
        let now = OffsetDateTime::now_utc();
        for decided in ledger::debit(tx, &[(message_id, request)], now).await? {
            self.answer(message_id, request, decided, trace, out)?;
        }
        Ok(())
    }

    /// The whole batch's requests, decided by a statement per round ([`ledger::debit`]).
    async fn handle_together(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming<'_, PaymentRequest>],
        out: &mut Outgoing,
    ) -> Result<Vec<bool>, HandlerError> {
        let requests: Vec<(&str, &PaymentRequest)> = batch
            .iter()
            .map(|incoming| (incoming.message_id, incoming.message))
            .collect();
        let decided = ledger::debit(tx, &requests, OffsetDateTime::now_utc()).await?;
        let mut applied = vec![false; batch.len()];
        for ((incoming, decided), applied) in batch.iter().zip(decided).zip(&mut applied) {
            incoming.span.in_scope(|| {
                self.answer(
                    incoming.message_id,
                    incoming.message,
                    decided,
                    incoming.trace,
                    out,
                )
            })?;
            *applied = true;
        }
        Ok(applied)
    }

    fn committed(&self) {
        self.wakeup.notify();
    }
}

fn result_of(request: PaymentRequest, debit: Debit) -> PaymentResult {
    let (status, reason) = debit.outcome();
    PaymentResult {
        order_id: request.order_id,
        user_id: request.user_id,
        amount: request.amount,
        status,
        reason,
    }
}
