//! Identity through the gateway (SPEC 3a): signing up, in and out, the session cookie, login
//! limits, key rotation — and that no user reads, spends or watches another user's money.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use base64::Engine as _;
use common::{System, password_of};
use gozon_http::auth::Claims;
use gozon_identity::keys::SigningKey;
use gozon_test_support::{TestIssuer, eventually};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The identity's current signing key, read from its database: tokens signed with it but
/// claiming the wrong things must still be refused.
async fn real_key(system: &System) -> SigningKey {
    sqlx::query_as("SELECT kid, private_key FROM signing_keys WHERE retired_at IS NULL")
        .fetch_one(&system.identity_pool)
        .await
        .unwrap()
}

/// Tokens that must all be refused with 401, each named for what is wrong with it.
async fn forged_tokens(system: &System, victim: &str) -> Vec<(&'static str, String)> {
    let key = real_key(system).await;
    let claims = |change: &dyn Fn(&mut Claims)| {
        let mut claims = Claims {
            sub: victim.to_owned(),
            iss: "gozon".into(),
            aud: "gozon".into(),
            iat: now(),
            exp: now() + 600,
            nbf: None,
            jti: None,
        };
        change(&mut claims);
        claims
    };
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let payload = b64.encode(serde_json::to_vec(&claims(&|_| {})).unwrap());
    let unsigned = format!(
        "{}.{payload}.",
        b64.encode(format!(
            r#"{{"alg":"none","typ":"JWT","kid":"{}"}}"#,
            key.kid()
        ))
    );
    // HS256 "signed" with the public key, as published: the classic algorithm confusion.
    let (_, jwks) = system.get("/auth/jwks.json").await;
    let public_x = jwks["keys"][0]["x"].as_str().unwrap().to_owned();
    let mut hs256 = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    hs256.kid = Some(key.kid().to_owned());
    let confused = |secret: &[u8]| {
        jsonwebtoken::encode(
            &hs256,
            &claims(&|_| {}),
            &jsonwebtoken::EncodingKey::from_secret(secret).unwrap(),
        )
        .unwrap()
    };
    let stranger = TestIssuer::start("gozon").await;
    let no_expiry = {
        let token = key.sign(&claims(&|_| {})).unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        let mut body: Value = serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
        body.as_object_mut().unwrap().remove("exp");
        // Re-encoding the payload breaks the signature too; both must be refused.
        format!("{}.{}.{}", parts[0], b64.encode(body.to_string()), parts[2])
    };
    vec![
        ("malformed", "not-a-token".to_owned()),
        ("three dots of nothing", "..".to_owned()),
        ("alg none", unsigned),
        (
            "HS256 with the public key's text",
            confused(public_x.as_bytes()),
        ),
        (
            "HS256 with the public key's bytes",
            confused(&b64.decode(&public_x).unwrap()),
        ),
        (
            "expired",
            key.sign(&claims(&|c| {
                c.iat = now() - 7200;
                c.exp = now() - 3600;
            }))
            .unwrap(),
        ),
        (
            "wrong audience",
            key.sign(&claims(&|c| c.aud = "someone-else".into()))
                .unwrap(),
        ),
        (
            "wrong issuer",
            key.sign(&claims(&|c| c.iss = "https://evil.example".into()))
                .unwrap(),
        ),
        (
            "signed by another key under the real kid",
            stranger
                .key()
                .clone()
                .with_kid(key.kid())
                .sign(&claims(&|_| {}))
                .unwrap(),
        ),
        ("signed by an unknown key", stranger.sign(&claims(&|_| {}))),
        ("claims edited after signing", no_expiry),
    ]
}

/// One route of the API: how to call it, as or about whom.
struct Route {
    method: Method,
    /// `{user}` is replaced by the user acted on, `{order}` by one of the owner's orders.
    path: &'static str,
    body: Option<Value>,
    /// What the owner gets.
    owner: StatusCode,
    /// What another signed-in user gets.
    other: StatusCode,
}

