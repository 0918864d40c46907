//! The result of a run: throughput, latency percentiles, and the audit.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Percentiles of one latency, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    /// From a histogram of microseconds.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: histogram.len(),
            p50_ms: ms(histogram.value_at_quantile(0.50)),
            p95_ms: ms(histogram.value_at_quantile(0.95)),
            p99_ms: ms(histogram.value_at_quantile(0.99)),
            max_ms: ms(histogram.max()),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub mode: String,
    pub users: usize,
    pub orders_acknowledged: u64,
    pub orders_rejected: u64,
    pub finished: u64,
    pub cancelled: u64,
    pub refunded: u64,
    /// Cancels answered 202, and 409 (the order was declined or cancelled already).
    pub cancels_accepted: u64,
    pub cancels_refused: u64,
    /// Seconds from the first order sent to the last order settled.
    pub elapsed_s: f64,
    /// Orders settled per second over `elapsed_s`.
    pub settled_per_s: f64,
    /// This machine's PostgreSQL in the same sitting (pgbench, single-row INSERTs, 16 clients).
    pub pgbench_tps: Option<f64>,
    /// `settled_per_s` per 1,000 of `pgbench_tps`.
    pub settled_per_1000_pgbench_tps: Option<f64>,
    /// CPU milliseconds per order acknowledged under load, by process: PostgreSQL, RabbitMQ,
    /// each GoZon role, the load generator.
    pub cpu_ms_per_order: std::collections::BTreeMap<String, f64>,
    /// Peak resident memory of each GoZon role's largest process, MiB.
    pub peak_memory_mib: std::collections::BTreeMap<String, f64>,
    pub post_latency: Latency,
    pub settle_latency: Latency,
    /// Whether the payments ledger was checked too (its database was reachable).
    pub ledger_audited: bool,
    /// Orders that exist although their request was not acknowledged (its answer was lost).
    pub orders_unacknowledged: usize,
    /// Every broken guarantee found by the audit; empty when all hold.
    pub violations: Vec<String>,
}

impl Report {
    pub fn print(&self) {
        println!("GoZon load run ({})", self.mode);
        println!(
            "  orders: {} acknowledged, {} rejected; {} FINISHED, {} CANCELLED, {} REFUNDED; {} users",
            self.orders_acknowledged,
            self.orders_rejected,
            self.finished,
            self.cancelled,
            self.refunded,
            self.users
        );
        if self.cancels_accepted + self.cancels_refused > 0 {
            println!(
                "  cancels: {} accepted, {} refused (the order was final already)",
                self.cancels_accepted, self.cancels_refused
            );
        }
        if self.orders_unacknowledged > 0 {
            println!(
                "  {} orders exist whose requests got no answer (they settled like the rest)",
                self.orders_unacknowledged
            );
        }
        println!(
            "  throughput: {:.1} orders settled/s over {:.2} s",
            self.settled_per_s, self.elapsed_s
        );
        if let (Some(tps), Some(ratio)) = (self.pgbench_tps, self.settled_per_1000_pgbench_tps) {
            println!(
                "  this machine's PostgreSQL: {tps:.0} single-row INSERT transactions/s (pgbench, 16 clients); {ratio:.1} orders settled/s per 1,000 of them"
            );
        }
        if !self.cpu_ms_per_order.is_empty() {
            let total: f64 = self.cpu_ms_per_order.values().sum();
            println!("  CPU per order: {total:.3} ms in all");
            for (part, ms) in &self.cpu_ms_per_order {
                println!("    {part:<28} {ms:>7.3} ms");
            }
        }
        if !self.peak_memory_mib.is_empty() {
            println!("  peak resident memory:");
            for (part, mib) in &self.peak_memory_mib {
                println!("    {part:<28} {mib:>7.1} MiB");
            }
        }
        for (name, latency) in [
            ("POST /orders", &self.post_latency),
            ("settle (created → final)", &self.settle_latency),
        ] {
            println!(
                "  {name:<26} p50 {:>8.2} ms  p95 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
                latency.p50_ms, latency.p95_ms, latency.p99_ms, latency.max_ms
            );
        }
        let scope = if self.ledger_audited {
            "API and ledger"
        } else {
            "API only"
        };
        if self.violations.is_empty() {
            println!("  audit ({scope}): every guarantee holds");
        } else {
            println!("  audit ({scope}): {} VIOLATIONS", self.violations.len());
            for violation in &self.violations {
                println!("    - {violation}");
            }
        }
    }
}
