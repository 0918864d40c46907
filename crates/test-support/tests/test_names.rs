//! A test's databases and queues are gone once its [`TestNames`] is, even when the test panicked.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use gozon_messaging::amqp::short;
use gozon_test_support::{Broker, TestNames, create_database_from_template, postgres_base_url};
use lapin::{options::QueueDeclareOptions, types::FieldTable};
use sqlx::{Connection, PgConnection, migrate::Migrator};

async fn database_exists(url: &str) -> bool {
    let name = url.rsplit('/').next().unwrap().to_owned();
    let mut admin = PgConnection::connect(&format!("{}/postgres", postgres_base_url()))
        .await
        .unwrap();
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_test_that_panics_leaves_neither_its_databases_nor_its_queues_behind() {
    let (made, told) = tokio::sync::oneshot::channel();
    let failing_test = tokio::spawn(async move {
        let names = TestNames::new();
        create_database_from_template(&names.orders_database_url, &Migrator::DEFAULT).await;
        let broker = Broker::connect().await.unwrap();
        broker
            .channel
            .queue_declare(
                short(&names.order_payments_queue),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .unwrap();
        let _ = made.send((
            names.orders_database_url.clone(),
            names.order_payments_queue.clone(),
        ));
        panic!("the test fails");
    });
    let (database, queue) = told.await.unwrap();
    assert!(failing_test.await.unwrap_err().is_panic());

    assert!(!database_exists(&database).await, "{database} left behind");
    // A passive declaration of a missing queue fails (and closes its channel).
    let broker = Broker::connect().await.unwrap();
    assert!(
        broker.ready_count(&queue).await.is_err(),
        "{queue} left behind"
    );
}
