//! Orders: the HTTP routes, the order record and the SQL behind them.
//!
//! `POST /orders` writes the order and its payment request (an outbox row for
//! `order.payments`) in one transaction, so an acknowledged order is always paid for or
//! cancelled eventually, and no payment is ever requested for an order that does not exist.

use crate::{error::ApiError, startup::AppState};
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::StreamExt as _;
use gozon_shared::{
    auth::Caller,
    domain::{Amount, UserId},
    http::{Json, Path, Query},
    idempotency::{self, Claim, IdempotencyKey},
    messages::FailureReason,
    messages::PaymentRequest,
    outbox,
    trace::TraceParent,
};
use serde::{Deserialize, Serialize};
use sqlx::PgExecutor;
use time::OffsetDateTime;
use uuid::Uuid;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orders", post(create_order).get(list_orders))
        .route("/orders/events", get(crate::live::events))
        .route("/orders/{id}", get(get_order))
}

/// Where an order stands. It leaves `New` once, for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// Placed; its payment is under way.
    New,
    /// Paid.
    Finished,
    /// Not paid, for the order's `reason`.
    Cancelled,
}

gozon_shared::stored_as_text!(OrderStatus, "order status", {
    New => "NEW",
    Finished => "FINISHED",
    Cancelled => "CANCELLED",
});

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Order {
    pub id: Uuid,
    pub user_id: String,
    pub amount: i64,
    pub description: String,
    pub status: OrderStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<FailureReason>,
    #[serde(with = "timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "timestamp")]
    pub updated_at: OffsetDateTime,
}

// RFC 3339 in UTC with microseconds, always six digits.
time::serde::format_description!(
    timestamp,
    OffsetDateTime,
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

/// What a client may say about a new order; `user_id`, if given, must be the caller's.
#[derive(Debug, Deserialize)]
pub struct OrderRequest {
    pub user_id: Option<UserId>,
    pub amount: Amount,
    pub description: Description,
}

/// A new order, for its owner.
#[derive(Debug, Serialize)]
pub struct NewOrder {
    pub user_id: UserId,
    pub amount: Amount,
    pub description: Description,
}

/// An order's free-text description: at most 1000 characters.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub struct Description(String);

impl Description {
    pub const MAX_CHARS: usize = 1000;
}

impl TryFrom<String> for Description {
    type Error = String;
    fn try_from(raw: String) -> Result<Self, Self::Error> {
        if raw.chars().count() > Self::MAX_CHARS {
            return Err(format!(
                "description must be at most {} characters",
                Self::MAX_CHARS
            ));
        }
        // PostgreSQL text cannot hold NUL: refused here, not by the database as a 5xx.
        if raw.contains('\0') {
            return Err("description must not contain a NUL character".into());
        }
        Ok(Self(raw))
    }
}

async fn create_order(
    State(state): State<AppState>,
    caller: Caller,
    trace: TraceParent,
    key: Option<IdempotencyKey>,
    Json(request): Json<OrderRequest>,
) -> Result<Response, ApiError> {
    const ROUTE: &str = "POST /orders";
    let new = NewOrder {
        user_id: caller.acting_for(request.user_id)?,
        amount: request.amount,
        description: request.description,
    };
    let mut tx = state.pool.begin().await?;
    if let Some(key) = &key {
        match idempotency::claim(&mut tx, ROUTE, &new.user_id, key, &new).await? {
            Claim::New => {}
            Claim::Replay(first) => return Ok(first),
            Claim::Conflict => return Err(ApiError::IdempotencyConflict),
        }
    }
    let order = insert(&mut *tx, &new).await?;
    let request = PaymentRequest {
        order_id: order.id,
        user_id: new.user_id.clone(),
        amount: new.amount,
    };
    outbox::enqueue(&mut *tx, &state.order_payments_queue, &request, &trace).await?;
    if let Some(key) = &key {
        idempotency::save(
            &mut tx,
            ROUTE,
            &new.user_id,
            key,
            StatusCode::CREATED,
            &order,
        )
        .await?;
    }
    tx.commit().await?;
    state.outbox.notify();
    tracing::info!(order_id = %order.id, user_id = %order.user_id, amount = order.amount, "order placed");
    Ok((StatusCode::CREATED, Json(order)).into_response())
}

/// Rows read per query while listing: what one list request holds in memory at most.
const PAGE_ROWS: i64 = 500;

/// `GET /orders` parameters: whose (the caller's), and optionally a page — at most `limit`
/// orders, older than the order `before`.
#[derive(Debug, Deserialize)]
struct ListParams {
    user_id: Option<UserId>,
    limit: Option<Limit>,
    before: Option<Uuid>,
}

/// A page size: 1–1000 orders.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(try_from = "i64")]
struct Limit(i64);

impl TryFrom<i64> for Limit {
    type Error = String;
    fn try_from(raw: i64) -> Result<Self, String> {
        (1..=1000)
            .contains(&raw)
            .then_some(Self(raw))
            .ok_or_else(|| format!("limit must be 1-1000, got {raw}"))
    }
}

/// Newest first. With `limit`, one page, and a `Link: <…>; rel="next"` header when there are
/// older orders; without, every order of the user (SPEC 3), read and sent [`PAGE_ROWS`] at a
/// time, so that a user with a million orders costs the service one page of memory.
async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Response, ApiError> {
    let owner = caller.acting_for(params.user_id)?;
    let after = match params.before {
        Some(id) => Some(
            cursor_of(&state.pool, id, &owner)
                .await?
                .ok_or(ApiError::OrderNotFound(id))?,
        ),
        None => None,
    };
    if let Some(Limit(limit)) = params.limit {
        let page = page(&state.pool, &owner, after, limit).await?;
        let mut response = Json(&page).into_response();
        if let Some(last) = page.last().filter(|_| page.len() as i64 == limit)
            && let Ok(link) =
                format!("</orders?limit={limit}&before={}>; rel=\"next\"", last.id).parse()
        {
            response
                .headers_mut()
                .insert(axum::http::header::LINK, link);
        }
        return Ok(response);
    }
    // The first page is read before answering, so a database that is away is still a 503.
    let first = page(&state.pool, &owner, after, PAGE_ROWS).await?;
    let pool = state.pool.clone();
    let pages = futures::stream::unfold(Some((first, true)), move |state| {
        let (pool, owner) = (pool.clone(), owner.clone());
        async move {
            let (rows, first) = state?;
            let full = rows.len() as i64 == PAGE_ROWS;
            let mut chunk = Vec::with_capacity(rows.len() * 200);
            for (index, order) in rows.iter().enumerate() {
                if !(first && index == 0) {
                    chunk.push(b',');
                }
                if serde_json::to_writer(&mut chunk, order).is_err() {
                    return Some((
                        Err(std::io::Error::other("an order did not serialize")),
                        None,
                    ));
                }
            }
            let next = match rows.last().filter(|_| full) {
                Some(last) => {
                    match page(&pool, &owner, Some((last.created_at, last.id)), PAGE_ROWS).await {
                        Ok(rows) => Some((rows, false)),
                        Err(error) => {
                            tracing::error!(%error, "listing orders failed midway; the answer is cut off");
                            return Some((Err(std::io::Error::other(error)), None));
                        }
                    }
                }
                None => None,
            };
            Some((Ok::<_, std::io::Error>(chunk), next))
        }
    });
    let body = futures::stream::iter([Ok(b"[".to_vec())])
        .chain(pages)
        .chain(futures::stream::iter([Ok(b"]".to_vec())]));
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        axum::body::Body::from_stream(body),
    )
        .into_response())
}

