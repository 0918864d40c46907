//! What the API reads: an order, its history, a user's list, and what changed since a moment.
//! Every read is its owner's: another user's order is not found, exactly as one that does not
//! exist.

use crate::{
    order::{COLUMNS, HistoryEntry, Order},
    status::{OrderEvent, OrderStatus},
};
use gozon_contract::{
    domain::{OrderId, UserId},
    messages::Seq,
};
use sqlx::{PgConnection, PgExecutor};

/// `owner`'s order `id`.
pub async fn find(
    db: impl PgExecutor<'_>,
    id: OrderId,
    owner: &UserId,
) -> sqlx::Result<Option<Order>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE id = $1 AND user_id = $2"
    )))
    .bind(id)
    .bind(owner)
    .fetch_optional(db)
    .await
}

/// The history of `owner`'s order `id`, oldest first; `None` if there is no such order.
pub async fn history(
    db: &mut PgConnection,
    id: OrderId,
    owner: &UserId,
) -> sqlx::Result<Option<Vec<HistoryEntry>>> {
    if find(&mut *db, id, owner).await?.is_none() {
        return Ok(None);
    }
    let order: Vec<&str> = OrderEvent::ALL.iter().map(|event| event.as_str()).collect();
    sqlx::query_as(
        "SELECT at, event, detail FROM order_events WHERE order_id = $1 \
         ORDER BY at, array_position($2::text[], event)",
    )
    .bind(id)
    .bind(order)
    .fetch_all(db)
    .await
    .map(Some)
}

/// Up to `limit` of `user_id`'s orders, newest first — by their place in the user's line, the
/// order they were placed in — placed before `before`.
pub async fn page(
    db: impl PgExecutor<'_>,
    user_id: &UserId,
    before: Option<Seq>,
    limit: i64,
) -> sqlx::Result<Vec<Order>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE user_id = $1 AND ($2::bigint IS NULL OR seq < $2) \
         ORDER BY seq DESC LIMIT $3"
    )))
    .bind(user_id)
    .bind(before)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Where `owner`'s order `id` stands in their list: its place in their line.
pub async fn cursor_of(
    db: impl PgExecutor<'_>,
    id: OrderId,
    owner: &UserId,
) -> sqlx::Result<Option<Seq>> {
    sqlx::query_scalar("SELECT seq FROM orders WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(owner)
        .fetch_optional(db)
        .await
}

/// `user_id`'s orders whose status changed after `since_micros` (microseconds since 1970),
/// oldest change first.
pub async fn changed_since(
    db: impl PgExecutor<'_>,
    user_id: &UserId,
    since_micros: i64,
) -> sqlx::Result<Vec<Order>> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM orders WHERE user_id = $1 AND status <> $3 \
           AND updated_at > timestamptz 'epoch' + $2 * interval '1 microsecond' \
         ORDER BY updated_at"
    )))
    .bind(user_id)
    .bind(since_micros)
    .bind(OrderStatus::New)
    .fetch_all(db)
    .await
}
