//! The runtime every GoZon service shares: one HTTP server, one outbox relay and one consumer,
//! started together and stopped in an order that loses nothing.

use crate::{
    amqp::{BrokerHealth, BrokerSettings},
    consumer::{Consumer, ConsumerSettings, Handler},
    http::{self, Health},
    outbox::{Relay, RelaySettings, Wakeup},
};
use axum::Router;
use futures::future::BoxFuture;
use sqlx::PgPool;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

/// Waits for a task that was told to stop, for at most [`http::SHUTDOWN_GRACE`]; then aborts it.
/// A stop never hangs on a task stuck in I/O: unacknowledged messages go back to the queue,
/// unconfirmed outbox rows stay unsent, and the next start picks both up.
async fn finish(task: &str, handle: AbortOnDropHandle<()>) {
    if tokio::time::timeout(http::SHUTDOWN_GRACE, handle)
        .await
        .is_err()
    {
        tracing::warn!(task, grace = ?http::SHUTDOWN_GRACE, "did not stop in time; aborted");
    }
}

/// A long-running task of a service, started by [`Service::run_until_stopped`].
pub type BackgroundTask = Box<dyn FnOnce(CancellationToken) -> BoxFuture<'static, ()> + Send>;

/// The parts a service brings to the runtime.
pub struct Parts<H> {
    /// Used in log lines and health reports, e.g. `"orders"`.
    pub name: &'static str,
    pub listen_addr: String,
    pub pool: PgPool,
    /// The service's own routes, state applied.
    pub api: Router,
    /// The queue this service consumes and the handler of its messages.
    pub consumes: String,
    pub handler: H,
    /// Further long-running tasks of the service, started with it and given its stop token.
    pub background: Vec<BackgroundTask>,
    /// The wake-up its handlers signal after committing outbox rows.
    pub wakeup: Wakeup,
    pub broker: BrokerSettings,
    pub relay: RelaySettings,
    pub consumer: ConsumerSettings,
}

/// A service, bound and assembled, ready to run.
pub struct Service<H> {
    name: &'static str,
    listener: TcpListener,
    router: Router,
    relay: Relay,
    consumer: Consumer<H>,
    background: Vec<BackgroundTask>,
    pool: PgPool,
}

impl<H: Handler> Service<H> {
    /// Binds the listener and assembles the server, the relay and the consumer.
    pub async fn new(parts: Parts<H>) -> std::io::Result<Self> {
        let listener = TcpListener::bind(&parts.listen_addr)
            .await
            .map_err(|error| {
                std::io::Error::new(
                    error.kind(),
                    format!("cannot listen on {}: {error}", parts.listen_addr),
                )
            })?;
        let broker_health = BrokerHealth::default();
        let router = http::finish_router(
            parts.api,
            Health {
                pool: parts.pool.clone(),
                broker: broker_health.clone(),
            },
        );
        let relay = Relay {
            pool: parts.pool.clone(),
            broker: parts.broker.clone(),
            settings: parts.relay,
            wakeup: parts.wakeup,
            health: broker_health.register("outbox relay"),
        };
        let consumer = Consumer {
            health: broker_health.register(&format!("consumer of {}", parts.consumes)),
            queue: parts.consumes,
            pool: parts.pool.clone(),
            broker: parts.broker,
            settings: parts.consumer,
            handler: Arc::new(parts.handler),
        };
        Ok(Self {
            name: parts.name,
            listener,
            router,
            relay,
            consumer,
            background: parts.background,
            pool: parts.pool,
        })
    }

    /// The port the HTTP server is bound to (useful when it was asked for port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Serves until `stop` fires. Then the server finishes its in-flight requests and the
    /// consumer its in-flight messages; only after both does the relay stop, so it publishes
    /// what they committed last.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> std::io::Result<()> {
        // Abort-on-drop: if this future is dropped (a crash, in tests), its tasks die with it.
        let relay_stop = CancellationToken::new();
        let relay = AbortOnDropHandle::new(tokio::spawn(self.relay.run(relay_stop.clone())));
        let consumer = AbortOnDropHandle::new(tokio::spawn(self.consumer.run(stop.clone())));
        let background: Vec<_> = self
            .background
            .into_iter()
            .map(|task| AbortOnDropHandle::new(tokio::spawn(task(stop.clone()))))
            .collect();
        tracing::info!(service = self.name, address = %self.listener.local_addr()?, "listening");
        let served = http::serve(self.listener, self.router, stop).await;
        finish("consumer", consumer).await;
        for task in background {
            finish("background task", task).await;
        }
        relay_stop.cancel();
        finish("outbox relay", relay).await;
        self.pool.close().await;
        tracing::info!(service = self.name, "stopped");
        served
    }
}
