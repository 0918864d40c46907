//! Retention against the real PostgreSQL: old rows that did their job go, in batches; unsent
//! outbox rows and recent rows stay.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use clap::Parser;
use gozon_runtime::{
    db::{self, PoolSettings},
    retention::{self, RetentionSettings},
};
use gozon_test_support::TestNames;
use sqlx::{PgPool, migrate::Migrator};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Args {
    #[command(flatten)]
    retention: RetentionSettings,
}

async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

#[tokio::test]
async fn old_sent_outbox_rows_and_old_keys_go_while_unsent_and_recent_rows_stay() {
    let names = TestNames::new();
    let settings = PoolSettings {
        url: names.orders_database_url.clone(),
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
    // 2500 sent eight days ago (more than two batches), 3 unsent just as old, 5 sent an hour ago.
    sqlx::query(
        "INSERT INTO outbox (message_id, queue, payload, created_at, sent_at) \
         SELECT gen_random_uuid(), 'q', '{}', now() - interval '8 days', \
                CASE WHEN n <= 2500 THEN now() - interval '8 days' END \
         FROM generate_series(1, 2503) AS n",
    )
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO outbox (message_id, queue, payload, sent_at) SELECT gen_random_uuid(), 'q', '{}', now() - interval '1 hour' FROM generate_series(1, 5)")
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO idempotency_keys (route, owner, key, request, response_status, response_body, created_at) VALUES \
         ('r', 'u', 'old', '{}', 200, '', now() - interval '3 days'), ('r', 'u', 'recent', '{}', 200, '', now() - interval '23 hours')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let defaults = Args::parse_from(["test"]).retention;
    let stop = CancellationToken::new();
    let deleted: Vec<u64> = {
        let mut deleted = Vec::new();
        for sweep in defaults.shared_sweeps() {
            deleted.push(retention::sweep_once(&pool, &sweep, &stop).await.unwrap());
        }
        deleted
    };
    assert_eq!(deleted, [2500, 1]);
    assert_eq!(
        count(&pool, "SELECT count(*) FROM outbox WHERE sent_at IS NULL").await,
        3,
        "unsent rows are never deleted"
    );
    assert_eq!(count(&pool, "SELECT count(*) FROM outbox").await, 8);
    let keys: Vec<String> = sqlx::query_scalar("SELECT key FROM idempotency_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(keys, ["recent"], "keys are kept for at least 24 hours");
    assert!(
        Args::try_parse_from(["test", "--idempotency-key-retention-hours", "23"]).is_err(),
        "the window cannot go under 24 h"
    );

    pool.close().await;
    names.cleanup().await;
}