async fn call(
    system: &System,
    route: &Route,
    token: Option<&str>,
    owner: &str,
    order: &str,
) -> reqwest::Response {
    let path = route
        .path
        .replace("{user}", owner)
        .replace("{order}", order);
    let body = route.body.as_ref().map(|body| {
        serde_json::from_str::<Value>(&body.to_string().replace("{user}", owner)).unwrap()
    });
    let mut request = system
        .http
        .request(route.method.clone(), format!("{}{path}", system.gateway))
        .timeout(Duration::from_secs(10));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn every_route_refuses_the_anonymous_the_forged_and_other_users_and_serves_the_owner() {
    let system = System::start().await;
    let owner = "alice";
    let owner_token = system.token(owner).await;
    let other_token = system.token("mallory").await;
    system.open_account("mallory", 10_000).await;
    let routes = [
        Route {
            method: Method::POST,
            path: "/payments/accounts",
            body: Some(json!({"user_id": "{user}"})),
            owner: StatusCode::CREATED,
            other: StatusCode::FORBIDDEN,
        },
        Route {
            method: Method::POST,
            path: "/payments/accounts/deposit",
            body: Some(json!({"user_id": "{user}", "amount": 500})),
            owner: StatusCode::OK,
            other: StatusCode::FORBIDDEN,
        },
        Route {
            method: Method::GET,
            path: "/payments/accounts/{user}/balance",
            body: None,
            owner: StatusCode::OK,
            other: StatusCode::FORBIDDEN,
        },
        Route {
            method: Method::POST,
            path: "/orders",
            body: Some(json!({"user_id": "{user}", "amount": 100, "description": "mine"})),
            owner: StatusCode::CREATED,
            other: StatusCode::FORBIDDEN,
        },
        Route {
            method: Method::GET,
            path: "/orders?user_id={user}",
            body: None,
            owner: StatusCode::OK,
            other: StatusCode::FORBIDDEN,
        },
        Route {
            method: Method::GET,
            path: "/orders/{order}",
            body: None,
            owner: StatusCode::OK,
            other: StatusCode::NOT_FOUND,
        },
        Route {
            method: Method::GET,
            path: "/orders/events?user_id={user}",
            body: None,
            owner: StatusCode::OK,
            other: StatusCode::FORBIDDEN,
        },
        Route {
            method: Method::POST,
            path: "/auth/logout",
            body: None,
            owner: StatusCode::NO_CONTENT,
            other: StatusCode::NO_CONTENT,
        },
    ];
    let forged = forged_tokens(&system, owner).await;
    let mut order = "0190b7c4-1c1d-7000-8000-000000000001".to_owned();
    for route in &routes {
        let name = format!("{} {}", route.method, route.path);
        // Anonymous and forged first: they must change nothing the owner then does.
        let anonymous = call(&system, route, None, owner, &order).await;
        assert_eq!(
            anonymous.status(),
            StatusCode::UNAUTHORIZED,
            "{name} anonymous"
        );
        assert!(
            anonymous.headers()["www-authenticate"]
                .to_str()
                .unwrap()
                .starts_with("Bearer"),
            "{name}: 401 without a Bearer challenge"
        );
        assert_eq!(
            anonymous.headers()["content-type"],
            "application/problem+json"
        );
        for (what, token) in &forged {
            let answer = call(&system, route, Some(token), owner, &order).await;
            assert_eq!(answer.status(), StatusCode::UNAUTHORIZED, "{name} {what}");
            assert!(
                answer.headers().contains_key("www-authenticate"),
                "{name} {what}"
            );
        }
        let other = call(&system, route, Some(&other_token), owner, &order).await;
        assert_eq!(other.status(), route.other, "{name} as another user");

        let mine = call(&system, route, Some(&owner_token), owner, &order).await;
        assert_eq!(mine.status(), route.owner, "{name} as the owner");
        if route.path == "/orders" {
            let placed: Value = mine.json().await.unwrap();
            order = placed["id"].as_str().unwrap().to_owned();
        }
    }
    // Both tokens were signed out by the last route.
    system.forget_token(owner).await;
    system.forget_token("mallory").await;
    // Nothing the others tried moved money: alice's deposit and order are hers alone.
    system.settled(&order).await;
    assert_eq!(system.balance(owner).await, 400);
    assert_eq!(system.balance("mallory").await, 10_000);
    let mallorys_orders: i64 =
        sqlx::query_scalar("SELECT count(*) FROM orders WHERE user_id <> 'alice'")
            .fetch_one(&system.orders_pool)
            .await
            .unwrap();
    assert_eq!(mallorys_orders, 0);
    system.stop().await;
}

#[tokio::test]
async fn another_users_order_is_not_found_exactly_as_an_order_that_does_not_exist() {
    let system = System::start().await;
    system.open_account("owner", 1000).await;
    let order = system.place_order("owner", 10).await;
    let id = order["id"].as_str().unwrap();
    let unknown = "0190b7c4-1c1d-7000-8000-000000000001";
    let (theirs_status, theirs) = system.get_as("snoop", &format!("/orders/{id}")).await;
    let (unknown_status, nothing) = system.get_as("snoop", &format!("/orders/{unknown}")).await;
    assert_eq!((theirs_status, unknown_status), (404, 404));
    assert_eq!(
        theirs["detail"].as_str().unwrap().replace(id, "ID"),
        nothing["detail"].as_str().unwrap().replace(unknown, "ID"),
        "the answers differ only in the id asked for"
    );
    system.stop().await;
}

#[tokio::test]
async fn user_id_may_be_left_out_of_bodies_and_queries_and_then_is_the_callers() {
    let system = System::start().await;
    assert_eq!(
        system
            .post_as("quiet", "/payments/accounts", json!({}))
            .await
            .0,
        201
    );
    let (status, balance) = system
        .post_as("quiet", "/payments/accounts/deposit", json!({"amount": 70}))
        .await;
    assert_eq!((status, &balance["user_id"]), (200, &json!("quiet")));
    let (status, order) = system
        .post_as(
            "quiet",
            "/orders",
            json!({"amount": 20, "description": "x"}),
        )
        .await;
    assert_eq!((status, &order["user_id"]), (201, &json!("quiet")));
    let (status, list) = system.get_as("quiet", "/orders").await;
    assert_eq!((status, list.as_array().unwrap().len()), (200, 1));
    system.stop().await;
}

#[tokio::test]
async fn a_null_user_id_is_refused_with_a_422_problem_and_changes_nothing() {
    let system = System::start().await;
    system.open_account("nully", 100).await;
    for (path, body) in [
        ("/payments/accounts", json!({"user_id": null})),
        (
            "/payments/accounts/deposit",
            json!({"user_id": null, "amount": 70}),
        ),
        (
            "/orders",
            json!({"user_id": null, "amount": 20, "description": "x"}),
        ),
    ] {
        let (status, problem) = system.post_as("nully", path, body).await;
        assert_eq!(status, 422, "{path}: {problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("null"),
            "{path}: {problem}"
        );
    }
    assert_eq!(system.balance("nully").await, 100);
    let (_, list) = system.get_as("nully", "/orders").await;
    assert_eq!(list.as_array().unwrap().len(), 0);
    system.stop().await;
}

#[tokio::test]
async fn sign_up_sign_in_and_sign_out_work_with_a_bearer_token_or_the_session_cookie() {
    let system = System::start().await;
    let credentials = json!({"user_id": "carol", "password": "carol's long secret"});
    let signup = system
        .http
        .post(format!("{}/auth/signup", system.gateway))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(signup.status(), 201);
    let cookie = signup.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["gozon_session=", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie} lacks {attribute}");
    }
    let session: Value = signup.json().await.unwrap();
    assert_eq!(session["user_id"], "carol");
    let token = session["token"].as_str().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert!(header["kid"].is_string());

    assert_eq!(
        system.post("/auth/signup", credentials.clone()).await.0,
        409
    );
    let (status, problem) = system
        .post(
            "/auth/signup",
            json!({"user_id": "dan", "password": "short"}),
        )
        .await;
    assert_eq!(status, 422, "{problem}");
    let (status, _) = system
        .post(
            "/auth/signup",
            json!({"user_id": "dan", "password": "x".repeat(257)}),
        )
        .await;
    assert_eq!(status, 422);
    assert_eq!(
        system
            .post(
                "/auth/signup",
                json!({"user_id": "bad id", "password": "long enough"})
            )
            .await
            .0,
        422
    );

    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE user_id = 'carol'")
            .fetch_one(&system.identity_pool)
            .await
            .unwrap();
    assert!(
        stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
        "{stored}"
    );
    assert!(!stored.contains("long secret"));

    let (status, session) = system.post("/auth/login", credentials.clone()).await;
    assert_eq!(status, 200);
    let session_cookie = format!("gozon_session={}", session["token"].as_str().unwrap());
    // The browser's way: the cookie alone, no Authorization header.
    let by_cookie = system
        .http
        .get(format!("{}/orders", system.gateway))
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200);

    let logout = system
        .http
        .post(format!("{}/auth/logout", system.gateway))
        .header("cookie", &session_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    let cleared = logout.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("gozon_session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    assert_eq!(system.post("/auth/logout", json!({})).await.0, 401);
    system.stop().await;
}

#[tokio::test]
async fn login_answers_an_unknown_user_and_a_wrong_password_alike_and_after_the_same_work() {
    let system = System::start().await;
    system.token("erin").await;
    let attempt = |user: &'static str| {
        let system = &system;
        async move {
            let started = Instant::now();
            let answer = system
                .http
                .post(format!("{}/auth/login", system.gateway))
                // Each attempt from its own address would not help: the gateway sets it.
                .json(&json!({"user_id": user, "password": "not the password"}))
                .send()
                .await
                .unwrap();
            let elapsed = started.elapsed();
            let status = answer.status();
            let challenge = answer.headers().get("www-authenticate").cloned();
            let body: Value = answer.json().await.unwrap();
            (status, challenge, body, elapsed)
        }
    };
    let mut wrong = Vec::new();
    let mut unknown = Vec::new();
    // Alternating, four of each: within the per-user limit (5) of both users.
    for _ in 0..4 {
        wrong.push(attempt("erin").await);
        unknown.push(attempt("nobody-at-all").await);
    }
    let (w, u) = (&wrong[0], &unknown[0]);
    assert_eq!(
        (w.0, u.0),
        (StatusCode::UNAUTHORIZED, StatusCode::UNAUTHORIZED)
    );
    assert_eq!(w.1, u.1);
    assert_eq!(w.2, u.2, "one answer for both");
    let median = |runs: &mut Vec<(
        StatusCode,
        Option<reqwest::header::HeaderValue>,
        Value,
        Duration,
    )>| {
        runs.sort_by_key(|run| run.3);
        runs[runs.len() / 2].3
    };
    let (w, u) = (median(&mut wrong), median(&mut unknown));
    // A hash costs tens of milliseconds; a lookup that found no user and skipped it, a few
    // hundred microseconds. Same work means the same order of time.
    let ratio = w.as_secs_f64() / u.as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "wrong password {w:?} vs unknown user {u:?}"
    );
    system.stop().await;
}

