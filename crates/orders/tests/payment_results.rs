//! The orders service against the real PostgreSQL and RabbitMQ: an order and its payment request
//! are published together, and a payment result moves an order out of `NEW` at most once.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Orders, WAIT, result};
use gozon_test_support::{Broker, eventually};
use serde_json::{Value, json};
use uuid::Uuid;

#[tokio::test]
async fn a_new_order_and_its_payment_request_are_published_together() {
    let orders = Orders::start(&[]).await;
    let order = orders.place("alice", 1500).await;
    assert_eq!(order["status"], "NEW");

    let queue = orders.names.order_payments_queue.clone();
    let published = orders.broker.take(&queue, 1, WAIT).await;
    assert_eq!(published.len(), 1);
    let (message_id, body) = &published[0];
    serde_json::from_slice::<gozon_contract::messages::PaymentRequest>(body)
        .expect("the payment request as the contract has it");
    let mut body: Value = serde_json::from_slice(body).unwrap();
    let deadline = body["deadline"].take();
    assert_eq!(
        body,
        json!({"order_id": order["id"], "user_id": "alice", "amount": 1500, "deadline": null,
               "seq": 1})
    );
    // The default deadline: 15 minutes after the order was placed.
    let [deadline, created] = [
        deadline.as_str().unwrap(),
        order["created_at"].as_str().unwrap(),
    ]
    .map(|at| {
        time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).unwrap()
    });
    let after = deadline - created;
    assert!(
        after > time::Duration::seconds(899) && after < time::Duration::seconds(901),
        "deadline {after} after the order"
    );
    assert!(
        message_id
            .as_deref()
            .is_some_and(|id| Uuid::parse_str(id).is_ok()),
        "the message carries the outbox row's id: {message_id:?}"
    );
    eventually("the confirmed row leaves the outbox", WAIT, || async {
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&orders.pool)
            .await
            .ok()?;
        (left == 0).then_some(())
    })
    .await;
    orders.stop().await;
}

#[tokio::test]
async fn a_result_delivered_twice_changes_the_order_once_and_a_contradicting_one_is_dead_lettered()
{
    let orders =
        Orders::start(&["--consumer-concurrency", "1", "--consumer-batch-size", "1"]).await;
    let order = orders.place("bob", 700).await;
    let id = order["id"].as_str().unwrap().to_owned();
    orders
        .publish_result("r-1", &result(&order, "SUCCEEDED", None))
        .await;
    let settled = orders.wait_status(&id, "FINISHED").await;

    orders
        .publish_result("r-1", &result(&order, "SUCCEEDED", None))
        .await;
    orders
        .publish_result("r-2", &result(&order, "SUCCEEDED", None))
        .await;
    orders
        .publish_result("r-3", &result(&order, "FAILED", Some("insufficient_funds")))
        .await;
    // One message at a time: once the marker settles, the three before it were handled.
    let marker = orders.place("bob", 1).await;
    orders
        .publish_result("r-4", &result(&marker, "FAILED", Some("account_not_found")))
        .await;
    orders
        .wait_status(marker["id"].as_str().unwrap(), "CANCELLED")
        .await;

    let after = orders.order(&id).await;
    assert_eq!(after["status"], "FINISHED");
    assert_eq!(
        after["updated_at"], settled["updated_at"],
        "status changed once"
    );
    assert!(after.get("reason").is_none());
    let dlq = format!("{}.dlq", orders.names.payment_status_queue);
    let dead = orders.broker.take(&dlq, 1, WAIT).await;
    assert_eq!(
        dead[0].0.as_deref(),
        Some("r-3"),
        "the contradicting result, and only it"
    );
    assert!(orders.broker.drain(&dlq).await.unwrap().is_empty());
    orders.stop().await;
}

#[tokio::test]
async fn a_cancelled_order_carries_its_reason() {
    let orders = Orders::start(&[]).await;
    let order = orders.place("carol", 100).await;
    orders
        .publish_result("r", &result(&order, "FAILED", Some("insufficient_funds")))
        .await;
    let cancelled = orders
        .wait_status(order["id"].as_str().unwrap(), "CANCELLED")
        .await;
    assert_eq!(cancelled["reason"], "insufficient_funds");
    orders.stop().await;
}

#[tokio::test]
async fn results_that_can_never_apply_are_dead_lettered_while_the_next_valid_one_is_applied() {
    let orders =
        Orders::start(&["--consumer-concurrency", "1", "--consumer-batch-size", "1"]).await;
    let order = orders.place("dave", 100).await;
    let unknown = json!({"order_id": Uuid::now_v7(), "user_id": "dave", "amount": 100, "status": "SUCCEEDED", "reason": null});
    orders.publish_result("p-1", &unknown).await;
    orders
        .publish_result("p-2", &json!({"order_id": order["id"], "status": "PAID"}))
        .await;
    orders
        .publish_result(
            "p-3",
            &result(&order, "SUCCEEDED", Some("insufficient_funds")),
        )
        .await;
    orders.publish_result("p-4", &json!({"order_id": order["id"], "user_id": "dave", "amount": 999, "status": "SUCCEEDED", "reason": null})).await;
    orders
        .publish_result("p-5", &result(&order, "SUCCEEDED", None))
        .await;
    orders
        .wait_status(order["id"].as_str().unwrap(), "FINISHED")
        .await;

    let dlq = format!("{}.dlq", orders.names.payment_status_queue);
    let dead = orders.broker.take(&dlq, 4, WAIT).await;
    let ids: Vec<_> = dead.iter().map(|(id, _)| id.clone().unwrap()).collect();
    assert_eq!(ids, ["p-1", "p-2", "p-3", "p-4"]);
    orders.stop().await;
}

