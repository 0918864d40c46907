//! Forwards an API request to its service and the response back.
//!
//! - the request body is read up to [`BODY_LIMIT_BYTES`] (413 beyond), so a request can be
//!   retried: an idempotent request that fails to connect, or finds its pooled connection closed,
//!   is sent once more;
//! - hop-by-hop headers (RFC 9110 §7.6.1, and any the `Connection` header names) are dropped both
//!   ways;
//! - the pooled connections idle out before the services' keep-alive does, so the gateway rarely
//!   reuses a connection the other side is closing;
//! - a service may have several instances (a comma-separated list of base URLs); requests take
//!   them in turn, and a retry goes to the next one;
//! - a service that cannot be reached or does not answer in time is a 502 or 504 problem;
//! - the browser's session cookie becomes an `Authorization: Bearer` header (unless the request
//!   has one), and no cookie goes further: the services check one thing, the bearer token;
//! - `X-Forwarded-For` is set to the client's address, replacing whatever the client sent: the
//!   TCP peer, or — behind a proxy in `TRUSTED_PROXIES` — the client that proxy names
//!   ([`gozon_http::client`]; identity limits login attempts per client by it).

use axum::{
    body::{Body, Bytes},
    extract::{ConnectInfo, Request, State},
    http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use gozon_http::{self as http, BODY_LIMIT_BYTES, Problem, auth::SESSION_COOKIE};
use gozon_telemetry::trace::TraceParent;
use http_body_util::Full;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

/// The instances of one service, taken in turn.
pub struct Pool {
    instances: Vec<Uri>,
    next: AtomicUsize,
}

impl Pool {
    /// From a comma-separated list of base URLs.
    pub fn parse(list: &str) -> Result<Self, axum::http::uri::InvalidUri> {
        let instances = list
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Uri>, _>>()?;
        Ok(Self {
            instances,
            next: AtomicUsize::new(0),
        })
    }

    fn pick(&self) -> Option<&Uri> {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        self.instances.get(turn % self.instances.len().max(1))
    }
}

/// Where API requests go.
pub struct Upstreams {
    pub identity: Pool,
    pub orders: Pool,
    pub payments: Pool,
    pub timeout: Duration,
    /// Whose `X-Forwarded-For` names the client.
    trusted: http::client::TrustedProxies,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Upstreams {
    pub fn new(
        identity: Pool,
        orders: Pool,
        payments: Pool,
        timeout: Duration,
        trusted: http::client::TrustedProxies,
    ) -> Arc<Self> {
        let client = Client::builder(TokioExecutor::new())
            // Below the services' idle limit (`http::HEADER_READ_TIMEOUT`), so the gateway drops
            // an idle connection before the service does.
            .pool_idle_timeout(http::HEADER_READ_TIMEOUT / 2)
            .pool_max_idle_per_host(64)
            .build_http();
        Arc::new(Self {
            identity,
            orders,
            payments,
            timeout,
            trusted,
            client,
        })
    }

    fn service_for(&self, path: &str) -> &Pool {
        if path.starts_with("/payments") {
            &self.payments
        } else if path.starts_with("/auth") {
            &self.identity
        } else {
            &self.orders
        }
    }
}

/// The handler behind every `/orders…` and `/payments…` route.
pub async fn forward(State(upstreams): State<Arc<Upstreams>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, BODY_LIMIT_BYTES).await {
        Ok(body) => body,
        Err(error) => return http::unreadable_body(&error).into_response(),
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let service = upstreams.service_for(parts.uri.path());
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    session_to_bearer(&mut headers);
    // The service's request span is a child of this one, when spans are exported.
    if let Some(trace) = TraceParent::of_current_span()
        && let Ok(value) = HeaderValue::from_str(&trace.to_string())
    {
        headers.insert(TraceParent::HEADER, value);
    }
    let client = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| upstreams.trusted.client(peer.ip(), &headers));
    headers.remove(X_FORWARDED_FOR);
    if let Some(client) = client
        && let Ok(address) = HeaderValue::from_str(&client.to_string())
    {
        headers.insert(X_FORWARDED_FOR, address);
    }

    let attempts = if is_idempotent(&parts.method) { 2 } else { 1 };
    for attempt in 1..=attempts {
        // Each attempt goes to the next instance.
        let Some(base) = service.pick() else {
            return Problem::new(
                StatusCode::BAD_GATEWAY,
                "no instance configured for this route",
            )
            .into_response();
        };
        let target: Uri =
            match format!("{}{path_and_query}", base.to_string().trim_end_matches('/')).parse() {
                Ok(uri) => uri,
                Err(_) => {
                    return Problem::new(StatusCode::BAD_REQUEST, "malformed request target")
                        .into_response();
                }
            };
        let mut outgoing = hyper::Request::new(Full::new(body.clone()));
        *outgoing.method_mut() = parts.method.clone();
        *outgoing.uri_mut() = target.clone();
        *outgoing.headers_mut() = headers.clone();
        match tokio::time::timeout(upstreams.timeout, upstreams.client.request(outgoing)).await {
            Ok(Ok(response)) => {
                let (mut parts, incoming) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                return Response::from_parts(parts, Body::new(incoming));
            }
            Ok(Err(error)) if attempt < attempts => {
                tracing::warn!(%error, %target, "upstream request failed; retrying once");
            }
            Ok(Err(error)) => {
                tracing::error!(%error, %target, "upstream unreachable");
                return Problem::new(
                    StatusCode::BAD_GATEWAY,
                    "the service behind this route is unavailable",
                )
                .into_response();
            }
            Err(_) => {
                tracing::error!(%target, "upstream timed out");
                return Problem::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    "the service behind this route did not answer in time",
                )
                .into_response();
            }
        }
    }
    Problem::new(
        StatusCode::BAD_GATEWAY,
        "the service behind this route is unavailable",
    )
    .into_response()
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Replaces the `Cookie` header by `Authorization: Bearer <session token>` when the request has
/// a session cookie and no `Authorization` of its own.
fn session_to_bearer(headers: &mut HeaderMap) {
    let session = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .and_then(|(_, token)| HeaderValue::from_str(&format!("Bearer {token}")).ok());
    headers.remove(header::COOKIE);
    if let Some(bearer) = session
        && !headers.contains_key(header::AUTHORIZATION)
    {
        headers.insert(header::AUTHORIZATION, bearer);
    }
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    )
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
    ] {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_stripped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn payments_paths_go_to_payments_and_orders_paths_to_orders() {
        let up = Upstreams::new(
            Pool::parse("http://i:3").unwrap(),
            Pool::parse("http://o:1").unwrap(),
            Pool::parse("http://p:2").unwrap(),
            Duration::from_secs(1),
            Default::default(),
        );
        assert_eq!(
            up.service_for("/payments/accounts").pick().unwrap(),
            "http://p:2/"
        );
        assert_eq!(up.service_for("/orders/x").pick().unwrap(), "http://o:1/");
        assert_eq!(up.service_for("/auth/login").pick().unwrap(), "http://i:3/");
    }

    #[test]
    fn the_session_cookie_becomes_a_bearer_header_and_no_cookie_goes_on() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("theme=dark; gozon_session=abc.def.ghi"),
        );
        session_to_bearer(&mut headers);
        assert_eq!(headers[header::AUTHORIZATION], "Bearer abc.def.ghi");
        assert!(!headers.contains_key(header::COOKIE));
    }

    #[test]
    fn an_authorization_header_of_the_request_wins_over_the_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("gozon_session=cookie"),
        );
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer header"),
        );
        session_to_bearer(&mut headers);
        assert_eq!(headers[header::AUTHORIZATION], "Bearer header");
    }

    #[test]
    fn instances_of_a_service_are_taken_in_turn() {
        let pool = Pool::parse("http://a:1, http://b:2").unwrap();
        let picks: Vec<_> = (0..4)
            .map(|_| pool.pick().unwrap().host().unwrap().to_owned())
            .collect();
        assert_eq!(picks, ["a", "b", "a", "b"]);
    }
}
