//! What the integration tests share: a private database and private queue names per test, waits
//! on conditions (never fixed sleeps), raw access to the broker, and a TCP proxy that can cut a
//! service's connections to PostgreSQL or RabbitMQ without touching the shared servers.
//!
//! Tests talk to the real PostgreSQL and RabbitMQ, at `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432`) and `TEST_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`).

mod issuer;
mod peer;
mod proxy;
mod sse;

pub use issuer::TestIssuer;
pub use peer::TestPeer;
pub use proxy::TcpProxy;
pub use sse::{SseEvent, SseStream};

use gozon_messaging::amqp::short;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeleteOptions,
    },
};
use std::{future::Future, time::Duration};
use uuid::Uuid;

/// Every database and queue name a test creates starts with this, so a crashed test's leftovers
/// can be recognised as ours and removed.
pub const PREFIX: &str = "gozon_test_";

/// Serves `document` at `path` on a port of its own until the handle is dropped; its URL.
pub(crate) async fn serve_json(
    path: &str,
    document: impl serde::Serialize + Clone + Send + Sync + 'static,
) -> (String, tokio_util::task::AbortOnDropHandle<()>) {
    let router = axum::Router::new().route(
        path,
        axum::routing::get(move || std::future::ready(axum::Json(document.clone()))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("an address").port();
    let server = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    }));
    (format!("http://127.0.0.1:{port}{path}"), server)
}

/// A port nothing listens on right now (for a process the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// `host:port` of a `scheme://[user@]host:port[/…]` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

pub fn postgres_base_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// The names one test owns: three databases and four queues (with their dead-letter queues).
#[derive(Debug, Clone)]
pub struct TestNames {
    pub id: String,
    pub identity_database_url: String,
    pub orders_database_url: String,
    pub payments_database_url: String,
    pub order_payments_queue: String,
    pub payment_status_queue: String,
    pub order_refunds_queue: String,
    pub refund_status_queue: String,
}

impl TestNames {
    pub fn new() -> Self {
        let id = format!("{PREFIX}{}", Uuid::new_v4().simple());
        let base = postgres_base_url();
        Self {
            identity_database_url: format!("{base}/{id}_identity"),
            orders_database_url: format!("{base}/{id}_orders"),
            payments_database_url: format!("{base}/{id}_payments"),
            order_payments_queue: format!("{id}.order.payments"),
            payment_status_queue: format!("{id}.payment.status"),
            order_refunds_queue: format!("{id}.order.refunds"),
            refund_status_queue: format!("{id}.refund.status"),
            id,
        }
    }

