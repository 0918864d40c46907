//! The GoZon fault harness (`make chaos`).
//!
//! It starts a private PostgreSQL and RabbitMQ on their own ports and data directories (the
//! machine's shared servers are left alone) — on request PostgreSQL with a synchronous standby
//! and RabbitMQ as a three-node cluster in network namespaces — runs the real `gozon` binary as
//! the roles against them, and drives careful clients through the gateway — every write keyed
//! and retried until answered. Meanwhile it injects faults, one after another at random moments:
//! SIGKILL of each role, a restart or SIGKILL of a broker node, an immediate shutdown of the
//! database, connections cut, a service instance or a broker node stopped (SIGSTOP) for seconds,
//! a broker node partitioned away, the database failed over to its standby.
//! Every client operation and every fault is recorded as it happens ([`history`]); afterwards
//! the system recovers and is judged twice: by the load generator's auditor through the API and
//! the ledger, and by the [`checker`], from the recorded history and the final database state
//! alone. Each run draws its [`timeline`]: throughput and settle latency with the faults shaded.

pub mod checker;
pub mod faults;
mod forger;
pub mod history;
mod network;
pub mod postgres;
mod process;
mod rabbitmq;
mod report;
pub mod system;
pub mod timeline;
mod workload;

pub use report::Report;

use anyhow::Context;
use faults::{Fault, Schedule};
use gozon_messaging::amqp::BrokerSettings;
use gozon_test_support::Broker;
use history::{Entry, History};
use process::say;
use sqlx::{Connection, PgConnection};
use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};
use system::{Programs, System};
use tokio_util::sync::CancellationToken;
use workload::Workload;

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1e3)
}

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

