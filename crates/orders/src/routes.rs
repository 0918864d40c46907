//! The orders API: its routes and handlers. What they read is in [`crate::queries`], what they
//! write in [`crate::placing`] and [`crate::cancelling`].
//!
//! `POST /orders` writes the order, its payment request (an outbox row for `order.payments`) and
//! its idempotency key in one statement, committed (with other orders placed at the same time,
//! [`crate::placing`]) before it answers, so an acknowledged order is always settled eventually,
//! and no payment is ever requested for an order that does not exist. `POST /orders/{id}/cancel`
//! likewise writes the move and, for a paid order, its refund request together.
//! `GET /orders/events` streams the caller's status changes ([`crate::live`]).

use crate::{
    cancelling::{self, Cancel},
    error::ApiError,
    live,
    order::{Description, NewOrder, Order},
    placing::{Placed, Placement},
    queries,
    state::AppState,
};
use axum::{
    Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode},
    response::{
        IntoResponse, Response,
        sse::{KeepAlive, Sse},
    },
    routing::{get, post},
};
use futures::StreamExt as _;
use gozon_contract::domain::{Amount, OrderId, UserId};
use gozon_http::{Json, Path, Query, auth::Caller};
use gozon_messaging::outgoing::Outgoing;
use gozon_runtime::idempotency::{self, Claim, IdempotencyKey};
use gozon_telemetry::trace::TraceParent;
use serde::Deserialize;
use std::net::SocketAddr;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/orders", post(place_order).get(list_orders))
        .route("/orders/events", get(events))
        .route("/orders/{id}", get(get_order))
        .route("/orders/{id}/cancel", post(cancel_order))
        .route("/orders/{id}/history", get(order_history))
}

/// What a client may say about a new order; `user_id`, if given, must be the caller's.
#[derive(Debug, Deserialize)]
pub struct OrderRequest {
    #[serde(default, deserialize_with = "gozon_http::auth::named_user")]
    pub user_id: Option<UserId>,
    pub amount: Amount,
    pub description: Description,
}

async fn place_order(
    State(state): State<AppState>,
    caller: Caller,
    trace: TraceParent,
    key: Option<IdempotencyKey>,
    Json(request): Json<OrderRequest>,
) -> Result<Response, ApiError> {
    let new = NewOrder {
        user_id: caller.acting_for(request.user_id)?,
        amount: request.amount,
        description: request.description,
    };
    let placement = Placement::new(
        new,
        key,
        state.payment_deadline,
        &state.queues.order_payments,
        &trace,
    )?;
    // Answered only once the order's transaction has committed (with others placed with it).
    match state.placing.place(placement).await? {
        Placed::New(order) => {
            tracing::info!(order_id = %order.id, user_id = %order.user_id, amount = order.amount.kopecks(), "order placed");
            Ok((StatusCode::CREATED, Json(order)).into_response())
        }
        Placed::Replayed(first) => Ok(first),
    }
}

/// Rows read per query while listing: what one list request holds in memory at most.
const PAGE_ROWS: i64 = 500;

/// `GET /orders` parameters: whose (the caller's), and optionally a page — at most `limit`
/// orders, placed before the order `before`.
#[derive(Debug, Deserialize)]
struct ListParams {
    user_id: Option<UserId>,
    limit: Option<Limit>,
    before: Option<OrderId>,
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
            queries::cursor_of(&state.pool, id, &owner)
                .await?
                .ok_or(ApiError::OrderNotFound(id))?,
        ),
        None => None,
    };
    if let Some(Limit(limit)) = params.limit {
        let page = queries::page(&state.pool, &owner, after, limit).await?;
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
    let first = queries::page(&state.pool, &owner, after, PAGE_ROWS).await?;
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
                Some(last) => match queries::page(&pool, &owner, Some(last.seq), PAGE_ROWS).await {
                    Ok(rows) => Some((rows, false)),
                    Err(error) => {
                        tracing::error!(%error, "listing orders failed midway; the answer is cut off");
                        return Some((Err(std::io::Error::other(error)), None));
                    }
                },
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
    Path(id): Path<OrderId>,
) -> Result<Json<Order>, ApiError> {
    queries::find(&state.pool, id, &caller.user)
        .await?
        .map(Json)
        .ok_or(ApiError::OrderNotFound(id))
}

