//! `Idempotency-Key` for the writes that take one (`POST /orders`, `POST /payments/accounts/deposit`).
//!
//! A key belongs to the user who sent it: another user's identical key is another key, and can
//! never replay someone else's response.
//!
//! Within the handler's transaction, [`claim`] inserts the key before the write; [`save`] stores
//! the response before the commit. A write that is one statement stores the key and its response
//! in that statement instead ([`KeyedResponse`]). The key's primary key does the rest: a concurrent retry waits
//! on it until the first attempt commits (and then replays its response) or rolls back (and then
//! proceeds as the first). The same key with a different request is refused with 422.

use axum::{
    extract::FromRequestParts,
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use gozon_contract::domain::UserId;
use gozon_http::Problem;
use serde::Serialize;
use sqlx::PgConnection;

/// The `Idempotency-Key` header: 1–255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const HEADER: &'static str = "idempotency-key";
    pub const MAX_LEN: usize = 255;

    pub fn parse(raw: &HeaderValue) -> Result<Self, Problem> {
        let bad = || {
            Problem::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "Idempotency-Key must be 1-{} visible ASCII characters",
                    Self::MAX_LEN
                ),
            )
        };
        let key = raw.to_str().map_err(|_| bad())?;
        if key.is_empty() || key.len() > Self::MAX_LEN || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(bad());
        }
        Ok(Self(key.to_owned()))
    }
}

/// `Option<IdempotencyKey>` in a handler: absent header → `None`, malformed → 400.
impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Problem> {
        match parts.headers.get(Self::HEADER) {
            Some(value) => Self::parse(value),
            None => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "missing Idempotency-Key",
            )),
        }
    }
}

impl<S: Send + Sync> axum::extract::OptionalFromRequestParts<S> for IdempotencyKey {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Problem> {
        parts.headers.get(Self::HEADER).map(Self::parse).transpose()
    }
}

/// What a keyed request should do.
pub enum Claim {
    /// First use of the key: do the work, then [`save`] the response.
    New,
    /// Seen before with the same request: answer with this stored response.
    Replay(Response),
    /// Seen before with a different request.
    Conflict,
}

/// Claims `owner`'s `key` for `route` within the caller's transaction (a request without a key
/// is always [`Claim::New`]). Blocks while another transaction holds the same key.
pub async fn claim(
    db: &mut PgConnection,
    route: &str,
    owner: &UserId,
    key: Option<&IdempotencyKey>,
    request: &impl Serialize,
) -> sqlx::Result<Claim> {
    let Some(key) = key else {
        return Ok(Claim::New);
    };
    let request = sqlx::types::Json(request);
    // A placeholder response, replaced by `save` before the commit; no one can read it before.
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (route, owner, key, request, response_status, response_body) \
         VALUES ($1, $2, $3, $4, 0, '') ON CONFLICT DO NOTHING",
    )
    .bind(route)
    .bind(owner.as_str())
    .bind(&key.0)
    .bind(request)
    .execute(&mut *db)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    replay(db, route, owner, key, request.0).await
}

/// The answer to `owner`'s `key` for `route`, stored before: its response if `request` is the
/// one it was stored with, else [`Claim::Conflict`]. The caller commits its transaction before
/// it sends a [`Claim::Replay`]: that commit waits until the stored write is on the synchronous
/// standby.
pub async fn replay(
    db: &mut PgConnection,
    route: &str,
    owner: &UserId,
    key: &IdempotencyKey,
    request: &impl Serialize,
) -> sqlx::Result<Claim> {
    let (same, status, body): (bool, i16, Vec<u8>) = sqlx::query_as(
        "SELECT request = $4, response_status, response_body FROM idempotency_keys \
         WHERE route = $1 AND owner = $2 AND key = $3",
    )
    .bind(route)
    .bind(owner.as_str())
    .bind(&key.0)
    .bind(sqlx::types::Json(request))
    .fetch_one(&mut *db)
    .await?;
    if !same {
        return Ok(Claim::Conflict);
    }
    // The stored response may belong to a commit visible here but not yet on the synchronous
    // standby; the caller commits before it answers, and that commit then waits for it.
    gozon_messaging::standby::commit_waits_for_standby(db).await?;
    let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
    Ok(Claim::Replay(
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
    ))
}