#[tokio::test]
async fn a_result_arriving_while_the_database_is_down_is_retried_not_dead_lettered() {
    let orders = Orders::start(&[]).await;
    let order = orders.place("erin", 100).await;
    orders.database.cut();
    let before = orders.database.attempts();
    orders
        .publish_result("r-1", &result(&order, "SUCCEEDED", None))
        .await;
    eventually("the consumer retrying", WAIT, || async {
        (orders.database.attempts() >= before + 3).then_some(())
    })
    .await;
    orders.database.restore();
    orders
        .wait_status(order["id"].as_str().unwrap(), "FINISHED")
        .await;
    let dlq = format!("{}.dlq", orders.names.payment_status_queue);
    assert!(
        orders.broker.drain(&dlq).await.unwrap().is_empty(),
        "nothing dead-lettered"
    );
    orders.stop().await;
}

#[tokio::test]
async fn poison_results_do_not_disturb_the_valid_results_batched_with_them() {
    // Published in a burst, so the consumer takes them in mixed batches.
    let orders = Orders::start(&["--consumer-batch-size", "64"]).await;
    let mut placed = Vec::new();
    for _ in 0..10 {
        placed.push(orders.place("frank", 5).await);
    }
    for (i, order) in placed.iter().enumerate() {
        let ghost = json!({"order_id": Uuid::now_v7(), "user_id": "frank", "amount": 5, "status": "SUCCEEDED", "reason": null});
        orders.publish_result(&format!("ghost-{i}"), &ghost).await;
        orders
            .publish_result(&format!("ok-{i}"), &result(order, "SUCCEEDED", None))
            .await;
    }
    for order in &placed {
        orders
            .wait_status(order["id"].as_str().unwrap(), "FINISHED")
            .await;
    }
    let dlq = format!("{}.dlq", orders.names.payment_status_queue);
    let dead = orders.broker.take(&dlq, 10, WAIT).await;
    assert!(
        dead.iter()
            .all(|(id, _)| id.as_deref().unwrap().starts_with("ghost-"))
    );
    orders.stop().await;
}

#[tokio::test]
async fn results_settled_together_in_one_transaction_change_each_order_once() {
    let first = Orders::start(&[]).await;
    let mut placed = Vec::new();
    for _ in 0..6 {
        placed.push(first.place("gina", 10).await);
    }
    let (names, payments) = (first.names.clone(), first.payments.clone());
    first.stop().await;
    // Queued while no consumer runs, so one worker takes them in batches: a result for each
    // order (the last declined), the second order's again under another id, and one
    // contradicting the third's.
    let publisher = Broker::connect().await.unwrap();
    let mut results: Vec<(String, Value)> = placed
        .iter()
        .enumerate()
        .map(|(i, order)| {
            let declined = i == 5;
            let status = if declined { "FAILED" } else { "SUCCEEDED" };
            let reason = declined.then_some("insufficient_funds");
            (format!("r-{i}"), result(order, status, reason))
        })
        .collect();
    results.insert(
        2,
        ("r-1-again".into(), result(&placed[1], "SUCCEEDED", None)),
    );
    results.insert(
        4,
        (
            "r-2-contradicting".into(),
            result(&placed[2], "FAILED", Some("insufficient_funds")),
        ),
    );
    for (message_id, body) in &results {
        let body = serde_json::to_vec(body).unwrap();
        publisher
            .publish_signed(
                &names.payment_status_queue,
                Some(message_id),
                &body,
                &payments,
            )
            .await
            .unwrap();
    }
    let orders = Orders::start_sharing(names, payments, &["--consumer-concurrency", "1"]).await;
    for (i, order) in placed.iter().enumerate() {
        let status = if i == 5 { "CANCELLED" } else { "FINISHED" };
        orders
            .wait_status(order["id"].as_str().unwrap(), status)
            .await;
    }

    let transactions: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM orders WHERE status <> 'NEW'")
            .fetch_one(&orders.pool)
            .await
            .unwrap();
    assert!(transactions < 6, "settled in {transactions} transactions");
    for order in &placed[..5] {
        let history = orders.history("gina", order["id"].as_str().unwrap()).await;
        assert_eq!(
            history.iter().filter(|event| *event == "paid").count(),
            1,
            "{history:?}"
        );
    }
    let dlq = format!("{}.dlq", orders.names.payment_status_queue);
    let dead = orders.broker.take(&dlq, 1, WAIT).await;
    assert_eq!(dead[0].0.as_deref(), Some("r-2-contradicting"));
    assert!(orders.broker.drain(&dlq).await.unwrap().is_empty());
    orders.stop().await;
}
