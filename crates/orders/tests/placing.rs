//! Orders placed at the same time are committed together (`gozon_orders::placing`), against the
//! real PostgreSQL: a group is one transaction, an order that fails fails alone, and one key twice
//! in a group places one order. The orders are handed to the writers all at once (the test's
//! runtime has one thread, so every order is queued before a writer runs), which makes the group.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use axum::http::{HeaderValue, StatusCode};
use common::Orders;
use gozon_contract::domain::{Amount, OrderId, UserId};
use gozon_messaging::outbox::Wakeup;
use gozon_orders::{
    error::ApiError,
    order::NewOrder,
    placing::{Placed, Placement, Placing},
};
use gozon_runtime::idempotency::IdempotencyKey;
use gozon_telemetry::trace::TraceParent;
use std::time::Duration;

fn placement(user: &str, amount: i64, key: Option<&str>) -> Placement {
    let new = NewOrder {
        user_id: UserId::parse(user).unwrap(),
        amount: Amount::parse(amount).unwrap(),
        description: "placed with others".to_owned().try_into().unwrap(),
    };
    let key = key.map(|key| IdempotencyKey::parse(&HeaderValue::from_str(key).unwrap()).unwrap());
    Placement::new(
        new,
        key,
        Duration::from_secs(900),
        "placing-test.order.payments",
        &TraceParent::new(),
    )
    .unwrap()
}

/// The transaction that wrote each of `ids` (its `xmin`), in their order.
async fn writers_of(orders: &Orders, ids: &[OrderId]) -> Vec<String> {
    let mut writers = Vec::new();
    for id in ids {
        let xmin: String = sqlx::query_scalar("SELECT xmin::text FROM orders WHERE id = $1")
            .bind(id)
            .fetch_one(&orders.pool)
            .await
            .unwrap();
        writers.push(xmin);
    }
    writers
}

