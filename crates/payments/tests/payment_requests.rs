//! The consumer of `order.payments` against the real PostgreSQL and RabbitMQ: each order is
//! debited at most once however its request is delivered, and the ledger always balances.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{Payments, request_of};
use gozon_test_support::{Broker, eventually};
use std::time::Duration;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn a_request_delivered_twice_with_one_message_id_is_debited_once() {
    let payments =
        Payments::start(&["--consumer-concurrency", "1", "--consumer-batch-size", "1"]).await;
    payments.open_account("alice", 1000).await;
    let order = Uuid::now_v7();
    let body = payments.request(order, "alice", 300);
    payments.publish(Some("m-1"), &body).await;
    payments.publish(Some("m-1"), &body).await;
    // With one message in flight at a time, the marker is decided after both copies.
    let marker = Uuid::now_v7();
    payments
        .publish(Some("m-2"), &payments.request(marker, "alice", 100))
        .await;
    payments.wait_decided(&[order, marker]).await;

    assert_eq!(payments.debits_of(order).await, 1);
    assert_eq!(payments.balance("alice").await, 600);
    assert_eq!(
        payments.payment_results_for(order).await.len(),
        1,
        "the duplicate is not answered again"
    );
    payments.assert_ledger_balances().await;
    payments.stop().await;
}

#[tokio::test]
async fn one_order_requested_under_two_message_ids_is_debited_once_and_answered_twice() {
    let payments = Payments::start(&[]).await;
    payments.open_account("bob", 1000).await;
    let order = Uuid::now_v7();
    let body = payments.request(order, "bob", 300);
    payments.publish(Some("first"), &body).await;
    payments.publish(Some("second"), &body).await;
    eventually("both requests answered", WAIT, || async {
        (payments.payment_results_for(order).await.len() == 2).then_some(())
    })
    .await;

    assert_eq!(payments.debits_of(order).await, 1);
    assert_eq!(payments.balance("bob").await, 700);
    assert_eq!(
        payments.payment_results_field(order, "status").await,
        ["SUCCEEDED", "SUCCEEDED"]
    );
    payments.assert_ledger_balances().await;
    payments.stop().await;
}

#[tokio::test]
async fn a_request_repeated_after_a_failure_gets_the_same_failure_even_once_funds_arrive() {
    let payments = Payments::start(&[]).await;
    payments.open_account("carol", 0).await;
    let order = Uuid::now_v7();
    payments
        .publish(Some("try-1"), &payments.request(order, "carol", 200))
        .await;
    payments.wait_decided(&[order]).await;
    payments.deposit("carol", 1000).await;
    payments
        .publish(Some("try-2"), &payments.request(order, "carol", 200))
        .await;
    eventually("the repeat answered", WAIT, || async {
        (payments.payment_results_for(order).await.len() == 2).then_some(())
    })
    .await;

    assert_eq!(payments.debits_of(order).await, 0);
    assert_eq!(payments.balance("carol").await, 1000);
    assert_eq!(
        payments.payment_results_field(order, "reason").await,
        ["insufficient_funds", "insufficient_funds"]
    );
    payments.stop().await;
}

