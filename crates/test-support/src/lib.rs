//! What the integration tests share: private databases and queue names per test, waits
//! on conditions (never fixed sleeps), raw access to the broker, and a TCP proxy that can cut a
//! service's connections to PostgreSQL or RabbitMQ without touching the shared servers.
//!
//! Tests talk to the real PostgreSQL and RabbitMQ, at `TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432`) and `TEST_AMQP_URL` (default
//! `amqp://guest:guest@127.0.0.1:5672/%2f`).

mod broker;
mod issuer;
mod names;
mod peer;
mod proxy;
mod sse;

pub use broker::Broker;
pub use issuer::TestIssuer;
pub use names::{Names, TestNames, create_database_from_template};
pub use peer::TestPeer;
pub use proxy::TcpProxy;
pub use sse::{SseEvent, SseStream};

use std::{future::Future, time::Duration};

/// Every database and queue name a test creates starts with this, so a crashed test's leftovers
/// can be recognised as ours and removed.
pub const PREFIX: &str = "gozon_test_";

/// Serves `document` at `path` on a port of its own until the handle is dropped; its URL.
pub(crate) async fn serve_json(
    path: &str,
    document: impl serde::Serialize + Clone + Send + Sync + 'static,
) -> (String, tokio_util::task::AbortOnDropHandle<()>) {
    let router = axum::Router::new().route(
        path,
        axum::routing::get(move || std::future::ready(axum::Json(document.clone()))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a port");
    let port = listener.local_addr().expect("an address").port();
    let server = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    }));
    (format!("http://127.0.0.1:{port}{path}"), server)
}

/// A port nothing listens on right now (for a process the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// `host:port` of a `scheme://[user@]host:port[/…]` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

pub fn postgres_base_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// Polls `check` every 20 ms until it returns `Some`, and panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A service started in-process by a test.
pub struct Running {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub pool: sqlx::PgPool,
    pub stop: tokio_util::sync::CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

/// Runs a built service — `serve` is its `run_until_stopped` — until its `stop` fires, and
/// waits until its `/readyz` on `port` says ready.
pub async fn run<F>(
    port: u16,
    pool: sqlx::PgPool,
    serve: impl FnOnce(tokio_util::sync::CancellationToken) -> F,
) -> Running
where
    F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let base = format!("http://127.0.0.1:{port}");
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = serve(stop.clone());
    let task = tokio::spawn(async move { serving.await.expect("service ran") });
    let http = reqwest::Client::new();
    eventually("service ready", Duration::from_secs(20), || async {
        let response = http.get(format!("{base}/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;
    Running {
        base,
        pool,
        stop,
        task,
    }
}
