//! `gozon-chaos`: break a private GoZon under load, audit it, print the table. Exits non-zero if
//! any guarantee was violated.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = gozon_chaos::Options::parse();
    let report = gozon_chaos::run(&options).await?;
    report.print();
    anyhow::ensure!(report.violations.is_empty(), "guarantees violated");
    Ok(())
}
