//! What to run: the load generator's command line.

use std::path::PathBuf;

/// What to run. Every option has a default; the defaults take about a minute.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "gozon-loadgen",
    about = "Load and audit a running GoZon through its gateway"
)]
pub struct Options {
    /// Base URL of the gateway.
    #[arg(
        long,
        env = "BENCH_GATEWAY_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub gateway: String,

    /// Accounts to open (each run uses fresh user ids).
    #[arg(long, default_value_t = 100)]
    pub users: usize,

    /// Seconds of offered load.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,

    /// Stop after this many orders even if `--duration` has not passed.
    #[arg(long)]
    pub orders: Option<u64>,

    /// Orders in flight at once (closed loop). Ignored with `--rate`.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,

    /// Offer this many orders per second whatever the responses do (open loop).
    #[arg(long)]
    pub rate: Option<u64>,

    /// Deposit per account, kopecks.
    #[arg(long, default_value_t = 1_000_000_000)]
    pub deposit: i64,

    /// Largest order amount, kopecks; amounts cycle through 1..=max.
    #[arg(long, default_value_t = 1000)]
    pub max_amount: i64,

    /// One order in this many goes to a user without an account (0: none).
    #[arg(long, default_value_t = 50)]
    pub ghost_every: u64,

    /// Share of the orders (0–1) their owner cancels: half of them right after placing (racing
    /// the payment), half once the load is over (most are paid by then: refunds).
    #[arg(long, default_value_t = 0.0)]
    pub cancel_share: f64,

    /// Payments database, for the ledger audit.
    #[arg(
        long,
        env = "PAYMENTS_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/gozon_payments"
    )]
    pub payments_database_url: String,

    /// Longest wait, seconds, for the last orders to become final.
    #[arg(long, default_value_t = 120)]
    pub settle_timeout: u64,

    /// Write the report as JSON to this file as well.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Draw the settle latency over time and its distribution to this SVG file as well.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// No progress lines.
    #[arg(long)]
    pub quiet: bool,

    /// What this machine's PostgreSQL did in the same sitting: transactions per second of
    /// pgbench with single-row INSERTs, 16 clients (`make bench` measures it first). The report
    /// then gives orders settled per second per 1,000 of those — a figure that moves less from
    /// machine to machine than orders per second do.
    #[arg(long)]
    pub pgbench_tps: Option<f64>,
}
