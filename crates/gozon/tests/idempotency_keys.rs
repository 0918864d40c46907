//! `Idempotency-Key` on `POST /orders` and `POST /payments/accounts/deposit`, through the gateway.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::System;
use futures::future::join_all;
use serde_json::{Value, json};

/// A keyed POST, signed in as the body's `user_id`.
async fn keyed(system: &System, path: &str, key: &str, body: &Value) -> (u16, Value) {
    let token = system.token(body["user_id"].as_str().unwrap()).await;
    let response = system
        .http
        .post(format!("{}{path}", system.gateway))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn concurrent_retries_of_one_order_create_one_order_and_all_get_the_first_response() {
    let system = System::start().await;
    system.open_account("retry", 10_000).await;
    let body = json!({"user_id": "retry", "amount": 700, "description": "once"});
    let responses =
        join_all((0..20).map(|_| keyed(&system, "/orders", "order-key-1", &body))).await;
    let (status, first) = responses[0].clone();
    assert_eq!(status, 201);
    for response in &responses {
        assert_eq!(
            response,
            &(201, first.clone()),
            "every retry gets the first response"
        );
    }
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&system.orders_pool)
        .await
        .unwrap();
    assert_eq!(orders, 1);
    system.settled(first["id"].as_str().unwrap()).await;
    assert_eq!(system.balance("retry").await, 9_300, "paid once");

    let later = keyed(&system, "/orders", "order-key-1", &body).await;
    assert_eq!(
        later,
        (201, first.clone()),
        "a retry after settlement still replays the first response"
    );
    system.stop().await;
}

#[tokio::test]
async fn a_key_reused_with_a_different_body_is_refused_and_changes_nothing() {
    let system = System::start().await;
    system.open_account("mixer", 1_000).await;
    let (status, first) = keyed(
        &system,
        "/orders",
        "k",
        &json!({"user_id": "mixer", "amount": 1, "description": "a"}),
    )
    .await;
    assert_eq!(status, 201);
    system.settled(first["id"].as_str().unwrap()).await;
    let (status, problem) = keyed(
        &system,
        "/orders",
        "k",
        &json!({"user_id": "mixer", "amount": 2, "description": "a"}),
    )
    .await;
    assert_eq!(status, 422, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&system.orders_pool)
        .await
        .unwrap();
    assert_eq!(orders, 1);

    let deposit = json!({"user_id": "mixer", "amount": 5});
    assert_eq!(
        keyed(&system, "/payments/accounts/deposit", "k", &deposit)
            .await
            .0,
        200,
        "keys are per route"
    );
    let (status, _) = keyed(
        &system,
        "/payments/accounts/deposit",
        "k",
        &json!({"user_id": "mixer", "amount": 6}),
    )
    .await;
    assert_eq!(status, 422);
    assert_eq!(
        system.balance("mixer").await,
        1_000 - 1 + 5,
        "one order paid, one deposit credited"
    );

    let bad = system
        .http
        .post(format!("{}/orders", system.gateway))
        .bearer_auth(system.token("mixer").await)
        .header("Idempotency-Key", "")
        .json(&json!({"user_id": "mixer", "amount": 1, "description": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400, "an empty key is malformed");
    system.stop().await;
}

#[tokio::test]
async fn concurrent_retries_of_one_deposit_credit_once() {
    let system = System::start().await;
    system.open_account("saver", 0).await;
    let body = json!({"user_id": "saver", "amount": 250});
    let responses =
        join_all((0..20).map(|_| keyed(&system, "/payments/accounts/deposit", "dep-1", &body)))
            .await;
    for response in &responses {
        assert_eq!(
            response,
            &(200, json!({"user_id": "saver", "balance": 250}))
        );
    }
    assert_eq!(system.balance("saver").await, 250);
    let (status, again) = keyed(&system, "/payments/accounts/deposit", "dep-2", &body).await;
    assert_eq!(
        (status, again),
        (200, json!({"user_id": "saver", "balance": 500})),
        "a new key credits again"
    );
    system.assert_money_is_consistent().await;
    system.stop().await;
}

#[tokio::test]
async fn another_users_identical_key_and_body_never_replay_the_first_users_response() {
    let system = System::start().await;
    system.open_account("first", 1_000).await;
    system.open_account("second", 1_000).await;
    // No user_id in the body: the same bytes from both, under the same key.
    let body = json!({"amount": 10, "description": "same"});
    let send = |user: &'static str| {
        let body = body.clone();
        let system = &system;
        async move {
            let response = system
                .http
                .post(format!("{}/orders", system.gateway))
                .bearer_auth(system.token(user).await)
                .header("Idempotency-Key", "shared-key")
                .json(&body)
                .send()
                .await
                .unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        }
    };
    let (status, first) = send("first").await;
    assert_eq!((status, &first["user_id"]), (201, &json!("first")));
    let (status, second) = send("second").await;
    assert_eq!((status, &second["user_id"]), (201, &json!("second")));
    assert_ne!(first["id"], second["id"], "an order of its own");
    system.stop().await;
}
