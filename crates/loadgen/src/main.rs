//! `gozon-loadgen`: load the running system through its gateway, audit it, report.
//! Exits non-zero if any guarantee was violated.

use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = gozon_loadgen::Options::parse();
    let report = gozon_loadgen::run(&options).await?;
    report.print();
    anyhow::ensure!(report.violations.is_empty(), "guarantees violated");
    Ok(())
}
