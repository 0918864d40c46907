//! The payments service as one value: built from its settings, run until stopped.

use crate::{
    Settings, accounts, payment_requests::DecidePayments, refund_requests::GiveRefunds,
    state::AppState,
};
use gozon_http::auth::TokenVerifier;
use gozon_messaging::{Role, consumer::Consumer, outbox::Relay, signing::PeerKeys};
use gozon_runtime::{
    db::PoolSettings,
    retention::{self, Sweep},
    service::{self, Core, Server},
};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Every migration of this service's database, the shared tables' included.
pub fn schema() -> sqlx::migrate::Migrator {
    gozon_runtime::db::schema(&MIGRATOR)
}

/// The payments service, bound and ready to run: its HTTP server, the consumers of payment and
/// refund requests, the relay of their results, and the retention sweeps.
pub struct Application {
    core: Core,
    verifier: TokenVerifier,
    server: Server,
    relay: Relay,
    payment_requests: Consumer<DecidePayments>,
    refund_requests: Consumer<GiveRefunds>,
    sweeps: Vec<Sweep>,
    overdue_parked: DecidePayments,
    parked_sweep_interval: std::time::Duration,
}

impl Application {
    /// Waits for the database (creating and migrating it), binds the listener and assembles the
    /// relay and the consumers. Fails with [`gozon_runtime::db::BootstrapError::Cancelled`] if
    /// `stop` fires while waiting.
    pub async fn build(settings: Settings, stop: &CancellationToken) -> anyhow::Result<Self> {
        let core = Core::build(
            Role::Payments,
            &PoolSettings::of_service(settings.database_url, settings.db_max_connections),
            &MIGRATOR,
            settings.broker,
            PeerKeys::from_setting(&settings.orders_message_keys_url)?,
            stop,
        )
        .await?;
        let broker = &core.broker;
        DecidePayments::count_decisions_from_zero();
        let decide = || DecidePayments {
            payment_requests_queue: broker.order_payments_queue.clone(),
            wakeup: core.wakeup.clone(),
            payment_status_queue: broker.payment_status_queue.clone(),
        };
        let payment_requests =
            core.consumer(&broker.order_payments_queue, decide(), &settings.consumer);
        let overdue_parked = decide();
        GiveRefunds::count_refunds_from_zero();
        let refund_requests = core.consumer(
            &broker.order_refunds_queue,
            GiveRefunds {
                refund_requests_queue: broker.order_refunds_queue.clone(),
                wakeup: core.wakeup.clone(),
                refund_status_queue: broker.refund_status_queue.clone(),
            },
            &settings.consumer,
        );
        let relay = core.relay(settings.relay);
        let mut sweeps = settings.retention.shared_sweeps();
        sweeps.push(crate::inbox::sweep(retention::hours(
            settings.inbox_retention_hours,
        )));
        let verifier = TokenVerifier::new(&settings.auth, Default::default());
        let state = AppState {
            pool: core.pool.clone(),
            verifier: verifier.clone(),
        };
        let router = core.router(accounts::router().with_state(state));
        Ok(Self {
            verifier,
            server: Server::bind(
                &settings.listen_addr,
                router,
                settings.connections,
                settings.trusted_proxies,
            )
            .await?,
            core,
            relay,
            payment_requests,
            refund_requests,
            sweeps,
            overdue_parked,
            parked_sweep_interval: settings.parked_sweep_interval,
        })
    }

    /// The port the HTTP server is bound to (useful when it was asked for port 0).
    pub fn port(&self) -> u16 {
        self.server.port()
    }

    pub fn pool(&self) -> &PgPool {
        &self.core.pool
    }

    /// Serves and consumes until `stop` fires, then stops in an order that loses nothing.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> std::io::Result<()> {
        let pool = self.core.pool.clone();
        let mut workers = self.core.workers(&self.verifier, &stop);
        workers.spawn(
            "consumer of payment requests",
            self.payment_requests.run(stop.clone()),
        );
        workers.spawn(
            "consumer of refund requests",
            self.refund_requests.run(stop.clone()),
        );
        workers.spawn(
            "sweep of overdue parked requests",
            self.overdue_parked.sweep_overdue(
                pool.clone(),
                self.parked_sweep_interval,
                stop.clone(),
            ),
        );
        workers.spawn(
            "retention",
            retention::run(pool.clone(), self.sweeps, stop.clone()),
        );
        service::run_until_stopped("payments", self.server, workers, self.relay, pool, stop).await
    }
}
