//! The orders API's errors and their HTTP form, in one place.

use crate::status::OrderStatus;
use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use gozon_contract::domain::OrderId;
use gozon_http::{Problem, auth::AuthError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("order {0} not found")]
    OrderNotFound(OrderId),
    #[error("order {0} is {status} already; there is nothing to cancel", status = .1.as_str())]
    NothingToCancel(OrderId, OrderStatus),
    #[error("a stored order is invalid: {0}")]
    Corrupt(String),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyConflict,
    #[error("too many live status streams are open; retry later")]
    TooManyStreams,
    #[error("at most {0} live status streams per user may be open at once")]
    TooManyStreamsOfUser(usize),
    #[error("at most {0} live status streams per client may be open at once")]
    TooManyStreamsOfClient(usize),
    #[error("Last-Event-ID must be an event id this stream sent (a whole number of microseconds)")]
    BadLastEventId,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A database failure shared by every order of a group commit ([`crate::placing`]).
    #[error("database: {0}")]
    GroupDatabase(std::sync::Arc<sqlx::Error>),
    /// The writers of [`crate::placing`] are gone (the service is stopping, or one failed).
    #[error("orders cannot be placed right now; retry later")]
    WritersStopped,
    #[error("what the change sends cannot be encoded: {0}")]
    Encode(#[from] serde_json::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match self {
            Self::OrderNotFound(_) => {
                Problem::new(StatusCode::NOT_FOUND, self.to_string()).of_type("order-not-found")
            }
            Self::NothingToCancel(..) => {
                Problem::new(StatusCode::CONFLICT, self.to_string()).of_type("nothing-to-cancel")
            }
            Self::Corrupt(_) | Self::Encode(_) => Problem::internal(&self),
            Self::BadLastEventId => Problem::new(StatusCode::BAD_REQUEST, self.to_string()),
            Self::TooManyStreams => Problem::new(StatusCode::SERVICE_UNAVAILABLE, self.to_string()),
            Self::TooManyStreamsOfUser(_) | Self::TooManyStreamsOfClient(_) => {
                Problem::new(StatusCode::TOO_MANY_REQUESTS, self.to_string())
                    .of_type("too-many-streams")
            }
            Self::Auth(error) => return error.into_response(),
            Self::IdempotencyConflict => {
                Problem::new(StatusCode::UNPROCESSABLE_ENTITY, self.to_string())
                    .of_type("idempotency-conflict")
            }
            Self::Database(error) => gozon_runtime::db::problem("orders", &error),
            Self::GroupDatabase(error) => gozon_runtime::db::problem("orders", &error),
            Self::WritersStopped => {
                tracing::error!(error = %self, "order writers stopped");
                Problem::new(StatusCode::SERVICE_UNAVAILABLE, self.to_string())
            }
        }
        .into_response()
    }
}