async fn count(orders: &Orders, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&orders.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn orders_placed_at_the_same_time_are_committed_in_one_transaction() {
    let orders = Orders::start(&[]).await;
    let placing = Placing::start(
        orders.pool.clone(),
        4,
        Wakeup::default(),
        Duration::from_secs(30),
    );
    let placements: Vec<_> = (1..=20).map(|n| placement("ann", n, None)).collect();
    let ids: Vec<OrderId> = placements.iter().map(|p| p.stamp.id).collect();

    let answers = futures::future::join_all(placements.into_iter().map(|p| placing.place(p))).await;
    assert!(answers.iter().all(|a| matches!(a, Ok(Placed::New(_)))));

    let writers = writers_of(&orders, &ids).await;
    assert!(
        writers.iter().all(|w| *w == writers[0]),
        "one transaction wrote them all: {writers:?}"
    );
    assert_eq!(count(&orders, "SELECT count(*) FROM outbox").await, 20);
    orders.stop().await;
}

#[tokio::test]
async fn an_order_that_fails_in_a_group_fails_alone_and_the_others_are_placed() {
    let orders = Orders::start(&[]).await;
    let placing = Placing::start(
        orders.pool.clone(),
        4,
        Wakeup::default(),
        Duration::from_secs(30),
    );
    let mut placements: Vec<_> = (1..=10).map(|n| placement("ann", n, None)).collect();
    // The last one reuses the first one's id: its INSERT fails (primary key), and with it the
    // group's transaction.
    placements[9].stamp.id = placements[0].stamp.id;
    let ids: Vec<OrderId> = placements[..9].iter().map(|p| p.stamp.id).collect();

    let answers = futures::future::join_all(placements.into_iter().map(|p| placing.place(p))).await;
    assert!(answers[..9].iter().all(|a| matches!(a, Ok(Placed::New(_)))));
    assert!(matches!(answers[9], Err(ApiError::GroupDatabase(_))));

    assert_eq!(count(&orders, "SELECT count(*) FROM orders").await, 9);
    assert_eq!(
        count(&orders, "SELECT sum(amount)::bigint FROM orders").await,
        45
    );
    assert_eq!(count(&orders, "SELECT count(*) FROM outbox").await, 9);
    // Written again one by one, each in its own transaction.
    let writers: std::collections::HashSet<String> =
        writers_of(&orders, &ids).await.into_iter().collect();
    assert_eq!(writers.len(), 9);
    orders.stop().await;
}

#[tokio::test]
async fn one_key_twice_in_a_group_places_one_order_and_answers_both() {
    let orders = Orders::start(&[]).await;
    let placing = Placing::start(
        orders.pool.clone(),
        4,
        Wakeup::default(),
        Duration::from_secs(30),
    );
    let first = placement("ann", 500, Some("same-key"));
    let retry = placement("ann", 500, Some("same-key"));
    let other_body = placement("ann", 501, Some("same-key"));
    let first_id = first.stamp.id;

    let answers =
        futures::future::join_all([first, retry, other_body].map(|p| placing.place(p))).await;
    let Ok(Placed::New(placed)) = &answers[0] else {
        panic!("the first is placed");
    };
    assert_eq!(placed.id, first_id);
    let Ok(Placed::Replayed(replayed)) = &answers[1] else {
        panic!("the retry gets the first answer");
    };
    assert_eq!(replayed.status(), StatusCode::CREATED);
    assert!(matches!(answers[2], Err(ApiError::IdempotencyConflict)));
    assert_eq!(count(&orders, "SELECT count(*) FROM orders").await, 1);
    orders.stop().await;
}

#[tokio::test]
async fn one_statement_writes_a_group_of_new_orders_and_answers_each_key_used_before_from_its_first_response()
 {
    let orders = Orders::start(&[]).await;
    let placing = Placing::start(
        orders.pool.clone(),
        4,
        Wakeup::default(),
        Duration::from_secs(30),
    );
    let earlier = placing
        .place(placement("ann", 300, Some("used-before")))
        .await
        .unwrap();
    let Placed::New(earlier) = earlier else {
        panic!("the first use of a key places its order");
    };
    let group = [
        placement("ann", 100, None),
        placement("ann", 300, Some("used-before")),
        placement("bob", 300, Some("used-before")),
        placement("ann", 301, Some("used-before")),
        placement("ann", 200, Some("new-key")),
    ];
    let ids: Vec<OrderId> = group.iter().map(|p| p.stamp.id).collect();

    let answers = futures::future::join_all(group.map(|p| placing.place(p))).await;
    assert!(matches!(&answers[0], Ok(Placed::New(o)) if o.id == ids[0]));
    let Ok(Placed::Replayed(replayed)) = &answers[1] else {
        panic!("a retry of the earlier request gets its first answer");
    };
    assert_eq!(replayed.status(), StatusCode::CREATED);
    // Another user's key of the same name is another key.
    assert!(matches!(&answers[2], Ok(Placed::New(o)) if o.id == ids[2]));
    assert!(matches!(answers[3], Err(ApiError::IdempotencyConflict)));
    assert!(matches!(&answers[4], Ok(Placed::New(o)) if o.id == ids[4]));

    let placed = [ids[0], ids[2], ids[4]];
    let writers = writers_of(&orders, &placed).await;
    assert!(writers.iter().all(|w| *w == writers[0]), "{writers:?}");
    assert_eq!(count(&orders, "SELECT count(*) FROM orders").await, 4);
    assert_eq!(count(&orders, "SELECT count(*) FROM order_events").await, 8);
    assert_eq!(count(&orders, "SELECT count(*) FROM outbox").await, 4);
    assert_eq!(
        count(&orders, "SELECT count(*) FROM idempotency_keys").await,
        3
    );
    // Each order's payment request and history are its own.
    assert_eq!(
        count(
            &orders,
            "SELECT count(*) FROM orders o JOIN outbox m \
               ON (m.payload->>'order_id')::uuid = o.id AND (m.payload->>'amount')::bigint = o.amount \
             JOIN order_events p ON p.order_id = o.id AND (p.detail->>'amount')::bigint = o.amount"
        )
        .await,
        4
    );
    assert!(!placed.contains(&earlier.id));
    orders.stop().await;
}

#[tokio::test]
async fn each_users_orders_are_numbered_in_the_order_they_were_committed_with_no_gap() {
    let orders = Orders::start(&[]).await;
    let placing = Placing::start(
        orders.pool.clone(),
        4,
        Wakeup::default(),
        Duration::from_secs(30),
    );
    // One after the other: each placed after the last one's answer.
    let mut one_by_one = Vec::new();
    for amount in 1..=3 {
        let Ok(Placed::New(order)) = placing.place(placement("ann", amount, None)).await else {
            panic!("placed");
        };
        one_by_one.push(order.seq.get());
    }
    assert_eq!(one_by_one, [1, 2, 3]);
    // At once, in one group and in several, mixed with another user's: every number once.
    let answers = futures::future::join_all(
        (0..30).map(|n| placing.place(placement(["ann", "bob"][n % 2], 10, None))),
    )
    .await;
    assert!(answers.iter().all(|a| matches!(a, Ok(Placed::New(_)))));
    let numbered: Vec<(String, Vec<i64>)> = sqlx::query_as(
        "SELECT user_id, array_agg(seq ORDER BY seq) FROM orders GROUP BY user_id ORDER BY 1",
    )
    .fetch_all(&orders.pool)
    .await
    .unwrap();
    assert_eq!(
        numbered,
        [
            ("ann".to_owned(), (1..=18).collect()),
            ("bob".to_owned(), (1..=15).collect())
        ]
    );
    // Each payment request carries its order's number.
    let carried: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM orders o JOIN outbox m ON (m.payload->>'order_id')::uuid = o.id \
         WHERE (m.payload->>'seq')::bigint = o.seq",
    )
    .fetch_one(&orders.pool)
    .await
    .unwrap();
    assert_eq!(carried, 33);
    orders.stop().await;
}
