//! The real binary stops gracefully on SIGTERM and on SIGINT: it exits 0, having logged that it
//! stopped, and quickly.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use gozon_test_support::{TestNames, amqp_url, eventually, free_port};
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

async fn stops_gracefully_on(role: &str, signal: &str) {
    let names = TestNames::new();
    let port = free_port();
    let database = if role == "orders" {
        &names.orders_database_url
    } else {
        &names.payments_database_url
    };
    let mut args = names.service_args(role, database, &amqp_url());
    args[2] = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gozon"))
        .args(&args)
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    eventually("ready", Duration::from_secs(30), || async {
        let response = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .ok()?;
        response.status().is_success().then_some(())
    })
    .await;

    let sent = Instant::now();
    let killed = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let output = tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut logs = String::new();
        std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut logs).unwrap();
        (status, logs)
    })
    .await
    .unwrap();
    let (status, logs) = output;
    assert!(
        status.success(),
        "{role} exited with {status} on SIG{signal}"
    );
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        sent.elapsed()
    );
    assert!(logs.contains("shutdown requested"), "{logs}");
    assert!(
        logs.contains("\"message\":\"stopped\""),
        "the service logs that it stopped: {logs}"
    );
    names.cleanup().await;
}

#[tokio::test]
async fn the_orders_service_stops_gracefully_on_sigterm() {
    stops_gracefully_on("orders", "TERM").await;
}

#[tokio::test]
async fn the_payments_service_stops_gracefully_on_sigint() {
    stops_gracefully_on("payments", "INT").await;
}