    /// Command-line arguments that point a service at this test's queues and the given database,
    /// on a free port, with queues that expire once the test has gone.
    pub fn service_args(&self, role: &str, database_url: &str, amqp_url: &str) -> Vec<String> {
        [
            role,
            "--listen-addr",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--db-max-connections",
            "4",
            "--amqp-url",
            amqp_url,
            "--order-payments-queue",
            &self.order_payments_queue,
            "--payment-status-queue",
            &self.payment_status_queue,
            "--order-refunds-queue",
            &self.order_refunds_queue,
            "--refund-status-queue",
            &self.refund_status_queue,
            "--queue-expires-ms",
            "600000",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    /// Broker settings naming this test's queues (which expire once the test has gone).
    pub fn broker(&self, amqp_url: String) -> gozon_messaging::amqp::BrokerSettings {
        gozon_messaging::amqp::BrokerSettings {
            amqp_url,
            amqp_password_file: None,
            order_payments_queue: self.order_payments_queue.clone(),
            payment_status_queue: self.payment_status_queue.clone(),
            order_refunds_queue: self.order_refunds_queue.clone(),
            refund_status_queue: self.refund_status_queue.clone(),
            heartbeat_secs: 5,
            delivery_limit: 50,
            queue_expires_ms: Some(600_000),
            next_address: Default::default(),
            declare_topology: true,
        }
    }

    /// The test's work queues.
    pub fn queues(&self) -> [&str; 4] {
        [
            &self.order_payments_queue,
            &self.payment_status_queue,
            &self.order_refunds_queue,
            &self.refund_status_queue,
        ]
    }

    /// Drops this test's databases and deletes its queues. Leftovers of a test that panicked
    /// expire on their own (queues) or are removed by `.ci/run` (databases named [`PREFIX`]…).
    pub async fn cleanup(&self) {
        if let Ok(mut admin) = admin_connection().await {
            for url in [
                &self.identity_database_url,
                &self.orders_database_url,
                &self.payments_database_url,
            ] {
                let name = url.rsplit('/').next().unwrap_or_default();
                let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await;
            }
        }
        if let Ok(broker) = Broker::connect().await {
            for queue in self.queues() {
                for name in [queue.to_owned(), format!("{queue}.dlq")] {
                    let _ = broker
                        .channel
                        .queue_delete(short(&name), QueueDeleteOptions::default())
                        .await;
                }
            }
            // Last: a test that tapped no queue has no tap, and a failed delete closes the channel.
            for queue in self.queues() {
                let _ = broker
                    .channel
                    .queue_delete(
                        short(&format!("{queue}.tap")),
                        QueueDeleteOptions::default(),
                    )
                    .await;
            }
        }
    }
}

impl Default for TestNames {
    fn default() -> Self {
        Self::new()
    }
}

async fn admin_connection() -> sqlx::Result<sqlx::PgConnection> {
    use sqlx::Connection as _;
    sqlx::PgConnection::connect(&format!("{}/postgres", postgres_base_url())).await
}

/// Polls `check` every 20 ms until it returns `Some`, and panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain connection to the test broker, for publishing and inspecting messages directly.
pub struct Broker {
    _connection: Connection,
    pub channel: Channel,
}

impl Broker {
    pub async fn connect() -> lapin::Result<Self> {
        Self::connect_to(&amqp_url()).await
    }

    /// A connection to the broker at `url` rather than the test broker.
    pub async fn connect_to(url: &str) -> lapin::Result<Self> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            _connection: connection,
            channel,
        })
    }

    /// Publishes `body` to `queue` (through the default exchange) as a persistent message with
    /// the given `message_id`, and waits for the broker's confirm.
    pub async fn publish(
        &self,
        queue: &str,
        message_id: Option<&str>,
        body: &[u8],
    ) -> lapin::Result<()> {
        self.publish_to("", queue, message_id, body).await
    }

    /// Publishes `body` to `queue` as [`publish`](Self::publish) does, signed by `peer` as its
    /// producer would sign it.
    pub async fn publish_signed(
        &self,
        queue: &str,
        message_id: Option<&str>,
        body: &[u8],
        peer: &TestPeer,
    ) -> lapin::Result<()> {
        let signature = peer.sign(queue, message_id.unwrap_or(""), body).await;
        self.publish_with("", queue, message_id, body, Some(&signature))
            .await
    }

    /// Publishes `body` to `exchange` with `routing_key` and waits for the broker's confirm.
    pub async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: Option<&str>,
        body: &[u8],
    ) -> lapin::Result<()> {
        self.publish_with(exchange, routing_key, message_id, body, None)
            .await
    }

    /// Publishes `body` to `exchange` with `routing_key`, with `signature` as its
    /// [`HEADER`](gozon_messaging::signing::HEADER) if given, and waits for the confirm.
    pub async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: Option<&str>,
        body: &[u8],
        signature: Option<&str>,
    ) -> lapin::Result<()> {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(short("application/json"));
        if let Some(id) = message_id {
            properties = properties.with_message_id(short(id));
        }
        if let Some(signature) = signature {
            let mut headers = lapin::types::FieldTable::default();
            headers.insert(
                short(gozon_messaging::signing::HEADER),
                lapin::types::AMQPValue::LongString(signature.into()),
            );
            properties = properties.with_headers(headers);
        }
        self.channel
            .basic_publish(
                short(exchange),
                short(routing_key),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?
            .await?;
        Ok(())
    }

    /// Takes messages from `queue` until `count` have arrived, waiting up to `timeout`; panics if
    /// fewer arrive.
    pub async fn take(
        &self,
        queue: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<(Option<String>, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut taken = Vec::new();
        while taken.len() < count {
            match self.drain(queue).await {
                Ok(more) => taken.extend(more),
                Err(error) => panic!("cannot read {queue}: {error}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} messages arrived in {queue} within {timeout:?}",
                taken.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        taken
    }

    /// Takes every message now in `queue` (acknowledging them) and returns their bodies and ids.
    pub async fn drain(&self, queue: &str) -> lapin::Result<Vec<(Option<String>, Vec<u8>)>> {
        Ok(self
            .drain_deliveries(queue)
            .await?
            .into_iter()
            .map(|delivery| {
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string());
                (id, delivery.data)
            })
            .collect())
    }

    /// Takes every message now in `queue` (acknowledging them), whole: properties and headers too.
    pub async fn drain_deliveries(
        &self,
        queue: &str,
    ) -> lapin::Result<Vec<lapin::message::Delivery>> {
        let mut taken = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(short(queue), BasicGetOptions::default())
            .await?
        {
            message
                .delivery
                .acker
                .ack(BasicAckOptions::default())
                .await?;
            taken.push(message.delivery);
        }
        Ok(taken)
    }

    /// Binds a queue of the test's own, `<queue>.tap`, to the exchange the services publish
    /// `queue`'s messages through, so that it receives a copy of every message published for
    /// `queue` from now on — what was published can be read even though the services consume the
    /// originals. Returns the tap's name; it expires ten minutes after its last use.
    pub async fn tap(&self, queue: &str) -> lapin::Result<String> {
        let tap = format!("{queue}.tap");
        let mut args = lapin::types::FieldTable::default();
        args.insert(
            "x-expires".into(),
            lapin::types::AMQPValue::LongLongInt(600_000),
        );
        self.channel
            .queue_declare(
                short(&tap),
                lapin::options::QueueDeclareOptions::durable(),
                args,
            )
            .await?;
        self.channel
            .queue_bind(
                short(&tap),
                short(&gozon_messaging::amqp::BrokerSettings::publish_exchange(
                    queue,
                )),
                short(queue),
                lapin::options::QueueBindOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await?;
        Ok(tap)
    }
}

/// A service started in-process by a test.
pub struct Running {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub pool: sqlx::PgPool,
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

/// Runs a built service — `serve` is its `run_until_stopped` — until its `stop` fires, and
/// waits until its `/readyz` on `port` says ready.
pub async fn run<F>(
    port: u16,
    pool: sqlx::PgPool,
    serve: impl FnOnce(tokio_util::sync::CancellationToken) -> F,
) -> Running
where
    F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let base = format!("http://127.0.0.1:{port}");
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = serve(stop.clone());
    let task = tokio::spawn(async move { serving.await.expect("service ran") });
    let http = reqwest::Client::new();
    eventually("service ready", Duration::from_secs(20), || async {
        let response = http.get(format!("{base}/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    Running {
        base,
        pool,
        stop,
        task,
    }
}

impl Broker {
    /// Messages in `queue` that no consumer holds (ready ones).
    pub async fn ready_count(&self, queue: &str) -> lapin::Result<u32> {
        let declared = self
            .channel
            .queue_declare(
                short(queue),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await?;
        Ok(declared.message_count())
    }
}
