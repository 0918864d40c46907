//! Retention: deletes rows that have done their job, in small batches, so that the inbox and the
//! idempotency keys do not grow forever and the hot paths never wait on a big delete. (The outbox
//! needs none: the relay deletes a row as soon as the broker confirmed it.)
//!
//! Each [`Sweep`] names a table and an age; [`run`] applies every sweep once a minute, deleting
//! at most [`BATCH`] rows per statement and pausing between statements.

use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Rows deleted per statement.
pub const BATCH: i64 = 1000;
const PERIOD: Duration = Duration::from_secs(60);
const PAUSE: Duration = Duration::from_millis(50);

/// How long rows are kept.
#[derive(Debug, Clone, clap::Args)]
pub struct RetentionSettings {
    /// Hours an idempotency key is kept: a retry with the key within this window replays the
    /// first response (at least 24).
    #[arg(long, env = "IDEMPOTENCY_KEY_RETENTION_HOURS", default_value_t = 48, value_parser = clap::value_parser!(u64).range(24..))]
    pub idempotency_key_retention_hours: u64,
}

/// One kind of row to delete once it is older than `keep`.
#[derive(Debug, Clone)]
pub struct Sweep {
    pub name: &'static str,
    /// `DELETE … WHERE <key> IN (SELECT <key> … WHERE <age column> < $1 LIMIT $2)`.
    pub delete: &'static str,
    pub keep: Duration,
}

impl RetentionSettings {
    /// The sweeps of the tables every service has: the idempotency keys.
    pub fn shared_sweeps(&self) -> Vec<Sweep> {
        vec![Sweep {
            name: "idempotency_keys",
            delete: "DELETE FROM idempotency_keys WHERE (route, owner, key) IN \
                         (SELECT route, owner, key FROM idempotency_keys WHERE created_at < $1 \
                          ORDER BY created_at LIMIT $2)",
            keep: hours(self.idempotency_key_retention_hours),
        }]
    }
}

pub fn hours(hours: u64) -> Duration {
    Duration::from_secs(hours * 3600)
}

/// Applies `sweeps` now and then every minute until `stop` fires.
pub async fn run(pool: PgPool, sweeps: Vec<Sweep>, stop: CancellationToken) {
    loop {
        for sweep in &sweeps {
            match sweep_once(&pool, sweep, &stop).await {
                Ok(statements) if statements.iter().sum::<u64>() == 0 => {}
                Ok(statements) => {
                    let deleted: u64 = statements.iter().sum();
                    tracing::info!(table = sweep.name, deleted, "retention removed old rows")
                }
                Err(error) => {
                    tracing::warn!(table = sweep.name, %error, "retention failed; next round retries")
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PERIOD) => {}
        }
    }
}

/// Deletes everything `sweep` covers, [`BATCH`] rows at a time. Returns how many rows each
/// statement deleted, in order.
pub async fn sweep_once(
    pool: &PgPool,
    sweep: &Sweep,
    stop: &CancellationToken,
) -> sqlx::Result<Vec<u64>> {
    let cutoff = time::OffsetDateTime::now_utc() - sweep.keep;
    let mut statements = Vec::new();
    while !stop.is_cancelled() {
        let deleted = sqlx::query(sweep.delete)
            .bind(cutoff)
            .bind(BATCH)
            .execute(pool)
            .await?
            .rows_affected();
        statements.push(deleted);
        if deleted < BATCH as u64 {
            break;
        }
        tokio::time::sleep(PAUSE).await;
    }
    Ok(statements)
}
