//! The consumer's failure policy against the real PostgreSQL and RabbitMQ, with a handler of the
//! test's own that writes each message's id to a table: a message the database refuses every
//! time (a violated CHECK) is dead-lettered at once; one that conflicts every time is
//! dead-lettered after `MAX_CONFLICTS`, its batch mates applied; and neither stops the queue. A
//! refusal of messages applied together is pinned on its message by applying them one at a time.
//! Acknowledgements sent together (several workers, `multiple` frames) cover every applied
//! message once and never one whose batch has not committed.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use gozon_messaging::{
    Role,
    amqp::BrokerHealth,
    consumer::{Consumer, ConsumerSettings, Handler, HandlerError, Incoming},
    outgoing::Outgoing,
    signing::{KeyRing, PeerKeys},
};

use gozon_runtime::db::{self, PoolSettings};

use gozon_telemetry::trace::TraceParent;
use gozon_test_support::{Broker, TcpProxy, TestNames, TestPeer, amqp_url, eventually, host_port};
use serde::Deserialize;
use sqlx::{PgConnection, PgPool, migrate::Migrator};
use std::{sync::Arc, time::Duration};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize)]
struct Note {
    text: String,
}

/// Stores each note, after counting it in its row of `keys` if it has one (a row another
/// transaction may hold locked); `"conflict"` always fails as a lost race would, and `"hold"`
/// keeps its batch's transaction open for a minute. With `together`, it stores a batch's notes
/// in one statement first, marked as stored together.
struct Notes {
    together: bool,
}

impl Handler for Notes {
    type Message = Note;
    type Key = String;

    fn key(note: &Note) -> String {
        note.text.clone()
    }

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
        if note.text == "hold" {
            sqlx::query("SELECT pg_sleep(60)").execute(&mut *db).await?;
        }
        sqlx::query("UPDATE keys SET n = n + 1 WHERE key = $1")
            .bind(&note.text)
            .execute(&mut *db)
            .await?;
        sqlx::query("INSERT INTO notes (text, together) VALUES ($1, false)")
            .bind(&note.text)
            .execute(db)
            .await?;
        Ok(())
    }

    async fn handle_together(
        &self,
        db: &mut PgConnection,
        batch: &[Incoming<'_, Note>],
        _out: &mut Outgoing,
    ) -> Result<Vec<bool>, HandlerError> {
        if !self.together {
            return Ok(vec![false; batch.len()]);
        }
        let texts: Vec<&str> = batch.iter().map(|n| n.message.text.as_str()).collect();
        sqlx::query("UPDATE keys SET n = n + 1 WHERE key = ANY($1)")
            .bind(&texts)
            .execute(&mut *db)
            .await?;
        sqlx::query("INSERT INTO notes (text, together) SELECT unnest($1::text[]), true")
            .bind(texts)
            .execute(db)
            .await?;
        Ok(vec![true; batch.len()])
    }
}

