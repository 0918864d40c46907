//! The first release's databases, taken over by this build: its migrations run on top of the
//! schema and history the first release left, every user's past orders get their places in
//! line on both sides alike, an answer that was in flight is asked for again, and the next
//! order is decided at once rather than parked behind places that will never come.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{System, WAIT};
use gozon_test_support::{TestNames, eventually};
use sqlx::{
    Connection, PgConnection, Postgres,
    migrate::{MigrateDatabase, Migrator},
};
use uuid::Uuid;

/// The last migration of the first release: the schema it left.
const FIRST_RELEASE: i64 = 20261129000400;

static MESSAGING: Migrator = sqlx::migrate!("../messaging/migrations");
static RUNTIME: Migrator = sqlx::migrate!("../runtime/migrations");
static ORDERS: Migrator = sqlx::migrate!("../orders/migrations");
static PAYMENTS: Migrator = sqlx::migrate!("../payments/migrations");

/// A database at the first release's schema: the migrations of the shared tables and of
/// `service` up to [`FIRST_RELEASE`], applied as that release applied them.
async fn first_release_database(url: &str, service: &Migrator) -> PgConnection {
    Postgres::create_database(url).await.unwrap();
    let mut migrations: Vec<_> = MESSAGING
        .iter()
        .chain(RUNTIME.iter())
        .chain(service.iter())
        .filter(|migration| migration.version <= FIRST_RELEASE)
        .cloned()
        .collect();
    migrations.sort_by_key(|migration| migration.version);
    let mut db = PgConnection::connect(url).await.unwrap();
    Migrator::with_migrations(migrations)
        .run(&mut db)
        .await
        .unwrap();
    db
}

#[tokio::test]
async fn a_first_release_history_keeps_its_order_and_the_next_order_is_decided_at_once() {
    let names = TestNames::new();
    let user = format!("ulla-{}", &names.id[names.id.len() - 6..]);
    // Placed in this order (UUIDv7, as the first release made them): paid, declined, and one
    // whose unsigned request was in flight when the release was stopped.
    let (paid, declined, in_flight) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());

    let mut orders = first_release_database(&names.orders_database_url, &ORDERS).await;
    for (id, amount, status, reason, outcome) in [
        (paid, 300_i64, "FINISHED", None, Some("paid")),
        (
            declined,
            5000,
            "CANCELLED",
            Some("insufficient_funds"),
            Some("declined"),
        ),
        (in_flight, 200, "NEW", None, None),
    ] {
        sqlx::query(
            "INSERT INTO orders (id, user_id, amount, description, status, reason, \
               payment_deadline) VALUES ($1, $2, $3, 'first release', $4, $5, \
               now() + interval '1 hour')",
        )
        .bind(id)
        .bind(&user)
        .bind(amount)
        .bind(status)
        .bind(reason)
        .execute(&mut orders)
        .await
        .unwrap();
        for event in ["placed", "payment_requested"].into_iter().chain(outcome) {
            sqlx::query("INSERT INTO order_events (order_id, event) VALUES ($1, $2)")
                .bind(id)
                .bind(event)
                .execute(&mut orders)
                .await
                .unwrap();
        }
    }
    orders.close().await.unwrap();

    let mut payments = first_release_database(&names.payments_database_url, &PAYMENTS).await;
    sqlx::query(
        "WITH a AS (INSERT INTO accounts (user_id, balance) VALUES ($1, 700)), \
         p AS (INSERT INTO payments (order_id, user_id, amount, status, reason) VALUES \
           ($2, $1, 300, 'SUCCEEDED', NULL), ($3, $1, 5000, 'FAILED', 'insufficient_funds')) \
         SELECT 1",
    )
    .bind(&user)
    .bind(paid)
    .bind(declined)
    .execute(&mut payments)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO ledger (user_id, kind, amount, order_id) VALUES \
           ($1, 'DEPOSIT', 1000, NULL), ($1, 'DEBIT', 300, $2)",
    )
    .bind(&user)
    .bind(paid)
    .execute(&mut payments)
    .await
    .unwrap();
    payments.close().await.unwrap();

    // This build, on those databases.
    let system = System::restart(names).await;
    let places: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT id, seq FROM orders WHERE user_id = $1 ORDER BY seq")
            .bind(&user)
            .fetch_all(&system.orders_pool)
            .await
            .unwrap();
    assert_eq!(places, [(paid, 1), (declined, 2), (in_flight, 3)]);

    // The request that was in flight is asked for again and decided as next in line.
    let settled = system.settled(&in_flight.to_string()).await;
    assert_eq!(settled["status"], "FINISHED", "{settled}");
    assert_eq!(system.balance(&user).await, 500);

    // The next order takes the next place and is decided at once, not parked.
    let next = system.place_order(&user, 100).await;
    let settled = system.settled(next["id"].as_str().unwrap()).await;
    assert_eq!(settled["status"], "FINISHED", "{settled}");
    assert_eq!(system.balance(&user).await, 400);
    let decided: Vec<(Uuid, i64)> =
        sqlx::query_as("SELECT order_id, seq FROM payments WHERE user_id = $1 ORDER BY seq")
            .bind(&user)
            .fetch_all(&system.payments_pool)
            .await
            .unwrap();
    let next_id: Uuid = next["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        decided,
        [(paid, 1), (declined, 2), (in_flight, 3), (next_id, 4)]
    );
    let parked: i64 = eventually("the user's line at its end", WAIT, || async {
        let (through, parked): (i64, i32) = sqlx::query_as(
            "SELECT decided_through, parked FROM payment_sequences WHERE user_id = $1",
        )
        .bind(&user)
        .fetch_one(&system.payments_pool)
        .await
        .unwrap();
        (through == 4).then_some(i64::from(parked))
    })
    .await;
    assert_eq!(parked, 0, "nothing waits in the user's line");
    system.assert_money_is_consistent().await;
    system.stop().await;
}
