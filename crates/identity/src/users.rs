//! Sign-up, sign-in and sign-out: the routes under `/auth`.
//!
//! - `POST /auth/signup` makes a user (Argon2id hash only) and signs them in: 201; a taken id is
//!   a 409 before any hashing, and sign-ups are limited per client ([`crate::limits`]).
//! - `POST /auth/login` checks the password and signs in: 200; an unknown user and a wrong
//!   password get the same 401 after the same work; too many attempts get 429.
//! - `POST /auth/logout` ends the browser session (clears its cookie) and revokes the token: every
//!   service refuses it within seconds ([`gozon_http::auth`]); 204; 401 if not signed in.
//! - `GET /auth/revoked?after=N` lists the revoked tokens still unexpired, after position `N`.
//!
//! Signing in answers `{"user_id","token","expires_at"}` and sets the session cookie the web UI
//! uses (`HttpOnly`, `SameSite=Strict`, the token's lifetime); API clients use the token as a
//! bearer token.

use crate::{
    error::ApiError,
    keys,
    passwords::{self, Password},
    state::AppState,
};
use axum::{
    Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use gozon_contract::domain::UserId;
use gozon_http::{
    Json,
    auth::{self, AuthError, SESSION_COOKIE, TokenVerifier},
};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use time::OffsetDateTime;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/signup", post(signup))
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/revoked", get(revoked))
        .route(
            "/auth/jwks.json",
            get(|State(state): State<AppState>| keys::jwks(State(state.pool))),
        )
}

/// What a client sends to sign up or in.
#[derive(Debug, Deserialize)]
struct Credentials {
    user_id: UserId,
    password: Password,
}

/// A signed-in user's token.
#[derive(Debug, Serialize)]
struct Session {
    user_id: UserId,
    token: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

async fn signup(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(credentials): Json<Credentials>,
) -> Result<Response, ApiError> {
    if !credentials.password.acceptable() {
        return Err(ApiError::BadPassword {
            min: passwords::MIN_CHARS,
            max: passwords::MAX_BYTES,
        });
    }
    state
        .limits
        .signup(state.trusted_proxies.client(peer.ip(), &headers))
        .map_err(ApiError::TooManyAttempts)?;
    // A taken id costs no hash (the insert below still settles a race for it).
    let taken: bool = sqlx::query_scalar("SELECT EXISTS (SELECT FROM users WHERE user_id = $1)")
        .bind(credentials.user_id.as_str())
        .fetch_one(&state.pool)
        .await?;
    if taken {
        return Err(ApiError::UserIdTaken(credentials.user_id));
    }
    let hash = state
        .passwords
        .hash(credentials.password)
        .await
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    let created = sqlx::query(
        "INSERT INTO users (user_id, password_hash) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(credentials.user_id.as_str())
    .bind(hash)
    .execute(&state.pool)
    .await?
    .rows_affected();
    if created == 0 {
        return Err(ApiError::UserIdTaken(credentials.user_id));
    }
    tracing::info!(user_id = %credentials.user_id, "user signed up");
    sign_in(&state, credentials.user_id, StatusCode::CREATED).await
}

async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(credentials): Json<Credentials>,
) -> Result<Response, ApiError> {
    let client = state.trusted_proxies.client(peer.ip(), &headers);
    state
        .limits
        .login(credentials.user_id.as_str(), client)
        .map_err(ApiError::TooManyAttempts)?;
    let stored: Option<String> =
        sqlx::query_scalar("SELECT password_hash FROM users WHERE user_id = $1")
            .bind(credentials.user_id.as_str())
            .fetch_optional(&state.pool)
            .await?;
    let matches = state
        .passwords
        .verify(credentials.password, stored)
        .await
        .map_err(|error| ApiError::Internal(error.to_string()))?;
    if !matches {
        tracing::info!(user_id = %credentials.user_id, "login refused");
        return Err(ApiError::WrongCredentials);
    }
    sign_in(&state, credentials.user_id, StatusCode::OK).await
}

async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = auth::bearer_token(&headers).ok_or(AuthError::Missing)?;
    let verifier = TokenVerifier::with_keys(
        &state.auth,
        &keys::published(&state.pool).await?,
        state.clock.clone(),
    );
    let caller = verifier.verify(token).await?;
    if let Some(jti) = &caller.token_id {
        sqlx::query(
            "INSERT INTO revoked_tokens (jti, expires_at) VALUES ($1, $2) \
             ON CONFLICT (jti) DO NOTHING",
        )
        .bind(jti)
        .bind(OffsetDateTime::from(caller.until))
        .execute(&state.pool)
        .await?;
    }
    tracing::info!(user_id = %caller.user, "signed out");
    let mut response = StatusCode::NO_CONTENT.into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session_cookie(&state, "", 0));
    Ok(response)
}

/// `GET /auth/revoked` parameters: where the reader has read up to.
#[derive(Debug, Deserialize)]
struct After {
    #[serde(default)]
    after: i64,
}

/// The revoked tokens still unexpired after position `after`, oldest first (a thousand at most).
async fn revoked(
    State(state): State<AppState>,
    gozon_http::Query(after): gozon_http::Query<After>,
) -> Result<Response, ApiError> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT id, jti, extract(epoch FROM expires_at)::bigint FROM revoked_tokens \
         WHERE id > $1 AND expires_at > now() ORDER BY id LIMIT 1000",
    )
    .bind(after.after)
    .fetch_all(&state.pool)
    .await?;
    let last = rows.last().map_or(after.after, |(id, _, _)| *id);
    let revoked = rows
        .into_iter()
        .map(|(_, jti, until)| auth::Revoked {
            jti,
            until: until.max(0) as u64,
        })
        .collect();
    Ok(Json(auth::Revocations { revoked, last }).into_response())
}

async fn sign_in(
    state: &AppState,
    user_id: UserId,
    status: StatusCode,
) -> Result<Response, ApiError> {
    let (token, expires_at) = keys::issue(
        &state.pool,
        &state.auth,
        &user_id,
        state.token_ttl,
        state.clock.now(),
    )
    .await?;
    let cookie = session_cookie(state, &token, state.token_ttl.as_secs());
    let mut response = (
        status,
        Json(Session {
            user_id,
            token,
            expires_at,
        }),
    )
        .into_response();
    response.headers_mut().insert(header::SET_COOKIE, cookie);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// The session cookie carrying `token` (empty with `max_age` 0: the cookie is deleted).
fn session_cookie(state: &AppState, token: &str, max_age: u64) -> HeaderValue {
    let secure = if state.cookie_secure { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    );
    // A token is base64url and dots, always a valid header value.
    HeaderValue::from_str(&cookie).unwrap_or_else(|_| HeaderValue::from_static(""))
}
