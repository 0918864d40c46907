//! Builds the orders service from its settings.

use crate::{
    Settings,
    live::{self, Live},
    orders,
    payment_results::PaymentResults,
};
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
    pub outbox: Wakeup,
    pub order_payments_queue: String,
    pub live: Live,
    pub verifier: TokenVerifier,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}

/// The orders service, ready to run.
pub type Application = Service<PaymentResults>;

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
    let live = Live::new(settings.live.clone());
    let state = AppState {
        pool: pool.clone(),
        outbox: wakeup.clone(),
        order_payments_queue: settings.broker.order_payments_queue.clone(),
        live: live.clone(),
        verifier: TokenVerifier::new(&settings.auth),
    };
    let listener_pool = pool.clone();
    let (retention_pool, sweeps) = (pool.clone(), settings.retention.shared_sweeps());
    let service = Service::new(Parts {
        name: "orders",
        listen_addr: settings.listen_addr,
        api: orders::router().with_state(state),
        consumes: settings.broker.payment_status_queue.clone(),
        handler: PaymentResults::new(settings.broker.payment_status_queue.clone()),
        background: vec![
            Box::new(move |stop| Box::pin(live::listen(listener_pool, live, stop))),
            Box::new(move |stop| Box::pin(retention::run(retention_pool, sweeps, stop))),
        ],
        pool,
        wakeup,
        broker: settings.broker,
        relay: settings.relay,
        consumer: settings.consumer,
    })
    .await?;
    Ok(Some(service))
}
