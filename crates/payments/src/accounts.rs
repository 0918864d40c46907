//! Accounts: the HTTP routes for opening an account, depositing and reading the balance.

use crate::{
    error::ApiError,
    ledger::{self, Deposit},
    state::AppState,
};
use axum::{
    Router,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use gozon_contract::domain::{Amount, UserId};
use gozon_http::{Json, Path, auth::Caller};
use gozon_runtime::idempotency::{self, Claim, IdempotencyKey};
use serde::{Deserialize, Serialize};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/payments/accounts", post(create_account))
        .route("/payments/accounts/deposit", post(deposit))
        .route("/payments/accounts/{user_id}/balance", get(balance))
}

/// An account as the API shows it.
#[derive(Debug, Serialize)]
pub struct Balance {
    pub user_id: UserId,
    pub balance: i64,
}

/// `user_id`, if given, must be the caller's (so in every request below).
#[derive(Debug, Deserialize)]
struct AccountRequest {
    #[serde(default, deserialize_with = "gozon_http::auth::named_user")]
    user_id: Option<UserId>,
}

async fn create_account(
    State(state): State<AppState>,
    caller: Caller,
    Json(request): Json<AccountRequest>,
) -> Result<(StatusCode, Json<Balance>), ApiError> {
    let new = NewAccount {
        user_id: caller.acting_for(request.user_id)?,
    };
    let created = sqlx::query("INSERT INTO accounts (user_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(new.user_id.as_str())
        .execute(&state.pool)
        .await?
        .rows_affected();
    if created == 0 {
        return Err(ApiError::AccountExists(new.user_id));
    }
    tracing::info!(user_id = %new.user_id, "account opened");
    Ok((
        StatusCode::CREATED,
        Json(Balance {
            user_id: new.user_id,
            balance: 0,
        }),
    ))
}

struct NewAccount {
    user_id: UserId,
}

#[derive(Debug, Deserialize)]
struct DepositRequest {
    #[serde(default, deserialize_with = "gozon_http::auth::named_user")]
    user_id: Option<UserId>,
    amount: Amount,
}

#[derive(Debug, Serialize)]
struct NewDeposit {
    user_id: UserId,
    amount: Amount,
}

async fn deposit(
    State(state): State<AppState>,
    caller: Caller,
    key: Option<IdempotencyKey>,
    Json(request): Json<DepositRequest>,
) -> Result<Response, ApiError> {
    const ROUTE: &str = "POST /payments/accounts/deposit";
    let new = NewDeposit {
        user_id: caller.acting_for(request.user_id)?,
        amount: request.amount,
    };
    let mut tx = state.pool.begin().await?;
    match idempotency::claim(&mut tx, ROUTE, &new.user_id, key.as_ref(), &new).await? {
        Claim::New => {}
        Claim::Replay(first) => {
            // Waits until the first answer's write is on the synchronous standby.
            tx.commit().await?;
            return Ok(first);
        }
        Claim::Conflict => return Err(ApiError::IdempotencyConflict),
    }
    let balance = match ledger::deposit(&mut tx, &new.user_id, new.amount).await? {
        Deposit::Credited(balance) => balance,
        Deposit::AccountNotFound => return Err(ApiError::AccountNotFound(new.user_id)),
        Deposit::WouldOverflow => {
            return Err(ApiError::BalanceOverflow {
                user_id: new.user_id,
                amount: new.amount.kopecks(),
            });
        }
    };
    let credited = Balance {
        user_id: new.user_id,
        balance,
    };
    idempotency::save(
        &mut tx,
        ROUTE,
        &credited.user_id,
        key.as_ref(),
        StatusCode::OK,
        &credited,
    )
    .await?;
    tx.commit().await?;
    tracing::info!(user_id = %credited.user_id, amount = new.amount.kopecks(), balance, "deposit credited");
    Ok(Json(credited).into_response())
}

async fn balance(
    State(state): State<AppState>,
    caller: Caller,
    Path(user_id): Path<UserId>,
) -> Result<Json<Balance>, ApiError> {
    let user_id = caller.acting_for(Some(user_id))?;
    let balance: Option<i64> =
        sqlx::query_scalar("SELECT balance FROM accounts WHERE user_id = $1")
            .bind(user_id.as_str())
            .fetch_optional(&state.pool)
            .await?;
    match balance {
        Some(balance) => Ok(Json(Balance { user_id, balance })),
        None => Err(ApiError::AccountNotFound(user_id)),
    }
}
