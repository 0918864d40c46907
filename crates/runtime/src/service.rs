//! How every GoZon service runs and stops: its HTTP server and its workers (consumers,
//! listeners, sweeps) until the stop signal; then the workers finish what they hold; only then
//! does the outbox relay stop, so that it publishes what they committed last.
//!
//! Orders and payments are built the same way around what they do differently: [`Core`] is
//! what both have — the database, the broker's settings and health, the relay's wake-up and the
//! message keys — and makes their consumers, their relay and their router. Each service's
//! `Application` (`build`, `port`, `run_until_stopped`) holds its own parts and hands them to
//! [`run_until_stopped`].

use crate::{
    db::{self, PoolSettings},
    health::Health,
};
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use futures::future::join_all;
use gozon_http::{
    self as http, ConnectionLimits,
    auth::{self, TokenVerifier},
    client::TrustedProxies,
};
use gozon_messaging::{
    Role,
    amqp::{BrokerHealth, BrokerSettings},
    consumer::{Consumer, ConsumerSettings, Handler},
    outbox::{Relay, RelaySettings, Wakeup},
    signing::{KeyRing, PeerKeys},
};
use sqlx::{PgPool, migrate::Migrator};
use std::{future::Future, time::Duration};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

/// What orders and payments both have: their database, their broker, the wake-up of their
/// relay, and the keys that sign their messages and check their peer's.
#[derive(Debug, Clone)]
pub struct Core {
    pub pool: PgPool,
    pub broker: BrokerSettings,
    pub health: BrokerHealth,
    pub wakeup: Wakeup,
    pub signatures: KeyRing,
}

impl Core {
    /// Waits for the database (creating and migrating it with `migrator`, after the shared
    /// tables' migrations), loads `role`'s message keys (making the first) and knows where its
    /// peer publishes its own. Fails with [`db::BootstrapError::Cancelled`] if `stop` fires while
    /// waiting.
    pub async fn build(
        role: Role,
        database: &PoolSettings,
        migrator: &Migrator,
        broker: BrokerSettings,
        peer: PeerKeys,
        stop: &CancellationToken,
    ) -> anyhow::Result<Self> {
        let pool = db::connect_and_migrate(database, migrator, stop).await?;
        let signatures = KeyRing::load(role, &pool, peer).await?;
        Ok(Self {
            pool,
            broker,
            health: BrokerHealth::default(),
            wakeup: Wakeup::default(),
            signatures,
        })
    }

    /// A consumer of `queue` applying its messages with `handler`.
    pub fn consumer<H: Handler>(
        &self,
        queue: &str,
        handler: H,
        settings: &ConsumerSettings,
    ) -> Consumer<H> {
        Consumer::new(
            queue,
            handler,
            &self.pool,
            &self.broker,
            settings,
            &self.health,
            &self.signatures,
        )
    }

    /// The relay of this service's outbox.
    pub fn relay(&self, settings: RelaySettings) -> Relay {
        Relay::new(
            &self.pool,
            &self.broker,
            settings,
            &self.wakeup,
            &self.health,
            &self.signatures,
        )
    }

    /// `api` with the health probes, `/metrics` and `GET /messaging/keys` (this service's
    /// public message keys), finished by [`gozon_http::finish_router`].
    pub fn router(&self, api: Router) -> Router {
        let keys = Router::new()
            .route("/messaging/keys", get(published_keys))
            .with_state(self.signatures.clone());
        router(
            api.merge(keys),
            Health {
                pool: self.pool.clone(),
                broker: self.health.clone(),
            },
        )
    }

    /// The workers every such service runs besides its own: keeping the message keys fresh, and
    /// the list of revoked tokens `verifier` refuses.
    pub fn workers(&self, verifier: &TokenVerifier, stop: &CancellationToken) -> Workers {
        let mut workers = Workers::default();
        workers.spawn(
            "message keys",
            self.signatures.clone().keep_fresh(stop.clone()),
        );
        workers.spawn(
            "revoked tokens",
            verifier
                .clone()
                .keep_revocations(auth::REVOCATIONS_EVERY, stop.clone()),
        );
        workers
    }
}

