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
mod leftovers;
mod network;
mod options;
pub mod postgres;
mod process;
mod rabbitmq;
mod report;
pub mod system;
pub mod timeline;
mod workload;

pub use options::Options;
pub use report::Report;

use anyhow::Context;
use faults::{Fault, Schedule};
use history::{Entry, History};
use process::say;
use std::{
    collections::BTreeMap,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};
use system::System;
use tokio_util::sync::CancellationToken;
use workload::Workload;

fn unix_ms() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64() * 1e3)
}

/// Runs the load, the faults, the recovery and the audit; the report says what broke.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let seed = options.seed.unwrap_or_else(|| fastrand::u64(..));
    let programs = options::programs(options)?;
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
    let _forgers = break_on_purpose(&options.broken, &system).await?;
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

    let injected = inject_faults(options, seed, &mut system, &history, started, load_until).await?;
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
    let dead_letters = leftovers::dead_letters(&system.rabbitmq.nodes[0].url()).await?;
    if dead_letters > 0 {
        violations.push(format!(
            "{dead_letters} valid messages sit in dead-letter queues"
        ));
    }
    let unsent = leftovers::unsent_outbox_rows(&[
        system.orders_database_url(),
        system.payments_database_url(),
    ])
    .await?;
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

/// Starts what `broken` asks for: holders of a service's key who break a guarantee on purpose,
/// for the checker to catch. Each stops when its handle is dropped.
async fn break_on_purpose(
    broken: &[system::Broken],
    system: &System,
) -> anyhow::Result<Vec<tokio_util::task::AbortOnDropHandle<()>>> {
    let mut forgers = Vec::new();
    for broken in broken {
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
    Ok(forgers)
}

/// Injects faults of the kinds the options allow, one after another at random moments drawn
/// from `seed`, until the load's time is up and at least `min_faults` were injected; each is
/// recorded in `history` as it begins and ends. Roles that exited meanwhile are started again.
/// How many of each kind were injected.
async fn inject_faults(
    options: &Options,
    seed: u64,
    system: &mut System,
    history: &History,
    started: Instant,
    load_until: Instant,
) -> anyhow::Result<BTreeMap<Fault, u32>> {
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
    Ok(injected)
}
