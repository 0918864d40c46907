//! Prometheus metrics: one recorder per process, rendered by `GET /metrics` on each service.
//!
//! What is measured, and where:
//! - `http_requests_total`, `http_request_duration_seconds` {method, route, status}, and
//!   `http_requests_in_flight` {method, route}: [`track_http`] (a method outside HTTP's own is
//!   `OTHER`, a path no route matches `unmatched`: what a client sends never makes a new series);
//! - `outbox_unsent`, `outbox_oldest_unsent_age_seconds`: read from the outbox at scrape time
//!   (`gozon_runtime::health`);
//! - `outbox_published_total`, `outbox_batch_size`, `outbox_publish_seconds` (claim to confirm):
//!   the relay;
//! - `messages_consumed_total`, `messages_dead_lettered_total`, `consumer_batches_retried_total`,
//!   `consumer_batch_size` {queue}: the consumer; `messages_duplicate_total` {queue}: the handlers;
//! - `payment_decisions_total` {outcome}: the payments consumer;
//! - `order_settle_seconds`: from an order's creation to its final status, when the orders
//!   consumer applies the result; `payment_results_contradicting_total`: results dead-lettered
//!   because they contradict the applied one; `order_commit_group_size`: orders committed
//!   together by `POST /orders` (`gozon_orders::placing`);
//! - `broker_role_connected` {role}: 1 while the relay or a consumer is connected, else 0.

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::{
    sync::OnceLock,
    time::{Duration, Instant},
};

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
const SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// How often the recorder's upkeep runs (it drains what histograms gathered).
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// The process's recorder, installed on first use, with a thread of its own for its upkeep.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .and_then(|b| b.set_buckets_for_metric(Matcher::Suffix("_size".into()), SIZE_BUCKETS));
        match builder.map(PrometheusBuilder::build_recorder) {
            Ok(recorder) => {
                let handle = recorder.handle();
                if metrics::set_global_recorder(recorder).is_err() {
                    tracing::warn!("a metrics recorder was already installed");
                }
                let upkeep = handle.clone();
                let started = std::thread::Builder::new()
                    .name("metrics upkeep".into())
                    .spawn(move || {
                        loop {
                            std::thread::sleep(UPKEEP_EVERY);
                            upkeep.run_upkeep();
                        }
                    });
                if let Err(error) = started {
                    tracing::warn!(%error, "no metrics upkeep thread");
                }
                handle
            }
            Err(error) => {
                tracing::error!(%error, "metrics recorder misconfigured; metrics are off");
                PrometheusBuilder::new().build_recorder().handle()
            }
        }
    })
}

/// Middleware: counts and times every request by method, matched route and status.
pub async fn track_http(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let in_flight = InFlight::start([("method", method.clone()), ("route", route.clone())]);
    let response = next.run(request).await;
    drop(in_flight);
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// One request counted in `http_requests_in_flight` from its head until its response, or until
/// it is dropped unanswered (the client went away).
struct InFlight(metrics::Gauge);

impl InFlight {
    fn start(labels: [(&'static str, String); 2]) -> Self {
        let gauge = metrics::gauge!("http_requests_in_flight", &labels);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// A request method as a label: one of HTTP's own, or `OTHER`.
fn method_label(method: &axum::http::Method) -> String {
    use axum::http::Method;
    let known = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    if known.contains(method) {
        method.as_str().to_owned()
    } else {
        "OTHER".to_owned()
    }
}

/// The Prometheus text of every metric recorded so far.
pub fn render() -> String {
    handle().render()
}
