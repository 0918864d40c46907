//! The accounts API against the real PostgreSQL: opening, depositing, reading balances.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::Payments;
use futures::future::join_all;
use serde_json::{Value, json};

#[tokio::test]
async fn an_account_opens_once_and_starts_at_zero() {
    let payments = Payments::start(&[]).await;
    let url = format!("{}/payments/accounts", payments.base);
    let first = payments
        .http
        .post(&url)
        .bearer_auth(payments.token("u-1"))
        .json(&json!({"user_id": "u-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 201);
    assert_eq!(
        first.json::<Value>().await.unwrap(),
        json!({"user_id": "u-1", "balance": 0})
    );
    let again = payments
        .http
        .post(&url)
        .bearer_auth(payments.token("u-1"))
        .json(&json!({"user_id": "u-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(again.headers()["content-type"], "application/problem+json");
    payments.stop().await;
}

#[tokio::test]
async fn deposits_and_balances_of_a_missing_account_are_not_found() {
    let payments = Payments::start(&[]).await;
    let deposit = payments
        .http
        .post(format!("{}/payments/accounts/deposit", payments.base))
        .bearer_auth(payments.token("nobody"))
        .json(&json!({"user_id": "nobody", "amount": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(deposit.status(), 404);
    let balance = payments
        .http
        .get(format!(
            "{}/payments/accounts/nobody/balance",
            payments.base
        ))
        .bearer_auth(payments.token("nobody"))
        .send()
        .await
        .unwrap();
    assert_eq!(balance.status(), 404);
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&payments.pool)
        .await
        .unwrap();
    assert_eq!(
        accounts, 0,
        "a deposit to a missing account creates nothing"
    );
    payments.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_deposits_of_ten_add_exactly_a_thousand() {
    let payments = Payments::start(&[]).await;
    payments.open_account("many", 0).await;
    let url = format!("{}/payments/accounts/deposit", payments.base);
    let responses = join_all((0..100).map(|_| {
        payments
            .http
            .post(&url)
            .bearer_auth(payments.token("many"))
            .json(&json!({"user_id": "many", "amount": 10}))
            .send()
    }))
    .await;
    for response in responses {
        assert_eq!(response.unwrap().status(), 200);
    }
    assert_eq!(payments.balance("many").await, 1000);
    let deposits: i64 = sqlx::query_scalar("SELECT count(*) FROM ledger WHERE kind = 'DEPOSIT'")
        .fetch_one(&payments.pool)
        .await
        .unwrap();
    assert_eq!(deposits, 100);
    payments.assert_ledger_balances().await;
    payments.stop().await;
}

#[tokio::test]
async fn a_deposit_that_would_overflow_the_balance_is_refused_and_changes_nothing() {
    let payments = Payments::start(&[]).await;
    payments.open_account("rich", i64::MAX - 5).await;
    let response = payments
        .http
        .post(format!("{}/payments/accounts/deposit", payments.base))
        .bearer_auth(payments.token("rich"))
        .json(&json!({"user_id": "rich", "amount": 6}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 422);
    let problem: Value = response.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("overflow"),
        "{problem}"
    );
    assert_eq!(payments.balance("rich").await, i64::MAX - 5);
    payments.assert_ledger_balances().await;
    payments.stop().await;
}

#[tokio::test]
async fn an_issuer_is_trusted_by_configuration_and_any_other_is_refused() {
    // The harness configures the service for its own issuer (as an external OpenID Connect
    // provider would be: issuer + JWKS URL), so every other test here is signed by it.
    let payments = Payments::start(&[]).await;
    let balance = |token: String| {
        let request = payments
            .http
            .get(format!(
                "{}/payments/accounts/ext-user/balance",
                payments.base
            ))
            .bearer_auth(token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(
        balance(payments.token("ext-user")).await,
        404,
        "the configured issuer's token is accepted (the account just does not exist)"
    );
    let elsewhere = gozon_test_support::TestIssuer::start("https://idp.elsewhere.example").await;
    assert_eq!(
        balance(elsewhere.token("ext-user")).await,
        401,
        "another issuer"
    );
    let same_name = gozon_test_support::TestIssuer::start(&payments.issuer.issuer).await;
    assert_eq!(
        balance(same_name.token("ext-user")).await,
        401,
        "the configured issuer's name on tokens signed with another key"
    );
    let mut claims = payments.issuer.claims("ext-user");
    claims.iss = "https://idp.elsewhere.example".into();
    assert_eq!(
        balance(payments.issuer.sign(&claims)).await,
        401,
        "the right key claiming another issuer"
    );
    payments.stop().await;
}

#[tokio::test]
async fn a_statement_the_database_refuses_is_a_500_naming_its_log_line_not_a_503() {
    let payments = Payments::start(&[]).await;
    // A rule the service does not know, added from outside: its INSERT is refused (23514),
    // which retrying cannot cure.
    sqlx::query(
        "ALTER TABLE accounts ADD CONSTRAINT refuses_one_user CHECK (user_id <> 'u-refused')",
    )
    .execute(&payments.pool)
    .await
    .unwrap();
    let response = payments
        .http
        .post(format!("{}/payments/accounts", payments.base))
        .bearer_auth(payments.token("u-refused"))
        .json(&json!({"user_id": "u-refused"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    let instance = problem["instance"].as_str().unwrap();
    let id = instance.strip_prefix("/errors/").unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{problem}");
    assert!(
        !problem["detail"]
            .as_str()
            .unwrap()
            .contains("refuses_one_user"),
        "the fault stays in the log: {problem}"
    );
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&payments.pool)
        .await
        .unwrap();
    assert_eq!(accounts, 0);
    payments.stop().await;
}
