//! Duplicates and reordering at scale: after a real run with cancellations and refunds, every
//! message either service ever published — payment and refund requests and results — is
//! delivered again, shuffled, once under its own `message_id` and once under a new one, and no
//! balance, ledger row or order status changes.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{System, WAIT};
use futures::future::join_all;
use gozon_test_support::{Broker, eventually};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

type Outbox = Vec<(Uuid, String, String)>;

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

async fn outbox(db: &mut PgConnection) -> Outbox {
    sqlx::query_as("SELECT message_id, queue, payload::text FROM outbox")
        .fetch_all(db)
        .await
        .unwrap()
}

#[tokio::test]
async fn every_message_delivered_again_in_shuffled_order_changes_nothing() {
    let system = System::start().await;
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
    let names = system.halt().await;

    let mut orders_db = PgConnection::connect(&names.orders_database_url)
        .await
        .unwrap();
    let mut payments_db = PgConnection::connect(&names.payments_database_url)
        .await
        .unwrap();
    let before = snapshot(&mut orders_db, &mut payments_db).await;
    let mut messages = outbox(&mut orders_db).await;
    let requests = messages.len();
    let answers = outbox(&mut payments_db).await.len();
    messages.extend(outbox(&mut payments_db).await);
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
    let mut deliveries: Vec<(Uuid, String, String, String)> = messages
        .iter()
        .flat_map(|(id, queue, payload)| {
            [id.to_string(), Uuid::new_v4().to_string()]
                .map(|message_id| (Uuid::new_v4(), message_id, queue.clone(), payload.clone()))
        })
        .collect();
    deliveries.sort();
    let broker = Broker::connect().await.unwrap();
    for (_, message_id, queue, payload) in &deliveries {
        broker
            .publish(queue, Some(message_id), payload.as_bytes())
            .await
            .unwrap();
    }

    // Run the services again on the same databases and queues until, after a graceful stop,
    // nothing is left in either queue (a stop returns prefetched, unprocessed messages).
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
        let mut left = 0;
        for queue in &queues {
            left += broker.ready_count(queue).await.unwrap();
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
        outbox(&mut payments_db).await.len(),
        answers + requests,
        "a request under a new id is answered with the recorded outcome"
    );
    assert_eq!(
        outbox(&mut orders_db).await.len(),
        requests,
        "a result delivered again asks for nothing new"
    );
    drop((orders_db, payments_db));
    names.cleanup().await;
}
