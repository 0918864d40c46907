//! What the HTTP handlers share.

use crate::{live::Live, placing::Placing};
use axum::extract::FromRef;
use gozon_http::auth::TokenVerifier;
use gozon_messaging::outbox::Wakeup;
use sqlx::PgPool;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    /// Where `POST /orders` hands its order, to be committed with others.
    pub placing: Placing,
    /// Woken after a handler commits outbox rows.
    pub wakeup: Wakeup,
    pub queues: Queues,
    /// How long a new order may wait for its payment.
    pub payment_deadline: Duration,
    /// How long to wait for an answer of payments before asking again.
    pub remind_after: Duration,
    pub live: Live,
    /// Whose `X-Forwarded-For` names the client (live streams are limited per client).
    pub trusted_proxies: gozon_http::client::TrustedProxies,
    pub verifier: TokenVerifier,
}

/// The queues the orders service writes to.
#[derive(Debug, Clone)]
pub struct Queues {
    pub order_payments: String,
    pub order_refunds: String,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}
