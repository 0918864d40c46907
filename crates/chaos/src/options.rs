//! What a run is asked to do: the command line of `gozon-chaos`, and the programs it runs.

use crate::{faults::Fault, postgres, system, system::Programs};
use anyhow::Context;
use std::path::PathBuf;

#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "gozon-chaos",
    about = "Break GoZon under load on private PostgreSQL and RabbitMQ servers, then audit the money"
)]
pub struct Options {
    /// Seconds of load with faults.
    #[arg(long, default_value_t = 120)]
    pub duration: u64,

    /// Accounts the clients use.
    #[arg(long, default_value_t = 20)]
    pub users: usize,

    /// Instances of each service (one gateway in front of them all); a kill hits one of them.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,

    /// Clients sending requests at once.
    #[arg(long, default_value_t = 16)]
    pub clients: usize,

    /// Writes per second the clients offer together (0: as fast as answers come). Below what
    /// the system settles, so that the recovery time measures recovery, not a backlog.
    #[arg(long, default_value_t = 400)]
    pub rate: u64,

    /// Share of the clients' writes (0–1) that cancel one of their orders: right after placing
    /// it (racing its payment) or an earlier one (most likely paid: a refund).
    #[arg(long, default_value_t = 0.1)]
    pub cancel_share: f64,

    /// Seed of the fault schedule and the clients' choices (random if not given; printed).
    #[arg(long)]
    pub seed: Option<u64>,

    /// Also SIGKILL RabbitMQ (besides stopping it cleanly). Off by default: RabbitMQ 3.10 may then
    /// leave a single-node quorum queue without a leader for good (rabbitmq-server#10070).
    #[arg(long)]
    pub rabbitmq_sigkill: bool,

    /// Go on past `--duration` until at least this many faults were injected. The first round of
    /// the schedule holds every enabled kind once, so 7 (8 with `--rabbitmq-sigkill`) means
    /// each kind at least once.
    #[arg(long, default_value_t = 0)]
    pub min_faults: u32,

    /// Shortest pause between two faults, milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub pause_min_ms: u64,

    /// Longest pause between two faults, milliseconds.
    #[arg(long, default_value_t = 4000)]
    pub pause_max_ms: u64,

    /// Longest time a broken part stays broken before it is restarted or restored, milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub downtime_max_ms: u64,

    /// Shortest time a service instance stays stopped (SIGSTOP), milliseconds.
    #[arg(long, default_value_t = 3000)]
    pub stop_min_ms: u64,

    /// Longest time a service instance stays stopped (SIGSTOP), milliseconds.
    #[arg(long, default_value_t = 8000)]
    pub stop_max_ms: u64,

    /// Shortest partition of a RabbitMQ node, milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub partition_min_ms: u64,

    /// Longest partition of a RabbitMQ node, milliseconds: past the nodes' 10 s tick time, so
    /// that most partitions outlast the tick and the cluster sees them while they last.
    #[arg(long, default_value_t = 25000)]
    pub partition_max_ms: u64,

    /// Where the run's history (`history-<seed>.jsonl`) and timeline (`timeline-<seed>.svg`)
    /// are written.
    #[arg(long, default_value = "chaos-output")]
    pub out_dir: PathBuf,

    /// Inject only these kinds of fault (comma-separated, e.g. `failover-postgres,kill-orders`);
    /// all the enabled kinds by default.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub faults: Vec<Fault>,

    /// RabbitMQ nodes: 1 (on loopback, behind a proxy that can cut connections), or a cluster
    /// (3), each node in a network namespace of its own so that it can be partitioned away; the
    /// services get every node's address. Needs root (network namespaces).
    #[arg(long, default_value_t = 1)]
    pub rabbitmq_nodes: usize,

    /// Run PostgreSQL as a primary with a synchronous standby, and fail it over as a fault:
    /// the primary killed, the standby promoted, the services' address moved to it.
    #[arg(long)]
    pub postgres_standby: bool,

    /// Break the system from outside, to show the checker catches it (comma-separated, any of):
    /// `forged-declines`: someone holding payments' message key forges a decline for one payment
    /// request in seven, so debited orders end cancelled with their money kept;
    /// `reordered-requests`: someone holding orders' message key swaps users' places in line, so
    /// later orders are decided first.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub broken: Vec<system::Broken>,

    /// Longest wait, seconds, for the system to recover and every order to settle.
    #[arg(long, default_value_t = 180)]
    pub settle_timeout: u64,

    /// The `gozon` binary (default: beside this one).
    #[arg(long)]
    pub gozon: Option<PathBuf>,

    /// PostgreSQL's bin directory (default: the newest /usr/lib/postgresql/*/bin).
    #[arg(long)]
    pub postgres_bindir: Option<PathBuf>,

    /// RabbitMQ's start script.
    #[arg(long, default_value = "/usr/lib/rabbitmq/bin/rabbitmq-server")]
    pub rabbitmq_server: PathBuf,

    /// The web UI directory the gateway serves.
    #[arg(long, default_value = "web")]
    pub ui_dir: PathBuf,

    /// Keep the servers' data and every log even when the audit is clean (kept anyway when not).
    #[arg(long)]
    pub keep: bool,

    /// Remove the servers' data and logs even when something was found (a run broken on purpose,
    /// whose findings are expected: the tests' `--broken` run).
    #[arg(long, conflicts_with = "keep")]
    pub discard: bool,

    /// Write the report as JSON to this file as well.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// The binaries a run starts, found where the options say or beside this one.
pub(crate) fn programs(options: &Options) -> anyhow::Result<Programs> {
    let gozon = match &options.gozon {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("gozon"),
    };
    let postgres_bindir = match &options.postgres_bindir {
        Some(path) => path.clone(),
        None => postgres::newest_bindir()?,
    };
    Ok(Programs {
        gozon,
        postgres_bindir,
        rabbitmq_server: options.rabbitmq_server.clone(),
        ui_dir: options.ui_dir.clone(),
    })
}