/// A key with the response to store under it, for writes made by one statement — of one
/// request or of several. [`push_admitted`](Self::push_admitted) puts into that statement the
/// part that stores each new key with its response and names the requests whose write goes
/// ahead: those without a key, and those whose key is new. If the statement wrote nothing for a
/// keyed request, the key was used before and [`replay`] answers. A concurrent first attempt
/// with the same key makes the statement wait for its outcome, as [`claim`] does. Without a key,
/// nothing is stored and the write always happens.
pub struct KeyedResponse {
    route: &'static str,
    owner: String,
    key: Option<String>,
    request: serde_json::Value,
    status: i16,
    body: Vec<u8>,
}

impl KeyedResponse {
    /// `owner`'s `key` (if the request has one) for `route`, with the `request` it answers and
    /// the response to replay: `status` and `body`. Without a key nothing is stored, so the
    /// request and the response are not encoded.
    pub fn new(
        route: &'static str,
        owner: &UserId,
        key: Option<&IdempotencyKey>,
        request: &impl Serialize,
        status: StatusCode,
        body: &impl Serialize,
    ) -> Result<Self, serde_json::Error> {
        let (request, body) = match key {
            Some(_) => (serde_json::to_value(request)?, serde_json::to_vec(body)?),
            None => (serde_json::Value::Null, Vec::new()),
        };
        Ok(Self {
            route,
            owner: owner.as_str().to_owned(),
            key: key.map(|key| key.0.clone()),
            request,
            status: status.as_u16() as i16,
            body,
        })
    }

    /// Pushes, as common table expressions of the statement `query` is building, the relation
    /// `admitted(n)`: the positions (from 1, in the order of `requests`) of the requests whose
    /// write goes ahead — storing each new key and its response on the way. The CTEs it needs
    /// besides are named after `admitted`. The keys of one statement must differ (two requests
    /// with one key would both go ahead: write the second in a later statement, where it finds
    /// the first's).
    pub fn push_admitted(
        query: &mut sqlx::QueryBuilder<sqlx::Postgres>,
        requests: &[&Self],
        admitted: &str,
    ) {
        query.push(format_args!("{admitted}_keys AS (SELECT * FROM unnest("));
        query.push_bind(requests.iter().map(|r| r.route).collect::<Vec<_>>());
        query.push("::text[], ");
        query.push_bind(
            requests
                .iter()
                .map(|r| r.owner.as_str())
                .collect::<Vec<_>>(),
        );
        query.push("::text[], ");
        query.push_bind(
            requests
                .iter()
                .map(|r| r.key.as_deref())
                .collect::<Vec<_>>(),
        );
        query.push("::text[], ");
        query.push_bind(requests.iter().map(|r| &r.request).collect::<Vec<_>>());
        query.push("::jsonb[], ");
        query.push_bind(requests.iter().map(|r| r.status).collect::<Vec<_>>());
        query.push("::smallint[], ");
        query.push_bind(
            requests
                .iter()
                .map(|r| r.body.as_slice())
                .collect::<Vec<_>>(),
        );
        query.push(format_args!(
            "::bytea[]) WITH ORDINALITY AS k(route, owner, key, request, status, body, n)), \
             {admitted}_claimed AS ( \
               INSERT INTO idempotency_keys \
                 (route, owner, key, request, response_status, response_body) \
               SELECT route, owner, key, request, status, body FROM {admitted}_keys \
               WHERE key IS NOT NULL \
               ON CONFLICT DO NOTHING RETURNING route, owner, key), \
             {admitted} AS ( \
               SELECT k.n FROM {admitted}_keys k \
               LEFT JOIN {admitted}_claimed c USING (route, owner, key) \
               WHERE k.key IS NULL OR c.key IS NOT NULL)"
        ));
    }
}

/// Stores the response to a claimed key (if there is one), in the same transaction as the work.
pub async fn save(
    db: &mut PgConnection,
    route: &str,
    owner: &UserId,
    key: Option<&IdempotencyKey>,
    status: StatusCode,
    body: &impl Serialize,
) -> sqlx::Result<()> {
    let Some(key) = key else {
        return Ok(());
    };
    let body = serde_json::to_vec(body).map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    sqlx::query(
        "UPDATE idempotency_keys SET response_status = $4, response_body = $5 \
         WHERE route = $1 AND owner = $2 AND key = $3",
    )
    .bind(route)
    .bind(owner.as_str())
    .bind(&key.0)
    .bind(status.as_u16() as i16)
    .bind(body)
    .execute(db)
    .await?;
    Ok(())
}
