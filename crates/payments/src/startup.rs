//! Builds the payments service from its settings.

use crate::{Settings, accounts, payment_requests::PaymentRequests};
use axum::extract::FromRef;
use gozon_shared::{
    auth::TokenVerifier,
    db::{self, PoolSettings},
    outbox::Wakeup,
    retention,
    service::{Parts, Service},
};
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What the HTTP handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: TokenVerifier,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The payments service, ready to run.
pub type Application = Service<PaymentRequests>;

/// Waits for the database (creating and migrating it), binds the listener and assembles the
/// relay and the consumer. `Ok(None)` means `stop` fired while waiting.
pub async fn build(
    settings: Settings,
    stop: &CancellationToken,
) -> anyhow::Result<Option<Application>> {
    let pool_settings = PoolSettings {
        url: settings.database_url,
        max_connections: settings.db_max_connections,
        acquire_timeout: Duration::from_secs(5),
    };
    let pool = match db::connect_and_migrate(&pool_settings, &MIGRATOR, stop).await {
        Ok(pool) => pool,
        Err(db::BootstrapError::Cancelled) => return Ok(None),
        Err(error) => return Err(error.into()),
    };
    let wakeup = Wakeup::default();
    let state = AppState {
        pool: pool.clone(),
        verifier: TokenVerifier::new(&settings.auth),
    };
    let mut sweeps = settings.retention.shared_sweeps();
    sweeps.push(crate::inbox::sweep(retention::hours(
        settings.inbox_retention_hours,
    )));
    let retention_pool = pool.clone();
    PaymentRequests::count_decisions_from_zero();
    let service = Service::new(Parts {
        name: "payments",
        listen_addr: settings.listen_addr,
        api: accounts::router().with_state(state),
        consumes: settings.broker.order_payments_queue.clone(),
        background: vec![Box::new(move |stop| {
            Box::pin(retention::run(retention_pool, sweeps, stop))
        })],
        handler: PaymentRequests {
            payment_requests_queue: settings.broker.order_payments_queue.clone(),
            outbox: wakeup.clone(),
            payment_status_queue: settings.broker.payment_status_queue.clone(),
        },
        pool,
        wakeup,
        broker: settings.broker,
        relay: settings.relay,
        consumer: settings.consumer,
    })
    .await?;
    Ok(Some(service))
}
