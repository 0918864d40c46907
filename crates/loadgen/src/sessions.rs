//! The signed-in users of a run: each signs up once through the gateway, and every later request
//! carries its bearer token. Signing up hashes a password with Argon2id (tens of milliseconds of
//! CPU), so it is a setup cost paid once per user, a few at a time — never per order.

use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::{collections::HashMap, time::Duration};

/// Sign-ups in flight at once (the identity service hashes two at a time).
const CONCURRENT_SIGNUPS: usize = 4;

/// Tokens by user id.
#[derive(Debug, Default, Clone)]
pub struct Sessions {
    tokens: HashMap<String, String>,
}

impl Sessions {
    /// Signs every user up (or in, if an earlier attempt whose answer was lost did sign them
    /// up), retrying while the gateway or identity answers 5xx or not at all, for up to a minute.
    pub async fn sign_up(
        http: &reqwest::Client,
        gateway: &str,
        users: impl IntoIterator<Item = String>,
    ) -> anyhow::Result<Self> {
        let signed: Vec<anyhow::Result<(String, String)>> = stream::iter(users)
            .map(|user| async move {
                let token = sign_up_one(http, gateway, &user).await?;
                Ok((user, token))
            })
            .buffer_unordered(CONCURRENT_SIGNUPS)
            .collect()
            .await;
        Ok(Self {
            tokens: signed.into_iter().collect::<anyhow::Result<_>>()?,
        })
    }

    /// The users signed in.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.tokens.keys().map(String::as_str)
    }

    /// `request`, made as `user` (unchanged for a user not signed in).
    pub fn as_user(&self, user: &str, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self.tokens.get(user) {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }
}

/// Each run's users get a password of their own.
fn password_of(user: &str) -> String {
    format!("{user}-load-password")
}

async fn sign_up_one(http: &reqwest::Client, gateway: &str, user: &str) -> anyhow::Result<String> {
    let credentials = json!({ "user_id": user, "password": password_of(user) });
    let mut path = "/auth/signup";
    let mut pause = Duration::from_millis(100);
    for _ in 0..60 {
        match http
            .post(format!("{gateway}{path}"))
            .json(&credentials)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => {
                let session: Value = response.json().await.context("reading a session")?;
                return session["token"]
                    .as_str()
                    .map(str::to_owned)
                    .context("a session without a token");
            }
            // Signed up by an attempt whose answer was lost: sign in instead.
            Ok(response) if response.status() == StatusCode::CONFLICT => path = "/auth/login",
            Ok(response) if !response.status().is_server_error() => {
                bail!("signing up {user}: {}", response.status())
            }
            _ => {}
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
    bail!("signing up {user}: no answer within a minute")
}
