//! The load generator in smoke mode: a short burst of concurrent orders from several users
//! through the gateway, then its audit of SPEC section 5. It checks guarantees, not speed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use clap::Parser;
use common::System;

#[tokio::test]
async fn a_burst_of_orders_settles_and_passes_the_load_generators_audit() {
    let system = System::start().await;
    let options = gozon_loadgen::Options::parse_from([
        "gozon-loadgen",
        "--gateway",
        &system.gateway,
        "--users",
        "5",
        "--orders",
        "300",
        "--duration",
        "30",
        "--concurrency",
        "16",
        "--deposit",
        "3000",
        "--max-amount",
        "150",
        "--ghost-every",
        "25",
        "--payments-database-url",
        &system.names.payments_database_url,
        "--settle-timeout",
        "60",
        "--quiet",
    ]);
    let report = gozon_loadgen::run(&options).await.unwrap();
    report.print();
    assert_eq!(report.orders_acknowledged, 300);
    assert_eq!(report.finished + report.cancelled, 300);
    assert!(
        report.cancelled > 12,
        "the ghosts' 12 orders and the overdrawn ones are cancelled"
    );
    assert!(report.ledger_audited);
    assert!(report.violations.is_empty(), "{:?}", report.violations);
    system.stop().await;
}
