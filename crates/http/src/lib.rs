//! GoZon's HTTP plumbing, for the services and the gateway alike: RFC 9457 problem responses,
//! extractors whose rejections are problems too, the token check ([`auth`]), the JSON 404/405
//! fallbacks, request ids and trace context, and the server loop with its timeouts and graceful
//! shutdown. No database, no broker.

pub mod auth;
pub mod client;
pub mod clock;
pub mod serve;

pub use serve::{
    BODY_READ_TIMEOUT, ConnectionLimits, HEAD_LIMIT_BYTES, HEADER_READ_TIMEOUT, SHUTDOWN_GRACE,
    serve,
};

use axum::{
    Router,
    body::Bytes,
    extract::{
        FromRequest, FromRequestParts, Request,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use gozon_telemetry::trace::TraceParent;
use serde::{Serialize, de::DeserializeOwned};
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

/// Largest request body either service reads.
pub const BODY_LIMIT_BYTES: usize = 16 * 1024;

/// An RFC 9457 problem: what every non-2xx response of GoZon looks like. `type` is
/// `about:blank` (the status says it all) or, where a client may act on the kind of failure,
/// `/problems/<name>` ([`Problem::of_type`]); clients branch on it, never on the English
/// `detail`.
#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// On a 500: `/errors/<id>`, the id the service's log line of the fault carries, for a
    /// report to quote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl Problem {
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            kind: "about:blank".to_owned(),
            title: status.canonical_reason().unwrap_or("Error"),
            status: status.as_u16(),
            detail: detail.into(),
            instance: None,
        }
    }

    /// A 500: the request met a fault of the service itself — a bug, a statement the database
    /// refused — that retrying will not cure (never a 503, which says "retry"). The fault goes
    /// to the log under a fresh id, and the answer names only that id.
    pub fn internal(error: &dyn std::fmt::Display) -> Self {
        let id = uuid::Uuid::new_v4();
        tracing::error!(error_id = %id, %error, "internal error");
        Self {
            instance: Some(format!("/errors/{id}")),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error; quote the instance when reporting it",
            )
        }
    }

    /// The same problem, of the kind `/problems/<name>` (listed in the OpenAPI document).
    pub fn of_type(mut self, name: &str) -> Self {
        self.kind = format!("/problems/{name}");
        self
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response()
    }
}

macro_rules! problem_from_rejection {
    ($($rejection:ty),*) => {$(
        impl From<$rejection> for Problem {
            fn from(rejection: $rejection) -> Self {
                Self::new(rejection.status(), rejection.body_text())
            }
        }
    )*};
}
problem_from_rejection!(JsonRejection, PathRejection, QueryRejection);

/// A JSON object body, parsed into `T`; anything else is a problem response: a missing or wrong
/// content type (415), a body over the limit (413), malformed JSON (400), and a body that is not
/// an object or does not fit `T` — wrong type, missing field, invalid value (422).
///
/// serde would happily read a struct from a JSON array (`["u-1", 10, "x"]`); requiring an object
/// keeps the API to the one shape it documents.
#[derive(Debug)]
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Problem> {
        let json_content = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<mime::Mime>().ok())
            .is_some_and(|mime| {
                mime.type_() == "application"
                    && (mime.subtype() == "json" || mime.suffix().is_some_and(|s| s == "json"))
            });
        if !json_content {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected a request with `Content-Type: application/json`",
            ));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| unreadable_body(&rejection))?;
        if body.iter().find(|byte| !byte.is_ascii_whitespace()) != Some(&b'{') {
            return Err(Problem::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "the request body must be a JSON object",
            ));
        }
        let axum::Json(value) = axum::Json::<T>::from_bytes(&body)?;
        Ok(Self(value))
    }
}

impl<T: Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path`, rejecting bad segments as problems.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Problem))]
pub struct Path<T>(pub T);

/// `axum::extract::Query`, rejecting bad query strings as problems.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Problem))]
pub struct Query<T>(pub T);

/// Adds what every GoZon API router needs: JSON fallbacks for unknown routes and methods, the
/// body limit, panic containment, access logs and request metrics.
pub fn finish_router(api: Router) -> Router {
    gozon_telemetry::metrics::handle();
    let router = api
        .fallback(unknown_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT_BYTES))
        .layer(CatchPanicLayer::custom(
            |panic: Box<dyn std::any::Any + Send>| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|message| message.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Problem::internal(&format_args!("handler panicked: {message}")).into_response()
            },
        ))
        .route_layer(axum::middleware::from_fn(
            gozon_telemetry::metrics::track_http,
        ));
    traced(router)
}

/// Request ids, trace context and access logs. A request keeps the `X-Request-Id` it came with
/// (the gateway sets one on every request it forwards) or gets a new UUID, echoed in the
/// response; it keeps a valid W3C `traceparent` or gets a new trace. Both ids are recorded on the
/// request's log span, so one request can be followed across processes.
pub fn traced<S>(router: Router<S>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::extract::Request| {
            let header = |name| request.headers().get(name).and_then(|value| value.to_str().ok());
            let request_id = header("x-request-id").unwrap_or("-");
            let trace = header(TraceParent::HEADER).and_then(TraceParent::parse);
            let trace_id = trace.map(|trace| trace.trace_id()).unwrap_or_default();
            let span = tracing::info_span!("request", method = %request.method(), uri = %request.uri(), request_id, trace_id);
            if let Some(trace) = &trace {
                gozon_telemetry::trace::adopt(&span, trace);
            }
            span
        }))
        .layer(axum::middleware::map_request(ensure_trace_context))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

async fn ensure_trace_context(mut request: axum::extract::Request) -> axum::extract::Request {
    let valid = request
        .headers()
        .get(TraceParent::HEADER)
        .and_then(|value| value.to_str().ok())
        .and_then(TraceParent::parse)
        .is_some();
    if !valid && let Ok(value) = TraceParent::new().to_string().parse() {
        request.headers_mut().insert(TraceParent::HEADER, value);
    }
    request
}

async fn unknown_route(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        format!("no route for {}", uri.path()),
    )
}

/// The 405 problem, for a known path asked with a method it does not take.
pub async fn method_not_allowed(uri: Uri) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed on {}", uri.path()),
    )
}

/// The problem for a request body that could not be read: over the limit (413), not sent within
/// [`BODY_READ_TIMEOUT`] (408), or broken off (400).
pub fn unreadable_body(error: &(dyn std::error::Error + 'static)) -> Problem {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if error.is::<http_body_util::LengthLimitError>() {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {BODY_LIMIT_BYTES} bytes"),
            );
        }
        if error.is::<serve::BodyTooSlow>() {
            return Problem::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("request body not received within {BODY_READ_TIMEOUT:?}"),
            );
        }
        cause = error.source();
    }
    Problem::new(
        StatusCode::BAD_REQUEST,
        "the request body could not be read",
    )
}
