//! What the HTTP handlers share.

use crate::{limits::LoginLimits, passwords::Passwords};
use gozon_http::{auth::AuthSettings, clock::Clock};
use sqlx::PgPool;
use std::time::Duration;

#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub passwords: Passwords,
    pub limits: LoginLimits,
    pub auth: AuthSettings,
    pub token_ttl: Duration,
    pub cookie_secure: bool,
    /// What tokens and limits tell the time by.
    pub clock: Clock,
}
