//! A request taken off its queue and never answered — stolen by a consumer with a leaked login,
//! say — is asked again: orders reminds payments of every answer outstanding, a payment's
//! outcome or a refund, until it comes; and stops once it has.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Orders, WAIT, result};
use serde_json::Value;

const QUICK: [&str; 4] = ["--remind-after", "1s", "--reminder-sweep-interval", "100ms"];

fn id(order: &Value) -> &str {
    order["id"].as_str().unwrap()
}

async fn remind_at(orders: &Orders, order: &Value) -> Option<time::OffsetDateTime> {
    sqlx::query_scalar("SELECT remind_at FROM orders WHERE id = $1::uuid")
        .bind(id(order))
        .fetch_one(&orders.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_stolen_payment_request_is_asked_again_until_its_result_comes_and_then_no_more() {
    let orders = Orders::start(&QUICK).await;
    let order = orders.place("ida", 250).await;
    let queue = orders.names.order_payments_queue.clone();
    // Taken and acknowledged by someone else: payments never sees it.
    let stolen = orders.broker.take(&queue, 1, WAIT).await;
    let first: Value = serde_json::from_slice(&stolen[0].1).unwrap();
    // A second later, the same request again, under a new message id.
    let again = orders.broker.take(&queue, 1, WAIT).await;
    let reminded: Value = serde_json::from_slice(&again[0].1).unwrap();
    assert_eq!(
        reminded, first,
        "the same request: order, user, amount, deadline, place"
    );
    assert_ne!(again[0].0, stolen[0].0, "under a new message id");

    orders
        .publish_result("paid", &result(&order, "SUCCEEDED", None))
        .await;
    orders.wait_status(id(&order), "FINISHED").await;
    assert_eq!(
        remind_at(&orders, &order).await,
        None,
        "nothing outstanding"
    );
    orders.stop().await;
}

#[tokio::test]
async fn a_stolen_refund_request_is_asked_again_until_the_refund_completes() {
    let orders = Orders::start(&QUICK).await;
    let order = orders.place("jo", 300).await;
    orders
        .publish_result("paid", &result(&order, "SUCCEEDED", None))
        .await;
    orders.wait_status(id(&order), "FINISHED").await;
    assert_eq!(orders.cancel("jo", id(&order), None).await.0, 202);
    let stolen = orders.take_refund_requests(1).await;
    let again = orders.take_refund_requests(1).await;
    assert_eq!(again, stolen, "the same refund, asked again");

    orders.publish_refund_result("refunded", &order).await;
    orders.wait_status(id(&order), "REFUNDED").await;
    assert_eq!(
        remind_at(&orders, &order).await,
        None,
        "nothing outstanding"
    );
    orders.stop().await;
}

#[tokio::test]
async fn an_order_cancelled_before_its_payment_is_answered_is_still_reminded_until_it_is() {
    // A debit may have happened though orders cancelled the order: only payments' answer tells.
    let orders = Orders::start(&QUICK).await;
    let order = orders.place("kim", 100).await;
    let queue = orders.names.order_payments_queue.clone();
    orders.broker.take(&queue, 1, WAIT).await;
    assert_eq!(orders.cancel("kim", id(&order), None).await.0, 202);
    orders.broker.take(&queue, 1, WAIT).await;
    // The answer: it was debited after all — so it is refunded, and its refund reminded.
    orders
        .publish_result("paid-late", &result(&order, "SUCCEEDED", None))
        .await;
    let refunds = orders.take_refund_requests(1).await;
    assert_eq!(refunds[0]["order_id"], order["id"]);
    assert!(
        remind_at(&orders, &order).await.is_some(),
        "the refund is outstanding"
    );
    orders.stop().await;
}