#[tokio::test]
async fn repeated_login_failures_for_a_user_end_in_429_and_the_right_password_works_later() {
    let system = System::start().await;
    system.token("frank").await;
    let right = json!({"user_id": "frank", "password": password_of("frank")});
    let wrong = json!({"user_id": "frank", "password": "guess-guess"});
    for n in 0..5 {
        assert_eq!(
            system.post("/auth/login", wrong.clone()).await.0,
            401,
            "attempt {n}"
        );
    }
    let refused = system
        .http
        .post(format!("{}/auth/login", system.gateway))
        .json(&right)
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        429,
        "even the right password, while limited"
    );
    let wait: u64 = refused.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // Five a minute: one attempt refills every 12 s.
    assert_eq!(wait, 12, "Retry-After");
    system.clock.advance(Duration::from_secs(wait - 1));
    assert_eq!(
        system.post("/auth/login", right.clone()).await.0,
        429,
        "not refilled a second early"
    );
    system.clock.advance(Duration::from_secs(1));
    assert_eq!(system.post("/auth/login", right).await.0, 200);
    system.stop().await;
}

#[tokio::test]
async fn repeated_login_failures_from_one_client_end_in_429_whatever_address_it_claims() {
    let system = System::start().await;
    // 30 a minute in a burst, and identity's clock stands still: the 31st is refused.
    let mut statuses = Vec::new();
    for n in 0..45 {
        let answer = system
            .http
            .post(format!("{}/auth/login", system.gateway))
            .header("x-forwarded-for", format!("10.0.0.{n}"))
            .json(&json!({"user_id": format!("guess-{n}"), "password": "whatever-1"}))
            .send()
            .await
            .unwrap();
        statuses.push(answer.status().as_u16());
        if statuses.last() == Some(&429) {
            break;
        }
    }
    assert_eq!(statuses.len(), 31, "refused at the quota: {statuses:?}");
    assert!(
        statuses[..statuses.len() - 1].iter().all(|&s| s == 401),
        "{statuses:?}"
    );
    system.stop().await;
}

