//! The outbox relay against the real PostgreSQL and RabbitMQ.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use gozon_messaging::{
    Role,
    amqp::{BrokerHealth, BrokerSettings},
    outbox::{self, Relay, RelaySettings, Wakeup},
    signing::{
        KeyRing, PeerKeys,
        keys::{self, OwnKey},
    },
};

use gozon_runtime::db::{self, PoolSettings};

use gozon_telemetry::trace::TraceParent;
use gozon_test_support::{Broker, TcpProxy, TestNames, amqp_url, eventually, host_port};
use sqlx::{PgPool, migrate::Migrator};
use std::{collections::HashSet, time::Duration};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn broker_settings(names: &TestNames, amqp_url: String) -> BrokerSettings {
    names.broker(amqp_url)
}

async fn outbox_database(names: &TestNames) -> PgPool {
    let settings = PoolSettings {
        url: names.orders_database_url.clone(),
        max_connections: 8,
        acquire_timeout: Duration::from_secs(5),
    };
    let no_service_tables = Migrator::with_migrations(Vec::new());
    db::connect_and_migrate(&settings, &no_service_tables, &CancellationToken::new())
        .await
        .unwrap()
}

/// The relay of orders' outbox, with its keys in `pool` and a payments of its own imagination.
async fn relay(pool: &PgPool, broker: BrokerSettings, wakeup: Wakeup) -> Relay {
    let payments = OwnKey::generate().unwrap();
    let peer = PeerKeys::Given(keys::published(&[payments]).unwrap());
    let signatures = KeyRing::load(Role::Orders, pool, peer).await.unwrap();
    Relay {
        pool: pool.clone(),
        broker,
        settings: RelaySettings {
            outbox_batch_size: 64,
            outbox_poll_interval_ms: 200,
        },
        wakeup,
        health: BrokerHealth::default().register("relay"),
        signatures,
    }
}

async fn unsent(pool: &PgPool) -> i64 {
    // Every row left in the outbox is unsent: a confirmed one is deleted.
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn two_relays_draining_one_outbox_publish_each_row_once() {
    gozon_telemetry::init_for_tests();
    let names = TestNames::new();
    let pool = outbox_database(&names).await;
    let queue = names.order_payments_queue.clone();
    let mut written = HashSet::new();
    for i in 0..1000 {
        written.insert(
            outbox::enqueue(
                &pool,
                &queue,
                &serde_json::json!({ "n": i }),
                &TraceParent::new(),
            )
            .await
            .unwrap(),
        );
    }

    let stop = CancellationToken::new();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let wakeup = Wakeup::default();
        wakeup.notify();
        let relay = relay(&pool, broker_settings(&names, amqp_url()), wakeup).await;
        tasks.push(tokio::spawn(relay.run(stop.clone())));
    }
    eventually("every row sent", WAIT, || async {
        (unsent(&pool).await == 0).then_some(())
    })
    .await;

    let broker = Broker::connect().await.unwrap();
    let published = broker.take(&queue, 1000, WAIT).await;
    let ids: HashSet<Uuid> = published
        .iter()
        .map(|(id, _)| id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(published.len(), 1000, "no row published twice");
    assert_eq!(ids, written, "every row published under its own message_id");
    assert!(broker.drain(&queue).await.unwrap().is_empty());

    stop.cancel();
    for task in tasks {
        task.await.unwrap();
    }
    pool.close().await;
}

#[tokio::test]
async fn rows_the_broker_cannot_route_stay_unsent_and_hold_up_no_other_row() {
    gozon_telemetry::init_for_tests();
    let names = TestNames::new();
    let pool = outbox_database(&names).await;
    let enqueue = |queue: String| {
        let pool = pool.clone();
        async move {
            outbox::enqueue(&pool, &queue, &serde_json::json!({}), &TraceParent::new())
                .await
                .unwrap()
        }
    };
    let sent_of = |id: Uuid| {
        let pool = pool.clone();
        async move {
            // Sent: confirmed by the broker, and so gone from the outbox.
            sqlx::query_scalar::<_, bool>(
                "SELECT NOT EXISTS (SELECT FROM outbox WHERE message_id = $1)",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // A row for a queue outside the topology (there is no exchange for it) and one routable.
    let outside = enqueue(format!("{}.no-such-queue", names.id)).await;
    let routed = enqueue(names.order_payments_queue.clone()).await;
    let stop = CancellationToken::new();
    let wakeup = Wakeup::default();
    wakeup.notify();
    let relay = relay(&pool, broker_settings(&names, amqp_url()), wakeup.clone()).await;
    let task = tokio::spawn(relay.run(stop.clone()));
    // Both rows go out in one batch, so once the routable one is gone, the other was tried.
    eventually("the routable row sent", WAIT, || async {
        sent_of(routed).await.then_some(())
    })
    .await;
    assert!(
        !sent_of(outside).await,
        "a row without an exchange stays unsent"
    );

    // A work queue whose exchange reaches no queue (unbound by an operator, say): the broker
    // returns the message, and it stays in the outbox too.
    let results = &names.payment_status_queue;
    Broker::connect()
        .await
        .unwrap()
        .channel
        .queue_unbind(
            results.as_str().into(),
            BrokerSettings::publish_exchange(results).as_str().into(),
            results.as_str().into(),
            Default::default(),
        )
        .await
        .unwrap();
    let returned = enqueue(results.clone()).await;
    let after = enqueue(names.order_payments_queue.clone()).await;
    wakeup.notify();
    eventually("the row after it sent", WAIT, || async {
        sent_of(after).await.then_some(())
    })
    .await;
    assert!(
        !sent_of(returned).await,
        "a returned message stays in the outbox"
    );

    stop.cancel();
    task.await.unwrap();
    pool.close().await;
}

#[tokio::test]
async fn a_relay_publishes_what_was_written_while_the_broker_was_unreachable() {
    gozon_telemetry::init_for_tests();
    let names = TestNames::new();
    let pool = outbox_database(&names).await;
    let rabbit = TcpProxy::start(&host_port(&amqp_url()), true)
        .await
        .unwrap();
    let broker = broker_settings(&names, rabbit.url_through(&amqp_url()));
    let health = BrokerHealth::default();
    let wakeup = Wakeup::default();
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        Relay {
            health: health.register("relay"),
            ..relay(&pool, broker, wakeup.clone()).await
        }
        .run(stop.clone()),
    );
    eventually("relay connected", WAIT, || async {
        health.disconnected().is_empty().then_some(())
    })
    .await;

    rabbit.cut();
    eventually("relay notices the outage", WAIT, || async {
        (!health.disconnected().is_empty()).then_some(())
    })
    .await;
    let id = outbox::enqueue(
        &pool,
        &names.order_payments_queue,
        &serde_json::json!({"during": "outage"}),
        &TraceParent::new(),
    )
    .await
    .unwrap();
    wakeup.notify();
    rabbit.restore();

    let published = Broker::connect()
        .await
        .unwrap()
        .take(&names.order_payments_queue, 1, WAIT)
        .await;
    assert_eq!(published[0].0.as_deref(), Some(id.to_string().as_str()));
    eventually("the confirmed row gone from the outbox", WAIT, || async {
        (unsent(&pool).await == 0).then_some(())
    })
    .await;

    stop.cancel();
    task.await.unwrap();
    pool.close().await;
}
