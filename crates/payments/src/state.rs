//! What the HTTP handlers share.

use axum::extract::FromRef;
use gozon_http::auth::TokenVerifier;
use sqlx::PgPool;

#[derive(Debug, Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub verifier: TokenVerifier,
}

impl FromRef<AppState> for TokenVerifier {
    fn from_ref(state: &AppState) -> Self {
        state.verifier.clone()
    }
}
