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
use gozon_shared::{
    auth::Caller,
    domain::{Amount, UserId},
    http::{Json, Path, Query},
    idempotency::{self, Claim, IdempotencyKey},
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

/// An order as the API shows it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Order {
    pub id: Uuid,
    pub user_id: String,
    pub amount: i64,
    pub description: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
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

#[derive(Debug, Deserialize)]
struct ListParams {
    user_id: Option<UserId>,
}

async fn list_orders(
    State(state): State<AppState>,
    caller: Caller,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<Order>>, ApiError> {
    let owner = caller.acting_for(params.user_id)?;
    Ok(Json(for_user(&state.pool, &owner).await?))
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

async fn for_user(db: impl PgExecutor<'_>, user_id: &UserId) -> sqlx::Result<Vec<Order>> {
    sqlx::query_as(
        "SELECT id, user_id, amount, description, status, reason, created_at, updated_at \
         FROM orders WHERE user_id = $1 ORDER BY created_at DESC, id DESC",
    )
    .bind(user_id.as_str())
    .fetch_all(db)
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
