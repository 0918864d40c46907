//! Every setting of the orders service, each with its environment variable and default.

use crate::live::LiveSettings;
use gozon_http::auth::AuthSettings;
use gozon_messaging::{amqp::BrokerSettings, consumer::ConsumerSettings, outbox::RelaySettings};
use gozon_runtime::retention::RetentionSettings;
use std::time::Duration;

/// Settings of the orders service.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "GoZon orders service", args_override_self = true)]
pub struct Settings {
    /// Address the orders HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "ORDERS_LISTEN_ADDR", default_value = "127.0.0.1:8081")]
    pub listen_addr: String,

    /// PostgreSQL URL of the orders database; the database is created if missing.
    #[arg(
        long,
        env = "ORDERS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/gozon_orders"
    )]
    pub database_url: String,

    /// Most connections the orders service opens to its database.
    #[arg(long, env = "ORDERS_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Transactions placing orders at once; orders arriving while all are busy are committed
    /// together, in groups of up to 64 (`POST /orders`, see `placing`). Each holds a connection
    /// while it writes.
    #[arg(long, env = "ORDERS_PLACE_WRITERS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub place_writers: u16,

    /// How long a new order may wait for its payment (e.g. `15m`, `90s`). Past it, the order is
    /// cancelled with `payment_timeout` if still `NEW`, payments declines its request if it
    /// arrives later, and a debit that still happens is refunded.
    #[arg(long, env = "ORDER_PAYMENT_DEADLINE", default_value = "15m", value_parser = humantime::parse_duration)]
    pub payment_deadline: Duration,

    /// How often each instance looks for orders past their payment deadline (e.g. `1s`).
    #[arg(long, env = "ORDER_DEADLINE_SWEEP_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub deadline_sweep_interval: Duration,

    /// How long to wait for payments' answer — a payment's outcome, a refund — before asking
    /// again (e.g. `30s`); each later reminder waits twice as long, up to 16 times this.
    #[arg(long, env = "ORDER_REMIND_AFTER", default_value = "30s", value_parser = humantime::parse_duration)]
    pub remind_after: Duration,

    /// How often each instance looks for orders owed a reminder (e.g. `1s`).
    #[arg(long, env = "ORDER_REMINDER_SWEEP_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub reminder_sweep_interval: Duration,

    /// Where the payments service publishes its message keys (`GET /messaging/keys`; several
    /// instances' URLs comma-separated), or those keys themselves (its answer, a JSON object): results are accepted only under those keys.
    #[arg(
        long,
        env = "PAYMENTS_MESSAGE_KEYS_URL",
        default_value = "http://127.0.0.1:8082/messaging/keys"
    )]
    pub payments_message_keys_url: String,

    /// The proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` names
    /// the client, and whose connections are not counted per client: the gateway.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "127.0.0.1,::1",
          value_parser = gozon_http::client::TrustedProxies::parse)]
    pub trusted_proxies: gozon_http::client::TrustedProxies,

    #[command(flatten)]
    pub connections: gozon_http::ConnectionLimits,

    #[command(flatten)]
    pub auth: AuthSettings,

    #[command(flatten)]
    pub live: LiveSettings,

    #[command(flatten)]
    pub broker: BrokerSettings,

    #[command(flatten)]
    pub relay: RelaySettings,

    #[command(flatten)]
    pub consumer: ConsumerSettings,

    #[command(flatten)]
    pub retention: RetentionSettings,
}
