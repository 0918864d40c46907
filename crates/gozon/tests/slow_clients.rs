//! Slow, stalled and greedy clients cannot pin connections: a request head not finished within
//! `HEADER_READ_TIMEOUT` closes the connection; a body not finished within `BODY_READ_TIMEOUT`
//! — stalled, or trickling in a byte at a time — gets a 408 problem and changes nothing; an
//! oversized head is refused with a problem; and one client holds no more connections than its
//! share. Checked on the gateway and on a service directly, with raw TCP so nothing helps the
//! client along.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::System;
use gozon_http::{BODY_READ_TIMEOUT, HEAD_LIMIT_BYTES, HEADER_READ_TIMEOUT};
use gozon_test_support::host_port;
use std::time::{Duration, Instant};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// Sends `bytes` on a new connection to `base`, then reads until the server closes it or
/// `patience` runs out; returns what came back and when the connection ended.
async fn send_and_wait(base: &str, bytes: &[u8], patience: Duration) -> (String, Option<Duration>) {
    let mut stream = TcpStream::connect(host_port(base)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let started = Instant::now();
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(
            tokio::time::Instant::from_std(started + patience),
            stream.read(&mut buffer),
        )
        .await
        {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&answer).into(),
                    Some(started.elapsed()),
                );
            }
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => return (String::from_utf8_lossy(&answer).into(), None),
        }
    }
}

