//! The services' connection pool against the real PostgreSQL: when a pooled connection is checked
//! before use (only after sitting idle over a second), and what a connection that died in the
//! pool costs.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use gozon_runtime::db::{self, PoolSettings};
use gozon_test_support::{TestNames, eventually};
use sqlx::{PgPool, migrate::Migrator};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A one-connection pool on the test's own database.
async fn pool(names: &TestNames) -> PgPool {
    db::connect_and_migrate(
        &PoolSettings::of_service(names.orders_database_url.clone(), 1),
        &Migrator::with_migrations(Vec::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap()
}

async fn backend_pid(pool: &PgPool) -> sqlx::Result<i32> {
    sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
}

/// Ends the pool's one connection from the server's side while it sits idle in the pool, as a
/// restarted or failed-over database would.
async fn kill_idle_connection(names: &TestNames, pool: &PgPool) -> i32 {
    let pid = backend_pid(pool).await.unwrap();
    // Back in the pool, its release check done: nothing is in flight on it.
    eventually(
        "the connection back in the pool",
        Duration::from_secs(5),
        || async { (pool.num_idle() == 1).then_some(()) },
    )
    .await;
    let admin = PgPool::connect(&names.orders_database_url).await.unwrap();
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(ended);
    eventually("the backend gone", Duration::from_secs(5), || {
        let admin = admin.clone();
        async move {
            let alive: bool =
                sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)")
                    .bind(pid)
                    .fetch_one(&admin)
                    .await
                    .unwrap();
            (!alive).then_some(())
        }
    })
    .await;
    pid
}

#[tokio::test]
async fn a_connection_idle_over_a_second_is_checked_before_use_so_its_death_costs_no_query() {
    let names = TestNames::new();
    let pool = pool(&names).await;
    let dead = kill_idle_connection(&names, &pool).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let pid = backend_pid(&pool).await.unwrap();
    assert_ne!(
        pid, dead,
        "the dead connection was replaced before the query"
    );
}

#[tokio::test]
async fn a_connection_used_moments_ago_is_not_checked_again_so_its_death_fails_one_query_only() {
    let names = TestNames::new();
    let pool = pool(&names).await;
    let dead = kill_idle_connection(&names, &pool).await;

    // No round trip to check it first: the query meets the dead connection and fails...
    assert!(backend_pid(&pool).await.is_err());
    // ...and the pool drops it, so the next query runs on a new one.
    let pid = backend_pid(&pool).await.unwrap();
    assert_ne!(pid, dead);
}
