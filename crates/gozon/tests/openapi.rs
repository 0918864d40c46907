//! `web/openapi.json` describes what the system really answers: real responses of every
//! operation, successes and problems alike, validate against the schemas it declares, and the
//! gateway serves it at `/openapi.json`.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{System, WAIT, password_of};
use gozon_test_support::SseStream;
use serde_json::{Value, json};
use std::collections::HashSet;

fn spec() -> Value {
    serde_json::from_str(include_str!("../../../web/openapi.json")).unwrap()
}

/// Validates `instance` against the schema `pointer` (e.g. `#/components/schemas/Order`), with
/// the whole document as the root so that `$ref`s resolve.
fn assert_valid(spec: &Value, pointer: &str, instance: &Value) {
    let mut root = spec.clone();
    root["$ref"] = json!(pointer);
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    let validator = jsonschema::validator_for(&root).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(instance)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors.is_empty(),
        "{instance} does not match {pointer}: {errors:?}"
    );
}

/// The schema pointer the spec declares for `method path` answering `status`.
fn response_schema(spec: &Value, path: &str, method: &str, status: u16) -> String {
    let responses = &spec["paths"][path][method]["responses"];
    let declared = [status.to_string(), format!("{}XX", status / 100)]
        .into_iter()
        .find_map(|key| responses.get(&key))
        .unwrap_or_else(|| panic!("{method} {path} does not declare {status}"));
    let declared = match declared.get("$ref").and_then(Value::as_str) {
        Some(reference) => &spec["components"]["responses"][reference.rsplit('/').next().unwrap()],
        None => declared,
    };
    let content = declared["content"].as_object().unwrap();
    let schema = &content.values().next().unwrap()["schema"];
    match (schema.get("$ref"), schema.get("items")) {
        (Some(reference), _) => reference.as_str().unwrap().to_owned(),
        (None, Some(items)) => format!("array:{}", items["$ref"].as_str().unwrap()),
        _ => panic!("{method} {path} {status}: no schema"),
    }
}

/// Who makes a call: nobody, or a signed-in user.
const ANONYMOUS: Option<&str> = None;
const DOC: Option<&str> = Some("doc");

