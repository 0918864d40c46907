//! Nothing read is acted on outside the database before a synchronous standby has it.
//!
//! A private PostgreSQL primary that names a synchronous standby and has none: every commit that
//! wrote WAL waits there (`wait_event = 'SyncRep'`) until the test stops naming one. The writes
//! the services act on were made before, as a commit whose wait a crash cut short would leave
//! them: visible on the primary, possibly missing on the standby a failover promotes. A replay
//! answers, the relay publishes and a consumer acknowledges only once that wait has ended.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use axum::http::StatusCode;
use gozon_chaos::postgres::{PrivatePostgres, newest_bindir};
use gozon_contract::domain::UserId;
use gozon_messaging::{
    Role,
    amqp::BrokerHealth,
    consumer::{Consumer, ConsumerSettings, Handler, HandlerError},
    outbox::{self, Relay, RelaySettings, Wakeup},
    outgoing::Outgoing,
    signing::{
        KeyRing, PeerKeys,
        keys::{self, OwnKey},
    },
    standby::{self, ReadOn, Server, WaitError},
};
use gozon_runtime::{
    db::{self, PoolSettings},
    idempotency::{self, Claim, IdempotencyKey},
};
use gozon_telemetry::trace::TraceParent;
use gozon_test_support::{
    Broker, TcpProxy, TestNames, TestPeer, amqp_url, eventually, free_port, host_port,
    postgres_base_url,
};
use sqlx::{Connection, PgConnection, PgPool, migrate::Migrator};
use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

/// A primary that commits without a standby until [`require_standby`], with the shared tables
/// (outbox, idempotency keys) in a database of its own.
async fn primary(dir: &std::path::Path) -> (PrivatePostgres, PgPool) {
    let postgres = PrivatePostgres::start(&newest_bindir().unwrap(), dir, free_port(), true)
        .await
        .unwrap();
    postgres.commit_without_standby().await.unwrap();
    let settings = PoolSettings::of_service(format!("{}/gozon_standby", postgres.url()), 6);
    let no_service_tables = Migrator::with_migrations(Vec::new());
    let pool = db::connect_and_migrate(&settings, &no_service_tables, &CancellationToken::new())
        .await
        .unwrap();
    (postgres, pool)
}

/// Backends waiting for the synchronous standby at commit.
async fn waiting_for_standby(postgres: &PrivatePostgres) -> i64 {
    let mut db = PgConnection::connect(&format!("{}/postgres", postgres.url()))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'")
        .fetch_one(&mut db)
        .await
        .unwrap()
}

