//! Traces you can open: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the real binary (`gozon run`)
//! exports its spans over OTLP, and one order is one trace — the gateway's request, the orders
//! service's request under it, the payments service's handling of the payment request under
//! that (across the outbox, the broker and the inbox), and the orders service's handling of
//! the result under that. The OTLP receiver is this test's own (OTLP/HTTP with JSON).

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::binary::Processes;
use gozon_test_support::eventually;
use serde_json::{Value, json};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

/// A received span: its service, name, ids.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
}

fn spans_of(export: &Value) -> Vec<Span> {
    let mut spans = Vec::new();
    for resource in export["resourceSpans"].as_array().into_iter().flatten() {
        let service = resource["resource"]["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "service.name")
            .and_then(|a| a["value"]["stringValue"].as_str())
            .unwrap_or_default()
            .to_owned();
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            for span in scope["spans"].as_array().into_iter().flatten() {
                let text = |key: &str| span[key].as_str().unwrap_or_default().to_lowercase();
                spans.push(Span {
                    service: service.clone(),
                    name: text("name"),
                    trace_id: text("traceId"),
                    span_id: text("spanId"),
                    parent_id: text("parentSpanId"),
                });
            }
        }
    }
    spans
}

#[tokio::test]
async fn one_orders_spans_from_every_service_share_one_trace_with_the_right_parents() {
    // The receiver.
    let received: Arc<Mutex<Vec<Span>>> = Arc::default();
    let router = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post({
            let received = received.clone();
            move |body: axum::body::Bytes| async move {
                if let Ok(export) = serde_json::from_slice::<Value>(&body) {
                    received.lock().unwrap().extend(spans_of(&export));
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    // The system, as `make run` runs it.
    let system = Processes::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", collector),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json".to_owned()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
    ])
    .await;
    let http = reqwest::Client::new();
    let gateway = system.gateway.clone();
    let token = system.sign_up("traced").await;
    let opened = system
        .post(Some(&token), "/payments/accounts", json!({}))
        .await;
    assert_eq!(opened.status(), 201);
    let deposited = system
        .post(
            Some(&token),
            "/payments/accounts/deposit",
            json!({"amount": 100}),
        )
        .await;
    assert_eq!(deposited.status(), 200);

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let order: Value = http
        .post(format!("{gateway}/orders"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&json!({"amount": 10, "description": "follow me"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = order["id"].as_str().unwrap().to_owned();
    eventually("the order paid", Duration::from_secs(20), || async {
        let order: Value = http
            .get(format!("{gateway}/orders/{id}"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (order["status"] == "FINISHED").then_some(())
    })
    .await;

    let find = |spans: &[Span], service: &str, name: &str, parent: &str| {
        spans
            .iter()
            .find(|s| s.service == service && s.name == name && s.parent_id == parent)
            .cloned()
    };
    let chain = eventually(
        "the whole trace exported",
        Duration::from_secs(20),
        || async {
            let spans: Vec<Span> = received
                .lock()
                .unwrap()
                .iter()
                .filter(|s| s.trace_id == trace_id)
                .cloned()
                .collect();
            let at_gateway = find(&spans, "gateway", "request", client_span)?;
            let at_orders = find(&spans, "orders", "request", &at_gateway.span_id)?;
            let paid = find(&spans, "payments", "message", &at_orders.span_id)?;
            let settled = find(&spans, "orders", "message", &paid.span_id)?;
            Some([at_gateway, at_orders, paid, settled])
        },
    )
    .await;
    assert_eq!(
        chain.map(|span| span.service),
        ["gateway", "orders", "payments", "orders"]
    );

    system.stop().await;
}
