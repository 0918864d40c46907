//! Hostile input at volume: thousands of generated requests through the gateway — any method, the
//! API's routes with mangled segments and queries, bodies that are almost right, any JSON, or
//! random bytes, odd content types and idempotency keys. Every answer must be below 500, every
//! refusal a problem document, and a refused request must change nothing: the orders, the
//! accounts, the deposits and the idempotency keys of both databases are fingerprinted before and
//! after each one. (Statuses and balances move on their own as accepted orders are paid, so the
//! fingerprint leaves them out.) Each request carries a credential that may be right, another
//! user's, missing, random, mangled or forged (`alg: none`), as a bearer header or a session
//! cookie. On failure proptest shrinks to the smallest request that fails.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::System;
use proptest::{
    prelude::*,
    test_runner::{Config, TestCaseError, TestRunner},
};
use serde_json::{Map, Value, json};
use sqlx::PgPool;
use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

/// Requests per run. Each costs a few milliseconds.
const CASES: u32 = 3000;

/// How many users signed up only to sign out.
static LEAVERS: AtomicU32 = AtomicU32::new(0);

#[derive(Debug, Clone)]
struct Attempt {
    method: &'static str,
    path: String,
    content_type: Option<&'static str>,
    idempotency_key: Option<String>,
    body: Option<Vec<u8>>,
    credential: Credential,
}

/// Who a request claims to be, and how it says so.
#[derive(Debug, Clone)]
struct Credential {
    token: Token,
    /// In the session cookie rather than an `Authorization: Bearer` header.
    as_cookie: bool,
}

#[derive(Debug, Clone)]
enum Token {
    None,
    /// fuzz-1's real token.
    Owner,
    /// fuzz-2's real token: a signed-in user acting on fuzz-1's things.
    OtherUser,
    /// Any text.
    Random(String),
    /// fuzz-1's token with one character replaced.
    Mangled {
        at: usize,
        with: char,
    },
    /// fuzz-1's claims with `alg: none` and no signature.
    Unsigned,
}

fn credential() -> impl Strategy<Value = Credential> {
    let token = prop_oneof![
        12 => Just(Token::Owner),
        2 => Just(Token::None),
        2 => Just(Token::OtherUser),
        1 => "[ -~]{0,400}".prop_map(Token::Random),
        2 => (any::<usize>(), prop::char::range('-', 'z')).prop_map(|(at, with)| Token::Mangled { at, with }),
        1 => Just(Token::Unsigned),
    ];
    (token, proptest::bool::weighted(0.2))
        .prop_map(|(token, as_cookie)| Credential { token, as_cookie })
}

/// The tokens the credentials are made from.
struct Tokens {
    owner: String,
    other: String,
}

impl Token {
    fn text(&self, tokens: &Tokens) -> Option<String> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        match self {
            Self::None => None,
            Self::Owner => Some(tokens.owner.clone()),
            Self::OtherUser => Some(tokens.other.clone()),
            Self::Random(text) => Some(text.clone()),
            Self::Mangled { at, with } => {
                let mut chars: Vec<char> = tokens.owner.chars().collect();
                let at = at % chars.len();
                chars[at] = *with;
                Some(chars.into_iter().collect())
            }
            Self::Unsigned => {
                let claims = tokens.owner.split('.').nth(1).unwrap_or_default();
                let header = b64.encode(r#"{"alg":"none","typ":"JWT"}"#);
                Some(format!("{header}.{claims}."))
            }
        }
    }
}
fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9._~-]{0,70}",
        "(%[0-9A-Fa-f]{2}){1,12}",
        Just("..".to_owned()),
        Just("%2e%2e%2f".to_owned()),
        Just("00000000-0000-0000-0000-000000000000".to_owned()),
        any::<u128>().prop_map(|n| uuid::Uuid::from_u128(n).to_string()),
        Just("fuzz-1".to_owned()),
        "[a-z]{300,2000}",
    ]
    .prop_filter("the event stream stays open by design", |s| s != "events")
}

fn path() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("/orders".to_owned()),
        Just("/payments/accounts".to_owned()),
        Just("/payments/accounts/deposit".to_owned()),
        segment().prop_map(|s| format!("/orders/{s}")),
        segment().prop_map(|s| format!("/orders?user_id={s}")),
        (segment(), segment()).prop_map(|(k, v)| format!("/orders?{k}={v}")),
        segment().prop_map(|s| format!("/payments/accounts/{s}/balance")),
        (segment(), segment()).prop_map(|(a, b)| format!("/payments/{a}/{b}")),
        segment().prop_map(|s| format!("/orders/{s}/x")),
        Just("/payments/metrics".to_owned()),
        Just("/orders/readyz".to_owned()),
    ]
}

