//! The payments API's errors and their HTTP form, in one place.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use gozon_contract::domain::UserId;
use gozon_http::{Problem, auth::AuthError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("an account for {0} already exists")]
    AccountExists(UserId),
    #[error("no account for {0}")]
    AccountNotFound(UserId),
    #[error("depositing {amount} would overflow the balance of {user_id}")]
    BalanceOverflow { user_id: UserId, amount: i64 },
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyConflict,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = match self {
            Self::Auth(error) => return error.into_response(),
            Self::Database(error) => {
                return gozon_runtime::db::problem("payments", &error).into_response();
            }
            Self::AccountExists(_) => (StatusCode::CONFLICT, "account-exists"),
            Self::AccountNotFound(_) => (StatusCode::NOT_FOUND, "account-not-found"),
            Self::BalanceOverflow { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "balance-overflow"),
            Self::IdempotencyConflict => (StatusCode::UNPROCESSABLE_ENTITY, "idempotency-conflict"),
        };
        Problem::new(status, self.to_string())
            .of_type(kind)
            .into_response()
    }
}