/// Runs the load, the faults, the recovery and the audit; the report says what broke.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let seed = options.seed.unwrap_or_else(|| fastrand::u64(..));
    let programs = programs(options)?;
    // One run per seed: runs in one process (the tests) get directories of their own.
    let dir = std::env::temp_dir().join(format!("gozon-chaos-{}-{seed}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    say(&format!("seed {seed}"));
    let shape = system::Shape {
        instances: options.instances,
        postgres_standby: options.postgres_standby,
        rabbitmq_nodes: options.rabbitmq_nodes,
    };
    let mut system = System::start(&programs, &dir, shape).await?;
    // Held until the run ends: dropping a forger stops it.
    let mut forgers = Vec::new();
    for broken in &options.broken {
        let target = system.forger_target();
        forgers.push(match broken {
            system::Broken::ForgedDeclines => {
                say("BROKEN on purpose: a holder of payments' key forges one decline in seven");
                forger::forge_declines(target, 7, CancellationToken::new()).await?
            }
            system::Broken::ReorderedRequests => {
                say("BROKEN on purpose: a holder of orders' key swaps users' places in line");
                forger::reorder_requests(target, CancellationToken::new()).await?
            }
        });
    }
    // The history begins once the system is up.
    std::fs::create_dir_all(&options.out_dir)?;
    let history_path = options.out_dir.join(format!("history-{seed}.jsonl"));
    let history = Arc::new(History::create(&history_path)?);
    history.record(&Entry::Began {
        at_ms: 0.0,
        unix_ms: unix_ms(),
    });
    let workload = Arc::new(
        Workload::sign_up(
            &system.gateway_url,
            options.users,
            Duration::from_secs(options.settle_timeout),
            options.cancel_share,
            history.clone(),
        )
        .await?,
    );
    workload.open_accounts(5000).await?;

    let started = Instant::now();
    let load_until = started + Duration::from_secs(options.duration);
    let stop_clients = CancellationToken::new();
    let pace = (options.rate > 0)
        .then(|| Duration::from_secs_f64(options.clients.max(1) as f64 / options.rate as f64));
    let clients: Vec<_> = (0..options.clients as u64)
        .map(|n| {
            tokio::spawn(
                workload
                    .clone()
                    .client(seed ^ (n + 1), pace, stop_clients.clone()),
            )
        })
        .collect();

    let kinds = Fault::ALL
        .into_iter()
        .filter(|&fault| {
            fault != Fault::CrashRabbitMq || options.rabbitmq_sigkill || options.rabbitmq_nodes > 1
        })
        .filter(|fault| fault.fits_broker(options.rabbitmq_nodes))
        .filter(|&fault| fault != Fault::FailoverPostgres || options.postgres_standby)
        .filter(|fault| options.faults.is_empty() || options.faults.contains(fault))
        .collect();
    let mut schedule = Schedule::new(seed, kinds);
    let mut injected: BTreeMap<Fault, u32> = BTreeMap::new();
    loop {
        let pause =
            Duration::from_millis(schedule.pause_ms(options.pause_min_ms, options.pause_max_ms));
        let next_at = Instant::now() + pause;
        while Instant::now() < next_at {
            system.revive_exited()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if Instant::now() >= load_until && injected.values().sum::<u32>() >= options.min_faults {
            break;
        }
        let fault = schedule.next_fault();
        let downtime = Duration::from_millis(match fault {
            Fault::PartitionRabbitMq => {
                schedule.pause_ms(options.partition_min_ms, options.partition_max_ms)
            }
            fault if fault.is_pause() => {
                schedule.pause_ms(options.stop_min_ms, options.stop_max_ms)
            }
            _ => schedule.pause_ms(0, options.downtime_max_ms),
        });
        let pick = schedule.pick();
        say(&format!(
            "[{:>5.1} s] {} ({} ms down)",
            started.elapsed().as_secs_f64(),
            fault.describe(),
            downtime.as_millis()
        ));
        history.record(&Entry::FaultBegan {
            at_ms: history.now_ms(),
            fault,
            target: system.target_of(fault, pick),
        });
        let injected_ok = system
            .inject(fault, downtime, pick)
            .await
            .with_context(|| format!("injecting {fault:?}"));
        history.record(&Entry::FaultEnded {
            at_ms: history.now_ms(),
            fault,
        });
        injected_ok?;
        *injected.entry(fault).or_default() += 1;
    }
    say("faults stopped; waiting for the clients' last requests");
    stop_clients.cancel();
    futures::future::join_all(clients).await;
    let faults_ended = Instant::now();
    system.revive_exited()?;
    system
        .wait_ready(Duration::from_secs(options.settle_timeout))
        .await?;

    say("auditing");
    let acknowledged = std::mem::take(
        &mut *workload
            .acknowledged
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    let outcome = gozon_loadgen::audit::settle_and_audit(
        &reqwest::Client::new(),
        &system.gateway_url,
        &workload.sessions,
        &acknowledged.deposits,
        &acknowledged.orders,
        Duration::from_secs(options.settle_timeout),
        &system.payments_database_url(),
    )
    .await?;
    let recovered_in = faults_ended.elapsed();

    let mut violations = outcome.violations;
    violations.extend(acknowledged.refused.iter().map(|r| format!("refused: {r}")));
    let abandoned = workload.counters.abandoned.load(Ordering::Relaxed);
    if abandoned > 0 {
        violations.push(format!(
            "{abandoned} writes got no answer within {} s",
            options.settle_timeout
        ));
    }
    if abandoned == 0 && !outcome.unacknowledged.is_empty() {
        violations.push(format!(
            "{} orders exist that no acknowledged request created, e.g. {}",
            outcome.unacknowledged.len(),
            outcome.unacknowledged[0]
        ));
    }
    let dead_letters = dead_letters(&system.rabbitmq.nodes[0].url()).await?;
    if dead_letters > 0 {
        violations.push(format!(
            "{dead_letters} valid messages sit in dead-letter queues"
        ));
    }
    let unsent =
        unsent_outbox_rows(&[system.orders_database_url(), system.payments_database_url()]).await?;
    if unsent > 0 {
        violations.push(format!("{unsent} outbox rows still unsent after recovery"));
    }
    history.record(&Entry::Observed {
        at_ms: history.now_ms(),
        dead_letters,
        unsent_outbox_rows: unsent,
    });
    history.flush()?;
    let entries = history::read(&history_path)?;
    let snapshot = checker::snapshot(
        &system.orders_database_url(),
        &system.payments_database_url(),
    )
    .await?;
    let verdict = checker::check(&entries, &snapshot);
    let timeline_path = options.out_dir.join(format!("timeline-{seed}.svg"));
    let timeline = timeline::Timeline::load(&entries, &system.orders_database_url()).await?;
    timeline
        .draw(
            &timeline_path,
            &format!(
                "{} s, {} instance(s), {} RabbitMQ node(s), seed {seed}",
                options.duration, options.instances, options.rabbitmq_nodes
            ),
        )
        .with_context(|| format!("drawing {}", timeline_path.display()))?;
    say(&format!(
        "history {} ({} operations), timeline {}",
        history_path.display(),
        verdict.operations,
        timeline_path.display()
    ));
    violations.extend(verdict.violations.iter().map(|v| format!("history: {v}")));
    let unexpected_exits = system.unexpected_exits();
    for (role, exits) in &unexpected_exits {
        violations.push(format!(
            "{role} exited {exits} time(s) without being killed"
        ));
    }

    let report = Report {
        seed,
        duration_s: options.duration,
        instances: options.instances,
        rate: options.rate,
        faults: injected,
        accounts: workload.users.len(),
        deposits_acknowledged: acknowledged.deposit_count,
        orders_acknowledged: acknowledged.orders.len() as u64,
        history: verdict,
        finished: outcome.finished,
        cancelled: outcome.cancelled,
        refunded: outcome.refunded,
        cancelled_and_refunded: outcome.cancelled_and_refunded,
        cancels_accepted: workload.counters.cancels_accepted.load(Ordering::Relaxed),
        requests_sent: workload.counters.attempts.load(Ordering::Relaxed),
        requests_retried: workload.counters.retried.load(Ordering::Relaxed),
        server_errors: workload.counters.server_errors.load(Ordering::Relaxed),
        recovered_in_s: recovered_in.as_secs_f64(),
        recovery: timeline.recovery(),
        dead_letters,
        unsent_outbox_rows: unsent,
        ledger_audited: outcome.ledger_audited,
        violations,
    };
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    system.stop().await?;
    if (report.violations.is_empty() || options.discard) && !options.keep {
        std::fs::remove_dir_all(&dir)?;
    } else {
        say(&format!("data and logs kept in {}", dir.display()));
    }
    Ok(report)
}

fn programs(options: &Options) -> anyhow::Result<Programs> {
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

/// Messages in the dead-letter queues of both work queues.
async fn dead_letters(amqp_url: &str) -> anyhow::Result<u32> {
    let broker = Broker::connect_to(amqp_url).await?;
    let mut total = 0;
    for queue in [
        "order.payments",
        "payment.status",
        "order.refunds",
        "refund.status",
    ] {
        total += broker
            .ready_count(&BrokerSettings::dead_letter_queue(queue))
            .await?;
    }
    Ok(total)
}

/// Outbox rows not yet confirmed by the broker, across the given databases, once they have had
/// ten seconds to drain (a row leaves the outbox a moment after the consumer may have seen it).
async fn unsent_outbox_rows(database_urls: &[String]) -> anyhow::Result<i64> {
    let mut databases = Vec::new();
    for url in database_urls {
        databases.push(PgConnection::connect(url).await?);
    }
    let mut total = 0;
    for _ in 0..50 {
        total = 0;
        for db in &mut databases {
            let (unsent,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
                .fetch_one(&mut *db)
                .await?;
            total += unsent;
        }
        if total == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(total)
}
