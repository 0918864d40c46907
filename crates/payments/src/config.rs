//! Every setting of the payments service, each with its environment variable and default.

use gozon_http::auth::AuthSettings;

use gozon_messaging::{amqp::BrokerSettings, consumer::ConsumerSettings, outbox::RelaySettings};

use gozon_runtime::retention::RetentionSettings;

/// Settings of the payments service.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "GoZon payments service", args_override_self = true)]
pub struct Settings {
    /// Address the payments HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "PAYMENTS_LISTEN_ADDR", default_value = "127.0.0.1:8082")]
    pub listen_addr: String,

    /// PostgreSQL URL of the payments database; the database is created if missing.
    #[arg(
        long,
        env = "PAYMENTS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/gozon_payments"
    )]
    pub database_url: String,

    /// Most connections the payments service opens to its database.
    #[arg(long, env = "PAYMENTS_DB_MAX_CONNECTIONS", default_value_t = 10)]
    pub db_max_connections: u32,

    /// Where the orders service publishes its message keys (`GET /messaging/keys`; several
    /// instances' URLs comma-separated), or those keys themselves (its answer, a JSON object): requests are accepted only under those keys.
    #[arg(
        long,
        env = "ORDERS_MESSAGE_KEYS_URL",
        default_value = "http://127.0.0.1:8081/messaging/keys"
    )]
    pub orders_message_keys_url: String,

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
    pub broker: BrokerSettings,

    #[command(flatten)]
    pub relay: RelaySettings,

    #[command(flatten)]
    pub consumer: ConsumerSettings,

    #[command(flatten)]
    pub retention: RetentionSettings,

    /// How often each instance looks for parked payment requests past their deadline, whose
    /// predecessor never came (e.g. `1s`).
    #[arg(long, env = "PARKED_SWEEP_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub parked_sweep_interval: std::time::Duration,

    /// Hours a processed message id stays in the inbox. Far longer than any redelivery takes
    /// (seconds); a request re-sent after that is still answered from the `payments` table,
    /// which is never pruned.
    #[arg(long, env = "INBOX_RETENTION_HOURS", default_value_t = 336)]
    pub inbox_retention_hours: u64,
}
