//! Every setting of the identity service, each with its environment variable and default.

use gozon_http::auth::AuthSettings;

/// Settings of the identity service.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "GoZon identity service", args_override_self = true)]
pub struct Settings {
    /// Address the identity HTTP API listens on (port 0 picks a free port).
    #[arg(long, env = "IDENTITY_LISTEN_ADDR", default_value = "127.0.0.1:8083")]
    pub listen_addr: String,

    #[command(flatten)]
    pub database: DatabaseSettings,

    /// Most connections the identity service opens to its database.
    #[arg(long, env = "IDENTITY_DB_MAX_CONNECTIONS", default_value_t = 4)]
    pub db_max_connections: u32,

    /// Lifetime of a token and of the browser session, in seconds (at most 86400).
    #[arg(long, env = "AUTH_TOKEN_TTL_SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(60..=86_400))]
    pub token_ttl_seconds: u64,

    /// Login attempts allowed per user from one client address per minute (a burst of that
    /// many, then one per 60/N seconds); beyond them, 429 with `Retry-After`.
    #[arg(long, env = "AUTH_LOGIN_ATTEMPTS_PER_USER_AND_CLIENT", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_attempts_per_user_and_client: u32,

    /// Login attempts allowed per user from all clients together per minute: loose, so that
    /// one guesser cannot lock a user out from everywhere, but a bound on guessing one user.
    #[arg(long, env = "AUTH_LOGIN_ATTEMPTS_PER_USER", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_attempts_per_user: u32,

    /// Login attempts allowed per client address per minute, whatever the user.
    #[arg(long, env = "AUTH_LOGIN_ATTEMPTS_PER_CLIENT", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_attempts_per_client: u32,

    /// Sign-ups allowed per client address per minute (each costs a password hash).
    #[arg(long, env = "AUTH_SIGNUPS_PER_CLIENT", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub signups_per_client: u32,

    /// The proxies (addresses or CIDR ranges, comma-separated) whose `X-Forwarded-For` names
    /// the client: the gateway. A request from anywhere else is its TCP peer's.
    #[arg(long, env = "TRUSTED_PROXIES", default_value = "127.0.0.1,::1",
          value_parser = gozon_http::client::TrustedProxies::parse)]
    pub trusted_proxies: gozon_http::client::TrustedProxies,

    /// Mark the session cookie `Secure` (only sent over HTTPS). Off by default because the
    /// gateway serves plain HTTP; turn it on behind a TLS terminator.
    #[arg(long, env = "AUTH_COOKIE_SECURE", default_value_t = false)]
    pub cookie_secure: bool,

    #[command(flatten)]
    pub connections: gozon_http::ConnectionLimits,

    /// The issuer and audience written into tokens (the same variables the services check).
    #[command(flatten)]
    pub auth: AuthSettings,
}

/// Where the identity database is.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseSettings {
    /// PostgreSQL URL of the identity database; the database is created if missing.
    #[arg(
        long,
        env = "IDENTITY_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/gozon_identity"
    )]
    pub database_url: String,
}
