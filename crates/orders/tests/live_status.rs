//! Live order status over server-sent events.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Orders, WAIT, result};
use gozon_test_support::{SseEvent, SseStream, eventually};
use serde_json::Value;

fn is_status(id: &str, status: &'static str) -> impl Fn(&SseEvent) -> bool {
    let id = id.to_owned();
    move |event| {
        event.event == "order"
            && serde_json::from_str::<Value>(&event.data)
                .is_ok_and(|order| order["id"] == id.as_str() && order["status"] == status)
    }
}

#[tokio::test]
async fn a_status_change_reaches_a_client_watching_that_user_and_no_other() {
    let orders = Orders::start(&[]).await;
    let mut alice = SseStream::open(
        &format!("{}/orders/events?user_id=alice", orders.base),
        &orders.token("alice"),
        None,
    )
    .await;
    let mut bob = SseStream::open(
        &format!("{}/orders/events?user_id=bob", orders.base),
        &orders.token("bob"),
        None,
    )
    .await;
    alice.until(WAIT, |e| e.event == "open").await;
    bob.until(WAIT, |e| e.event == "open").await;

    let order = orders.place("alice", 100).await;
    let id = order["id"].as_str().unwrap();
    orders
        .publish_result("r", &result(&order, "SUCCEEDED", None))
        .await;
    let event = alice.until(WAIT, is_status(id, "FINISHED")).await;
    assert!(event.id.is_some(), "events carry an id to resume from");
    assert!(
        bob.next(std::time::Duration::from_millis(300))
            .await
            .is_none(),
        "bob hears nothing of alice's orders"
    );
    orders.stop().await;
}

#[tokio::test]
async fn a_change_consumed_by_one_instance_reaches_a_client_of_another() {
    let first = Orders::start(&[]).await;
    // The second instance shares the database but consumes a queue nobody publishes to, so the
    // result below can only be applied by the first.
    let elsewhere = format!("{}.elsewhere", first.names.payment_status_queue);
    let second = first.another(&["--payment-status-queue", &elsewhere]).await;

    let mut watcher = SseStream::open(
        &format!("{}/orders/events?user_id=carol", second.base),
        &second.token("carol"),
        None,
    )
    .await;
    watcher.until(WAIT, |e| e.event == "open").await;
    let order = first.place("carol", 100).await;
    first
        .publish_result("r", &result(&order, "FAILED", Some("insufficient_funds")))
        .await;
    let event = watcher
        .until(WAIT, is_status(order["id"].as_str().unwrap(), "CANCELLED"))
        .await;
    let shown: Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(shown["reason"], "insufficient_funds");
    second.stop().await;
    first.stop().await;
}

#[tokio::test]
async fn a_client_that_reconnects_with_its_last_event_id_gets_what_it_missed() {
    let orders = Orders::start(&[]).await;
    let url = format!("{}/orders/events?user_id=dave", orders.base);
    let mut stream = SseStream::open(&url, &orders.token("dave"), None).await;
    stream.until(WAIT, |e| e.event == "open").await;
    let first = orders.place("dave", 1).await;
    orders
        .publish_result("r-1", &result(&first, "SUCCEEDED", None))
        .await;
    let seen = stream
        .until(WAIT, is_status(first["id"].as_str().unwrap(), "FINISHED"))
        .await;
    drop(stream);

    let missed = orders.place("dave", 2).await;
    orders
        .publish_result("r-2", &result(&missed, "SUCCEEDED", None))
        .await;
    orders
        .wait_status(missed["id"].as_str().unwrap(), "FINISHED")
        .await;

    let mut resumed = SseStream::open(&url, &orders.token("dave"), seen.id.as_deref()).await;
    resumed
        .until(WAIT, is_status(missed["id"].as_str().unwrap(), "FINISHED"))
        .await;
    orders.stop().await;
}

#[tokio::test]
async fn open_streams_are_limited_per_user_and_per_instance_and_each_ends_after_its_lifetime() {
    let orders = Orders::start(&[
        "--live-max-streams",
        "3",
        "--live-max-streams-per-user",
        "2",
        "--live-stream-lifetime-seconds",
        "2",
    ])
    .await;
    let url = format!("{}/orders/events", orders.base);
    let status_of = |user: &'static str| {
        let request = orders
            .http
            .get(&url)
            .bearer_auth(orders.token(user))
            .header("accept", "text/event-stream");
        async move { request.send().await.unwrap() }
    };
    let mut first = SseStream::open(&url, &orders.token("gina"), None).await;
    let _second = SseStream::open(&url, &orders.token("gina"), None).await;
    let refused = status_of("gina").await;
    assert_eq!(refused.status(), 429, "a third stream of one user");
    let _other = SseStream::open(&url, &orders.token("hugo"), None).await;
    assert_eq!(
        status_of("ivy").await.status(),
        503,
        "a fourth on the instance"
    );

    // Each stream ends after its lifetime (the browser reconnects), giving its place back.
    assert!(first.ends_within(WAIT).await, "the stream ends by itself");
    eventually("a place free again", WAIT, || async {
        (status_of("ivy").await.status() == 200).then_some(())
    })
    .await;
    orders.stop().await;
}

#[tokio::test]
async fn one_client_signed_in_as_many_users_holds_no_more_streams_than_its_share() {
    // The gateway (a trusted proxy: the loopback here) names each request's client.
    let orders = Orders::start(&["--live-max-streams-per-client", "2"]).await;
    let url = format!("{}/orders/events", orders.base);
    let open = |user: &'static str, client: &'static str| {
        let request = orders
            .http
            .get(&url)
            .bearer_auth(orders.token(user))
            .header("accept", "text/event-stream")
            .header("x-forwarded-for", client);
        async move { request.send().await.unwrap() }
    };
    let one = open("u-1", "198.51.100.7").await;
    let two = open("u-2", "198.51.100.7").await;
    assert_eq!((one.status().as_u16(), two.status().as_u16()), (200, 200));
    assert_eq!(
        open("u-3", "198.51.100.7").await.status(),
        429,
        "a third stream from that client, whoever it signs in as"
    );
    assert_eq!(
        open("u-3", "203.0.113.9").await.status(),
        200,
        "another client still gets one"
    );
    orders.stop().await;
}
