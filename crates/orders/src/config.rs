//! Every setting of the orders service, each with its environment variable and default.

use crate::live::LiveSettings;
use gozon_shared::{
    amqp::BrokerSettings, auth::AuthSettings, consumer::ConsumerSettings, outbox::RelaySettings,
    retention::RetentionSettings,
};

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