/// Another user's order is "not found", exactly as an order that does not exist.
async fn get_order(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<Uuid>,
) -> Result<Json<Order>, ApiError> {
    find(&state.pool, id, &caller.0)
        .await?
        .map(Json)
        .ok_or(ApiError::OrderNotFound(id))
}

async fn insert(db: impl PgExecutor<'_>, new: &NewOrder) -> sqlx::Result<Order> {
    sqlx::query_as(
        "INSERT INTO orders (id, user_id, amount, description) VALUES ($1, $2, $3, $4) \
         RETURNING id, user_id, amount, description, status, reason, created_at, updated_at",
    )
    .bind(Uuid::now_v7())
    .bind(new.user_id.as_str())
    .bind(new.amount.kopecks())
    .bind(&new.description.0)
    .fetch_one(db)
    .await
}

async fn find(db: impl PgExecutor<'_>, id: Uuid, owner: &UserId) -> sqlx::Result<Option<Order>> {
    sqlx::query_as(
        "SELECT id, user_id, amount, description, status, reason, created_at, updated_at \
         FROM orders WHERE id = $1 AND user_id = $2",
    )
    .bind(id)
    .bind(owner.as_str())
    .fetch_optional(db)
    .await
}

/// Up to `limit` of `user_id`'s orders, newest first, older than `after` (created_at, id).
async fn page(
    db: impl PgExecutor<'_>,
    user_id: &UserId,
    after: Option<(OffsetDateTime, Uuid)>,
    limit: i64,
) -> sqlx::Result<Vec<Order>> {
    let (created_at, id) = after.unzip();
    sqlx::query_as(
        "SELECT id, user_id, amount, description, status, reason, created_at, updated_at \
         FROM orders WHERE user_id = $1 \
           AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3)) \
         ORDER BY created_at DESC, id DESC LIMIT $4",
    )
    .bind(user_id.as_str())
    .bind(created_at)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Where `id` stands in `owner`'s list (another user's order is not found).
async fn cursor_of(
    db: impl PgExecutor<'_>,
    id: Uuid,
    owner: &UserId,
) -> sqlx::Result<Option<(OffsetDateTime, Uuid)>> {
    sqlx::query_as("SELECT created_at, id FROM orders WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(owner.as_str())
        .fetch_optional(db)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_description_of_1000_characters_is_accepted_and_1001_is_not() {
        assert!(Description::try_from("ж".repeat(1000)).is_ok());
        assert!(Description::try_from("ж".repeat(1001)).is_err());
    }

    #[test]
    fn a_description_with_a_nul_character_is_refused() {
        assert!(Description::try_from("gift\u{0}".to_owned()).is_err());
    }
}