async fn notes_database(names: &TestNames) -> PgPool {
    let settings = PoolSettings {
        url: names.payments_database_url.clone(),
        max_connections: 6,
        acquire_timeout: Duration::from_secs(5),
    };
    let pool = db::connect_and_migrate(
        &settings,
        &Migrator::with_migrations(Vec::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    sqlx::query(
        "CREATE TABLE notes (text text NOT NULL CHECK (text <> 'refused'), together boolean NOT NULL)",
    )
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("CREATE TABLE keys (key text PRIMARY KEY, n integer NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    pool
}

/// A consumer of the test's own queue, storing notes with `notes`.
struct Running {
    /// The test's database and queues, removed when this is dropped.
    _names: TestNames,
    pool: PgPool,
    queue: String,
    /// The producer of the test's notes, as far as the consumer can tell.
    producer: TestPeer,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(notes: Notes) -> Self {
        // One worker, batches of up to 8: a stuck message would hold everything behind it.
        Self::start_with(notes, 1, amqp_url()).await
    }

    /// With `workers` batches of up to 8 in flight, connected to the broker at `amqp_url`.
    async fn start_with(notes: Notes, workers: u16, amqp_url: String) -> Self {
        Self::start_sized(notes, workers, 8, amqp_url).await
    }

    async fn start_sized(notes: Notes, workers: u16, batch: u16, amqp_url: String) -> Self {
        gozon_telemetry::init_for_tests();
        let names = TestNames::new();
        let pool = notes_database(&names).await;
        let queue = names.order_payments_queue.clone();
        let stop = CancellationToken::new();
        let producer = TestPeer::start(Role::Orders).await;
        let signatures = KeyRing::load(Role::Payments, &pool, PeerKeys::at(producer.keys_url()))
            .await
            .unwrap();
        producer.meet_ring(&signatures).await;
        let consumer = Consumer {
            queue: queue.clone(),
            pool: pool.clone(),
            broker: names.broker(amqp_url),
            settings: ConsumerSettings {
                consumer_batch_size: batch,
                consumer_concurrency: workers,
            },
            handler: Arc::new(notes),
            health: BrokerHealth::default().register("consumer"),
            signatures,
        };
        let task = tokio::spawn(consumer.run(stop.clone()));
        // A passive declaration of a missing queue closes its channel: a new connection each time.
        eventually("the queue declared", WAIT, || async {
            Broker::connect().await.ok()?.ready_count(&queue).await.ok()
        })
        .await;
        Self {
            _names: names,
            pool,
            queue,
            producer,
            stop,
            task,
        }
    }

    /// Stops the consumer and checks that each of `texts` (sorted) was stored once and that
    /// nothing came back to the queue when its channel closed.
    async fn stop_expecting(self, admin: &Broker, texts: &[String]) {
        self.stop.cancel();
        self.task.await.unwrap();
        assert_eq!(stored(&self.pool).await, texts, "each note stored once");
        assert_eq!(
            admin.ready_count(&self.queue).await.unwrap(),
            0,
            "nothing came back"
        );
        self.pool.close().await;
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
        self.pool.close().await;
    }
}

/// Publishes each note under its message id, signed by the consumer's producer.
async fn publish_notes<'a>(
    broker: &Broker,
    running: &Running,
    notes: impl IntoIterator<Item = (String, &'a str)>,
) {
    for (id, text) in notes {
        let body = serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap();
        broker
            .publish_signed(&running.queue, Some(&id), &body, &running.producer)
            .await
            .unwrap();
    }
}

/// Publishes each of `texts` under the message id `m-<text>`.
async fn publish_texts(broker: &Broker, running: &Running, texts: &[String]) {
    publish_notes(
        broker,
        running,
        texts
            .iter()
            .map(|text| (format!("m-{text}"), text.as_str())),
    )
    .await;
}

async fn stored(pool: &PgPool) -> Vec<String> {
    let mut texts: Vec<String> = sqlx::query_scalar("SELECT text FROM notes")
        .fetch_all(pool)
        .await
        .unwrap();
    texts.sort();
    texts
}

#[tokio::test]
async fn messages_that_fail_every_time_are_dead_lettered_and_the_queue_goes_on() {
    let running = Running::start(Notes { together: false }).await;
    let (pool, queue) = (&running.pool, &running.queue);
    let admin = Broker::connect().await.unwrap();

    for (id, text) in [
        ("m-1", "before"),
        ("m-2", "refused"),
        ("m-3", "conflict"),
        ("m-4", "after"),
    ] {
        let body = serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap();
        admin
            .publish_signed(queue, Some(id), &body, &running.producer)
            .await
            .unwrap();
    }
    eventually("the good notes stored", WAIT, || async {
        (stored(pool).await == ["after", "before"]).then_some(())
    })
    .await;
    let dead = admin.take(&format!("{queue}.dlq"), 2, WAIT).await;
    let mut ids: Vec<_> = dead.into_iter().map(|(id, _)| id.unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["m-2", "m-3"]);

    running.stop().await;
}

#[tokio::test]
async fn a_refusal_of_messages_applied_together_dead_letters_that_message_alone() {
    let running = Running::start(Notes { together: true }).await;
    let (pool, queue) = (&running.pool, &running.queue);
    let admin = Broker::connect().await.unwrap();
    let publish = async |id: &str, text: &str| {
        let body = serde_json::to_vec(&serde_json::json!({ "text": text })).unwrap();
        admin
            .publish_signed(queue, Some(id), &body, &running.producer)
            .await
            .unwrap();
    };

    publish("m-1", "one").await;
    eventually("the first note stored", WAIT, || async {
        (stored(pool).await == ["one"]).then_some(())
    })
    .await;
    publish("m-2", "refused").await;
    publish("m-3", "two").await;
    eventually("the good notes stored", WAIT, || async {
        (stored(pool).await == ["one", "two"]).then_some(())
    })
    .await;
    let dead = admin.take(&format!("{queue}.dlq"), 1, WAIT).await;
    assert_eq!(dead[0].0.as_deref(), Some("m-2"));
    let first_together: bool = sqlx::query_scalar("SELECT together FROM notes WHERE text = 'one'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert!(
        first_together,
        "a batch without a refusal is stored together"
    );

    running.stop().await;
}

#[tokio::test]
async fn every_applied_message_is_acknowledged_once_when_acknowledgements_go_together() {
    let running = Running::start_with(Notes { together: true }, 4, amqp_url()).await;
    let pool = &running.pool;
    let admin = Broker::connect().await.unwrap();
    let texts: Vec<String> = (0..200).map(|n| format!("note-{n:03}")).collect();
    publish_texts(&admin, &running, &texts).await;
    eventually("every note stored", WAIT, || async {
        (stored(pool).await.len() >= texts.len()).then_some(())
    })
    .await;
    // An acknowledgement the broker refused (a tag acknowledged twice) would have closed the
    // channel and brought its deliveries back: stored twice. One left out would come back when
    // the consumer's channel closes.
    running.stop_expecting(&admin, &texts).await;
}

#[tokio::test]
async fn a_message_whose_batch_never_committed_comes_back_however_many_later_ones_were_applied() {
    let rabbit = TcpProxy::start(&host_port(&amqp_url()), true)
        .await
        .unwrap();
    let running = Running::start_with(
        Notes { together: false },
        4,
        rabbit.url_through(&amqp_url()),
    )
    .await;
    let (pool, queue) = (&running.pool, &running.queue);
    let admin = Broker::connect().await.unwrap();
    let texts: Vec<String> = (0..40).map(|n| format!("note-{n:02}")).collect();
    let notes = std::iter::once(("m-hold".to_owned(), "hold")).chain(
        texts
            .iter()
            .map(|text| (format!("m-{text}"), text.as_str())),
    );
    publish_notes(&admin, &running, notes).await;
    // The workers without "hold" apply their notes while its batch stays open.
    eventually("notes stored after the held one", WAIT, || async {
        (stored(pool).await.len() >= 20).then_some(())
    })
    .await;

    // The consumer loses the broker: the held batch never commits.
    rabbit.cut();
    let back = std::sync::Mutex::new(Vec::new());
    let came_back = |id: &str| {
        back.lock()
            .unwrap()
            .iter()
            .any(|(back, _): &(Option<String>, _)| back.as_deref() == Some(id))
    };
    eventually("the held message back in the queue", WAIT, || async {
        let more = admin.drain(queue).await.unwrap();
        back.lock().unwrap().extend(more);
        came_back("m-hold").then_some(())
    })
    .await;
    // Nothing else is lost either: each note is stored or back in the queue (one acknowledged
    // but not stored would never be either).
    eventually("every note stored or back in the queue", WAIT, || async {
        let more = admin.drain(queue).await.unwrap();
        back.lock().unwrap().extend(more);
        let stored = stored(pool).await;
        texts
            .iter()
            .all(|text| stored.contains(text) || came_back(&format!("m-{text}")))
            .then_some(())
    })
    .await;
    // The abandoned transaction's statement would sleep on; the test need not wait for it.
    sqlx::query(
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query = 'SELECT pg_sleep(60)'",
    )
    .execute(pool)
    .await
    .unwrap();
    running.stop().await;
}

#[tokio::test]
async fn a_key_whose_transaction_waits_on_a_lock_delays_no_other_keys_messages() {
    // Two batches of up to 4 in flight: a prefetch of 8. Were the messages of other keys held up
    // behind the slow one, or applied and left unacknowledged, the broker would stop delivering
    // after 8 and the waves below would never be stored.
    let running = Running::start_sized(Notes { together: false }, 2, 4, amqp_url()).await;
    let pool = &running.pool;
    let admin = Broker::connect().await.unwrap();
    sqlx::query("INSERT INTO keys VALUES ('slow', 0)")
        .execute(pool)
        .await
        .unwrap();

    // Another transaction holds the slow key's row, as a second instance or a long statement
    // might, and the consumer's batch of that key waits on it.
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("SELECT n FROM keys WHERE key = 'slow' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    publish_notes(&admin, &running, [("m-slow".to_owned(), "slow")]).await;
    eventually("the slow key's batch waiting on the lock", WAIT, || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'UPDATE keys%')",
        )
        .fetch_one(pool)
        .await
        .unwrap()
        .then_some(())
    })
    .await;

    // For ten seconds, wave after wave of other keys' notes is applied and acknowledged.
    let started = std::time::Instant::now();
    let mut expected = Vec::new();
    for wave in 0.. {
        if wave >= 3 && started.elapsed() >= Duration::from_secs(10) {
            break;
        }
        let texts: Vec<String> = (0..12).map(|n| format!("wave-{wave:03}-{n:02}")).collect();
        publish_texts(&admin, &running, &texts).await;
        expected.extend(texts);
        expected.sort();
        eventually("the wave stored while the slow key waits", WAIT, || async {
            (stored(pool).await == expected).then_some(())
        })
        .await;
    }
    let slow_count: i32 = sqlx::query_scalar("SELECT n FROM keys WHERE key = 'slow'")
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    assert_eq!(slow_count, 0, "the slow key's note waited all along");

    // The lock goes: the slow key's note is applied too, and each note once.
    holder.commit().await.unwrap();
    expected.push("slow".to_owned());
    expected.sort();
    eventually("the slow key's note stored", WAIT, || async {
        (stored(pool).await == expected).then_some(())
    })
    .await;
    running.stop_expecting(&admin, &expected).await;
}
