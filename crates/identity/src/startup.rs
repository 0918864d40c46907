//! Builds the identity service from its settings.

use crate::{
    Settings, keys,
    limits::{Limits, PerMinute},
    passwords::Passwords,
    state::AppState,
    users,
};
use anyhow::Context;
use axum::Router;
use gozon_http::{self as http, clock::Clock};
use gozon_runtime::{
    db::{self, PoolSettings},
    health::Health,
    retention::{self, Sweep},
    service,
};
use sqlx::PgPool;
use std::{num::NonZeroU32, time::Duration};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Every migration of this service's database, the shared tables' included.
pub fn schema() -> sqlx::migrate::Migrator {
    gozon_runtime::db::schema(&MIGRATOR)
}

/// How often forgotten rate-limit keys are dropped.
const FORGET_INTERVAL: Duration = Duration::from_secs(60);

/// The identity service, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    pool: PgPool,
    limits: Limits,
    connections: gozon_http::ConnectionLimits,
    trusted: gozon_http::client::TrustedProxies,
}

impl Application {
    /// Waits for the database (creating and migrating it), makes the first signing key if there
    /// is none, and binds the listener. Fails with [`db::BootstrapError::Cancelled`] if `stop`
    /// fires while waiting.
    pub async fn build(settings: Settings, stop: &CancellationToken) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Clock::System, stop).await
    }

    /// [`build`](Self::build), with tokens issued and login attempts limited by `clock`.
    pub async fn build_with_clock(
        settings: Settings,
        clock: Clock,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(
            &PoolSettings::of_service(
                settings.database.database_url.clone(),
                settings.db_max_connections,
            ),
            &MIGRATOR,
            stop,
        )
        .await?;
        keys::ensure_current(&pool).await?;
        let per_minute = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        let limits = Limits::new(
            PerMinute {
                login_per_user_and_client: per_minute(settings.login_attempts_per_user_and_client),
                login_per_user: per_minute(settings.login_attempts_per_user),
                login_per_client: per_minute(settings.login_attempts_per_client),
                signup_per_client: per_minute(settings.signups_per_client),
            },
            clock.clone(),
        );
        let state = AppState {
            pool: pool.clone(),
            passwords: Passwords::new().await?,
            limits: limits.clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            auth: settings.auth,
            token_ttl: Duration::from_secs(settings.token_ttl_seconds),
            cookie_secure: settings.cookie_secure,
            clock,
        };
        // No broker: ready when its database answers.
        let router = service::router(
            users::router().with_state(state),
            Health {
                pool: pool.clone(),
                broker: Default::default(),
            },
        );
        let listener = TcpListener::bind(&settings.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
        Ok(Self {
            listener,
            router,
            pool,
            limits,
            connections: settings.connections,
            trusted: settings.trusted_proxies,
        })
    }

    /// The port the HTTP server is bound to (useful when it was asked for port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `stop` fires, then lets in-flight requests finish.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> std::io::Result<()> {
        tracing::info!(service = "identity", address = %self.listener.local_addr()?, "listening");
        let limits = self.limits;
        let forget = tokio::spawn({
            let stop = stop.clone();
            async move {
                let mut every = tokio::time::interval(FORGET_INTERVAL);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = every.tick() => limits.forget_idle(),
                    }
                }
            }
        });
        // A revoked token past its expiry is refused anyway: its row can go.
        let expired = Sweep {
            name: "revoked_tokens",
            delete: "DELETE FROM revoked_tokens WHERE id IN (SELECT id FROM revoked_tokens \
                     WHERE expires_at < $1 ORDER BY expires_at LIMIT $2)",
            keep: Duration::ZERO,
        };
        let retention = tokio::spawn(retention::run(
            self.pool.clone(),
            vec![expired],
            stop.clone(),
        ));
        let served = http::serve(
            self.listener,
            self.router,
            &self.connections,
            &self.trusted,
            stop,
        )
        .await;
        forget.abort();
        retention.abort();
        self.pool.close().await;
        tracing::info!(service = "identity", "stopped");
        served
    }
}
