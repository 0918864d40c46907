//! Logs and traces.
//!
//! - Logs are structured: human-readable by default, one JSON object per line with
//!   `LOG_FORMAT=json`; the level filter comes from `RUST_LOG` (default `info`).
//! - Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set (e.g. `http://127.0.0.1:4318`, Jaeger's
//!   OTLP port), every span — each request, each consumed message — is exported over OTLP/HTTP
//!   (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the default, or `http/json`), under the
//!   role's name as `service.name` (or `OTEL_SERVICE_NAME`). Spans join the trace of the
//!   `traceparent` they arrive with (see [`crate::trace`]), so one order is one trace across the
//!   gateway, orders, the broker hop and payments. Without the variable nothing is exported.
//! - Metrics: one Prometheus recorder per process ([`metrics`]).

pub mod metrics;
pub mod trace;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt,
};

/// Keeps the trace exporter alive; [`Telemetry::shutdown`] sends what is still buffered.
#[must_use = "dropping it early loses the spans still buffered"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes and stops the trace exporter (call once, as the process ends).
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("exporting the last spans failed: {error}");
        }
    }
}

/// Installs the global subscriber for the role `service`. Safe to call more than once (later
/// calls do nothing), which lets tests that start several services in one process call it.
pub fn init(service: &str) -> Telemetry {
    install(service, false)
}

/// Like [`init`], but writes through the test harness, so output shows only for failing tests.
pub fn init_for_tests() {
    let _ = install("tests", true);
}

fn install(service: &str, for_tests: bool) -> Telemetry {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format == "json");
    let logs = match (json, for_tests) {
        (true, _) => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .boxed(),
        (false, true) => tracing_subscriber::fmt::layer().with_test_writer().boxed(),
        (false, false) => tracing_subscriber::fmt::layer().boxed(),
    };
    // Set and empty is unset: a compose file passes the variable through whether or not a
    // collector runs.
    let endpoint = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").filter(|url| !url.is_empty());
    let provider = endpoint.and_then(|_| match tracer_provider(service) {
        Ok(provider) => Some(provider),
        Err(error) => {
            eprintln!("traces are not exported: {error}");
            None
        }
    });
    // `RUST_LOG` filters the logs only: the request and message spans are exported whatever
    // is logged (with `RUST_LOG=warn`, say).
    let traces = provider.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("gozon"))
            .with_filter(LevelFilter::INFO)
    });
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init();
    Telemetry { provider }
}

fn tracer_provider(
    service: &str,
) -> Result<SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    use opentelemetry_otlp::WithExportConfig as _;
    let protocol = match std::env::var("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref() {
        Ok("http/json") => opentelemetry_otlp::Protocol::HttpJson,
        _ => opentelemetry_otlp::Protocol::HttpBinary,
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(protocol)
        .build()?;
    let name = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| service.to_owned());
    Ok(SdkTracerProvider::builder()
        .with_resource(Resource::builder().with_service_name(name).build())
        .with_batch_exporter(exporter)
        .build())
}