#[tokio::test]
async fn an_order_for_a_user_without_an_account_fails_with_account_not_found() {
    let payments = Payments::start(&[]).await;
    let order = Uuid::now_v7();
    payments
        .publish(Some("x"), &payments.request(order, "ghost", 100))
        .await;
    payments.wait_decided(&[order]).await;
    let reason: Option<String> =
        sqlx::query_scalar("SELECT reason FROM payments WHERE order_id = $1")
            .bind(order)
            .fetch_one(&payments.pool)
            .await
            .unwrap();
    assert_eq!(reason.as_deref(), Some("account_not_found"));
    payments.stop().await;
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_while_the_next_valid_one_is_processed() {
    // One worker, one message per batch: a message that blocked would block the queue.
    let payments =
        Payments::start(&["--consumer-concurrency", "1", "--consumer-batch-size", "1"]).await;
    payments.open_account("dave", 500).await;
    let valid = Uuid::now_v7();
    // The poison ones are other users': dave's line waits for none of them.
    payments.publish(Some("p-1"), b"{not json").await;
    payments
        .publish(None, &payments.request(Uuid::now_v7(), "eve", 100))
        .await;
    payments
        .publish(
            Some("p-3"),
            format!(
                r#"{{"order_id":"{}","user_id":"dave","amount":0}}"#,
                Uuid::now_v7()
            )
            .as_bytes(),
        )
        .await;
    // A message_id PostgreSQL cannot store (text cannot hold NUL): the inbox insert fails the
    // same way every time, inside the transaction.
    payments
        .publish(
            Some("p-\u{0}-5"),
            &payments.request(Uuid::now_v7(), "fay", 100),
        )
        .await;
    payments
        .publish(Some("p-6"), &payments.request(valid, "dave", 100))
        .await;
    payments.wait_decided(&[valid]).await;

    let dlq = format!("{}.dlq", payments.names.order_payments_queue);
    let dead = payments.broker.take(&dlq, 4, WAIT).await;
    let mut ids: Vec<_> = dead
        .into_iter()
        .map(|(id, _)| id.unwrap_or_default())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        ["", "p-\u{0}-5", "p-1", "p-3"],
        "every poison message dead-lettered"
    );
    assert!(
        payments.broker.drain(&dlq).await.unwrap().is_empty(),
        "and only those"
    );
    assert_eq!(payments.balance("dave").await, 400);
    let decided: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&payments.pool)
        .await
        .unwrap();
    assert_eq!(decided, 1);
    payments.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_requests_of_one_account_on_two_instances_pay_the_first_ten_in_line() {
    // Two instances compete for the queue, each with four workers; the requests go out at
    // once, so debits of the one account race in different transactions and processes.
    let payments = Payments::start(&[]).await;
    let rival = payments.another(&[]).await;
    payments.open_account("erin", 1000).await;
    let orders: Vec<Uuid> = (0..50).map(|_| Uuid::now_v7()).collect();
    futures::future::join_all(orders.iter().enumerate().map(|(i, order)| {
        let body = payments.request(*order, "erin", 100);
        let publisher = if i % 2 == 0 { &payments } else { &rival };
        async move { publisher.publish(Some(&format!("m-{i}")), &body).await }
    }))
    .await;
    payments.wait_decided(&orders).await;
    rival.stop().await;

    let succeeded: i64 =
        sqlx::query_scalar("SELECT count(*) FROM payments WHERE status = 'SUCCEEDED'")
            .fetch_one(&payments.pool)
            .await
            .unwrap();
    assert_eq!(succeeded, 10);
    assert_eq!(payments.balance("erin").await, 0);
    // Whichever instance took which request, in whatever order they arrived: the first ten
    // orders erin placed are the ones paid, and the decisions were taken in her order.
    let in_decision_order: Vec<Uuid> =
        sqlx::query_scalar("SELECT order_id FROM payments ORDER BY decided_at")
            .fetch_all(&payments.pool)
            .await
            .unwrap();
    assert_eq!(in_decision_order, orders, "decided in the order placed");
    let paid: Vec<Uuid> =
        sqlx::query_scalar("SELECT order_id FROM payments WHERE status = 'SUCCEEDED' ORDER BY seq")
            .fetch_all(&payments.pool)
            .await
            .unwrap();
    assert_eq!(paid, orders[..10]);
    for order in &orders {
        let status: String = sqlx::query_scalar("SELECT status FROM payments WHERE order_id = $1")
            .bind(order)
            .fetch_one(&payments.pool)
            .await
            .unwrap();
        let expected_debits = i64::from(status == "SUCCEEDED");
        assert_eq!(
            payments.debits_of(*order).await,
            expected_debits,
            "{order} {status}"
        );
    }
    payments.assert_ledger_balances().await;
    payments.stop().await;
}