fn user_id() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => Just(json!("fuzz-1")),
        2 => "[A-Za-z0-9._-]{1,64}".prop_map(Value::from),
        1 => Just(json!("")),
        1 => "[a-z]{65,90}".prop_map(Value::from),
        1 => "\\PC{1,20}".prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(Value::Null),
    ]
}

fn amount() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => (1i64..5000).prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(json!(0)),
        1 => Just(json!(i64::MAX)),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_map(|f| json!(f)),
        1 => "[0-9]{1,25}".prop_map(Value::from),
        1 => Just(Value::Null),
        1 => any::<bool>().prop_map(Value::from),
    ]
}

fn description() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => "\\PC{0,40}".prop_map(Value::from),
        1 => "[a-z]{990,1100}".prop_map(Value::from),
        1 => any::<i32>().prop_map(Value::from),
        1 => Just(json!({"nested": true})),
    ]
}

/// An object with some of the fields the API knows, each maybe wrong, and maybe one it doesn't.
fn almost_right() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::option::weighted(0.95, user_id()),
        proptest::option::weighted(0.95, amount()),
        proptest::option::weighted(0.9, description()),
        proptest::option::of(("[a-z]{1,8}", any::<i32>())),
    )
        .prop_map(|(user_id, amount, description, extra)| {
            let mut object = Map::new();
            for (name, value) in [
                ("user_id", user_id),
                ("amount", amount),
                ("description", description),
            ] {
                if let Some(value) = value {
                    object.insert(name.to_owned(), value);
                }
            }
            if let Some((name, value)) = extra {
                object.insert(name, json!(value));
            }
            serde_json::to_vec(&Value::Object(object)).unwrap()
        })
}

fn any_json() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "\\PC{0,20}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .prop_map(|value| serde_json::to_vec(&value).unwrap())
}

fn body() -> impl Strategy<Value = Option<Vec<u8>>> {
    prop_oneof![
        5 => almost_right().prop_map(Some),
        2 => any_json().prop_map(Some),
        1 => prop::collection::vec(any::<u8>(), 0..300).prop_map(Some),
        1 => Just(Some(vec![b'{'; 20_000])),
        1 => Just(None),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        6 => Just(Some("application/json")),
        1 => Just(Some("application/json; charset=utf-8")),
        1 => Just(Some("application/problem+json")),
        1 => Just(Some("text/plain")),
        1 => Just(Some("application/x-www-form-urlencoded")),
        1 => Just(Some("garbage")),
        1 => Just(None),
    ]
}

fn idempotency_key() -> impl Strategy<Value = Option<String>> {
    proptest::option::weighted(0.3, prop_oneof!["[ -~]{0,300}", "\\PC{1,10}"])
}

/// One of the API's operations, aimed right (method and route), with a body that may be off.
fn aimed() -> impl Strategy<Value = Attempt> {
    (
        prop_oneof![
            Just(("POST", "/orders".to_owned())),
            Just(("POST", "/payments/accounts".to_owned())),
            Just(("POST", "/payments/accounts/deposit".to_owned())),
            Just(("GET", "/orders?user_id=fuzz-1".to_owned())),
            Just(("GET", "/orders".to_owned())),
            Just(("POST", "/auth/login".to_owned())),
            Just(("POST", "/auth/logout".to_owned())),
            segment().prop_map(|s| ("GET", format!("/orders/{s}"))),
            segment().prop_map(|s| ("GET", format!("/payments/accounts/{s}/balance"))),
        ],
        content_type(),
        idempotency_key(),
        almost_right(),
        credential(),
    )
        .prop_map(
            |((method, path), content_type, idempotency_key, body, credential)| Attempt {
                method,
                path,
                content_type,
                idempotency_key,
                body: (method == "POST").then_some(body),
                credential,
            },
        )
}

/// Anything: any method on any route, any body.
fn scattered() -> impl Strategy<Value = Attempt> {
    (
        prop_oneof![
            6 => Just("POST"),
            3 => Just("GET"),
            1 => Just("PUT"),
            1 => Just("DELETE"),
            1 => Just("PATCH"),
            1 => Just("HEAD"),
            1 => Just("OPTIONS"),
        ],
        path(),
        content_type(),
        idempotency_key(),
        body(),
        credential(),
    )
        .prop_map(
            |(method, path, content_type, idempotency_key, body, credential)| Attempt {
                method,
                path,
                content_type,
                idempotency_key,
                body,
                credential,
            },
        )
}

fn attempt() -> impl Strategy<Value = Attempt> {
    prop_oneof![aimed(), scattered()]
}