#[tokio::test]
async fn tokens_signed_with_a_rotated_out_key_still_work_and_new_ones_use_the_new_key() {
    let system = System::start().await;
    system.open_account("grace", 100).await;
    let old = system.token("grace").await;
    let old_kid = real_key(&system).await.kid().to_owned();
    let new_kid = gozon_identity::keys::rotate(&system.identity_pool)
        .await
        .unwrap();
    assert_ne!(old_kid, new_kid);

    let (status, session) = system
        .post(
            "/auth/login",
            json!({"user_id": "grace", "password": password_of("grace")}),
        )
        .await;
    assert_eq!(status, 200);
    let new = session["token"].as_str().unwrap().to_owned();
    let (_, jwks) = system.get("/auth/jwks.json").await;
    let published: Vec<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|key| key["kid"].as_str().unwrap())
        .collect();
    assert!(published.contains(&old_kid.as_str()) && published.contains(&new_kid.as_str()));
    for token in [&old, &new] {
        // The services learn the new key by fetching the JWKS again (at most every 2 s).
        eventually("the token accepted", Duration::from_secs(10), || async {
            let answer = system
                .http
                .get(format!(
                    "{}/payments/accounts/grace/balance",
                    system.gateway
                ))
                .bearer_auth(token)
                .send()
                .await
                .ok()?;
            (answer.status() == 200).then_some(())
        })
        .await;
    }
    system.stop().await;
}

