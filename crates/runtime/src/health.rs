//! What every service answers about itself: `GET /healthz` (alive), `GET /readyz` (its database
//! and broker connections) and `GET /metrics` (Prometheus text, with the outbox backlog read at
//! scrape time).

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use gozon_messaging::{amqp::BrokerHealth, outbox};
use sqlx::PgPool;
use std::time::Duration;

/// The probes' routes, to merge into a service's API before [`gozon_http::finish_router`].
pub fn routes(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

/// What `/readyz` checks: the service's database and its broker connections.
#[derive(Debug, Clone)]
pub struct Health {
    pub pool: PgPool,
    pub broker: BrokerHealth,
}

async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({ "status": "alive" }))
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    let database = tokio::time::timeout(
        Duration::from_secs(1),
        sqlx::query("SELECT 1").execute(&health.pool),
    )
    .await;
    let database_ok = matches!(database, Ok(Ok(_)));
    let broker_down = health.broker.disconnected();
    let ready = database_ok && broker_down.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ready { "ready" } else { "unavailable" },
        "database": if database_ok { "ok" } else { "unreachable" },
        "broker": if broker_down.is_empty() { "ok".to_owned() } else { format!("disconnected: {}", broker_down.join(", ")) },
    });
    (status, axum::Json(body))
}

/// `GET /metrics`.
async fn metrics(State(health): State<Health>) -> impl IntoResponse {
    outbox::record_backlog(&health.pool).await;
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        gozon_telemetry::metrics::render(),
    )
}
