//! Database bootstrap: create the service's database if it is missing, apply its migrations and
//! hand back a pool — waiting, with a clear log line, for as long as PostgreSQL is unreachable.
//!
//! Every service's migrations run together with those of the shared tables (the outbox, owned by
//! `gozon_messaging`, and the [`idempotency`](crate::idempotency) keys), so their schema lives
//! beside their code and each service still has one migration history.
//!
//! [`problem`] is the HTTP answer to a request whose statement failed, for every service.

use backon::Retryable;
use gozon_http::Problem;
use gozon_messaging::retry::{self, Failure};
use sqlx::{
    ConnectOptions, Connection, PgPool,
    migrate::{MigrateDatabase, Migrator},
    postgres::{PgConnectOptions, PgPoolOptions},
};
use std::{str::FromStr, time::Duration};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(#[source] sqlx::Error),
    #[error("migrations failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stopped while waiting for the database")]
    Cancelled,
}

/// Longest a statement of the services may run; nothing they do should take a fraction of it.
const STATEMENT_TIMEOUT: &str = "30s";

/// Longest a transaction may sit idle (the outbox relay waits up to 10 s for confirms inside one).
const IDLE_IN_TRANSACTION_TIMEOUT: &str = "60s";

/// A pooled connection idle longer than this is pinged before use. One used more recently is
/// not: the pool pinged it when it came back (sqlx does so on every release), so a second round
/// trip before the next transaction would only add latency — about 0.1 ms per transaction on an
/// idle machine. If it died in between, the transaction fails like any other failed statement
/// (a 503, or a batch tried again) and the pool drops it.
const PING_IDLE_AFTER: Duration = Duration::from_secs(1);

/// Pool size and wait limits for one service's database.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub url: String,
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl PoolSettings {
    /// A service's pool: at most `max_connections`, each waited for at most 5 s (then the
    /// request answers 503 rather than queueing without end).
    pub fn of_service(url: String, max_connections: u32) -> Self {
        Self {
            url,
            max_connections,
            acquire_timeout: Duration::from_secs(5),
        }
    }
}

/// Creates the database if missing, migrates it with `migrator` (plus the shared tables) and
/// returns a pool. Retries with capped exponential backoff until PostgreSQL answers or `stop`
/// is cancelled; a wrong URL or a failed migration is fatal at once.
pub async fn connect_and_migrate(
    settings: &PoolSettings,
    migrator: &Migrator,
    stop: &CancellationToken,
) -> Result<PgPool, BootstrapError> {
    let options = PgConnectOptions::from_str(&settings.url)
        .map_err(BootstrapError::InvalidUrl)?
        .log_statements(tracing::log::LevelFilter::Trace)
        .application_name("gozon");
    let database = options.get_database().unwrap_or("postgres").to_owned();
    let url = settings.url.clone();

    let connect = || async {
        if !sqlx::Postgres::database_exists(&url).await? {
            tracing::info!(%database, "creating database");
            if let Err(error) = sqlx::Postgres::create_database(&url).await {
                // Another instance may have created it a moment ago.
                if !sqlx::Postgres::database_exists(&url).await? {
                    return Err(error);
                }
            }
        }
        PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for > PING_IDLE_AFTER {
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options.clone().options([
                ("statement_timeout", STATEMENT_TIMEOUT),
                (
                    "idle_in_transaction_session_timeout",
                    IDLE_IN_TRANSACTION_TIMEOUT,
                ),
            ]))
            .await
    };
    let pool = tokio::select! {
        _ = stop.cancelled() => return Err(BootstrapError::Cancelled),
        pool = connect
            .retry(retry::unavailable())
            .notify(|error, delay| {
                tracing::warn!(%database, %error, ?delay, "database unreachable; retrying");
            }) => pool.map_err(BootstrapError::InvalidUrl)?,
    };
    // Migrations run on a one-connection pool of their own, free of the statement timeout: an
    // index built on a large table may take longer.
    let migrating = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|error| BootstrapError::Migrate(error.into()))?;
    schema(migrator).run(&migrating).await?;
    migrating.close().await;
    tracing::info!(%database, "database ready and migrated");
    Ok(pool)
}

/// The answer to a request whose statement failed, read as the retry policy reads it
/// ([`Failure::of`]): `database` unreachable or out of room is a 503 "retry later"; anything else
/// — a constraint a bug violated, a conflict that should not happen — is a 500
/// ([`Problem::internal`]), for retrying will not cure it.
pub fn problem(database: &str, error: &sqlx::Error) -> Problem {
    match Failure::of(error) {
        Failure::Unavailable => {
            tracing::warn!(%database, %error, "database unavailable");
            Problem::new(
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                format!("the {database} database is unavailable; retry later"),
            )
        }
        Failure::Conflict | Failure::Refused => Problem::internal(error),
    }
}

/// The table of this crate: `idempotency_keys`.
static RUNTIME_TABLES: Migrator = sqlx::migrate!("./migrations");

/// A service's database schema: its migrations with those of the shared tables, in version
/// order.
pub fn schema(service: &Migrator) -> Migrator {
    let mut migrations: Vec<_> = gozon_messaging::MIGRATOR
        .iter()
        .chain(RUNTIME_TABLES.iter())
        .chain(service.iter())
        .cloned()
        .collect();
    migrations.sort_by_key(|migration| migration.version);
    Migrator::with_migrations(migrations)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_database_answers_503_and_any_other_failure_is_a_500_with_an_id() {
        let unavailable = problem("orders", &sqlx::Error::PoolTimedOut);
        assert_eq!((unavailable.status, &unavailable.instance), (503, &None));
        let refused = problem("orders", &sqlx::Error::ColumnNotFound("seq".into()));
        assert_eq!(refused.status, 500);
        assert!(
            refused
                .instance
                .is_some_and(|id| id.starts_with("/errors/"))
        );
    }
}