/// `GET /messaging/keys`: the public halves of this service's announced message keys.
async fn published_keys(State(signatures): State<KeyRing>) -> axum::response::Response {
    match signatures.published() {
        Some(published) => axum::Json(published).into_response(),
        None => http::Problem::new(StatusCode::SERVICE_UNAVAILABLE, "no message key loaded")
            .into_response(),
    }
}

/// How long the workers together, and then the relay, may take to stop once told. Beyond it a
/// task is aborted, which loses nothing: unacknowledged messages go back to their queue,
/// unconfirmed outbox rows stay unsent, and the next start picks both up.
pub const STOP_BOUND: Duration = Duration::from_secs(10);

/// A service's long-running tasks, each named, stopped together.
#[derive(Default)]
pub struct Workers {
    // Abort-on-drop: if the service's future is dropped (a crash, in tests), its tasks die too.
    running: Vec<(String, AbortOnDropHandle<()>)>,
}

impl Workers {
    /// Starts `task`, which must end soon after the stop token it was given fires.
    pub fn spawn(
        &mut self,
        name: impl Into<String>,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.running
            .push((name.into(), AbortOnDropHandle::new(tokio::spawn(task))));
    }

    /// Waits for every task at once, for at most `bound` in all; aborts and names the rest.
    pub async fn finish(self, bound: Duration) {
        let waits = self.running.into_iter().map(|(name, handle)| async move {
            if tokio::time::timeout(bound, handle).await.is_err() {
                tracing::warn!(task = name, ?bound, "did not stop in time; aborted");
            }
        });
        join_all(waits).await;
    }
}

/// A service's API with everything around it: the health probes and `/metrics`, then what
/// [`gozon_http::finish_router`] adds.
pub fn router(api: Router, health: Health) -> Router {
    http::finish_router(api.merge(crate::health::routes(health)))
}

/// The HTTP side of a service: its bound listener, its finished router, and the bounds of its
/// connections.
pub struct Server {
    pub listener: TcpListener,
    pub router: Router,
    pub limits: ConnectionLimits,
    /// The proxies (the gateway) whose connections are not counted per client.
    pub trusted: TrustedProxies,
}

impl Server {
    /// Binds `addr` for `router`.
    pub async fn bind(
        addr: &str,
        router: Router,
        limits: ConnectionLimits,
        trusted: TrustedProxies,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await.map_err(|error| {
            std::io::Error::new(error.kind(), format!("cannot listen on {addr}: {error}"))
        })?;
        Ok(Self {
            listener,
            router,
            limits,
            trusted,
        })
    }

    /// The port the server is bound to (useful when it was asked for port 0).
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }
}

/// Serves until `stop` fires, with `workers` already started on `stop` and `relay` started
/// here on a token of its own. Then the server finishes its in-flight requests and the workers
/// theirs, concurrently; only after both does the relay stop; last the pool closes.
pub async fn run_until_stopped(
    name: &'static str,
    server: Server,
    workers: Workers,
    relay: Relay,
    pool: PgPool,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let relay_stop = CancellationToken::new();
    let mut publishing = Workers::default();
    publishing.spawn("outbox relay", relay.run(relay_stop.clone()));
    tracing::info!(service = name, address = %server.listener.local_addr()?, "listening");
    let (served, ()) = tokio::join!(
        http::serve(
            server.listener,
            server.router,
            &server.limits,
            &server.trusted,
            stop.clone()
        ),
        async {
            stop.cancelled().await;
            workers.finish(STOP_BOUND).await;
        }
    );
    relay_stop.cancel();
    publishing.finish(STOP_BOUND).await;
    pool.close().await;
    tracing::info!(service = name, "stopped");
    served
}
