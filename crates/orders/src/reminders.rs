//! Asking payments again when no answer came: a request (or its answer) taken off its queue by
//! someone else — a consumer with a stolen login that acknowledges and drops it — is not lost
//! money.
//!
//! An order owes a reminder while an answer of payments is outstanding: its payment's outcome
//! (from placing until a result is applied, whether or not orders cancelled it meanwhile: a
//! debit may still have happened), or its refund (from asking until it completes). `remind_at`
//! says when to ask again — [`Reminders::after`] from asking, then twice as long each time, at
//! most [`MOST_WAIT_FACTOR`] times as long — and after [`MOST_REMINDERS`] reminders it stops and
//! counts the order as unanswered (`order_reminders_exhausted_total`, an alert): by then
//! something other than a lost message is wrong.
//!
//! Asking again is harmless: payments answers a request it has seen (under any message id) with
//! the decision it took, and a refund it has given with that refund; the result applied twice
//! changes nothing. Every instance sweeps; `SKIP LOCKED` shares the work.

use crate::{
    order::{COLUMNS, Order},
    status::RefundState,
};
use gozon_contract::messages::PaymentRequest;
use gozon_messaging::{outbox::Wakeup, outgoing::Outgoing};
use gozon_telemetry::trace::TraceParent;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most reminders of one answer.
pub const MOST_REMINDERS: i16 = 10;

/// The wait before a reminder grows to at most this many times [`Reminders::after`].
pub const MOST_WAIT_FACTOR: i32 = 16;

/// Most orders one sweep reminds in one transaction.
const BATCH: i64 = 500;

/// What asking again needs.
#[derive(Debug, Clone)]
pub struct Reminders {
    pub pool: PgPool,
    pub order_payments_queue: String,
    pub order_refunds_queue: String,
    /// How long after asking to ask again, the first time.
    pub after: Duration,
    /// How often each instance looks for orders owed a reminder.
    pub interval: Duration,
    pub wakeup: Wakeup,
}

impl Reminders {
    /// Sweeps every `interval` until `stop` fires.
    pub async fn run(self, stop: CancellationToken) {
        for kind in ["payment", "refund"] {
            metrics::counter!("order_reminders_total", "kind" => kind).increment(0);
        }
        metrics::counter!("order_reminders_exhausted_total").increment(0);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            loop {
                match self.sweep().await {
                    Ok(reminded) if reminded == BATCH as usize => continue,
                    Ok(_) => break,
                    Err(error) => {
                        tracing::warn!(%error, "reminder sweep failed; retrying later");
                        break;
                    }
                }
            }
        }
    }

    /// Asks again for one batch of the orders owed a reminder; returns how many.
    pub async fn sweep(&self) -> sqlx::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let due = claim_due(&mut tx, self.after, BATCH).await?;
        let mut out = Outgoing::default();
        let encode = |error| sqlx::Error::Encode(Box::new(error));
        for (order, reminders) in &due {
            // A reminder is a new message: a copy under the first one's id would be dropped as
            // a duplicate by the inbox, unanswered.
            let trace = TraceParent::new();
            if order.refund == Some(RefundState::Requested) {
                out.publish(&self.order_refunds_queue, &order.refund_request(), &trace)
                    .map_err(encode)?;
                metrics::counter!("order_reminders_total", "kind" => "refund").increment(1);
            } else {
                let request = PaymentRequest {
                    order_id: order.id,
                    user_id: order.user_id.clone(),
                    amount: order.amount,
                    deadline: order.payment_deadline,
                    seq: order.seq,
                };
                out.publish(&self.order_payments_queue, &request, &trace)
                    .map_err(encode)?;
                metrics::counter!("order_reminders_total", "kind" => "payment").increment(1);
            }
            if *reminders >= MOST_REMINDERS {
                metrics::counter!("order_reminders_exhausted_total").increment(1);
                tracing::error!(order_id = %order.id, reminders, "payments never answered; no more reminders");
            } else {
                tracing::warn!(order_id = %order.id, reminders, "no answer from payments; asked again");
            }
        }
        out.write(&mut tx).await?;
        tx.commit().await?;
        if !due.is_empty() {
            self.wakeup.notify();
        }
        Ok(due.len())
    }
}

/// Claims up to `limit` orders whose reminder is due (`SKIP LOCKED`), and sets their next one:
/// each wait twice the last (from `after`, at most [`MOST_WAIT_FACTOR`] × `after`), none after
/// the [`MOST_REMINDERS`]th. Returns them with how many reminders each has had now.
async fn claim_due(
    db: &mut PgConnection,
    after: Duration,
    limit: i64,
) -> sqlx::Result<Vec<(Order, i16)>> {
    #[derive(sqlx::FromRow)]
    struct Due {
        #[sqlx(flatten)]
        order: Order,
        reminders: i16,
    }
    let due: Vec<Due> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET reminders = reminders + 1, \
           remind_at = CASE WHEN reminders + 1 >= $2 THEN NULL ELSE clock_timestamp() \
             + least(power(2, reminders + 1), $3) * $4 * interval '1 second' END \
         WHERE id IN ( \
           SELECT id FROM orders WHERE remind_at < now() \
           ORDER BY remind_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
         RETURNING {COLUMNS}, reminders"
    )))
    .bind(limit)
    .bind(MOST_REMINDERS)
    .bind(MOST_WAIT_FACTOR)
    .bind(after.as_secs_f64())
    .fetch_all(db)
    .await?;
    Ok(due
        .into_iter()
        .map(|due| (due.order, due.reminders))
        .collect())
}
