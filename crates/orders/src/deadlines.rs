//! The payment deadline: orders still `NEW` past it are cancelled with `payment_timeout`.
//!
//! Every instance sweeps; each sweep claims due orders with `SKIP LOCKED`, so instances share the
//! work and never cancel one order twice. The deadline is compared with the orders database's
//! clock; payments compares the same deadline, carried in the request, with its own. If the two
//! clocks disagree, the worst case is a debit of an order this service already cancelled, and
//! that debit is refunded ([`crate::payment_results`]): a skew changes which orders time out,
//! never where the money ends.

use crate::{
    live,
    order::{COLUMNS, Order, rfc3339},
    status::{CancelReason, OrderEvent, OrderStatus},
    transitions,
};
use gozon_messaging::outgoing::Outgoing;
use serde_json::json;
use sqlx::{PgConnection, PgPool};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Most orders one sweep cancels in one transaction.
const BATCH: i64 = 500;

/// Sweeps every `interval` until `stop` fires.
pub async fn run(pool: PgPool, interval: Duration, stop: CancellationToken) {
    metrics::counter!("orders_timed_out_total").increment(0);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        loop {
            match sweep(&pool).await {
                Ok(cancelled) if cancelled == BATCH as usize => continue,
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(%error, "payment deadline sweep failed; retrying later");
                    break;
                }
            }
        }
    }
}

/// Cancels one batch of overdue orders and announces them; returns how many.
pub async fn sweep(pool: &PgPool) -> sqlx::Result<usize> {
    let mut tx = pool.begin().await?;
    let cancelled = cancel_overdue(&mut tx, BATCH).await?;
    let mut out = Outgoing::default();
    for order in &cancelled {
        live::announce(&mut out, order).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    }
    out.write(&mut tx).await?;
    tx.commit().await?;
    if !cancelled.is_empty() {
        metrics::counter!("orders_timed_out_total").increment(cancelled.len() as u64);
        tracing::info!(
            count = cancelled.len(),
            "orders past their payment deadline cancelled"
        );
    }
    Ok(cancelled.len())
}

/// Cancels up to `limit` orders still `NEW` past their deadline (by the database's clock), and
/// returns them. Instances sweeping at once each take different orders (`SKIP LOCKED`), and an
/// order settled meanwhile is no longer `NEW` and not touched. Their payment's outcome is still
/// outstanding: their reminders stay.
pub async fn cancel_overdue(db: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Order>> {
    let cancelled: Vec<Order> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET status = $2, reason = $3, updated_at = clock_timestamp() \
         WHERE status = $1 AND id IN ( \
           SELECT id FROM orders WHERE status = $1 AND payment_deadline < now() \
           ORDER BY payment_deadline LIMIT $4 FOR UPDATE SKIP LOCKED) \
         RETURNING {COLUMNS}"
    )))
    .bind(OrderStatus::New)
    .bind(OrderStatus::Cancelled)
    .bind(CancelReason::PaymentTimeout)
    .bind(limit)
    .fetch_all(&mut *db)
    .await?;
    for order in &cancelled {
        let deadline = json!({ "deadline": rfc3339(order.payment_deadline) });
        let passed = [(OrderEvent::DeadlinePassed, deadline)];
        transitions::record(&mut *db, order.id, order.updated_at, &passed).await?;
    }
    Ok(cancelled)
}
