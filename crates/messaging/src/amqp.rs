//! The broker side of GoZon: connection settings, the queue topology both services declare, and
//! a connect loop that waits for RabbitMQ instead of crashing.
//!
//! Each long-running role (the outbox relay, each consumer) owns its own connection and rebuilds
//! it — connection, channel, topology, consumer — whenever it breaks. lapin's automatic recovery
//! stays off: the roles own their lifecycle (see `shared/TRAPS.md`).

use backon::Retryable;
use futures::StreamExt;
use lapin::{
    Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, ShortString},
    uri::AMQPUri,
};
use std::{
    path::PathBuf,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio_util::sync::CancellationToken;

/// Longest wait for the broker to accept a connection (a black-holed address would otherwise
/// hold a role until the kernel gives up).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the broker is and what the queues are called.
#[derive(Debug, Clone, clap::Args)]
pub struct BrokerSettings {
    /// AMQP URL of RabbitMQ (the vhost `/` is written `%2f`), or a comma-separated list of the
    /// nodes of a cluster: each role connects to the first that answers, and when its node dies
    /// or is cut off, to the next.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

    /// A file holding the password of `AMQP_URL`'s user, read at every connection (it then
    /// replaces any password in the URL): a secret mounted into a container rather than written
    /// into its environment.
    #[arg(long, env = "AMQP_PASSWORD_FILE")]
    pub amqp_password_file: Option<PathBuf>,

    /// Queue of payment requests, orders → payments.
    #[arg(long, env = "ORDER_PAYMENTS_QUEUE", default_value = "order.payments")]
    pub order_payments_queue: String,

    /// Queue of payment results, payments → orders.
    #[arg(long, env = "PAYMENT_STATUS_QUEUE", default_value = "payment.status")]
    pub payment_status_queue: String,

    /// Queue of refund requests, orders → payments.
    #[arg(long, env = "ORDER_REFUNDS_QUEUE", default_value = "order.refunds")]
    pub order_refunds_queue: String,

    /// Queue of refund results, payments → orders.
    #[arg(long, env = "REFUND_STATUS_QUEUE", default_value = "refund.status")]
    pub refund_status_queue: String,

    /// Seconds between AMQP heartbeats, unless an address's URL sets its own (`?heartbeat=`).
    /// A connection whose node went silent — partitioned away, paused — is given up after two
    /// missed heartbeats (10 s), and the role moves to another node; RabbitMQ's own default
    /// (60 s) would leave it waiting two minutes. RabbitMQ advises 5–20 s.
    #[arg(long, env = "AMQP_HEARTBEAT_SECS", default_value_t = 5)]
    pub heartbeat_secs: u16,

    /// Deliveries of one message after which the broker dead-letters it: a backstop against
    /// crash loops, far above any redelivery a restart or a broker failover causes.
    #[arg(long, env = "AMQP_DELIVERY_LIMIT", default_value_t = 50)]
    pub delivery_limit: i64,

    /// Delete a queue after it has been unused this long (milliseconds). Off by default; the
    /// tests set it so that the queues they create clean themselves up.
    #[arg(long, env = "AMQP_QUEUE_EXPIRES_MS")]
    pub queue_expires_ms: Option<i64>,

    /// Where the next connection attempt of this process starts in the list of addresses: just
    /// after the node used last, so a role that lost its node tries the others first, and the
    /// roles of one process spread over the nodes. It begins at the process id, which spreads
    /// the processes too: the loss of one node then stalls a share of the roles, not all.
    #[arg(skip = Arc::new(AtomicUsize::new(std::process::id() as usize)))]
    pub next_address: Arc<AtomicUsize>,

    /// Declare the queues and exchanges at start (`true`, the default: whichever service starts
    /// first creates them). `false` where an operator provisions them (`gozon provision-broker`)
    /// and the services' own logins may not configure anything: they then only check that the
    /// topology is there, and wait for it if not.
    #[arg(long = "amqp-declare-topology", env = "AMQP_DECLARE_TOPOLOGY", default_value_t = true, action = clap::ArgAction::Set)]
    pub declare_topology: bool,
}

impl BrokerSettings {
    /// The broker addresses `AMQP_URL` lists, in order.
    pub fn addresses(&self) -> Vec<&str> {
        addresses(&self.amqp_url)
    }

    /// One attempt at each address in turn, starting after the one used last; the first
    /// connection made, or the last error.
    pub async fn connect_once(&self, role: &str) -> Result<Connection, String> {
        let addresses = self.addresses();
        let start = self.next_address.load(Ordering::Relaxed);
        let properties =
            ConnectionProperties::default().with_connection_name(format!("gozon {role}").into());
        // Read at every attempt: a password changed in its file is used from the next one on.
        let password = match &self.amqp_password_file {
            None => None,
            Some(file) => match std::fs::read_to_string(file) {
                Ok(password) => Some(password.trim().to_owned()),
                Err(error) => return Err(format!("the password file {}: {error}", file.display())),
            },
        };
        let mut failure = "no broker address configured".to_owned();
        for offset in 0..addresses.len() {
            let index = (start + offset) % addresses.len();
            let mut uri = match AMQPUri::from_str(addresses[index]) {
                Ok(uri) => uri,
                Err(error) => {
                    failure = format!("node {index}: not an AMQP URL: {error}");
                    continue;
                }
            };
            uri.query.heartbeat.get_or_insert(self.heartbeat_secs);
            if let Some(password) = &password {
                password.clone_into(&mut uri.authority.userinfo.password);
            }
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT,
                Connection::connect_uri(uri, properties.clone()),
            )
            .await;
            match attempt {
                Ok(Ok(connection)) => {
                    self.next_address.store(index + 1, Ordering::Relaxed);
                    if addresses.len() > 1 {
                        tracing::info!(role, node = index, "connected to the broker");
                    }
                    return Ok(connection);
                }
                Ok(Err(error)) => failure = format!("node {index}: {error}"),
                Err(_) => failure = format!("node {index}: no answer within {CONNECT_TIMEOUT:?}"),
            }
        }
        Err(failure)
    }
    /// The dead-letter queue of `queue`.
    pub fn dead_letter_queue(queue: &str) -> String {
        format!("{queue}.dlq")
    }

    /// The work queues (each with a dead-letter queue and a publish exchange).
    pub fn work_queues(&self) -> [&str; 4] {
        [
            &self.order_payments_queue,
            &self.payment_status_queue,
            &self.order_refunds_queue,
            &self.refund_status_queue,
        ]
    }

    /// Whether `queue` is one of the work queues.
    pub fn is_work_queue(&self, queue: &str) -> bool {
        self.work_queues().contains(&queue)
    }

    /// The exchange messages for `queue` are published to: a direct exchange bound to `queue`
    /// alone. Publishing through it rather than the default exchange lets the broker's
    /// permissions say who may send what (write permission is per exchange: whoever may
    /// publish to the default exchange may publish to every queue).
    pub fn publish_exchange(queue: &str) -> String {
        format!("{queue}.exchange")
    }

    /// The topology as [`declare_topology`](Self::declare_topology) leaves it, or, with
    /// `declare_topology` off, a check that it is there (passive declarations need no
    /// permission; a missing queue or exchange closes the channel, and the role retries).
    pub async fn ensure_topology(&self, channel: &Channel) -> lapin::Result<()> {
        if self.declare_topology {
            return self.declare_topology(channel).await;
        }
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        for queue in self.work_queues() {
            channel
                .queue_declare(queue.into(), passive, FieldTable::default())
                .await?;
            channel
                .exchange_declare(
                    Self::publish_exchange(queue).as_str().into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    /// Declares the work queues, their dead-letter queues and their publish exchanges.
    /// Idempotent, and identical in both services, so whichever starts first creates them.
    ///
    /// Work queues are quorum queues: durable, replicated in a cluster, with a delivery limit,
    /// and dead-lettering `at-least-once` so that a message moved to the DLQ cannot be lost on
    /// the way.
    pub async fn declare_topology(&self, channel: &Channel) -> lapin::Result<()> {
        for queue in self.work_queues() {
            let dlq = Self::dead_letter_queue(queue);
            let mut dlq_args = self.common_arguments();
            dlq_args.insert("x-queue-type".into(), long_string("quorum"));
            channel
                .queue_declare(
                    dlq.as_str().into(),
                    QueueDeclareOptions::durable(),
                    dlq_args,
                )
                .await?;

            let mut args = self.common_arguments();
            args.insert("x-queue-type".into(), long_string("quorum"));
            args.insert("x-dead-letter-exchange".into(), long_string(""));
            args.insert("x-dead-letter-routing-key".into(), long_string(&dlq));
            args.insert(
                "x-dead-letter-strategy".into(),
                long_string("at-least-once"),
            );
            args.insert("x-overflow".into(), long_string("reject-publish"));
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongLongInt(self.delivery_limit),
            );
            channel
                .queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
                .await?;
            let exchange = Self::publish_exchange(queue);
            channel
                .exchange_declare(
                    exchange.as_str().into(),
                    ExchangeKind::Direct,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            channel
                .queue_bind(
                    queue.into(),
                    exchange.as_str().into(),
                    queue.into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        Ok(())
    }

    fn common_arguments(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(ms) = self.queue_expires_ms {
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        args
    }

    /// Connects to one of the addresses, retrying with backoff (and a log line per round) until
    /// one answers. Returns `None` only when `stop` is cancelled first.
    pub async fn connect(&self, role: &str, stop: &CancellationToken) -> Option<Connection> {
        let connect = || self.connect_once(role);
        tokio::select! {
            _ = stop.cancelled() => None,
            connection = connect
                .retry(crate::retry::unavailable())
                .notify(|error, delay| {
                    tracing::warn!(role, %error, ?delay, "broker unreachable; retrying");
                }) => connection.ok(),
        }
    }
}

/// Resolves once `connection` can no longer be used, with the reason: an error event, or a state
/// other than connected, checked every second as well — a consumer stream has been seen to stay
/// silent forever after its connection died (found by `make chaos`; see also TRAPS.md). Every
/// role selects on this beside its work, and rebuilds its connection when it fires.
pub async fn lost(connection: &Connection) -> String {
    let mut events = connection.events_listener();
    let mut check = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(lapin::Event::Error(error)) => return error.to_string(),
                Some(_) => {}
                None => return "the connection's event stream ended".to_owned(),
            },
            _ = check.tick() => if !connection.status().connected() {
                let status = connection.status();
                let state = if status.reconnecting() { "reconnecting" }
                    else if status.closing() || status.closed() { "closed" }
                    else if status.errored() { "errored" }
                    else { "not connected" };
                return format!("the connection is {state}");
            },
        }
    }
}

/// Closes `connection`, giving the broker a moment to answer: a dead connection cannot.
pub async fn close(connection: &Connection, reason: &str) {
    let _ =
        tokio::time::timeout(Duration::from_secs(2), connection.close(200, short(reason))).await;
}

/// The addresses of a comma-separated list.
pub fn addresses(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .collect()
}

fn long_string(value: &str) -> AMQPValue {
    AMQPValue::LongString(value.into())
}

/// A short string for lapin's method arguments.
pub fn short(value: &str) -> ShortString {
    value.into()
}

/// Whether each broker role of a service currently holds a live connection; `/readyz` reads it.
#[derive(Debug, Clone, Default)]
pub struct BrokerHealth {
    roles: Arc<std::sync::Mutex<Vec<NamedFlag>>>,
}

type NamedFlag = (String, Arc<AtomicBool>);

impl BrokerHealth {
    /// Registers a role, initially disconnected, and returns its flag.
    pub fn register(&self, role: &str) -> RoleHealth {
        let flag = Arc::new(AtomicBool::new(false));
        if let Ok(mut roles) = self.roles.lock() {
            roles.push((role.to_owned(), flag.clone()));
        }
        let health = RoleHealth {
            flag,
            role: role.to_owned(),
        };
        health.set(false);
        health
    }

    /// The roles that are not connected right now.
    pub fn disconnected(&self) -> Vec<String> {
        self.roles
            .lock()
            .map(|roles| {
                roles
                    .iter()
                    .filter(|(_, up)| !up.load(Ordering::Relaxed))
                    .map(|(name, _)| name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// One role's connected flag.
#[derive(Debug, Clone)]
pub struct RoleHealth {
    flag: Arc<AtomicBool>,
    role: String,
}

impl RoleHealth {
    /// Records whether the role is connected, for `/readyz` and as the gauge
    /// `broker_role_connected{role}` (1 or 0).
    pub fn set(&self, connected: bool) {
        self.flag.store(connected, Ordering::Relaxed);
        metrics::gauge!("broker_role_connected", "role" => self.role.clone())
            .set(f64::from(u8::from(connected)));
    }
}
