//! Bounded runs of the fault harness (`make chaos` runs the long ones), on private servers.
//!
//! 1. Careful clients load two instances of each service through the gateway, and cancel some
//!    of their orders, while each role is SIGKILLed and paused (SIGSTOP), RabbitMQ is restarted,
//!    PostgreSQL is shut down immediately and fails over to its synchronous standby (the primary
//!    SIGKILLed, the standby promoted, the services' address moved), and connections to both are
//!    cut — every kind at least once — and
//!    afterwards neither the audit of SPEC section 5 nor the checker of the recorded history
//!    finds anything wrong.
//! 2. A three-node RabbitMQ cluster, each node in a network namespace of its own: nodes are
//!    SIGKILLed, paused (SIGSTOP) and partitioned away from the others and the services, one at
//!    a time, while clients write: the audit and the checker find nothing wrong.
//! 3. The checker can fail: a system broken from outside is caught by it — declines forged with
//!    payments' own key, leaving debited orders cancelled; payment requests handed on with
//!    orders' own key and users' places in line swapped, so later orders are decided first.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use clap::Parser;
use gozon_chaos::{Report, checker::Violation, faults::Fault};
use gozon_loadgen::invariants::{Movement, Status};

/// One run at a time: each starts its own servers and a dozen processes on two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options(extra: &[&str]) -> gozon_chaos::Options {
    let web = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web");
    let out = concat!(env!("CARGO_MANIFEST_DIR"), "/../../test-output/chaos");
    let mut args = vec![
        "gozon-chaos",
        "--gozon",
        env!("CARGO_BIN_EXE_gozon"),
        "--ui-dir",
        web,
        "--out-dir",
        out,
        "--users",
        "8",
        "--clients",
        "8",
        "--settle-timeout",
        "120",
    ];
    args.extend(extra);
    gozon_chaos::Options::parse_from(args)
}

/// One bounded run with `extra` options, after any other run of this binary has ended.
async fn run(extra: &[&str]) -> Report {
    let options = options(extra);
    let _alone = ONE_AT_A_TIME.lock().await;
    let report = gozon_chaos::run(&options).await.unwrap();
    report.print();
    report
}

fn assert_each_injected(report: &Report, faults: impl IntoIterator<Item = Fault>) {
    for fault in faults {
        assert!(
            report.faults.get(&fault).is_some_and(|&n| n >= 1),
            "{fault:?} was never injected"
        );
    }
}

/// Enough load to judge, every acknowledged order in the history, and no violation found by
/// the audit or the checker.
fn assert_clean(report: &Report, least_orders: u64) {
    assert!(
        report.orders_acknowledged >= least_orders,
        "too little load to judge"
    );
    assert!(report.history.operations as u64 > report.orders_acknowledged);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

/// The runs, under one name that `make test` runs beside the rest of the suite (scripts/test.sh).
mod chaos_harness_runs {
    use super::*;

    #[tokio::test]
    async fn money_is_right_after_every_kind_of_fault_under_load_with_cancellations() {
        let report = run(&[
            "--duration",
            "20",
            "--instances",
            "2",
            // Failovers among the faults: the database fails over to its synchronous standby.
            "--postgres-standby",
            "--min-faults",
            "10",
            "--pause-min-ms",
            "500",
            "--pause-max-ms",
            "1500",
            "--downtime-max-ms",
            "1500",
            "--stop-min-ms",
            "1500",
            "--stop-max-ms",
            "3000",
            "--cancel-share",
            "0.2",
        ])
        .await;
        assert_each_injected(
            &report,
            Fault::ALL
                .into_iter()
                .filter(|&f| f != Fault::CrashRabbitMq && f.fits_broker(1)),
        );
        assert!(report.finished > 0 && report.cancelled > 0 && report.refunded > 0);
        assert!(report.cancels_accepted > 0);
        assert!(report.deposits_acknowledged > 8);
        assert!(report.ledger_audited);
        assert_clean(&report, 100);
    }

    #[tokio::test]
    async fn money_is_right_when_broker_nodes_of_a_cluster_are_killed_paused_and_partitioned_away()
    {
        let report = run(&[
            "--rabbitmq-nodes",
            "3",
            "--instances",
            "2",
            "--duration",
            "20",
            "--faults",
            "crash-rabbit-mq,pause-rabbit-mq,partition-rabbit-mq",
            "--min-faults",
            "3",
            "--pause-min-ms",
            "1000",
            "--pause-max-ms",
            "2000",
            "--stop-min-ms",
            "3000",
            "--stop-max-ms",
            "5000",
            // Past the nodes' 10 s tick: the cluster sees the partition while it lasts.
            "--partition-min-ms",
            "12000",
            "--partition-max-ms",
            "15000",
        ])
        .await;
        assert_each_injected(
            &report,
            [
                Fault::CrashRabbitMq,
                Fault::PauseRabbitMq,
                Fault::PartitionRabbitMq,
            ],
        );
        assert!(report.finished > 0);
        assert_clean(&report, 100);
    }

    /// Eight seconds of load on two instances of each service, broken from outside in two ways at
    /// once, with no faults: the only thing wrong is the system itself.
    #[tokio::test]
    async fn declines_forged_and_requests_reordered_with_stolen_keys_are_caught() {
        let report = run(&[
            "--duration",
            "8",
            "--instances",
            "2",
            "--pause-min-ms",
            "12000",
            "--pause-max-ms",
            "12000",
            "--cancel-share",
            "0",
            "--broken",
            "forged-declines,reordered-requests",
            // Its violations are expected: no data to keep for a post-mortem.
            "--discard",
        ])
        .await;
        assert_eq!(report.faults_injected(), 0);
        let violations = &report.history.violations;
        // Declines forged with payments' key: debited orders cancelled, their money kept.
        let kept: Vec<_> = violations
            .iter()
            .filter_map(|v| match v {
                Violation::MoneyDisagrees {
                    status: Status::Cancelled,
                    moved,
                    placed_by,
                    ..
                } if moved.iter().all(|(kind, _)| *kind == Movement::Debit) => Some(placed_by),
                _ => None,
            })
            .collect();
        assert!(
            !kept.is_empty(),
            "the checker missed the money kept for cancelled orders: {violations:#?}"
        );
        assert!(
            kept.iter().all(|placed_by| placed_by.is_some()),
            "each violation names its operation: {violations:#?}"
        );
        // Requests reordered with orders' key: later orders of a user decided first.
        assert!(
            violations
                .iter()
                .any(|v| matches!(v, Violation::DecidedOutOfOrder { .. })),
            "the checker missed orders decided out of order: {violations:#?}"
        );
    }
}
