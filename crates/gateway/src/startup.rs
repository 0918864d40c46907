//! Builds the gateway from its settings.

use crate::{Settings, proxy};
use anyhow::Context;
use axum::{
    Router,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    response::IntoResponse,
    routing::{MethodRouter, any, get},
};
use gozon_http::{self as http, Problem};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tower_http::{
    services::{ServeDir, ServeFile},
    set_header::SetResponseHeaderLayer,
};

/// Longest file name the UI's file system can hold; a longer path segment cannot name a file.
const NAME_MAX: usize = 255;

/// Longest UI path served; the file system's own limit (4096) would make the file server fail.
const PATH_MAX: usize = 1024;

/// The web UI: the files of `dir`, and `index.html` for any other path. Read-only: other methods
/// get the 405 problem the services give. What the file server would turn into a 500 (an I/O
/// error) is a problem of its own first: a target that is not a path (400), a path over
/// [`PATH_MAX`] (414), a segment no file system can hold (404).
fn ui(dir: &str) -> MethodRouter {
    let index = std::path::Path::new(dir).join("index.html");
    let files = ServeDir::new(dir).fallback(ServeFile::new(index));
    get(move |request: Request| async move {
        let path = request.uri().path();
        // An authority-form target (`GET host:port`) has no path at all.
        if !path.starts_with('/') {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                "the request target must be a path, like /",
            )
            .into_response();
        }
        if path.len() > PATH_MAX {
            return Problem::new(
                StatusCode::URI_TOO_LONG,
                format!("paths are at most {PATH_MAX} bytes"),
            )
            .into_response();
        }
        if path.split('/').any(|segment| segment.len() > NAME_MAX) {
            return Problem::new(StatusCode::NOT_FOUND, "no such page").into_response();
        }
        match files.oneshot(request).await {
            Ok(response) => response.into_response(),
            Err(never) => match never {},
        }
    })
    .fallback(http::method_not_allowed)
}

/// What a browser may do with the gateway's answers: run and load only the gateway's own files
/// (no inline script, no other origin), never show them inside another site's frame, and take
/// each file as the type it is sent as.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; object-src 'none'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// Adds the headers that tell a browser [`CONTENT_SECURITY_POLICY`], `nosniff` and no referrer
/// to other sites, to every answer (the UI's files and the API's alike).
fn with_browser_protections(router: Router) -> Router {
    let set =
        |name, value| SetResponseHeaderLayer::if_not_present(name, HeaderValue::from_static(value));
    router
        .layer(set(
            header::CONTENT_SECURITY_POLICY,
            CONTENT_SECURITY_POLICY,
        ))
        .layer(set(header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .layer(set(header::REFERRER_POLICY, "same-origin"))
}

/// The gateway, bound and ready to run.
pub struct Application {
    listener: TcpListener,
    router: Router,
    connections: http::ConnectionLimits,
    trusted: http::client::TrustedProxies,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let upstreams = proxy::Upstreams::new(
            proxy::Pool::parse(&settings.identity_url)?,
            proxy::Pool::parse(&settings.orders_url)?,
            proxy::Pool::parse(&settings.payments_url)?,
            Duration::from_millis(settings.upstream_timeout_ms),
            settings.trusted_proxies.clone(),
        );
        let router = Router::new()
            .route("/orders", any(proxy::forward))
            .route("/orders/{*rest}", any(proxy::forward))
            .route("/payments", any(proxy::forward))
            .route("/payments/{*rest}", any(proxy::forward))
            .route("/auth/{*rest}", any(proxy::forward))
            .with_state(upstreams)
            .route(
                "/healthz",
                get(|| async { axum::Json(serde_json::json!({ "status": "alive" })) }),
            )
            .fallback_service(ui(&settings.ui_dir));
        let router = http::traced(with_browser_protections(router));
        let listener = TcpListener::bind(&settings.listen_addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen_addr))?;
        Ok(Self {
            listener,
            router,
            connections: settings.connections,
            trusted: settings.trusted_proxies,
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    /// Serves until `stop` fires, then lets in-flight requests finish.
    pub async fn run_until_stopped(self, stop: CancellationToken) -> std::io::Result<()> {
        tracing::info!(address = %self.listener.local_addr()?, "gateway listening");
        http::serve(
            self.listener,
            self.router,
            &self.connections,
            &self.trusted,
            stop,
        )
        .await
    }
}
