//! Cancellation, refunds and the payment deadline across the whole system (identity, payments,
//! orders and the gateway on the real PostgreSQL and RabbitMQ): money that was taken for an order
//! that is given up comes back exactly once, whatever the order of events and whatever the
//! clocks say.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{System, WAIT};
use gozon_messaging::Role;
use gozon_test_support::{Broker, eventually};
use serde_json::{Value, json};

fn id(order: &Value) -> String {
    order["id"].as_str().unwrap().to_owned()
}

async fn cancel(system: &System, user: &str, id: &str, key: &str) -> (u16, Value) {
    let request = system
        .http
        .post(format!("{}/orders/{id}/cancel", system.gateway))
        .bearer_auth(system.token(user).await)
        .header("Idempotency-Key", key);
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits until order `id`'s refund is complete, and returns the order.
async fn refund_completed(system: &System, user: &str, id: &str) -> Value {
    eventually(&format!("order {id} refunded"), WAIT, || async {
        let (_, order) = system.get_as(user, &format!("/orders/{id}")).await;
        (order["refund"] == "COMPLETED").then_some(order)
    })
    .await
}

async fn events(system: &System, user: &str, id: &str) -> Vec<String> {
    let (status, history) = system.get_as(user, &format!("/orders/{id}/history")).await;
    assert_eq!(status, 200, "{history}");
    history
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["event"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn cancelling_a_paid_order_refunds_it_once_and_restores_the_balance() {
    let system = System::start().await;
    system.open_account("paula", 1000).await;
    let order = system.place_order("paula", 400).await;
    let id = id(&order);
    assert_eq!(system.settled(&id).await["status"], "FINISHED");
    assert_eq!(system.balance("paula").await, 600);

    let first = cancel(&system, "paula", &id, "k-1").await;
    assert_eq!(first.0, 202, "{}", first.1);
    assert_eq!(first.1["status"], "REFUNDING");
    assert_eq!(
        cancel(&system, "paula", &id, "k-1").await,
        first,
        "a retry answers the same"
    );
    let (status, problem) = cancel(&system, "mallory", &id, "k-2").await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (404, Some("/problems/order-not-found"))
    );
    let refunded = system.finished_with(&id).await;
    assert_eq!(refunded["status"], "REFUNDED");
    assert_eq!(system.balance("paula").await, 1000);
    let (status, problem) = cancel(&system, "paula", &id, "k-3").await;
    assert_eq!(
        (status, problem["type"].as_str()),
        (409, Some("/problems/nothing-to-cancel"))
    );
    assert_eq!(
        events(&system, "paula", &id).await,
        [
            "placed",
            "payment_requested",
            "paid",
            "cancel_requested",
            "refund_requested",
            "refunded"
        ]
    );
    assert_eq!(
        system
            .get_as("mallory", &format!("/orders/{id}/history"))
            .await
            .0,
        404
    );
    system.assert_money_is_consistent().await;
    system.stop().await;
}

#[tokio::test]
async fn an_order_cancelled_before_its_payment_arrives_gets_its_late_debit_back() {
    let mut system = System::start().await;
    system.open_account("lena", 1000).await;
    system.stop_payments().await;
    let order = system.place_order("lena", 250).await;
    let id = id(&order);
    let (status, cancelled) = cancel(&system, "lena", &id, "k").await;
    assert_eq!(
        (status, cancelled["status"].as_str()),
        (202, Some("CANCELLED"))
    );

    // Payments comes back to the request still queued, on time: it debits, and orders, which
    // gave the order up already, has the money refunded.
    system.start_payments().await;
    let done = refund_completed(&system, "lena", &id).await;
    assert_eq!(
        (done["status"].as_str(), done["reason"].as_str()),
        (Some("CANCELLED"), Some("cancelled"))
    );
    assert_eq!(system.balance("lena").await, 1000);
    assert_eq!(
        events(&system, "lena", &id).await,
        [
            "placed",
            "payment_requested",
            "cancel_requested",
            "paid",
            "refund_requested",
            "refunded"
        ]
    );
    system.assert_money_is_consistent().await;
    system.stop().await;
}

#[tokio::test]
async fn an_order_past_its_deadline_while_payments_is_stopped_is_cancelled_and_its_request_declined()
 {
    let deadline = [
        "--payment-deadline",
        "1s",
        "--deadline-sweep-interval",
        "50ms",
    ];
    let mut system = System::start_with_orders_args(&deadline).await;
    system.open_account("tess", 1000).await;
    system.stop_payments().await;
    let order = system.place_order("tess", 300).await;
    let id = id(&order);
    let timed_out = system.finished_with(&id).await;
    assert_eq!(
        (timed_out["status"].as_str(), timed_out["reason"].as_str()),
        (Some("CANCELLED"), Some("payment_timeout"))
    );

    system.start_payments().await;
    eventually("the late request declined", WAIT, || async {
        let history = events(&system, "tess", &id).await;
        history.contains(&"declined".to_owned()).then_some(())
    })
    .await;
    let decision: (String, Option<String>) =
        sqlx::query_as("SELECT status, reason FROM payments WHERE order_id = $1::uuid")
            .bind(&id)
            .fetch_one(&system.payments_pool)
            .await
            .unwrap();
    assert_eq!(
        decision,
        ("FAILED".to_owned(), Some("payment_timeout".to_owned()))
    );
    assert_eq!(system.balance("tess").await, 1000);
    assert_eq!(
        events(&system, "tess", &id).await,
        ["placed", "payment_requested", "deadline_passed", "declined"]
    );
    system.assert_money_is_consistent().await;
    system.stop().await;
}

#[tokio::test]
async fn a_debit_that_beats_the_deadline_on_a_slow_clock_is_refunded() {
    let deadline = [
        "--payment-deadline",
        "1s",
        "--deadline-sweep-interval",
        "50ms",
    ];
    let mut system = System::start_with_orders_args(&deadline).await;
    system.open_account("sam", 1000).await;
    system.stop_payments().await;
    let order = system.place_order("sam", 350).await;
    let id = id(&order);
    // The request, as payments would read it with its clock an hour behind orders': on time.
    let broker = Broker::connect().await.unwrap();
    let taken = broker
        .take(&system.names.order_payments_queue, 1, WAIT)
        .await;
    let (message_id, body) = &taken[0];
    let mut request: Value = serde_json::from_slice(body).unwrap();
    let deadline = time::OffsetDateTime::parse(
        request["deadline"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    request["deadline"] = json!(
        (deadline + time::Duration::hours(1))
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    );
    assert_eq!(system.finished_with(&id).await["reason"], "payment_timeout");
    // As orders would send it: signed with its key.
    let queue = &system.names.order_payments_queue;
    let body = serde_json::to_vec(&request).unwrap();
    let signature = system
        .signer_of(Role::Orders)
        .await
        .sign(queue, message_id.as_deref().unwrap_or(""), &body)
        .await
        .unwrap();
    broker
        .publish_with("", queue, message_id.as_deref(), &body, Some(&signature))
        .await
        .unwrap();

    system.start_payments().await;
    let done = refund_completed(&system, "sam", &id).await;
    assert_eq!(
        (done["status"].as_str(), done["reason"].as_str()),
        (Some("CANCELLED"), Some("payment_timeout"))
    );
    let entries: Vec<String> =
        sqlx::query_scalar("SELECT kind FROM ledger WHERE order_id = $1::uuid ORDER BY kind")
            .bind(&id)
            .fetch_all(&system.payments_pool)
            .await
            .unwrap();
    assert_eq!(
        entries,
        ["DEBIT", "REFUND"],
        "debited on time by its clock, then refunded"
    );
    assert_eq!(system.balance("sam").await, 1000);
    system.assert_money_is_consistent().await;
    system.stop().await;
}
