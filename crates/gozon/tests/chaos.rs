//! A bounded run of the fault harness (`make chaos` runs the long one): careful clients load the
//! system through the gateway while each role is SIGKILLed, RabbitMQ is restarted, PostgreSQL is
//! shut down immediately, and connections to both are cut — every kind at least once, on private
//! servers — and afterwards the audit of SPEC section 5 finds nothing wrong.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use clap::Parser;
use gozon_chaos::faults::Fault;

#[tokio::test]
async fn money_is_right_after_every_kind_of_fault_under_load() {
    let web = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web");
    let options = gozon_chaos::Options::parse_from([
        "gozon-chaos",
        "--gozon",
        env!("CARGO_BIN_EXE_gozon"),
        "--ui-dir",
        web,
        "--duration",
        "20",
        "--min-faults",
        "7",
        "--users",
        "8",
        "--clients",
        "8",
        "--pause-min-ms",
        "500",
        "--pause-max-ms",
        "2000",
        "--downtime-max-ms",
        "1500",
        "--settle-timeout",
        "120",
    ]);
    let report = gozon_chaos::run(&options).await.unwrap();
    report.print();
    for fault in Fault::ALL
        .into_iter()
        .filter(|&f| f != Fault::CrashRabbitMq)
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
    assert!(report.finished > 0 && report.cancelled > 0);
    assert!(report.deposits_acknowledged > 8);
    assert!(report.ledger_audited);
    assert!(report.violations.is_empty(), "{:#?}", report.violations);
}
