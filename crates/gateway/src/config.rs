//! Every setting of the gateway, each with its environment variable and default.

/// Settings of the gateway.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "GoZon gateway: the public entry, proxying the API and serving the web UI")]
pub struct Settings {
    /// Address the gateway listens on (port 0 picks a free port).
    #[arg(long, env = "GATEWAY_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: String,

    /// Base URL of the orders service; several, comma-separated, are used in turn.
    #[arg(
        long,
        env = "GATEWAY_ORDERS_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    pub orders_url: String,

    /// Base URL of the payments service; several, comma-separated, are used in turn.
    #[arg(
        long,
        env = "GATEWAY_PAYMENTS_URL",
        default_value = "http://127.0.0.1:8082"
    )]
    pub payments_url: String,

    /// Base URL of the identity service (`/auth…`); several, comma-separated, are used in turn.
    #[arg(
        long,
        env = "GATEWAY_IDENTITY_URL",
        default_value = "http://127.0.0.1:8083"
    )]
    pub identity_url: String,

    /// Directory of the built web UI.
    #[arg(long, env = "GATEWAY_UI_DIR", default_value = "web")]
    pub ui_dir: String,

    /// The proxies in front of the gateway (a TLS terminator; addresses or CIDR ranges,
    /// comma-separated) whose `X-Forwarded-For` names the client, and whose connections are not
    /// counted per client. None by default: the gateway is the edge.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "",
          value_parser = gozon_http::client::TrustedProxies::parse)]
    pub trusted_proxies: gozon_http::client::TrustedProxies,

    #[command(flatten)]
    pub connections: gozon_http::ConnectionLimits,

    /// Longest wait (milliseconds) for a service's response headers.
    #[arg(long, env = "GATEWAY_UPSTREAM_TIMEOUT_MS", default_value_t = 10_000)]
    pub upstream_timeout_ms: u64,
}
