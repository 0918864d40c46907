//! How often one client may try, against the real service and PostgreSQL: sign-ups are limited
//! per client and a taken id costs no password hash; a guesser is stopped without locking the
//! user out from elsewhere; and a client address is believed only from a trusted proxy.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use clap::Parser;
use gozon_http::clock::ManualClock;
use gozon_identity::{Application, Settings};
use gozon_test_support::{TestNames, eventually};
use serde_json::json;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The tests of this file one at a time: one of them counts the process's password hashes.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Identity on its own database, with `extra` settings; its base URL and how to stop it.
struct Identity {
    /// The test's database and queues, removed when this is dropped.
    _names: TestNames,
    base: String,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Identity {
    async fn start(extra: &[&str]) -> Self {
        let names = TestNames::new();
        let mut args = vec![
            "identity",
            "--listen-addr",
            "127.0.0.1:0",
            "--database-url",
            &names.identity_database_url,
        ];
        args.extend(extra);
        let stop = CancellationToken::new();
        let clock = ManualClock::default();
        let app = Application::build_with_clock(Settings::parse_from(args), clock.into(), &stop)
            .await
            .unwrap();
        let base = format!("http://127.0.0.1:{}", app.port());
        let task = tokio::spawn({
            let stop = stop.clone();
            async move { app.run_until_stopped(stop).await.unwrap() }
        });
        let http = reqwest::Client::new();
        eventually("identity ready", Duration::from_secs(20), || async {
            let ready = http.get(format!("{base}/readyz")).send().await.ok()?;
            ready.status().is_success().then_some(())
        })
        .await;
        Self {
            _names: names,
            base,
            stop,
            task,
        }
    }

    /// `path` with `body`, as the client `from` (what a trusted proxy says it is).
    async fn post(&self, path: &str, body: serde_json::Value, from: &str) -> reqwest::Response {
        reqwest::Client::new()
            .post(format!("{}{path}", self.base))
            .header("x-forwarded-for", from)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
    }
}

fn credentials(user: &str, password: &str) -> serde_json::Value {
    json!({"user_id": user, "password": password})
}

/// The process's count of password hashes so far.
fn hashes() -> u64 {
    gozon_telemetry::metrics::render()
        .lines()
        .find_map(|line| line.strip_prefix("password_hashes_total "))
        .map_or(0, |count| count.trim().parse().unwrap())
}

#[tokio::test]
async fn sign_ups_are_limited_per_client_and_a_taken_id_costs_no_hash() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let identity = Identity::start(&["--signups-per-client", "3"]).await;
    for n in 0..3 {
        let answer = identity
            .post(
                "/auth/signup",
                credentials(&format!("new-{n}"), "a long password"),
                "198.51.100.7",
            )
            .await;
        assert_eq!(answer.status(), 201);
    }
    let refused = identity
        .post(
            "/auth/signup",
            credentials("new-3", "a long password"),
            "198.51.100.7",
        )
        .await;
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let elsewhere = identity
        .post(
            "/auth/signup",
            credentials("new-3", "a long password"),
            "203.0.113.9",
        )
        .await;
    assert_eq!(elsewhere.status(), 201, "another client is not limited");

    let before = hashes();
    let taken = identity
        .post(
            "/auth/signup",
            credentials("new-0", "another password"),
            "192.0.2.5",
        )
        .await;
    assert_eq!(taken.status(), 409);
    assert_eq!(hashes(), before, "no hash for an id that is taken");
    identity.stop().await;
}

#[tokio::test]
async fn a_guesser_from_one_address_locks_the_user_out_of_no_other_address() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let identity = Identity::start(&[]).await;
    let signed_up = identity
        .post(
            "/auth/signup",
            credentials("owner", "the right password"),
            "203.0.113.9",
        )
        .await;
    assert_eq!(signed_up.status(), 201);
    for _ in 0..5 {
        let guess = identity
            .post(
                "/auth/login",
                credentials("owner", "a wrong guess"),
                "198.51.100.7",
            )
            .await;
        assert_eq!(guess.status(), 401);
    }
    let guesser = identity
        .post(
            "/auth/login",
            credentials("owner", "the right password"),
            "198.51.100.7",
        )
        .await;
    assert_eq!(guesser.status(), 429, "the guesser's address is stopped");
    let owner = identity
        .post(
            "/auth/login",
            credentials("owner", "the right password"),
            "203.0.113.9",
        )
        .await;
    assert_eq!(
        owner.status(),
        200,
        "the owner, from their own address, is not"
    );
    identity.stop().await;
}

#[tokio::test]
async fn a_client_address_is_believed_only_from_a_trusted_proxy() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // Nothing on this machine is trusted: every request counts as its TCP peer's.
    let identity = Identity::start(&["--trusted-proxies", "192.0.2.1"]).await;
    let signed_up = identity
        .post(
            "/auth/signup",
            credentials("target", "the right password"),
            "203.0.113.1",
        )
        .await;
    assert_eq!(signed_up.status(), 201);
    for n in 0..5 {
        let guess = identity
            .post(
                "/auth/login",
                credentials("target", "a wrong guess"),
                &format!("10.0.0.{n}"),
            )
            .await;
        assert_eq!(guess.status(), 401);
    }
    let claimed_elsewhere = identity
        .post(
            "/auth/login",
            credentials("target", "a wrong guess"),
            "10.0.0.99",
        )
        .await;
    assert_eq!(
        claimed_elsewhere.status(),
        429,
        "the claimed addresses changed nothing: one client"
    );
    identity.stop().await;
}