#[tokio::test]
async fn a_client_that_stalls_in_its_headers_is_disconnected() {
    let system = System::start().await;
    let patience = HEADER_READ_TIMEOUT + Duration::from_secs(10);
    let half_a_head = b"POST /orders HTTP/1.1\r\nHost: gozon\r\nContent-Type: app";
    let (gateway, service) = tokio::join!(
        send_and_wait(&system.gateway, half_a_head, patience),
        send_and_wait(&system.orders_url, half_a_head, patience),
    );
    for (who, (_, closed_after)) in [("gateway", gateway), ("orders service", service)] {
        let closed_after = closed_after
            .unwrap_or_else(|| panic!("the {who} kept the connection open for {patience:?}"));
        assert!(
            closed_after >= HEADER_READ_TIMEOUT - Duration::from_secs(1),
            "the {who} closed after {closed_after:?}, before the timeout"
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn a_client_that_stalls_in_its_body_gets_a_408_and_nothing_is_created() {
    let system = System::start().await;
    system.open_account("slow-1", 1000).await;
    let body = r#"{"user_id":"slow-1","amount":10,"description":"never finished"}"#;
    let token = system.token("slow-1").await;
    let request = format!(
        "POST /orders HTTP/1.1\r\nHost: gozon\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
        body.len(),
        &body[..20]
    );
    let patience = BODY_READ_TIMEOUT + Duration::from_secs(10);
    let (gateway, service) = tokio::join!(
        send_and_wait(&system.gateway, request.as_bytes(), patience),
        send_and_wait(&system.orders_url, request.as_bytes(), patience),
    );
    for (who, (answer, closed_after)) in [("gateway", gateway), ("orders service", service)] {
        assert!(
            closed_after.is_some(),
            "the {who} kept the connection open: {answer}"
        );
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "the {who} answered {answer}"
        );
        assert!(answer.contains("application/problem+json"), "{answer}");
    }
    let (status, orders) = system.get_as("slow-1", "/orders?user_id=slow-1").await;
    assert_eq!((status, orders), (200, serde_json::json!([])));
    system.stop().await;
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let system = System::start().await;
    let request = format!(
        "GET /orders?user_id=u-1 HTTP/1.1\r\nHost: gozon\r\nX-Padding: {}\r\n\r\n",
        "a".repeat(HEAD_LIMIT_BYTES * 2)
    );
    for base in [&system.gateway, &system.orders_url] {
        let (answer, closed_after) =
            send_and_wait(base, request.as_bytes(), Duration::from_secs(10)).await;
        assert!(closed_after.is_some(), "{base} kept the connection open");
        assert!(
            answer.starts_with("HTTP/1.1 431"),
            "{base} answered {answer:?}"
        );
        assert!(
            answer.contains("content-type: application/problem+json")
                && answer.ends_with(
                    r#""status":431,"detail":"the request head is larger than 16384 bytes"}"#
                ),
            "{base} answered {answer:?}"
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn a_body_trickling_in_a_byte_at_a_time_is_cut_off_when_its_whole_time_is_up() {
    let system = System::start().await;
    system.open_account("slow-2", 1000).await;
    let token = system.token("slow-2").await;
    let body = r#"{"user_id":"slow-2","amount":10,"description":"trickled, a byte a second"}"#;
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: gozon\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let stream = TcpStream::connect(host_port(&system.gateway))
        .await
        .unwrap();
    let (mut reading, mut writing) = stream.into_split();
    writing.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    // A byte a second: each arrives well within any wait between bytes; the whole would take
    // over a minute.
    let trickle = tokio::spawn(async move {
        for byte in body.as_bytes() {
            if writing.write_all(&[*byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let mut answer = Vec::new();
    let mut buffer = [0u8; 4096];
    let patience = BODY_READ_TIMEOUT + Duration::from_secs(10);
    while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
        match tokio::time::timeout_at((started + patience).into(), reading.read(&mut buffer)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buffer[..n]),
            Err(_) => panic!("no answer within {patience:?}"),
        }
    }
    let answered_after = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "answered {answer}");
    assert!(
        answered_after < BODY_READ_TIMEOUT + Duration::from_secs(5),
        "cut off after {answered_after:?}, not when the whole time was up"
    );
    trickle.abort();
    let (status, orders) = system.get_as("slow-2", "/orders?user_id=slow-2").await;
    assert_eq!((status, orders), (200, serde_json::json!([])));
    system.stop().await;
}

#[tokio::test]
async fn a_client_at_its_connection_limit_is_closed_at_once_and_served_again_once_one_closes() {
    use clap::Parser;
    let gateway = gozon_gateway::Application::build(gozon_gateway::Settings::parse_from([
        "gateway",
        "--listen-addr",
        "127.0.0.1:0",
        "--http-max-connections-per-client",
        "3",
    ]))
    .await
    .unwrap();
    let address = format!("127.0.0.1:{}", gateway.port());
    let stop = tokio_util::sync::CancellationToken::new();
    let serving = tokio::spawn(gateway.run_until_stopped(stop.clone()));
    let healthz = b"GET /healthz HTTP/1.1\r\nHost: gozon\r\n\r\n";
    // Three connections held open, idle.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut connection = TcpStream::connect(&address).await.unwrap();
        connection.write_all(healthz).await.unwrap();
        let mut buffer = [0u8; 1024];
        let n = connection.read(&mut buffer).await.unwrap();
        assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
        held.push(connection);
    }
    // The fourth is closed as soon as it is accepted, unserved.
    let mut fourth = TcpStream::connect(&address).await.unwrap();
    let _ = fourth.write_all(healthz).await;
    let mut buffer = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(5), fourth.read(&mut buffer)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "a fourth connection was kept open or served: {read:?}"
    );
    // One of the three closes: a new one is served.
    drop(held.pop());
    gozon_test_support::eventually("a place again", Duration::from_secs(10), || async {
        let (answer, _) = send_and_wait(
            &format!("http://{address}"),
            healthz,
            Duration::from_secs(2),
        )
        .await;
        answer.starts_with("HTTP/1.1 200").then_some(())
    })
    .await;
    stop.cancel();
    serving.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_head_that_is_not_http_gets_a_400_problem() {
    let system = System::start().await;
    for base in [&system.gateway, &system.orders_url] {
        let (answer, closed_after) = send_and_wait(
            base,
            b"GET /orders HTTP/1.1\r\nBad Header Without Colon\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
        assert!(closed_after.is_some(), "{base} kept the connection open");
        assert!(
            answer.starts_with("HTTP/1.1 400")
                && answer.contains("content-type: application/problem+json")
                && answer.contains(r#""status":400"#),
            "{base} answered {answer:?}"
        );
    }
    system.stop().await;
}
