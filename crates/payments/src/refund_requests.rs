//! The consumer of `order.refunds`: gives back each debited order's money at most once and
//! publishes that it did.
//!
//! As with payment requests, one transaction holds the inbox row, the refund and the
//! `refund.status` outbox row. Two layers stop a double refund: the inbox drops a message id
//! seen before, and the ledger holds at most one refund per order — a request repeated under
//! another message id finds it and is answered again without moving money. A request that names
//! no debit of that order, account and amount is refused by the database (a foreign key from the
//! refund row to its debit) and dead-lettered: orders asks for a refund only after it has seen
//! the debit succeed, so such a request is forged or a bug.

use crate::{
    inbox,
    ledger::{self, Refund},
};
use gozon_contract::{
    domain::UserId,
    messages::{RefundRequest, RefundResult, RefundStatus},
};
use gozon_messaging::{
    consumer::{Handler, HandlerError},
    outbox::Wakeup,
    outgoing::Outgoing,
};
use gozon_telemetry::trace::TraceParent;
use sqlx::PgConnection;

/// Processes refund requests.
pub struct GiveRefunds {
    /// The queue consumed, for metric labels.
    pub refund_requests_queue: String,
    pub wakeup: Wakeup,
    pub refund_status_queue: String,
}

impl GiveRefunds {
    /// Every outcome's counter, at 0 from the start (see the consumer's counters).
    pub fn count_refunds_from_zero() {
        for outcome in ["refunded", "repeated"] {
            metrics::counter!("refunds_total", "outcome" => outcome).increment(0);
        }
    }
}

impl Handler for GiveRefunds {
    type Message = RefundRequest;
    /// Like debits, refunds credit one account per worker, in user order.
    type Key = UserId;

    fn key(request: &RefundRequest) -> UserId {
        request.user_id.clone()
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        message_id: &str,
        trace: &TraceParent,
        request: &RefundRequest,
        out: &mut Outgoing,
    ) -> Result<(), HandlerError> {
        if !inbox::record(&mut *tx, message_id).await? {
            tracing::debug!(message_id, order_id = %request.order_id, "duplicate refund request ignored");
            metrics::counter!("messages_duplicate_total", "queue" => self.refund_requests_queue.clone()).increment(1);
            return Ok(());
        }
        let outcome = match ledger::refund(tx, request).await? {
            Refund::Refunded => "refunded",
            Refund::AlreadyRefunded => "repeated",
            Refund::Contradicts => {
                return Err(HandlerError::Poison(format!(
                    "refund request for order {} names user {} and amount {}, unlike its refund",
                    request.order_id,
                    request.user_id,
                    request.amount.kopecks()
                )));
            }
        };
        metrics::counter!("refunds_total", "outcome" => outcome).increment(1);
        let result = RefundResult {
            order_id: request.order_id,
            user_id: request.user_id.clone(),
            amount: request.amount,
            status: RefundStatus::Refunded,
        };
        out.publish(&self.refund_status_queue, &result, trace)?;
        tracing::info!(message_id, order_id = %request.order_id, outcome, "refund decided");
        Ok(())
    }

    fn committed(&self) {
        self.wakeup.notify();
    }
}