#[tokio::test]
async fn a_consumer_killed_mid_flight_and_restarted_loses_and_doubles_nothing() {
    // One message per transaction, one at a time, and the requests published at once: the first
    // instance cannot have decided all 300 by the time the test sees 30 and kills it.
    let slow = ["--consumer-batch-size", "1", "--consumer-concurrency", "1"];
    let first = Payments::start(&slow).await;
    let (names, orders_peer) = (first.names.clone(), first.orders.clone());
    first.open_account("frank", 1_000_000).await;
    let orders: Vec<Uuid> = (0..300).map(|_| Uuid::now_v7()).collect();
    futures::future::join_all(orders.iter().enumerate().map(|(i, order)| {
        let first = &first;
        async move {
            let body = first.request(*order, "frank", 7);
            first.publish(Some(&format!("k-{i}")), &body).await
        }
    }))
    .await;
    eventually("some requests decided", WAIT, || async {
        (first.decided_count().await >= 30).then_some(())
    })
    .await;
    // A crash: the task is dropped where it stands, connections closed without goodbye.
    let pool = first.pool.clone();
    first.kill();
    let decided_at_crash: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    assert!(decided_at_crash < 300, "the crash came mid-flight");

    let second = Payments::start_sharing(names, orders_peer, &[]).await;
    second.wait_decided(&orders).await;
    assert_eq!(second.decided_count().await, 300);
    let debits: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger WHERE kind = 'DEBIT'")
        .fetch_one(&second.pool)
        .await
        .unwrap();
    assert_eq!(debits, 300);
    assert_eq!(second.balance("frank").await, 1_000_000 - 300 * 7);
    second.assert_ledger_balances().await;
    second.stop().await;
}

#[tokio::test]
async fn a_request_resent_after_the_inbox_forgot_its_id_is_still_debited_once() {
    use gozon_runtime::retention;
    let payments = Payments::start(&[]).await;
    payments.open_account("grace", 1000).await;
    let order = Uuid::now_v7();
    let body = payments.request(order, "grace", 300);
    payments.publish(Some("old-id"), &body).await;
    payments.wait_decided(&[order]).await;
    sqlx::query("UPDATE inbox SET received_at = now() - interval '15 days'")
        .execute(&payments.pool)
        .await
        .unwrap();
    let sweep = gozon_payments::inbox::sweep(retention::hours(336));
    let forgotten = retention::sweep_once(&payments.pool, &sweep, &Default::default())
        .await
        .unwrap();
    assert_eq!(forgotten, [1]);

    payments.publish(Some("old-id"), &body).await;
    eventually("the re-sent request answered", WAIT, || async {
        (payments.payment_results_for(order).await.len() == 2).then_some(())
    })
    .await;
    assert_eq!(payments.debits_of(order).await, 1);
    assert_eq!(payments.balance("grace").await, 700);
    payments.stop().await;
}

#[tokio::test]
async fn a_dead_letter_can_be_listed_without_consuming_it_and_sent_back_for_processing() {
    use gozon_messaging::dead_letters;
    let payments = Payments::start(&[]).await;
    payments.open_account("henry", 500).await;
    let queue = payments.names.order_payments_queue.clone();
    let order = Uuid::now_v7();
    // As if dead-lettered while something was broken: signed for the work queue.
    let body = payments.request(order, "henry", 200);
    let signature = payments.orders.sign(&queue, "stuck-1", &body).await;
    payments
        .broker
        .publish_with(
            "",
            &format!("{queue}.dlq"),
            Some("stuck-1"),
            &body,
            Some(&signature),
        )
        .await
        .unwrap();
    let broker = payments.names.broker(gozon_test_support::amqp_url());
    for _ in 0..2 {
        let listed = dead_letters::list(&broker, &queue, 10).await.unwrap();
        assert_eq!(listed.len(), 1, "listing leaves the message in place");
        assert_eq!(listed[0].message_id.as_deref(), Some("stuck-1"));
    }
    assert_eq!(
        dead_letters::requeue(&broker, &queue, Some("other"))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        dead_letters::requeue(&broker, &queue, None).await.unwrap(),
        1
    );
    payments.wait_decided(&[order]).await;
    assert_eq!(payments.balance("henry").await, 300);
    assert!(
        dead_letters::list(&broker, &queue, 10)
            .await
            .unwrap()
            .is_empty()
    );
    payments.stop().await;
}

