//! Builds the gateway from its settings.

use crate::{Settings, proxy};
use anyhow::Context;
use axum::{
    Router,
    routing::{any, get},
};
use gozon_shared::http;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::services::{ServeDir, ServeFile};

/// The gateway, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let upstreams = proxy::Upstreams::new(
            proxy::Pool::parse(&settings.orders_url)?,
            proxy::Pool::parse(&settings.payments_url)?,
            Duration::from_millis(settings.upstream_timeout_ms),
        );
        let index = std::path::Path::new(&settings.ui_dir).join("index.html");
        let ui = ServeDir::new(&settings.ui_dir).fallback(ServeFile::new(index));
        let router = Router::new()
            .route("/orders", any(proxy::forward))
            .route("/orders/{*rest}", any(proxy::forward))
            .route("/payments", any(proxy::forward))
            .route("/payments/{*rest}", any(proxy::forward))
            .with_state(upstreams)
            .route(
                "/healthz",
                get(|| async { axum::Json(serde_json::json!({ "status": "alive" })) }),
            )
            .fallback_service(ui);
        let router = http::traced(router);
        let listener = TcpListener::bind(&settings.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
        Ok(Self { listener, router })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `stop` fires, then lets in-flight requests finish.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> std::io::Result<()> {
        tracing::info!(address = %self.listener.local_addr()?, "gateway listening");
        http::serve(self.listener, self.router, stop).await
    }
}
