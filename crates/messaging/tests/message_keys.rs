//! A service's message keys in its own database: the first start makes one; a rotation
//! announces the next at once but uses it only a minute later, and keeps announcing the ones
//! it replaces for a day after that.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use gozon_messaging::signing::keys;
use gozon_runtime::db::{self, PoolSettings};
use gozon_test_support::TestNames;
use sqlx::migrate::Migrator;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn a_rotated_key_is_announced_at_once_current_a_minute_later_and_its_predecessor_kept() {
    let names = TestNames::new();
    let settings = PoolSettings {
        url: names.orders_database_url.clone(),
        max_connections: 2,
        acquire_timeout: Duration::from_secs(5),
    };
    let pool = db::connect_and_migrate(
        &settings,
        &Migrator::with_migrations(Vec::new()),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    keys::ensure_current(&pool).await.unwrap();
    keys::ensure_current(&pool).await.unwrap();
    let first = keys::announced(&pool).await.unwrap();
    assert_eq!(first.len(), 1, "one key, made once");

    let next = keys::rotate(&pool).await.unwrap();
    let announced = keys::published(&keys::announced(&pool).await.unwrap()).unwrap();
    let kids: Vec<&str> = announced.keys.iter().map(|key| key.kid.as_str()).collect();
    assert_eq!(kids.len(), 2);
    assert!(kids.contains(&next.as_str()), "the next key is announced");
    assert_eq!(announced.current, first[0].kid, "but not used yet");

    // A minute on: the next key is current, its predecessor still announced.
    sqlx::query(
        "UPDATE message_keys SET current_from = current_from - interval '61 seconds', \
           retired_at = retired_at - interval '61 seconds'",
    )
    .execute(&pool)
    .await
    .unwrap();
    let announced = keys::published(&keys::announced(&pool).await.unwrap()).unwrap();
    assert_eq!(announced.current, next);
    assert_eq!(
        announced.keys.len(),
        2,
        "the previous key is still announced"
    );

    // A day after that, the previous key is gone.
    sqlx::query("UPDATE message_keys SET retired_at = retired_at - interval '1 day'")
        .execute(&pool)
        .await
        .unwrap();
    let announced = keys::published(&keys::announced(&pool).await.unwrap()).unwrap();
    assert_eq!(
        announced
            .keys
            .iter()
            .map(|key| &key.kid)
            .collect::<Vec<_>>(),
        [&next]
    );
    pool.close().await;
}