async fn check(
    system: &System,
    spec: &Value,
    caller: Option<&str>,
    (method, template, path, body): (&str, &str, &str, Option<Value>),
) -> Value {
    let mut request = system
        .http
        .request(method.parse().unwrap(), format!("{}{path}", system.gateway));
    if let Some(user) = caller {
        request = request.bearer_auth(system.token(user).await);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    if status == 204 {
        let declared = &spec["paths"][template][method.to_lowercase()]["responses"]["204"];
        assert!(
            declared.is_object() && declared.get("content").is_none(),
            "{method} {template} does not declare an empty 204"
        );
        assert!(response.bytes().await.unwrap().is_empty());
        return Value::Null;
    }
    let answer: Value = response.json().await.unwrap();
    let pointer = response_schema(spec, template, &method.to_lowercase(), status);
    match pointer.strip_prefix("array:") {
        Some(item) => answer
            .as_array()
            .unwrap()
            .iter()
            .for_each(|each| assert_valid(spec, item, each)),
        None => assert_valid(spec, &pointer, &answer),
    }
    answer
}

/// Reads `stream` until every order in `placed` has shown its final status, checking each event
/// against the document: `open` and `resync` carry `{}`, `order` an Order and an id.
async fn assert_events_match_the_document(spec: &Value, stream: &mut SseStream, placed: &[String]) {
    let mut unsettled: HashSet<&str> = placed.iter().map(String::as_str).collect();
    while !unsettled.is_empty() {
        let event = stream
            .next(WAIT)
            .await
            .unwrap_or_else(|| panic!("no final status yet for {unsettled:?}"));
        let data: Value = serde_json::from_str(&event.data).unwrap();
        match event.event.as_str() {
            "open" | "resync" => assert_eq!(data, json!({}), "{event:?}"),
            "order" => {
                assert_valid(spec, "#/components/schemas/Order", &data);
                assert!(
                    event
                        .id
                        .as_deref()
                        .is_some_and(|id| id.parse::<u64>().is_ok()),
                    "{event:?}"
                );
                if ["CANCELLED", "REFUNDED"].contains(&data["status"].as_str().unwrap()) {
                    unsettled.remove(data["id"].as_str().unwrap());
                }
            }
            other => panic!("an event the document does not name: {other}"),
        }
    }
}

#[tokio::test]
async fn real_responses_match_the_openapi_document() {
    let spec = spec();
    let system = System::start().await;
    let events_url = format!("{}/orders/events", system.gateway);
    let mut live = SseStream::open(&events_url, &system.token("doc").await, None).await;
    // (caller, (method, path template, path, body)): successes and problems of every operation.
    type Call<'a> = (Option<&'a str>, (&'a str, &'a str, String, Option<Value>));
    let calls: Vec<Call> = vec![
        (
            ANONYMOUS,
            ("GET", "/auth/jwks.json", "/auth/jwks.json".into(), None),
        ),
        (
            ANONYMOUS,
            (
                "POST",
                "/auth/signup",
                "/auth/signup".into(),
                Some(json!({"user_id": "writer", "password": password_of("writer")})),
            ),
        ),
        (
            ANONYMOUS,
            (
                "POST",
                "/auth/signup",
                "/auth/signup".into(),
                Some(json!({"user_id": "writer", "password": password_of("writer")})),
            ),
        ),
        (
            ANONYMOUS,
            (
                "POST",
                "/auth/signup",
                "/auth/signup".into(),
                Some(json!({"user_id": "shorty", "password": "short"})),
            ),
        ),
        (
            ANONYMOUS,
            (
                "POST",
                "/auth/login",
                "/auth/login".into(),
                Some(json!({"user_id": "writer", "password": password_of("writer")})),
            ),
        ),
        (
            ANONYMOUS,
            (
                "POST",
                "/auth/login",
                "/auth/login".into(),
                Some(json!({"user_id": "writer", "password": "wrong guess"})),
            ),
        ),
        (
            ANONYMOUS,
            ("POST", "/auth/logout", "/auth/logout".into(), None),
        ),
        (
            DOC,
            (
                "POST",
                "/payments/accounts",
                "/payments/accounts".into(),
                Some(json!({"user_id": "doc"})),
            ),
        ),
        (
            DOC,
            (
                "POST",
                "/payments/accounts",
                "/payments/accounts".into(),
                Some(json!({})),
            ),
        ),
        (
            ANONYMOUS,
            (
                "POST",
                "/payments/accounts",
                "/payments/accounts".into(),
                Some(json!({"user_id": "doc"})),
            ),
        ),
        (
            DOC,
            (
                "POST",
                "/payments/accounts/deposit",
                "/payments/accounts/deposit".into(),
                Some(json!({"user_id": "doc", "amount": 100})),
            ),
        ),
        (
            DOC,
            (
                "POST",
                "/payments/accounts/deposit",
                "/payments/accounts/deposit".into(),
                Some(json!({"user_id": "nobody", "amount": 1})),
            ),
        ),
        (
            Some("nobody"),
            (
                "POST",
                "/payments/accounts/deposit",
                "/payments/accounts/deposit".into(),
                Some(json!({"amount": 1})),
            ),
        ),
        (
            DOC,
            (
                "GET",
                "/payments/accounts/{user_id}/balance",
                "/payments/accounts/doc/balance".into(),
                None,
            ),
        ),
        (
            Some("nobody"),
            (
                "GET",
                "/payments/accounts/{user_id}/balance",
                "/payments/accounts/nobody/balance".into(),
                None,
            ),
        ),
        (
            DOC,
            (
                "GET",
                "/payments/accounts/{user_id}/balance",
                "/payments/accounts/nobody/balance".into(),
                None,
            ),
        ),
        (
            DOC,
            (
                "POST",
                "/orders",
                "/orders".into(),
                Some(json!({"user_id": "doc", "amount": 60, "description": "ok"})),
            ),
        ),
        (
            DOC,
            (
                "POST",
                "/orders",
                "/orders".into(),
                Some(json!({"amount": 600, "description": "too much"})),
            ),
        ),
        (
            DOC,
            (
                "POST",
                "/orders",
                "/orders".into(),
                Some(json!({"user_id": "doc", "amount": 0, "description": "x"})),
            ),
        ),
        (
            ANONYMOUS,
            (
                "POST",
                "/orders",
                "/orders".into(),
                Some(json!({"user_id": "doc", "amount": 1, "description": "x"})),
            ),
        ),
        (
            DOC,
            (
                "GET",
                "/orders/{id}",
                "/orders/0190b7c4-1c1d-7000-8000-000000000001".into(),
                None,
            ),
        ),
        (
            DOC,
            ("GET", "/orders", "/orders?user_id=writer".into(), None),
        ),
        (ANONYMOUS, ("GET", "/orders", "/orders".into(), None)),
    ];
    let mut placed = Vec::new();
    for (caller, (method, template, path, body)) in calls {
        let answer = check(&system, &spec, caller, (method, template, &path, body)).await;
        if template == "/orders" && answer.get("id").is_some() {
            placed.push(answer["id"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(placed.len(), 2, "one order paid, one refused by payments");
    for id in &placed {
        let settled = system.settled(id).await;
        assert_valid(&spec, "#/components/schemas/Order", &settled);
        let path = format!("/orders/{id}");
        check(&system, &spec, DOC, ("GET", "/orders/{id}", &path, None)).await;
        check(
            &system,
            &spec,
            Some("writer"),
            ("GET", "/orders/{id}", &path, None),
        )
        .await;
        // Cancel (202), by another user (404), again once refunded or cancelled (409).
        let cancel = format!("/orders/{id}/cancel");
        for caller in [DOC, Some("writer")] {
            check(
                &system,
                &spec,
                caller,
                ("POST", "/orders/{id}/cancel", &cancel, None),
            )
            .await;
        }
        let done = system.finished_with(id).await;
        assert_valid(&spec, "#/components/schemas/Order", &done);
        check(
            &system,
            &spec,
            DOC,
            ("POST", "/orders/{id}/cancel", &cancel, None),
        )
        .await;
        let history = format!("/orders/{id}/history");
        for caller in [DOC, Some("writer")] {
            check(
                &system,
                &spec,
                caller,
                ("GET", "/orders/{id}/history", &history, None),
            )
            .await;
        }
    }
    check(&system, &spec, DOC, ("GET", "/orders", "/orders", None)).await;

    // The live stream's events as they happened, and replayed from the first.
    let mut replayed = SseStream::open(&events_url, &system.token("doc").await, Some("0")).await;
    for stream in [&mut live, &mut replayed] {
        assert_events_match_the_document(&spec, stream, &placed).await;
    }
    // Last: it ends doc's session.
    check(
        &system,
        &spec,
        DOC,
        ("POST", "/auth/logout", "/auth/logout", None),
    )
    .await;

    let served: Value = system
        .http
        .get(format!("{}/openapi.json", system.gateway))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, spec, "the gateway serves the document");
    system.stop().await;
}

#[test]
fn the_wire_messages_match_their_schemas() {
    use gozon_contract::{
        domain::{Amount, OrderId, UserId},
        messages::{
            FailureReason, PaymentOutcome, PaymentRequest, PaymentResult, RefundRequest,
            RefundResult, RefundStatus, Seq,
        },
    };
    let spec = spec();
    let (order_id, user_id, amount) = (
        OrderId::new(),
        UserId::parse("u-1").unwrap(),
        Amount::parse(5).unwrap(),
    );
    let request = PaymentRequest {
        order_id,
        user_id: user_id.clone(),
        amount,
        deadline: time::OffsetDateTime::now_utc(),
        seq: Seq::FIRST,
    };
    let result = PaymentResult {
        order_id,
        user_id: user_id.clone(),
        amount,
        outcome: PaymentOutcome::Declined(FailureReason::PaymentTimeout),
    };
    let refund = RefundRequest {
        order_id,
        user_id: user_id.clone(),
        amount,
    };
    let refunded = RefundResult {
        order_id,
        user_id,
        amount,
        status: RefundStatus::Refunded,
    };
    for (schema, message) in [
        ("PaymentRequest", serde_json::to_value(&request).unwrap()),
        ("PaymentResult", serde_json::to_value(&result).unwrap()),
        ("RefundRequest", serde_json::to_value(&refund).unwrap()),
        ("RefundResult", serde_json::to_value(&refunded).unwrap()),
    ] {
        assert_valid(&spec, &format!("#/components/schemas/{schema}"), &message);
    }
}