/// What a rejected request must leave as it was.
async fn fingerprint(orders: &PgPool, payments: &PgPool) -> (String, String) {
    let (orders,): (String,) = sqlx::query_as(
        "SELECT (SELECT count(*) || ':' || coalesce(md5(string_agg(id::text || user_id || amount || description, ',' ORDER BY id)), '') FROM orders) \
         || '/' || (SELECT count(*) FROM idempotency_keys) || '/' || (SELECT last_value || ':' || is_called FROM outbox_id_seq)",
    )
    .fetch_one(orders)
    .await
    .unwrap();
    let (payments,): (String,) = sqlx::query_as(
        "SELECT (SELECT count(*) || ':' || coalesce(md5(string_agg(user_id, ',' ORDER BY user_id)), '') FROM accounts) \
         || '/' || (SELECT count(*) || ':' || coalesce(sum(amount), 0) FROM ledger WHERE kind = 'DEPOSIT') \
         || '/' || (SELECT count(*) FROM idempotency_keys)",
    )
    .fetch_one(payments)
    .await
    .unwrap();
    (orders, payments)
}

async fn check(
    system: &System,
    tokens: &Tokens,
    attempt: &Attempt,
    statuses: &Mutex<BTreeMap<u16, u32>>,
) -> Result<(), TestCaseError> {
    let before = fingerprint(&system.orders_pool, &system.payments_pool).await;
    let method = reqwest::Method::from_bytes(attempt.method.as_bytes()).unwrap();
    let mut request = system
        .http
        .request(method, format!("{}{}", system.gateway, attempt.path))
        .timeout(Duration::from_secs(10));
    if let Some(content_type) = attempt.content_type {
        request = request.header("content-type", content_type);
    }
    if let Some(key) = &attempt.idempotency_key {
        // A key that is not a valid header value cannot even be sent; that is the client's problem.
        if let Ok(key) = reqwest::header::HeaderValue::from_str(key) {
            request = request.header("idempotency-key", key);
        }
    }
    if let Some(body) = &attempt.body {
        request = request.body(body.clone());
    }
    let token = match attempt.credential.token {
        // A sign-out that works ends the session it names: it ends a user's of its own, so
        // that fuzz-1 and fuzz-2 stay signed in for the rest of the run.
        Token::Owner | Token::OtherUser if attempt.path == "/auth/logout" => {
            let leaver = LEAVERS.fetch_add(1, Ordering::Relaxed);
            Some(system.token(&format!("fuzz-leaver-{leaver}")).await)
        }
        _ => attempt.credential.token.text(tokens),
    };
    if let Some(token) = token {
        // Text that is not a valid header value cannot even be sent.
        let (name, value) = if attempt.credential.as_cookie {
            ("cookie", format!("gozon_session={token}"))
        } else {
            ("authorization", format!("Bearer {token}"))
        };
        if let Ok(value) = reqwest::header::HeaderValue::from_str(&value) {
            request = request.header(name, value);
        }
    }
    let response = request
        .send()
        .await
        .map_err(|error| TestCaseError::fail(format!("no answer: {error}")))?;
    let status = response.status();
    *statuses.lock().unwrap().entry(status.as_u16()).or_default() += 1;
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap_or_default();
    prop_assert!(status.as_u16() < 500, "{status} for {attempt:?}: {text}");
    if status.is_success() {
        return Ok(());
    }
    if attempt.method != "HEAD" {
        prop_assert_eq!(
            &content_type,
            "application/problem+json",
            "{} {}",
            status,
            text
        );
        let problem: Value = serde_json::from_str(&text)
            .map_err(|_| TestCaseError::fail(format!("{status}: not JSON: {text}")))?;
        prop_assert_eq!(problem["status"].as_u64(), Some(u64::from(status.as_u16())));
        prop_assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            text
        );
    }
    let after = fingerprint(&system.orders_pool, &system.payments_pool).await;
    prop_assert_eq!(
        before,
        after,
        "refused with {} yet something changed: {:?}",
        status,
        attempt
    );
    Ok(())
}

#[test]
fn thousands_of_generated_requests_get_no_5xx_and_refused_ones_change_nothing() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (system, tokens) = runtime.block_on(async {
        let system = System::start().await;
        system.open_account("fuzz-1", 1_000_000).await;
        system.open_account("fuzz-2", 1_000).await;
        let tokens = Tokens {
            owner: system.token("fuzz-1").await,
            other: system.token("fuzz-2").await,
        };
        (system, tokens)
    });
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let statuses = Mutex::new(BTreeMap::new());
    let outcome = runner.run(&attempt(), |attempt| {
        runtime.block_on(check(&system, &tokens, &attempt, &statuses))
    });
    runtime.block_on(system.stop());
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    let statuses = statuses.into_inner().unwrap();
    println!("answers by status: {statuses:?}");
    let accepted: u32 = statuses.range(200..300).map(|(_, n)| n).sum();
    let refused: u32 = statuses.range(400..500).map(|(_, n)| n).sum();
    assert!(
        accepted >= CASES / 20,
        "too few requests got through to judge: {statuses:?}"
    );
    assert!(
        refused >= CASES / 2,
        "too few requests were refused to judge: {statuses:?}"
    );
}
