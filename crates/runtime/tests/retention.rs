//! Retention against the real PostgreSQL: old rows that did their job go, in batches; outbox rows
//! (every one unsent: a row leaves the outbox once confirmed) and recent rows stay.

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
async fn old_keys_go_in_batches_while_recent_keys_of_any_owner_and_unsent_outbox_rows_stay() {
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
    // 3 outbox rows eight days old: unsent, however old.
    sqlx::query(
        "INSERT INTO outbox (message_id, queue, payload, created_at) \
         SELECT gen_random_uuid(), 'q', '{}', now() - interval '8 days' FROM generate_series(1, 3)",
    )
    .execute(&pool)
    .await
    .unwrap();
    // 2500 keys three days old (more than two batches), one 23 hours old.
    sqlx::query(
        "INSERT INTO idempotency_keys (route, owner, key, request, response_status, response_body, created_at) \
         SELECT 'r', 'u', 'old-' || n, '{}', 200, '', now() - interval '3 days' FROM generate_series(1, 2500) AS n",
    )
    .execute(&pool)
    .await
    .unwrap();
    // Another owner's key of an old key's name is another key: it stays while it is recent.
    sqlx::query(
        "INSERT INTO idempotency_keys (route, owner, key, request, response_status, response_body, created_at) VALUES \
         ('r', 'u', 'recent', '{}', 200, '', now() - interval '23 hours'), \
         ('r', 'v', 'old-1', '{}', 200, '', now() - interval '1 hour')",
    )
    .execute(&pool)
    .await
    .unwrap();

    let defaults = Args::parse_from(["test"]).retention;
    let stop = CancellationToken::new();
    let sweeps = defaults.shared_sweeps();
    assert_eq!(sweeps.len(), 1, "the idempotency keys' sweep");
    let statements = retention::sweep_once(&pool, &sweeps[0], &stop)
        .await
        .unwrap();
    assert_eq!(
        statements,
        [1000, 1000, 500],
        "at most {} rows per statement",
        retention::BATCH
    );
    assert_eq!(
        count(&pool, "SELECT count(*) FROM outbox").await,
        3,
        "unsent rows are never deleted"
    );
    let mut keys: Vec<(String, String)> = sqlx::query_as("SELECT owner, key FROM idempotency_keys")
        .fetch_all(&pool)
        .await
        .unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            ("u".to_owned(), "recent".to_owned()),
            ("v".to_owned(), "old-1".to_owned())
        ],
        "keys are kept for at least 24 hours, each owner's its own"
    );
    assert!(
        Args::try_parse_from(["test", "--idempotency-key-retention-hours", "23"]).is_err(),
        "the window cannot go under 24 h"
    );

    pool.close().await;
}
