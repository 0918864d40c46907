//! Duplicates and reordering at scale: after a real run with cancellations and refunds, every
//! message either service ever published — payment and refund requests and results — is
//! delivered again, shuffled, once under its own `message_id` and once under a new one, and no
//! balance, ledger row or order status changes.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{System, WAIT};
use futures::future::join_all;
use gozon_messaging::Role;
use gozon_test_support::{Broker, eventually};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

/// What was published, as (message_id, queue, body).
type Published = Vec<(String, String, Vec<u8>)>;

async fn snapshot(
    orders: &mut PgConnection,
    payments: &mut PgConnection,
) -> (
    Vec<(Uuid, String, Option<String>, Option<String>, String)>,
    Vec<(String, i64)>,
    i64,
) {
    let statuses = sqlx::query_as(
        "SELECT id, status, reason, refund, updated_at::text FROM orders ORDER BY id",
    )
    .fetch_all(&mut *orders)
    .await
    .unwrap();
    let balances = sqlx::query_as("SELECT user_id, balance FROM accounts ORDER BY user_id")
        .fetch_all(&mut *payments)
        .await
        .unwrap();
    let ledger = sqlx::query_scalar("SELECT count(*) FROM ledger")
        .fetch_one(&mut *payments)
        .await
        .unwrap();
    (statuses, balances, ledger)
}

/// Everything published for `queues` since their taps were bound and last read.
async fn published(broker: &Broker, queues: &[&String]) -> Published {
    let mut published = Vec::new();
    for queue in queues {
        for (id, body) in broker.drain(&format!("{queue}.tap")).await.unwrap() {
            published.push((id.unwrap(), queue.to_string(), body));
        }
    }
    published
}

/// Rows in the outbox: written, not yet confirmed by the broker.
async fn unsent(db: &mut PgConnection) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_message_delivered_again_in_shuffled_order_changes_nothing() {
    let system = System::start().await;
    let broker = Broker::connect().await.unwrap();
    let tapped = system.names.clone();
    let requests_queues = [&tapped.order_payments_queue, &tapped.order_refunds_queue];
    let answers_queues = [&tapped.payment_status_queue, &tapped.refund_status_queue];
    for queue in tapped.queues() {
        broker.tap(queue).await.unwrap();
    }
    for user in ["u1", "u2", "u3"] {
        system.open_account(user, 2_000).await;
    }
    let placed =
        join_all((0..90).map(|n| {
            system.place_order(["u1", "u2", "u3", "ghost"][n % 4], 50 + (n as i64 % 7) * 10)
        }))
        .await;
    // A third of them cancelled: some while their payment is in flight, most once paid.
    let mut cancels = 0;
    for (n, order) in placed.iter().enumerate() {
        let id = order["id"].as_str().unwrap();
        if n % 3 == 0 {
            let user = order["user_id"].as_str().unwrap();
            let (status, _) = system
                .post_as(user, &format!("/orders/{id}/cancel"), serde_json::json!({}))
                .await;
            assert!(status == 202 || status == 409, "cancel answered {status}");
            cancels += usize::from(status == 202);
        }
    }
    for order in &placed {
        system.finished_with(order["id"].as_str().unwrap()).await;
    }
    system.assert_money_is_consistent().await;
    assert!(cancels > 0);
    // The test publishes again as each service would: with its keys.
    let orders_signer = system.signer_of(Role::Orders).await;
    let payments_signer = system.signer_of(Role::Payments).await;
    let names = system.halt().await;

    let mut orders_db = PgConnection::connect(&names.orders_database_url)
        .await
        .unwrap();
    let mut payments_db = PgConnection::connect(&names.payments_database_url)
        .await
        .unwrap();
    let before = snapshot(&mut orders_db, &mut payments_db).await;
    assert_eq!(
        unsent(&mut orders_db).await + unsent(&mut payments_db).await,
        0,
        "everything written was published"
    );
    let mut messages = published(&broker, &requests_queues).await;
    let requests = messages.len();
    messages.extend(published(&broker, &answers_queues).await);
    let answers = messages.len() - requests;
    let refunds = messages
        .iter()
        .filter(|(_, queue, _)| *queue == names.order_refunds_queue)
        .count();
    assert!(refunds > 0, "some orders were refunded");
    assert_eq!(
        (requests, answers),
        (placed.len() + refunds, placed.len() + refunds),
        "one request and one answer per payment and per refund"
    );

    // Each message again under its own id and under a fresh one, in an order unrelated to the
    // original (sorted by a random key).
    let mut deliveries: Vec<(Uuid, String, String, Vec<u8>)> = messages
        .iter()
        .flat_map(|(id, queue, payload)| {
            [id.clone(), Uuid::new_v4().to_string()]
                .map(|message_id| (Uuid::new_v4(), message_id, queue.clone(), payload.clone()))
        })
        .collect();
    deliveries.sort();
    // Through the default exchange, so the taps see only what the services publish.
    for (_, message_id, queue, payload) in &deliveries {
        let signer = if requests_queues.contains(&queue) {
            &orders_signer
        } else {
            &payments_signer
        };
        let signature = signer.sign(queue, message_id, payload).await.unwrap();
        broker
            .publish_with("", queue, Some(message_id), payload, Some(&signature))
            .await
            .unwrap();
    }

    // Run the services again on the same databases and queues until, after a graceful stop,
    // nothing is left in either queue (a stop returns prefetched, unprocessed messages) or in
    // either outbox.
    let mut names = names;
    let queues = names.queues().map(str::to_owned);
    for round in 1.. {
        assert!(round <= 10, "the redeliveries were not all processed");
        let system = System::restart(names).await;
        for queue in &queues {
            eventually("queue drained", WAIT, || async {
                (broker.ready_count(queue).await.unwrap() == 0).then_some(())
            })
            .await;
        }
        names = system.halt().await;
        let mut left = unsent(&mut orders_db).await + unsent(&mut payments_db).await;
        for queue in &queues {
            left += i64::from(broker.ready_count(queue).await.unwrap());
        }
        if left == 0 {
            break;
        }
    }
    for queue in &queues {
        assert_eq!(
            broker.ready_count(&format!("{queue}.dlq")).await.unwrap(),
            0,
            "nothing valid dead-lettered"
        );
    }

    let after = snapshot(&mut orders_db, &mut payments_db).await;
    assert_eq!(
        after.0, before.0,
        "no order status (or its updated_at) changed"
    );
    assert_eq!(after.1, before.1, "no balance changed");
    assert_eq!(after.2, before.2, "no ledger row added");
    // Each request delivered under a new id is answered again (with the recorded decision or
    // refund); one under its own id, and every result, is dropped as a duplicate.
    assert_eq!(
        published(&broker, &answers_queues).await.len(),
        requests,
        "a request under a new id is answered with the recorded outcome"
    );
    assert_eq!(
        published(&broker, &requests_queues).await.len(),
        0,
        "a result delivered again asks for nothing new"
    );
    drop((orders_db, payments_db));
}
