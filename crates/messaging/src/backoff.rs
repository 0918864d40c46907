//! The backoff used wherever a dependency may come back — the broker for the relay and the
//! consumers, the database at start and for a consumer's batch.

use backon::ExponentialBuilder;
use std::time::Duration;

/// 100 ms doubling to 5 s, with jitter, forever.
pub fn retry_forever() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}
