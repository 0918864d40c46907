//! The identity API's errors and their HTTP form, in one place.

use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use gozon_contract::domain::UserId;
use gozon_http::{Problem, auth::AuthError};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the user id {0} is taken")]
    UserIdTaken(UserId),
    #[error("the password must be at least {min} characters and at most {max} bytes")]
    BadPassword { min: usize, max: usize },
    /// One answer for an unknown user and a wrong password.
    #[error("wrong user id or password")]
    WrongCredentials,
    #[error("too many attempts; retry in {} s", .0.as_secs() + 1)]
    TooManyAttempts(Duration),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("internal: {0}")]
    Internal(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = match &self {
            Self::UserIdTaken(_) => (StatusCode::CONFLICT, "user-id-taken"),
            Self::BadPassword { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "bad-password"),
            Self::WrongCredentials => (StatusCode::UNAUTHORIZED, "wrong-credentials"),
            Self::TooManyAttempts(_) => (StatusCode::TOO_MANY_REQUESTS, "too-many-attempts"),
            Self::Auth(_) | Self::Database(_) | Self::Internal(_) => {
                return match self {
                    Self::Auth(error) => error.into_response(),
                    Self::Database(error) => {
                        gozon_runtime::db::problem("identity", &error).into_response()
                    }
                    other => Problem::internal(&other).into_response(),
                };
            }
        };
        let mut response = Problem::new(status, self.to_string())
            .of_type(kind)
            .into_response();
        let headers = response.headers_mut();
        match self {
            Self::WrongCredentials => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"gozon\""),
                );
            }
            Self::TooManyAttempts(wait) => {
                // Whole seconds, rounded up: retrying at the stated time must work.
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
            }
            _ => {}
        }
        response
    }
}
