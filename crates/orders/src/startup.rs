//! The orders service as one value: built from its settings, run until stopped.

use crate::{
    Settings, deadlines,
    live::{self, Live},
    payment_results::ApplyPaymentResults,
    placing::Placing,
    refund_results::ApplyRefundResults,
    reminders::Reminders,
    routes,
    state::{AppState, Queues},
};
use gozon_http::auth::TokenVerifier;
use gozon_messaging::{Role, consumer::Consumer, outbox::Relay, signing::PeerKeys};
use gozon_runtime::{
    db::PoolSettings,
    retention::{self, Sweep},
    service::{self, Core, Server},
};
use sqlx::PgPool;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Every migration of this service's database, the shared tables' included.
pub fn schema() -> sqlx::migrate::Migrator {
    gozon_runtime::db::schema(&MIGRATOR)
}

/// The orders service, bound and ready to run: its HTTP server, the consumers of payment and
/// refund results, the relay of its requests, the live-status listener, the deadline sweep and
/// the retention sweeps.
pub struct Application {
    core: Core,
    verifier: TokenVerifier,
    server: Server,
    relay: Relay,
    payment_results: Consumer<ApplyPaymentResults>,
    refund_results: Consumer<ApplyRefundResults>,
    live: Live,
    sweeps: Vec<Sweep>,
    deadline_sweep_interval: Duration,
    reminders: Reminders,
}

impl Application {
    /// Waits for the database (creating and migrating it), binds the listener and assembles the
    /// relay and the consumers. Fails with [`gozon_runtime::db::BootstrapError::Cancelled`] if
    /// `stop` fires while waiting.
    pub async fn build(settings: Settings, stop: &CancellationToken) -> anyhow::Result<Self> {
        let core = Core::build(
            Role::Orders,
            &PoolSettings::of_service(settings.database_url, settings.db_max_connections),
            &MIGRATOR,
            settings.broker,
            PeerKeys::from_setting(&settings.payments_message_keys_url)?,
            stop,
        )
        .await?;
        let broker = &core.broker;
        ApplyPaymentResults::count_from_zero();
        let payment_results = core.consumer(
            &broker.payment_status_queue,
            ApplyPaymentResults {
                payment_status_queue: broker.payment_status_queue.clone(),
                order_refunds_queue: broker.order_refunds_queue.clone(),
                wakeup: core.wakeup.clone(),
                remind_after: settings.remind_after,
            },
            &settings.consumer,
        );
        let refund_results = core.consumer(
            &broker.refund_status_queue,
            ApplyRefundResults {
                refund_status_queue: broker.refund_status_queue.clone(),
            },
            &settings.consumer,
        );
        let relay = core.relay(settings.relay);
        let live = Live::new(settings.live);
        let pool = core.pool.clone();
        let verifier = TokenVerifier::new(&settings.auth, Default::default());
        let state = AppState {
            pool: pool.clone(),
            placing: Placing::start(
                pool.clone(),
                settings.place_writers,
                core.wakeup.clone(),
                settings.remind_after,
            ),
            wakeup: core.wakeup.clone(),
            queues: Queues {
                order_payments: broker.order_payments_queue.clone(),
                order_refunds: broker.order_refunds_queue.clone(),
            },
            payment_deadline: settings.payment_deadline,
            remind_after: settings.remind_after,
            live: live.clone(),
            trusted_proxies: settings.trusted_proxies.clone(),
            verifier: verifier.clone(),
        };
        let router = core.router(routes::router().with_state(state));
        let reminders = Reminders {
            pool,
            order_payments_queue: broker.order_payments_queue.clone(),
            order_refunds_queue: broker.order_refunds_queue.clone(),
            after: settings.remind_after,
            interval: settings.reminder_sweep_interval,
            wakeup: core.wakeup.clone(),
        };
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
            payment_results,
            refund_results,
            live,
            sweeps: settings.retention.shared_sweeps(),
            deadline_sweep_interval: settings.deadline_sweep_interval,
            reminders,
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
        let pool = &self.core.pool;
        let mut workers = self.core.workers(&self.verifier, &stop);
        workers.spawn(
            "consumer of payment results",
            self.payment_results.run(stop.clone()),
        );
        workers.spawn(
            "consumer of refund results",
            self.refund_results.run(stop.clone()),
        );
        workers.spawn(
            "live status listener",
            live::listen(pool.clone(), self.live, stop.clone()),
        );
        workers.spawn(
            "payment deadline sweep",
            deadlines::run(pool.clone(), self.deadline_sweep_interval, stop.clone()),
        );
        workers.spawn("reminders", self.reminders.run(stop.clone()));
        workers.spawn(
            "retention",
            retention::run(pool.clone(), self.sweeps, stop.clone()),
        );
        let pool = pool.clone();
        service::run_until_stopped("orders", self.server, workers, self.relay, pool, stop).await
    }
}