/// Names a synchronous standby again, and returns once commits wait for it: a probe's commit
/// is seen waiting (it returns when [`PrivatePostgres::commit_without_standby`] is called).
async fn require_standby(postgres: &PrivatePostgres) {
    postgres.require_sync_standby().await.unwrap();
    let url = format!("{}/gozon_standby", postgres.url());
    eventually("commits wait for the standby", WAIT, || {
        let url = url.clone();
        async move {
            // Each probe writes WAL; one that commits at once found the setting not yet in force.
            let probe = tokio::spawn(async move {
                let mut db = PgConnection::connect(&url).await.unwrap();
                sqlx::query("SELECT pg_logical_emit_message(true, 'probe', '')")
                    .execute(&mut db)
                    .await
                    .unwrap();
            });
            let waiting = eventually("the probe answered or waits", WAIT, || async {
                if probe.is_finished() {
                    Some(false)
                } else {
                    (waiting_for_standby(postgres).await >= 1).then_some(true)
                }
            })
            .await;
            waiting.then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_replay_answers_and_the_relay_publishes_only_once_the_synchronous_standby_has_the_write()
{
    gozon_telemetry::init_for_tests();
    let dir = tempfile_dir("standby-acts");
    let (postgres, pool) = primary(&dir).await;
    let names = TestNames::new();

    // Written while commits do not wait: an order's key with its answer, and a message.
    let owner = UserId::parse("standby-user").unwrap();
    let key = IdempotencyKey::parse(&"key-1".parse().unwrap()).unwrap();
    let request = serde_json::json!({ "amount": 100 });
    let mut tx = pool.begin().await.unwrap();
    let claimed = idempotency::claim(&mut tx, "POST /orders", &owner, Some(&key), &request)
        .await
        .unwrap();
    assert!(matches!(claimed, Claim::New));
    idempotency::save(
        &mut tx,
        "POST /orders",
        &owner,
        Some(&key),
        StatusCode::CREATED,
        &serde_json::json!({ "id": "first" }),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let queue = names.order_payments_queue.clone();
    outbox::enqueue(
        &pool,
        &queue,
        &serde_json::json!({ "n": 1 }),
        &TraceParent::new(),
    )
    .await
    .unwrap();
    let peer = PeerKeys::Given(keys::published(&[OwnKey::generate().unwrap()]).unwrap());
    let signatures = KeyRing::load(Role::Orders, &pool, peer).await.unwrap();

    require_standby(&postgres).await;
    let probes = waiting_for_standby(&postgres).await;

    // The retry of that request: the stored answer is read, and the commit before it waits.
    let replay = {
        let pool = pool.clone();
        let (owner, key) = (owner.clone(), key.clone());
        tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let claim = idempotency::claim(&mut tx, "POST /orders", &owner, Some(&key), &request)
                .await
                .unwrap();
            tx.commit().await.unwrap();
            claim
        })
    };
    eventually(
        "the replay's commit waits for the standby",
        WAIT,
        || async { (waiting_for_standby(&postgres).await > probes).then_some(()) },
    )
    .await;
    assert!(
        !replay.is_finished(),
        "the replay answered before the standby had the write"
    );

    // The relay claims the message and waits before publishing it.
    let wakeup = Wakeup::default();
    wakeup.notify();
    let settings = RelaySettings {
        outbox_batch_size: 64,
        outbox_poll_interval_ms: 200,
    };
    let relay = Relay::new(
        &pool,
        &names.broker(amqp_url()),
        settings,
        &wakeup,
        &BrokerHealth::default(),
        &signatures,
    );
    let stop = CancellationToken::new();
    let relaying = tokio::spawn(relay.run(stop.clone()));
    eventually("the relay waits for the standby", WAIT, || async {
        (waiting_for_standby(&postgres).await > probes + 1).then_some(())
    })
    .await;
    let broker = Broker::connect().await.unwrap();
    assert_eq!(
        broker.ready_count(&queue).await.unwrap(),
        0,
        "published before the standby had the row"
    );

    // The standby "has" it all: the waits end, the answer is the first one, the message goes.
    postgres.commit_without_standby().await.unwrap();
    assert!(matches!(replay.await.unwrap(), Claim::Replay(_)));
    let published = broker.take(&queue, 1, WAIT).await;
    assert_eq!(published.len(), 1);

    stop.cancel();
    relaying.await.unwrap();
    pool.close().await;
    drop(postgres);
    let _ = std::fs::remove_dir_all(&dir);
}

/// What a consumer's handler does with a delivery its inbox shows applied before: reads, and
/// writes nothing. Counts the deliveries it saw.
#[derive(Default)]
struct FoundApplied {
    seen: AtomicUsize,
}

impl Handler for FoundApplied {
    type Message = serde_json::Value;
    type Key = String;

    fn key(note: &serde_json::Value) -> String {
        note.to_string()
    }

    async fn handle(
        &self,
        db: &mut PgConnection,
        _message_id: &str,
        _trace: &TraceParent,
        _note: &serde_json::Value,
        _out: &mut Outgoing,
    ) -> Result<(), HandlerError> {
        sqlx::query("SELECT 1").execute(db).await?;
        self.seen.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test]
async fn a_delivery_that_writes_nothing_is_acknowledged_only_once_the_synchronous_standby_has_all_it_read()
 {
    gozon_telemetry::init_for_tests();
    let dir = tempfile_dir("standby-acks");
    let (postgres, pool) = primary(&dir).await;
    let names = TestNames::new();
    let queue = names.order_payments_queue.clone();
    // The consumer reaches the broker through a proxy the test can cut.
    let rabbit = TcpProxy::start(&host_port(&amqp_url()), true)
        .await
        .unwrap();
    let producer = TestPeer::start(Role::Orders).await;
    let signatures = KeyRing::load(Role::Payments, &pool, PeerKeys::at(producer.keys_url()))
        .await
        .unwrap();
    producer.meet_ring(&signatures).await;
    let handler = Arc::new(FoundApplied::default());
    let consumer = Consumer {
        queue: queue.clone(),
        pool: pool.clone(),
        broker: names.broker(rabbit.url_through(&amqp_url())),
        settings: ConsumerSettings {
            consumer_batch_size: 8,
            consumer_concurrency: 1,
        },
        handler: handler.clone(),
        health: BrokerHealth::default().register("consumer"),
        signatures,
    };
    require_standby(&postgres).await;
    let probes = waiting_for_standby(&postgres).await;
    let stop = CancellationToken::new();
    let consuming = tokio::spawn(consumer.run(stop.clone()));

    let broker = Broker::connect().await.unwrap();
    eventually("the queue declared", WAIT, || async {
        Broker::connect().await.ok()?.ready_count(&queue).await.ok()
    })
    .await;
    let body = serde_json::to_vec(&serde_json::json!({ "text": "seen" })).unwrap();
    broker
        .publish_signed(&queue, Some("m-seen"), &body, &producer)
        .await
        .unwrap();
    eventually("the batch's commit waits for the standby", WAIT, || async {
        (waiting_for_standby(&postgres).await > probes).then_some(())
    })
    .await;
    // Cut off from the consumer, the broker puts back whatever the consumer held unacknowledged.
    rabbit.cut();
    eventually("the delivery back in the queue", WAIT, || async {
        (broker.ready_count(&queue).await.ok()? == 1).then_some(())
    })
    .await;

    // The standby "has" it all: the commit returns, and the delivery, delivered again, is
    // applied and acknowledged.
    postgres.commit_without_standby().await.unwrap();
    rabbit.restore();
    eventually("the delivery handled again", WAIT, || async {
        (handler.seen.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    // A consumer stopping finishes its batches; a delivery left unacknowledged would come back.
    stop.cancel();
    consuming.await.unwrap();
    assert_eq!(broker.ready_count(&queue).await.unwrap(), 0);
    pool.close().await;
    drop(postgres);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_wait_for_the_standby_that_reaches_another_server_than_the_read_fails() {
    gozon_telemetry::init_for_tests();
    let dir = tempfile_dir("standby-server");
    let (postgres, pool) = primary(&dir).await;
    // The machine's shared server stands in for a standby promoted since the read.
    let mut shared = PgConnection::connect(&format!("{}/postgres", postgres_base_url()))
        .await
        .unwrap();
    let elsewhere: Server = sqlx::query_scalar("SELECT pg_postmaster_start_time()")
        .fetch_one(&mut shared)
        .await
        .unwrap();
    let here: Server = sqlx::query_scalar("SELECT pg_postmaster_start_time()")
        .fetch_one(&pool)
        .await
        .unwrap();

    // Both reads as made where commits wait for a standby: the wait is never skipped.
    let read_on = |server| ReadOn {
        server,
        standby_named: true,
    };
    standby::wait_for_standby(&pool, &read_on(here))
        .await
        .unwrap();
    assert!(matches!(
        standby::wait_for_standby(&pool, &read_on(elsewhere)).await,
        Err(WaitError::ServerChanged)
    ));
    pool.close().await;
    drop(postgres);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory for one private server.
fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("gozon-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
