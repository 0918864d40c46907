//! The real binary stops gracefully on SIGTERM and on SIGINT: a request in flight when the
//! signal comes is answered and its write kept, the listener closes, and the process exits 0,
//! having logged that it stopped, and quickly.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use gozon_test_support::{TestIssuer, TestNames, amqp_url, eventually, free_port};
use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

const WAIT: Duration = Duration::from_secs(30);

/// The role's write that the test leaves in flight: a request and its body.
fn write_of(role: &str) -> (&'static str, String) {
    if role == "orders" {
        (
            "/orders",
            r#"{"user_id":"sig","amount":10,"description":"in flight"}"#.to_owned(),
        )
    } else {
        ("/payments/accounts", r#"{"user_id":"sig"}"#.to_owned())
    }
}

async fn stops_gracefully_on(role: &str, signal: &str) {
    let names = TestNames::new();
    let issuer = TestIssuer::start("gozon-tests").await;
    let port = free_port();
    let database = if role == "orders" {
        &names.orders_database_url
    } else {
        &names.payments_database_url
    };
    let mut args = names.service_args(role, database, &amqp_url());
    args[2] = format!("127.0.0.1:{port}");
    args.extend(issuer.service_args());
    let mut child = Command::new(env!("CARGO_BIN_EXE_gozon"))
        .args(&args)
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually("ready", WAIT, || async {
        let response = http.get(format!("{base}/readyz")).send().await.ok()?;
        response.status().is_success().then_some(())
    })
    .await;

    // A write whose body is only half sent when the signal comes.
    let (path, body) = write_of(role);
    let (first_half, second_half) = body.split_at(body.len() / 2);
    let mut in_flight = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: gozon\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        issuer.token("sig"),
        body.len()
    );
    in_flight.write_all(head.as_bytes()).await.unwrap();
    in_flight.write_all(first_half.as_bytes()).await.unwrap();
    // In flight once the service has read its head: before, it is only bytes in a socket.
    let gauge = format!("http_requests_in_flight{{method=\"POST\",route=\"{path}\"}} 1");
    eventually("the request in flight", WAIT, || async {
        let metrics = http.get(format!("{base}/metrics")).send().await.ok()?;
        metrics.text().await.ok()?.contains(&gauge).then_some(())
    })
    .await;

    let sent = Instant::now();
    let killed = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    // Stopping has begun once the listener is closed: new connections are refused.
    eventually("the listener closed", WAIT, || async {
        TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
            .then_some(())
    })
    .await;
    in_flight.write_all(second_half.as_bytes()).await.unwrap();
    let mut answer = String::new();
    in_flight.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 201"),
        "the request in flight is answered: {answer}"
    );

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

    // What the answer promised is in the database.
    let db = sqlx::PgPool::connect(database).await.unwrap();
    let table = if role == "orders" {
        "orders"
    } else {
        "accounts"
    };
    let kept: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT count(*) FROM {table} WHERE user_id = 'sig'"
    )))
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(kept, 1, "the answered write is kept");
    db.close().await;
}

#[tokio::test]
async fn the_orders_service_answers_the_request_in_flight_and_stops_gracefully_on_sigterm() {
    stops_gracefully_on("orders", "TERM").await;
}

#[tokio::test]
async fn the_payments_service_answers_the_request_in_flight_and_stops_gracefully_on_sigint() {
    stops_gracefully_on("payments", "INT").await;
}
