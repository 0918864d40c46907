//! The consumer of `order.refunds` against the real PostgreSQL and RabbitMQ: a debited order is
//! refunded at most once however its refund request is delivered, never more than was debited,
//! and a request that names no debit moves nothing; a payment request past its deadline is
//! declined.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Payments, refund};
use gozon_messaging::dead_letters;
use gozon_test_support::eventually;
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

/// Debits `amount` of `user`'s account for a new order and waits for the decision.
async fn debited_order(payments: &Payments, user: &str, amount: i64) -> Uuid {
    let order = Uuid::now_v7();
    payments
        .publish(
            Some(&format!("pay-{order}")),
            &payments.request(order, user, amount),
        )
        .await;
    payments.wait_decided(&[order]).await;
    assert_eq!(payments.debits_of(order).await, 1);
    order
}

#[tokio::test]
async fn a_refund_request_delivered_twice_under_two_message_ids_refunds_once_and_answers_both() {
    let payments = Payments::start(&[]).await;
    payments.open_account("rita", 1000).await;
    let order = debited_order(&payments, "rita", 300).await;
    let marker = debited_order(&payments, "rita", 100).await;
    assert_eq!(payments.balance("rita").await, 600);

    let body = refund(order, "rita", 300);
    payments.publish_refund(Some("refund-1"), &body).await;
    payments.publish_refund(Some("refund-1"), &body).await;
    payments.publish_refund(Some("refund-2"), &body).await;
    // A refund of rita's other order after them, on the same queue and account — so handled
    // after them: once it is answered, so is every copy.
    payments
        .publish_refund(Some("marker"), &refund(marker, "rita", 100))
        .await;
    eventually("the marker answered", WAIT, || async {
        (payments.refund_results_for(marker).await == 1).then_some(())
    })
    .await;
    // The copy of refund-1 is dropped by the inbox; refund-2 finds the refund and repeats it.
    assert_eq!(payments.refund_results_for(order).await, 2);
    assert_eq!(
        payments.entries_of(order).await,
        [("DEBIT".to_owned(), 300), ("REFUND".to_owned(), 300)]
    );
    assert_eq!(payments.balance("rita").await, 1000);
    payments.assert_ledger_balances().await;
    payments.stop().await;
}

#[tokio::test]
async fn a_refund_request_that_overtakes_its_payment_or_differs_from_its_debit_moves_nothing() {
    let payments = Payments::start(&[]).await;
    payments.open_account("olga", 1000).await;
    payments.open_account("mallory", 0).await;
    let queue = payments.names.order_refunds_queue.clone();
    let broker = payments.names.broker(gozon_test_support::amqp_url());

    // Before its payment request: there is no debit to give back.
    let early = Uuid::now_v7();
    payments
        .publish_refund(Some("early"), &refund(early, "olga", 200))
        .await;
    // Of an order debited 300: more than that, to another account, or less.
    let paid = debited_order(&payments, "olga", 300).await;
    for (id, user, amount) in [
        ("more", "olga", 301),
        ("elsewhere", "mallory", 300),
        ("less", "olga", 1),
    ] {
        payments
            .publish_refund(Some(id), &refund(paid, user, amount))
            .await;
    }
    eventually("all four dead-lettered", WAIT, || async {
        let dead = dead_letters::list(&broker, &queue, 10).await.ok()?;
        (dead.len() == 4).then_some(())
    })
    .await;
    assert_eq!(payments.balance("olga").await, 700);
    assert_eq!(payments.balance("mallory").await, 0);
    assert_eq!(payments.entries_of(paid).await, [("DEBIT".to_owned(), 300)]);

    // The early one's payment arrives; an operator puts the refund back: now it applies.
    payments
        .publish(Some("early-pay"), &payments.request(early, "olga", 200))
        .await;
    payments.wait_decided(&[early]).await;
    assert_eq!(payments.balance("olga").await, 500);
    assert_eq!(
        dead_letters::requeue(&broker, &queue, Some("early"))
            .await
            .unwrap(),
        1
    );
    eventually("the early refund applied", WAIT, || async {
        (payments.refund_results_for(early).await == 1).then_some(())
    })
    .await;
    assert_eq!(payments.balance("olga").await, 700);
    assert_eq!(payments.refund_results_for(paid).await, 0);
    payments.assert_ledger_balances().await;
    payments.stop().await;
}

#[tokio::test]
async fn a_payment_request_arriving_after_its_deadline_is_declined_without_touching_the_balance() {
    let payments = Payments::start(&[]).await;
    payments.open_account("tim", 1000).await;
    let (late, on_time) = (Uuid::now_v7(), Uuid::now_v7());
    let with_deadline = |order: Uuid, deadline: time::OffsetDateTime| {
        let deadline = deadline
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        let seq = payments.orders.place_of("tim", &order.to_string());
        serde_json::to_vec(&serde_json::json!({
            "order_id": order, "user_id": "tim", "amount": 100, "deadline": deadline, "seq": seq,
        }))
        .unwrap()
    };
    let now = time::OffsetDateTime::now_utc();
    payments
        .publish(
            Some("late"),
            &with_deadline(late, now - time::Duration::seconds(1)),
        )
        .await;
    payments
        .publish(
            Some("on-time"),
            &with_deadline(on_time, now + time::Duration::minutes(5)),
        )
        .await;
    payments.wait_decided(&[late, on_time]).await;
    let decided: Vec<(Uuid, String, Option<String>)> =
        sqlx::query_as("SELECT order_id, status, reason FROM payments ORDER BY order_id")
            .fetch_all(&payments.pool)
            .await
            .unwrap();
    assert_eq!(
        decided,
        [
            (
                late,
                "FAILED".to_owned(),
                Some("payment_timeout".to_owned())
            ),
            (on_time, "SUCCEEDED".to_owned(), None)
        ]
    );
    assert_eq!(payments.balance("tim").await, 900);
    payments.assert_ledger_balances().await;
    payments.stop().await;
}
