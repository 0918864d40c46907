//! What the HTTP handlers share.

use crate::{limits::Limits, passwords::Passwords};
use gozon_http::{auth::AuthSettings, client::TrustedProxies, clock::Clock};
use sqlx::PgPool;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub passwords: Passwords,
    pub limits: Limits,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    pub auth: AuthSettings,
    pub token_ttl: Duration,
    pub cookie_secure: bool,
    /// What tokens and limits tell the time by.
    pub clock: Clock,
}
