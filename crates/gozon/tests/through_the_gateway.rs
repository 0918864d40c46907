//! The whole system through the gateway, as a client sees it.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::System;
use futures::future::join_all;
use gozon_telemetry::trace::TraceParent;
use gozon_test_support::Broker;
use serde_json::json;

#[tokio::test]
async fn the_quick_scenario_works_through_the_gateway() {
    let system = System::start().await;
    assert_eq!(
        system
            .post_as("user-1", "/payments/accounts", json!({"user_id": "user-1"}))
            .await,
        (201, json!({"user_id": "user-1", "balance": 0}))
    );
    assert_eq!(
        system
            .post_as("user-1", "/payments/accounts", json!({"user_id": "user-1"}))
            .await
            .0,
        409
    );
    let (status, body) = system
        .post_as(
            "user-1",
            "/payments/accounts/deposit",
            json!({"user_id": "user-1", "amount": 2000}),
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"user_id": "user-1", "balance": 2000}))
    );

    let paid = system.place_order("user-1", 1500).await;
    assert_eq!(paid["status"], "NEW");
    let paid = system.settled(paid["id"].as_str().unwrap()).await;
    assert_eq!(paid["status"], "FINISHED");
    assert!(paid.get("reason").is_none());
    assert_eq!(system.balance("user-1").await, 500);

    let too_big = system.place_order("user-1", 1000).await;
    let too_big = system.settled(too_big["id"].as_str().unwrap()).await;
    assert_eq!(
        (&too_big["status"], &too_big["reason"]),
        (&json!("CANCELLED"), &json!("insufficient_funds"))
    );
    assert_eq!(system.balance("user-1").await, 500);

    let stranger = system.place_order("no-account", 10).await;
    let stranger = system.settled(stranger["id"].as_str().unwrap()).await;
    assert_eq!(
        (&stranger["status"], &stranger["reason"]),
        (&json!("CANCELLED"), &json!("account_not_found"))
    );

    let (status, list) = system.get_as("user-1", "/orders?user_id=user-1").await;
    assert_eq!(status, 200);
    let ids: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].clone())
        .collect();
    assert_eq!(
        ids,
        [too_big["id"].clone(), paid["id"].clone()],
        "newest first"
    );
    assert_eq!(
        system
            .get_as(
                "user-1",
                &format!("/orders/{}", paid["id"].as_str().unwrap())
            )
            .await,
        (200, paid.clone())
    );
    for field in ["created_at", "updated_at"] {
        let time = paid[field].as_str().unwrap();
        assert!(
            time.ends_with('Z') && time.len() == "2026-11-24T04:11:39.970707Z".len(),
            "{field}: {time}"
        );
    }
    let (status, problem) = system
        .get_as("user-1", "/orders/0190b7c4-1c1d-7000-8000-000000000001")
        .await;
    assert_eq!(status, 404);
    assert!(problem["detail"].as_str().unwrap().contains("not found"));
    system.assert_money_is_consistent().await;
    system.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_4xx_problem_that_names_it_and_changes_nothing() {
    let system = System::start().await;
    system.open_account("victim", 100).await;
    let long_id = "x".repeat(65);
    let long_text = "d".repeat(1001);
    let huge = "d".repeat(20_000);
    let order = |body: String| ("POST", "/orders".to_owned(), Some(body));
    let deposit = |body: String| ("POST", "/payments/accounts/deposit".to_owned(), Some(body));
    let open = |body: String| ("POST", "/payments/accounts".to_owned(), Some(body));
    let get = |path: &str| ("GET", path.to_owned(), None);
    // (method, path, body) and the word the problem's detail must contain.
    type Case<'a> = ((&'a str, String, Option<String>), &'a str);
    let cases: Vec<Case> = vec![
        (order(r#"{"user_id":"victim","amount":"#.into()), "parse"),
        (order(r#"[]"#.into()), "object"),
        (order(r#"["victim",10,"x"]"#.into()), "object"),
        (order(r#"null"#.into()), "object"),
        (
            order(r#"{"user_id":"victim","amount":"10","description":"x"}"#.into()),
            "amount",
        ),
        (
            order(r#"{"user_id":"victim","amount":10}"#.into()),
            "description",
        ),
        (
            order(r#"{"user_id":"victim","amount":0,"description":"x"}"#.into()),
            "amount",
        ),
        (
            order(r#"{"user_id":"victim","amount":-5,"description":"x"}"#.into()),
            "amount",
        ),
        (
            order(r#"{"user_id":"victim","amount":1.5,"description":"x"}"#.into()),
            "amount",
        ),
        (
            order(r#"{"user_id":"victim","amount":9223372036854775808,"description":"x"}"#.into()),
            "amount",
        ),
        (
            order(r#"{"user_id":"victim","amount":1e30,"description":"x"}"#.into()),
            "amount",
        ),
        (
            order(r#"{"user_id":"","amount":10,"description":"x"}"#.into()),
            "user_id",
        ),
        (
            order(format!(
                r#"{{"user_id":"{long_id}","amount":10,"description":"x"}}"#
            )),
            "user_id",
        ),
        (
            order(r#"{"user_id":"a b","amount":10,"description":"x"}"#.into()),
            "user_id",
        ),
        (
            order(r#"{"user_id":"vic/tim","amount":10,"description":"x"}"#.into()),
            "user_id",
        ),
        (
            order(r#"{"user_id":"жук","amount":10,"description":"x"}"#.into()),
            "user_id",
        ),
        (
            order(format!(
                r#"{{"user_id":"victim","amount":10,"description":"{long_text}"}}"#
            )),
            "description",
        ),
        (
            order(format!(
                r#"{{"user_id":"victim","amount":10,"description":"{huge}"}}"#
            )),
            "larger than",
        ),
        (
            order(r#"{"amount":10,"description":"nul \u0000 inside"}"#.into()),
            "NUL",
        ),
        (
            deposit(r#"{"user_id":"victim","amount":0}"#.into()),
            "amount",
        ),
        (
            deposit(r#"{"user_id":"victim","amount":-1}"#.into()),
            "amount",
        ),
        (
            deposit(r#"{"user_id":"victim","amount":0.5}"#.into()),
            "amount",
        ),
        (
            deposit(r#"{"user_id":"victim","amount":"5"}"#.into()),
            "amount",
        ),
        (deposit(r#"{"user_id":"victim"}"#.into()), "amount"),
        (
            deposit(r#"{"user_id":"victim","amount":99999999999999999999}"#.into()),
            "amount",
        ),
        (
            deposit(format!(r#"{{"user_id":"victim","amount":{}}}"#, i64::MAX)),
            "overflow",
        ),
        (deposit(r#"{"user_id":"","amount":5}"#.into()), "user_id"),
        (deposit(r#"{"amount":5"#.into()), "parse"),
        (open(r#"{"user_id":"bad id"}"#.into()), "user_id"),
        (open(format!(r#"{{"user_id":"{long_id}"}}"#)), "user_id"),
        (get("/orders?user_id="), "user_id"),
        (get("/orders?user_id=a%20b"), "user_id"),
        (get("/orders/not-a-uuid"), "id"),
        (get("/payments/accounts/bad%20id/balance"), "user_id"),
        (get("/orders/a/b"), "no route"),
        (get("/payments/nowhere"), "no route"),
        (("DELETE", "/orders".to_owned(), None), "method"),
    ];
    let token = system.token("victim").await;
    for ((method, path, body), names) in cases {
        let mut request = system
            .http
            .request(method.parse().unwrap(), format!("{}{path}", system.gateway))
            .bearer_auth(&token);
        if let Some(body) = &body {
            request = request
                .header("content-type", "application/json")
                .body(body.clone());
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned());
        let problem: serde_json::Value = response.json().await.unwrap_or_default();
        let case = format!(
            "{method} {path} {}",
            body.as_deref()
                .unwrap_or("")
                .chars()
                .take(80)
                .collect::<String>()
        );
        assert!(status.is_client_error(), "{case}: {status} {problem}");
        assert_eq!(
            content_type.as_deref(),
            Some("application/problem+json"),
            "{case}"
        );
        let detail = problem["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(names),
            "{case}: {detail:?} does not name {names:?}"
        );
    }
    let no_content_type = system
        .http
        .post(format!("{}/orders", system.gateway))
        .bearer_auth(&token)
        .body(r#"{"user_id":"victim","amount":1,"description":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(no_content_type.status(), 415);

    let orders: i64 = sqlx::query_scalar("SELECT count(*) FROM orders")
        .fetch_one(&system.orders_pool)
        .await
        .unwrap();
    assert_eq!(orders, 0, "no rejected request created an order");
    assert_eq!(
        system.balance("victim").await,
        100,
        "no rejected request moved money"
    );
    let accounts: i64 = sqlx::query_scalar("SELECT count(*) FROM accounts")
        .fetch_one(&system.payments_pool)
        .await
        .unwrap();
    assert_eq!(accounts, 1);
    system.stop().await;
}

#[tokio::test]
async fn fifty_concurrent_orders_beyond_the_balance_end_in_agreement_with_the_ledger() {
    let system = System::start().await;
    system.open_account("spender", 1000).await;
    let placed = join_all((0..50).map(|_| system.place_order("spender", 100))).await;
    let mut finished = 0;
    for order in &placed {
        let settled = system.settled(order["id"].as_str().unwrap()).await;
        match settled["status"].as_str().unwrap() {
            "FINISHED" => finished += 1,
            "CANCELLED" => assert_eq!(settled["reason"], "insufficient_funds"),
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(finished, 10);
    assert_eq!(system.balance("spender").await, 0);
    system.assert_money_is_consistent().await;
    system.stop().await;
}

#[tokio::test]
async fn the_gateway_serves_the_ui_and_hides_the_services_internal_endpoints() {
    let system = System::start().await;
    for path in [
        "/",
        "/healthz-of-nothing",
        "/readyz",
        "/metrics",
        "/some/client/route",
    ] {
        let response = system
            .http
            .get(format!("{}{path}", system.gateway))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let html = response.text().await.unwrap();
        assert!(
            html.contains("<title>GoZon"),
            "{path} is the UI, not a service endpoint"
        );
    }
    let direct = system
        .http
        .get(format!("{}/readyz", system.orders_url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        direct.status(),
        200,
        "the service itself does serve /readyz"
    );
    system.stop().await;
}

#[tokio::test]
async fn each_service_reports_its_own_metrics_in_prometheus_text() {
    // Separate processes, as in production: each has its own recorder, so what one service
    // reports cannot come from the other.
    let system = common::binary::Processes::start(&[]).await;
    let http = reqwest::Client::new();
    let token = system.sign_up("counted").await;
    let post = |path: &'static str, body: serde_json::Value| system.post(Some(&token), path, body);
    assert_eq!(post("/payments/accounts", json!({})).await.status(), 201);
    post("/payments/accounts/deposit", json!({"amount": 100})).await;
    let placed = post("/orders", json!({"amount": 60, "description": "x"})).await;
    assert_eq!(placed.status(), 201);
    let metrics_of = |base: &str| {
        let request = http.get(format!("{base}/metrics"));
        async move {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 200);
            assert!(
                response.headers()["content-type"]
                    .to_str()
                    .unwrap()
                    .starts_with("text/plain")
            );
            response.text().await.unwrap()
        }
    };
    let orders = gozon_test_support::eventually("the order settled", common::WAIT, || async {
        let text = metrics_of(&system.orders_url).await;
        text.contains("order_settle_seconds_count 1")
            .then_some(text)
    })
    .await;
    let payments = metrics_of(&system.payments_url).await;
    for expected in [
        r#"http_requests_total{method="POST",route="/orders",status="201"} 1"#,
        "http_request_duration_seconds_bucket",
        "outbox_unsent 0",
        "outbox_oldest_unsent_age_seconds",
        "outbox_published_total 1",
        "outbox_publish_seconds_bucket",
        r#"messages_consumed_total{queue=""#,
        r#"broker_role_connected{role="outbox relay"} 1"#,
    ] {
        assert!(
            orders.contains(expected),
            "orders' /metrics lacks {expected}"
        );
    }
    for expected in [
        r#"http_requests_total{method="POST",route="/payments/accounts/deposit",status="200"} 1"#,
        r#"payment_decisions_total{outcome="succeeded"} 1"#,
        "outbox_published_total 1",
    ] {
        assert!(
            payments.contains(expected),
            "payments' /metrics lacks {expected}"
        );
    }
    assert!(
        !orders.contains("payment_decisions_total") && !payments.contains(r#"route="/orders""#),
        "each reports only its own"
    );
    system.stop().await;
}

#[tokio::test]
async fn every_request_carries_a_request_id_through_the_gateway() {
    let system = System::start().await;
    let url = format!("{}/orders?user_id=someone", system.gateway);
    let given = system
        .http
        .get(&url)
        .header("x-request-id", "trace-me-42")
        .send()
        .await
        .unwrap();
    assert_eq!(
        given.headers()["x-request-id"],
        "trace-me-42",
        "a given id is kept end to end"
    );
    let made = system.http.get(&url).send().await.unwrap();
    let id = made.headers()["x-request-id"].to_str().unwrap();
    assert!(
        uuid::Uuid::parse_str(id).is_ok(),
        "a missing id is generated: {id}"
    );
    system.stop().await;
}

#[tokio::test]
async fn an_orders_trace_id_travels_from_the_request_through_both_services() {
    let system = System::start().await;
    let broker = Broker::connect().await.unwrap();
    let request_tap = broker
        .tap(&system.names.order_payments_queue)
        .await
        .unwrap();
    let result_tap = broker
        .tap(&system.names.payment_status_queue)
        .await
        .unwrap();
    system.open_account("traced", 100).await;
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = system
        .http
        .post(format!("{}/orders", system.gateway))
        .bearer_auth(system.token("traced").await)
        .header(
            TraceParent::HEADER,
            format!("00-{trace_id}-00f067aa0ba902b7-01"),
        )
        .json(&json!({"user_id": "traced", "amount": 10, "description": "follow me"}))
        .send()
        .await
        .unwrap();
    let order: serde_json::Value = response.json().await.unwrap();
    system.settled(order["id"].as_str().unwrap()).await;

    // The `traceparent` header of the one message published through `tap`'s queue.
    let traceparent_of = async |tap: &str| {
        let published = broker.drain_deliveries(tap).await.unwrap();
        assert_eq!(published.len(), 1, "one message through {tap}");
        let headers = published[0]
            .properties
            .headers()
            .clone()
            .unwrap_or_default();
        match headers.inner().get(TraceParent::HEADER) {
            Some(lapin::types::AMQPValue::LongString(value)) => value.to_string(),
            other => panic!("no traceparent header: {other:?}"),
        }
    };
    let request_trace = traceparent_of(&request_tap).await;
    // The payments service knows the trace only from the AMQP headers of the request it consumed.
    let result_trace = traceparent_of(&result_tap).await;
    for traceparent in [&request_trace, &result_trace] {
        assert!(
            traceparent.starts_with(&format!("00-{trace_id}-")),
            "{traceparent}"
        );
    }
    assert_ne!(request_trace, result_trace, "each hop is a span of its own");
    system.stop().await;
}

#[tokio::test]
async fn the_services_database_sessions_have_statement_and_idle_transaction_timeouts() {
    let system = System::start().await;
    for pool in [&system.orders_pool, &system.payments_pool] {
        let limits: (String, String) = sqlx::query_as(
            "SELECT current_setting('statement_timeout'), \
                    current_setting('idle_in_transaction_session_timeout')",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        assert_eq!(limits, ("30s".to_owned(), "1min".to_owned()));
    }
    system.stop().await;
}

#[tokio::test]
async fn odd_targets_and_headers_get_a_4xx_problem_not_a_5xx() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let system = System::start().await;
    let token = system.token("odd").await;

    // An authority-form target (what a proxy would get), to the gateway.
    let address = system.gateway.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(
            format!("GET {address} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");

    // A UI path longer than any file system's.
    let long = system
        .http
        .get(format!("{}/{}", system.gateway, "a/".repeat(2100)))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 414);
    assert_eq!(long.headers()["content-type"], "application/problem+json");

    // Last-Event-ID values no stream ever sent.
    for bad in ["9223372036854775807", "-5", "soon", "99999999999999999999"] {
        let resumed = system
            .http
            .get(format!("{}/orders/events", system.gateway))
            .bearer_auth(&token)
            .header("last-event-id", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resumed.status(), 400, "Last-Event-ID {bad}");
        let problem: serde_json::Value = resumed.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("Last-Event-ID")
        );
    }
    system.stop().await;
}

#[tokio::test]
async fn no_method_or_path_a_client_sends_makes_a_metric_series_of_its_own() {
    let system = common::binary::Processes::start(&[]).await;
    let http = reqwest::Client::new();
    let invented: Vec<String> = (0..20)
        .map(|n| format!("INVENTED{n}{}", "X".repeat(200)))
        .collect();
    for (n, method) in invented.iter().enumerate() {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        for base in [&system.orders_url, &system.payments_url] {
            // On a route that exists, and on paths that do not.
            for path in [
                "/healthz".to_owned(),
                format!("/nowhere-{n}-{}", "y".repeat(100)),
            ] {
                http.request(method.clone(), format!("{base}{path}"))
                    .send()
                    .await
                    .unwrap();
            }
        }
    }
    for base in [&system.orders_url, &system.payments_url] {
        let text = http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            !text.contains("INVENTED") && !text.contains("nowhere-"),
            "{base}: a client's words became labels"
        );
        assert!(
            text.contains(
                r#"http_requests_total{method="OTHER",route="/healthz",status="405"} 20"#
            ),
            "{base}: counted as one series: {}",
            text.lines()
                .filter(|l| l.starts_with("http_requests_total"))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    system.stop().await;
}
