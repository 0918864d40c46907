//! The consumer's failure policy against the real PostgreSQL and RabbitMQ, with a handler of the
//! test's own that writes each message's id to a table: a message the database refuses every
//! time (a violated CHECK) is dead-lettered at once; one that conflicts every time is
//! dead-lettered after `MAX_ATTEMPTS`, its batch mates applied; and neither stops the queue.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use gozon_messaging::{
    amqp::BrokerHealth,
    consumer::{Consumer, ConsumerSettings, Handler, HandlerError},
    outgoing::Outgoing,
};

use gozon_runtime::db::{self, PoolSettings};

use gozon_telemetry::trace::TraceParent;
use gozon_test_support::{Broker, TestNames, amqp_url, eventually};
use serde::Deserialize;
use sqlx::{PgConnection, PgPool, migrate::Migrator};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
struct Note {
    text: String,
}

/// Stores each note; `"conflict"` always fails as a lost race would.
struct Notes;

impl Handler for Notes {
    type Message = Note;
    type Key = ();

    fn key(_: &Note) {}

    async fn handle(
        &self,
        db: &mut PgConnection,
        _message_id: &str,
        _trace: &TraceParent,
        note: &Note,
        _out: &mut Outgoing,
    ) -> Result<(), HandlerError> {
        if note.text == "conflict" {
            return Err(HandlerError::Transient("a race lost every time".into()));
        }
        sqlx::query("INSERT INTO notes (text) VALUES ($1)")
            .bind(&note.text)
            .execute(db)
            .await?;
        Ok(())
    }
}

async fn notes_database(names: &TestNames) -> PgPool {
    let settings = PoolSettings {
        url: names.payments_database_url.clone(),
        max_connections: 4,
        acquire_timeout: Duration::from_secs(5),
    };
    let pool = db::connect_and_migrate(
        &settings,
        &Migrator::with_migrations(Vec::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    sqlx::query("CREATE TABLE notes (text text NOT NULL CHECK (text <> 'refused'))")
        .execute(&pool)
        .await
        .unwrap();
    pool
}

async fn stored(pool: &PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT text FROM notes ORDER BY text")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn messages_that_fail_every_time_are_dead_lettered_and_the_queue_goes_on() {
    gozon_telemetry::init_for_tests();
    let names = TestNames::new();
    let pool = notes_database(&names).await;
    let broker = names.broker(amqp_url());
    let queue = names.order_payments_queue.clone();
    let stop = CancellationToken::new();
    let consumer = Consumer {
        queue: queue.clone(),
        pool: pool.clone(),
        broker,
        // One worker, batches of up to 8: a stuck message would hold everything behind it.
        settings: ConsumerSettings {
            consumer_batch_size: 8,
            consumer_concurrency: 1,
        },
        handler: Arc::new(Notes),
        health: BrokerHealth::default().register("consumer"),
    };
    let task = tokio::spawn(consumer.run(stop.clone()));
    // A passive declaration of a missing queue closes its channel: a new connection each time.
    eventually("the queue declared", WAIT, || async {
        Broker::connect().await.ok()?.ready_count(&queue).await.ok()
    })
    .await;
    let admin = Broker::connect().await.unwrap();

    for (id, text) in [
        ("m-1", "before"),
        ("m-2", "refused"),
        ("m-3", "conflict"),
        ("m-4", "after"),
    ] {
        let body = serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap();
        admin.publish(&queue, Some(id), &body).await.unwrap();
    }
    eventually("the good notes stored", WAIT, || async {
        (stored(&pool).await == ["after", "before"]).then_some(())
    })
    .await;
    let dead = admin.take(&format!("{queue}.dlq"), 2, WAIT).await;
    let mut ids: Vec<_> = dead.into_iter().map(|(id, _)| id.unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["m-2", "m-3"]);

    stop.cancel();
    task.await.unwrap();
    pool.close().await;
    names.cleanup().await;
}
