//! Structured logs: human-readable by default, one JSON object per line with `LOG_FORMAT=json`;
//! the level filter comes from `RUST_LOG` (default `info`).

use tracing_subscriber::{EnvFilter, fmt};

/// Installs the global subscriber. Safe to call more than once (later calls do nothing), which
/// lets tests that start several services in one process call it freely.
pub fn init() {
    install(false);
}

/// Like [`init`], but writes through the test harness, so output shows only for failing tests.
pub fn init_for_tests() {
    install(true);
}

fn install(for_tests: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|format| format == "json");
    let builder = fmt().with_env_filter(filter);
    let _ = match (json, for_tests) {
        (true, _) => builder.json().flatten_event(true).try_init(),
        (false, true) => builder.with_test_writer().try_init(),
        (false, false) => builder.try_init(),
    };
}
