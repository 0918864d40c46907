//! Bounded runs of the fault harness (`make chaos` runs the long ones), on private servers.
//!
//! 1. Careful clients load the system through the gateway, and cancel some of their orders,
//!    while each role is SIGKILLed and paused (SIGSTOP), RabbitMQ is restarted, PostgreSQL is
//!    shut down immediately, and connections to both are cut — every kind at least once — and
//!    afterwards neither the audit of SPEC section 5 nor the checker of the recorded history
//!    finds anything wrong.
//! 2. PostgreSQL fails over to its synchronous standby (the primary SIGKILLed, the standby
//!    promoted, the services' address moved) while clients write: nothing acknowledged is lost.
//! 3. The checker can fail: a system that drops payment results on purpose is caught by it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use clap::Parser;
use gozon_chaos::faults::Fault;

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

#[tokio::test]
async fn money_is_right_after_every_kind_of_fault_under_load_with_cancellations() {
    let options = options(&[
        "--duration",
        "20",
        "--instances",
        "2",
        "--min-faults",
        "9",
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
    ]);
    let _alone = ONE_AT_A_TIME.lock().await;
    let report = gozon_chaos::run(&options).await.unwrap();
    report.print();
    for fault in Fault::ALL
        .into_iter()
        .filter(|&f| f != Fault::CrashRabbitMq && f != Fault::FailoverPostgres)
    {
        assert!(
            report.faults.get(&fault).is_some_and(|&n| n >= 1),
            "{fault:?} was never injected"
        );
    }
    assert!(
        report.orders_acknowledged >= 100,
        "too little load to judge"
    );
    assert!(report.finished > 0 && report.cancelled > 0 && report.refunded > 0);
    assert!(report.cancels_accepted > 0);
    assert!(report.deposits_acknowledged > 8);
    assert!(report.ledger_audited);
    assert!(report.history.operations as u64 > report.orders_acknowledged);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

#[tokio::test]
async fn no_acknowledged_write_is_lost_when_the_database_fails_over_to_its_synchronous_standby() {
    let options = options(&[
        "--duration",
        "12",
        "--postgres-standby",
        "--faults",
        "failover-postgres,kill-payments",
        "--min-faults",
        "3",
        "--pause-min-ms",
        "1000",
        "--pause-max-ms",
        "2000",
        "--cancel-share",
        "0.1",
    ]);
    let _alone = ONE_AT_A_TIME.lock().await;
    let report = gozon_chaos::run(&options).await.unwrap();
    report.print();
    assert!(
        report
            .faults
            .get(&Fault::FailoverPostgres)
            .is_some_and(|&n| n >= 1),
        "no failover happened"
    );
    assert!(report.orders_acknowledged >= 50, "too little load to judge");
    assert!(report.history.operations > 0);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}

#[tokio::test]
async fn a_system_that_drops_payment_results_is_caught_by_the_history_checker() {
    // No faults: the only thing wrong is the system itself.
    let options = options(&[
        "--duration",
        "8",
        "--pause-min-ms",
        "12000",
        "--pause-max-ms",
        "12000",
        "--cancel-share",
        "0",
        "--broken",
        "drop-results",
    ]);
    let _alone = ONE_AT_A_TIME.lock().await;
    let report = gozon_chaos::run(&options).await.unwrap();
    report.print();
    assert_eq!(report.faults_injected(), 0);
    let kept: Vec<_> = report
        .history
        .violations
        .iter()
        .filter(|v| v.contains("is CANCELLED") && v.contains("[(\"DEBIT\""))
        .collect();
    assert!(
        !kept.is_empty(),
        "the checker missed the money kept for cancelled orders: {:#?}",
        report.history.violations
    );
    assert!(
        kept.iter().all(|v| v.contains("placed by op ")),
        "each violation names its operation: {kept:#?}"
    );
}