#[tokio::test]
async fn requests_decided_together_in_one_transaction_are_each_debited_and_answered_once() {
    let idle = Payments::start(&[]).await;
    idle.open_account("gina", 1_000).await;
    idle.open_account("hal", 150).await;
    let (names, orders_peer) = (idle.names.clone(), idle.orders.clone());
    idle.stop().await;
    // Queued while no consumer runs, so one worker takes them as batches: ten orders of 100,
    // one of them delivered twice under one id, another requested under a second id, then one
    // more than gina's balance holds.
    let orders: Vec<Uuid> = (0..11).map(|_| Uuid::now_v7()).collect();
    let publisher = Broker::connect().await.unwrap();
    let mut messages: Vec<(String, Uuid)> = orders
        .iter()
        .enumerate()
        .map(|(i, order)| (format!("g-{i}"), *order))
        .collect();
    messages.insert(3, ("g-2".into(), orders[2]));
    messages.insert(6, ("g-5-again".into(), orders[5]));
    // Other users' requests among them: two of 100 against hal's 150, one for no account.
    let (hal, nobody) = ([Uuid::now_v7(), Uuid::now_v7()], Uuid::now_v7());
    let mut bodies: Vec<(String, Vec<u8>)> = messages
        .iter()
        .map(|(id, order)| (id.clone(), request_of(&orders_peer, *order, "gina", 100)))
        .collect();
    bodies.insert(
        1,
        ("h-0".into(), request_of(&orders_peer, hal[0], "hal", 100)),
    );
    bodies.insert(
        5,
        ("h-1".into(), request_of(&orders_peer, hal[1], "hal", 100)),
    );
    bodies.insert(
        8,
        (
            "n-0".into(),
            request_of(&orders_peer, nobody, "nobody", 100),
        ),
    );
    for (message_id, body) in &bodies {
        publisher
            .publish_signed(
                &names.order_payments_queue,
                Some(message_id),
                body,
                &orders_peer,
            )
            .await
            .unwrap();
    }
    let payments =
        Payments::start_sharing(names, orders_peer, &["--consumer-concurrency", "1"]).await;
    payments.wait_decided(&orders).await;
    payments.wait_decided(&[hal[0], hal[1], nobody]).await;

    let transactions: i64 = sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM payments")
        .fetch_one(&payments.pool)
        .await
        .unwrap();
    assert!(transactions < 14, "decided in {transactions} transactions");
    assert_eq!(payments.balance("hal").await, 50);
    assert_eq!(payments.debits_of(hal[0]).await, 1);
    assert_eq!(
        payments.payment_results_field(hal[1], "reason").await,
        ["insufficient_funds"]
    );
    assert_eq!(
        payments.payment_results_field(nobody, "reason").await,
        ["account_not_found"]
    );
    for order in &orders[..10] {
        assert_eq!(payments.debits_of(*order).await, 1);
    }
    assert_eq!(payments.debits_of(orders[10]).await, 0);
    assert_eq!(payments.balance("gina").await, 0);
    assert_eq!(
        payments.payment_results_field(orders[10], "reason").await,
        ["insufficient_funds"]
    );
    assert_eq!(payments.payment_results_for(orders[2]).await.len(), 1);
    assert_eq!(
        payments.payment_results_field(orders[5], "status").await,
        ["SUCCEEDED", "SUCCEEDED"]
    );
    payments.assert_ledger_balances().await;
    payments.stop().await;
}