/// Cancels the caller's order: a `NEW` one at once, a `FINISHED` one by refunding it. 202 with
/// the order as it now stands; 409 if it is `CANCELLED` or `REFUNDED` already.
async fn cancel_order(
    State(state): State<AppState>,
    caller: Caller,
    trace: TraceParent,
    key: Option<IdempotencyKey>,
    Path(id): Path<OrderId>,
) -> Result<Response, ApiError> {
    const ROUTE: &str = "POST /orders/{id}/cancel";
    let owner = caller.user;
    let mut tx = state.pool.begin().await?;
    match idempotency::claim(&mut tx, ROUTE, &owner, key.as_ref(), &id).await? {
        Claim::New => {}
        Claim::Replay(first) => {
            // Waits until the first answer's write is on the synchronous standby.
            tx.commit().await?;
            return Ok(first);
        }
        Claim::Conflict => return Err(ApiError::IdempotencyConflict),
    }
    let mut out = Outgoing::default();
    let order = match cancelling::cancel(&mut tx, id, &owner, state.remind_after).await? {
        Cancel::Cancelled(order) => {
            live::announce(&mut out, &order)?;
            order
        }
        Cancel::Refunding(order) => {
            out.publish(&state.queues.order_refunds, &order.refund_request(), &trace)?;
            live::announce(&mut out, &order)?;
            order
        }
        Cancel::AlreadyRefunding(order) => order,
        Cancel::Closed(status) => return Err(ApiError::NothingToCancel(id, status)),
        Cancel::NotFound => return Err(ApiError::OrderNotFound(id)),
    };
    idempotency::save(
        &mut tx,
        ROUTE,
        &owner,
        key.as_ref(),
        StatusCode::ACCEPTED,
        &order,
    )
    .await?;
    out.write(&mut tx).await?;
    tx.commit().await?;
    state.wakeup.notify();
    tracing::info!(order_id = %order.id, status = order.status.as_str(), "order cancel requested");
    Ok((StatusCode::ACCEPTED, Json(order)).into_response())
}

/// The caller's order's history, oldest first.
async fn order_history(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<OrderId>,
) -> Result<Response, ApiError> {
    let mut db = state.pool.acquire().await?;
    let history = queries::history(&mut db, id, &caller.user)
        .await?
        .ok_or(ApiError::OrderNotFound(id))?;
    Ok(Json(history).into_response())
}

/// `GET /orders/events` parameters: whose changes (the caller's).
#[derive(Debug, Deserialize)]
struct WatchParams {
    user_id: Option<UserId>,
}

/// `GET /orders/events[?user_id=…]`: the caller's own orders' changes, as server-sent events;
/// with `Last-Event-ID`, every change since that event first.
async fn events(
    State(state): State<AppState>,
    caller: Caller,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<WatchParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let watched = caller.acting_for(params.user_id)?;
    let since = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .and_then(|value| value.parse::<i64>().ok())
                .filter(|micros| (0..=live::MAX_EVENT_ID).contains(micros))
                .ok_or(ApiError::BadLastEventId)?,
        ),
    };
    let client = state.trusted_proxies.client(peer.ip(), &headers);
    let watching = state.live.watch(&watched, client)?;
    let backlog = match since {
        Some(since) => queries::changed_since(&state.pool, &watched, since).await?,
        None => Vec::new(),
    };
    let verifier = state.verifier.clone();
    let signed_out = async move { verifier.signed_out(caller.token_id).await };
    Ok(Sse::new(watching.events(backlog, signed_out))
        .keep_alive(KeepAlive::default())
        .into_response())
}
