//! `POST /orders/{id}/cancel`, as the database sees it: a `NEW` order is `CANCELLED` at once (a
//! payment still in flight is refunded when it lands, [`crate::payment_results`]); a `FINISHED`
//! one becomes `REFUNDING` and its refund is asked for in the same transaction.

use crate::{
    order::Order,
    queries,
    status::{CancelReason, OrderEvent, OrderStatus, RefundState},
    transitions::{self, Move, Remind},
};
use gozon_contract::domain::{OrderId, UserId};
use serde_json::json;
use sqlx::PgConnection;
use std::time::Duration;

/// What a cancel did.
#[derive(Debug)]
pub enum Cancel {
    /// A `NEW` order is `CANCELLED`; if its payment still succeeds it will be refunded.
    Cancelled(Order),
    /// A `FINISHED` order is `REFUNDING`: its refund is requested (the caller sends it).
    Refunding(Order),
    /// It was `REFUNDING` already.
    AlreadyRefunding(Order),
    /// It is `CANCELLED` or `REFUNDED`: nothing to cancel.
    Closed(OrderStatus),
    /// No order of this owner.
    NotFound,
}

/// Cancels `owner`'s order `id`; a refund it asks for is reminded after `remind_after` if no
/// answer comes.
pub async fn cancel(
    db: &mut PgConnection,
    id: OrderId,
    owner: &UserId,
    remind_after: Duration,
) -> sqlx::Result<Cancel> {
    let Some(current) = transitions::lock(db, id).await? else {
        return Ok(Cancel::NotFound);
    };
    if current.user_id != *owner {
        return Ok(Cancel::NotFound);
    }
    let requested = (OrderEvent::CancelRequested, json!({}));
    let moved = match current.status {
        OrderStatus::New => {
            // Its payment's outcome is still outstanding: its reminder stays.
            let change = Move {
                from: OrderStatus::New,
                refund_was: None,
                status: OrderStatus::Cancelled,
                reason: Some(CancelReason::Cancelled),
                refund: None,
                remind: Remind::Unchanged,
            };
            transitions::transition(db, id, change, &[requested])
                .await?
                .map(Cancel::Cancelled)
        }
        OrderStatus::Finished => {
            let change = Move {
                from: OrderStatus::Finished,
                refund_was: None,
                status: OrderStatus::Refunding,
                reason: None,
                refund: Some(RefundState::Requested),
                remind: Remind::After(remind_after),
            };
            let refund = (
                OrderEvent::RefundRequested,
                json!({ "amount": current.amount }),
            );
            transitions::transition(db, id, change, &[requested, refund])
                .await?
                .map(Cancel::Refunding)
        }
        OrderStatus::Refunding => queries::find(&mut *db, id, owner)
            .await?
            .map(Cancel::AlreadyRefunding),
        status @ (OrderStatus::Cancelled | OrderStatus::Refunded) => Some(Cancel::Closed(status)),
    };
    // The row is locked: a guarded move of what was just read cannot miss.
    Ok(moved.unwrap_or(Cancel::NotFound))
}