#[tokio::test]
async fn a_user_sees_none_of_another_users_orders_on_the_live_stream() {
    let system = System::start().await;
    system.open_account("hana", 1000).await;
    system.open_account("ivan", 1000).await;
    let url = format!("{}/orders/events", system.gateway);
    let mut ivan =
        gozon_test_support::SseStream::open(&url, &system.token("ivan").await, None).await;
    let mut hana =
        gozon_test_support::SseStream::open(&url, &system.token("hana").await, None).await;
    ivan.until(common::WAIT, |e| e.event == "open").await;
    hana.until(common::WAIT, |e| e.event == "open").await;
    let order = system.place_order("hana", 10).await;
    let id = order["id"].as_str().unwrap().to_owned();
    hana.until(common::WAIT, |e| e.event == "order" && e.data.contains(&id))
        .await;
    assert!(
        ivan.next(Duration::from_millis(300)).await.is_none(),
        "ivan hears nothing of hana's orders"
    );
    system.stop().await;
}

#[tokio::test]
async fn a_signed_out_token_is_refused_by_every_service_within_seconds_and_its_stream_ends() {
    let system = System::start().await;
    system.open_account("leaver", 100).await;
    let token = system.token("leaver").await;
    let get = |path: &'static str| {
        let request = system
            .http
            .get(format!("{}{path}", system.gateway))
            .bearer_auth(&token);
        async move { request.send().await.unwrap().status() }
    };
    assert_eq!(get("/orders").await, 200);
    let mut stream = gozon_test_support::SseStream::open(
        &format!("{}/orders/events", system.gateway),
        &token,
        None,
    )
    .await;
    let logout = system
        .http
        .post(format!("{}/auth/logout", system.gateway))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 204);
    eventually(
        "the token refused everywhere",
        Duration::from_secs(10),
        || async {
            let orders = get("/orders").await;
            let payments = get("/payments/accounts/leaver/balance").await;
            (orders == 401 && payments == 401).then_some(())
        },
    )
    .await;
    assert!(
        stream.ends_within(Duration::from_secs(10)).await,
        "the live stream of a signed-out token ends"
    );
    // Signing in again gives a new token, and it works.
    let again = system
        .http
        .post(format!("{}/auth/login", system.gateway))
        .json(&json!({"user_id": "leaver", "password": password_of("leaver")}))
        .send()
        .await
        .unwrap();
    let session: Value = again.json().await.unwrap();
    let fresh = session["token"].as_str().unwrap();
    let balance = system
        .http
        .get(format!(
            "{}/payments/accounts/leaver/balance",
            system.gateway
        ))
        .bearer_auth(fresh)
        .send()
        .await
        .unwrap();
    assert_eq!(balance.status(), 200);
    system.stop().await;
}
