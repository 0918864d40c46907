//! The keys tokens are signed with, and the tokens themselves.
//!
//! - One Ed25519 key is current: made on first start (by whichever instance gets there first;
//!   a unique index lets only one win) and kept in the identity database as PKCS#8 DER.
//! - [`rotate`] retires the current key and makes a new one. A retired key no longer signs but
//!   stays published for [`MAX_TOKEN_TTL`], so tokens it signed keep working until they expire.
//! - `GET /auth/jwks.json` publishes the public halves ([`jwks`]); the services fetch it and
//!   check tokens themselves ([`gozon_http::auth::TokenVerifier`]).
//!
//! The private key is as safe as the identity database: deployments that need more keep it in
//! a KMS or HSM (see `docs/security.md`).

use axum::{extract::State, http::header, response::IntoResponse};
use ed25519_dalek::ed25519::pkcs8::{EncodePrivateKey, KeypairBytes};
use gozon_contract::domain::UserId;
use gozon_http::auth::{AuthSettings, Claims};
use jsonwebtoken::{
    Algorithm, EncodingKey, Header,
    jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse},
};
use sqlx::{PgExecutor, PgPool};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use time::OffsetDateTime;

/// Longest life of a token; retired keys stay published this long.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("key material: {0}")]
    Key(String),
}

/// An Ed25519 signing key and its id, as stored.
#[derive(Clone, sqlx::FromRow)]
pub struct SigningKey {
    kid: String,
    /// PKCS#8 DER.
    private_key: Vec<u8>,
}

impl SigningKey {
    /// A new random key with a new id.
    pub fn generate() -> Result<Self, KeyError> {
        let mut secret_key = [0u8; 32];
        getrandom::fill(&mut secret_key).map_err(|error| KeyError::Key(error.to_string()))?;
        let der = KeypairBytes {
            secret_key,
            public_key: None,
        }
        .to_pkcs8_der()
        .map_err(|error| KeyError::Key(error.to_string()))?;
        Ok(Self {
            kid: uuid::Uuid::now_v7().to_string(),
            private_key: der.as_bytes().to_vec(),
        })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The same key material under another id (tests forge tokens with it).
    pub fn with_kid(mut self, kid: &str) -> Self {
        self.kid = kid.to_owned();
        self
    }

    /// A signed JWT of `claims`, naming this key in its header.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding_key())
            .map_err(|error| KeyError::Key(error.to_string()))
    }

    fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_ed_der(&self.private_key)
    }

    /// The public half, as published in the JWKS.
    pub fn public_jwk(&self) -> Result<Jwk, KeyError> {
        let mut jwk = Jwk::from_encoding_key(&self.encoding_key(), Algorithm::EdDSA)
            .map_err(|error| KeyError::Key(error.to_string()))?;
        jwk.common.key_id = Some(self.kid.clone());
        jwk.common.public_key_use = Some(PublicKeyUse::Signature);
        jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
        Ok(jwk)
    }
}

async fn insert_new(db: impl PgExecutor<'_>) -> Result<(), KeyError> {
    let key = SigningKey::generate()?;
    sqlx::query(
        "INSERT INTO signing_keys (kid, private_key) VALUES ($1, $2) ON CONFLICT DO NOTHING",
    )
    .bind(key.kid)
    .bind(key.private_key)
    .execute(db)
    .await?;
    Ok(())
}

/// Makes the first key if there is none (safe with several instances starting at once).
pub async fn ensure_current(pool: &PgPool) -> Result<(), KeyError> {
    insert_new(pool).await
}

/// Retires the current key and makes a new one; returns the new key's id.
pub async fn rotate(pool: &PgPool) -> Result<String, KeyError> {
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE signing_keys SET retired_at = now() WHERE retired_at IS NULL")
        .execute(&mut *tx)
        .await?;
    insert_new(&mut *tx).await?;
    let kid = sqlx::query_scalar("SELECT kid FROM signing_keys WHERE retired_at IS NULL")
        .fetch_one(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(kid)
}

/// The public keys tokens may be signed with: the current one and those retired less than
/// [`MAX_TOKEN_TTL`] ago.
pub async fn published(db: impl PgExecutor<'_>) -> Result<JwkSet, KeyError> {
    let keys: Vec<SigningKey> = sqlx::query_as(
        "SELECT kid, private_key FROM signing_keys \
         WHERE retired_at IS NULL OR retired_at > now() - make_interval(secs => $1) \
         ORDER BY created_at DESC",
    )
    .bind(MAX_TOKEN_TTL.as_secs_f64())
    .fetch_all(db)
    .await?;
    let keys = keys
        .iter()
        .map(SigningKey::public_jwk)
        .collect::<Result<_, _>>()?;
    Ok(JwkSet { keys })
}

/// A signed token for `user`, issued `now` and valid for `ttl`, and when it expires.
pub async fn issue(
    db: impl PgExecutor<'_>,
    auth: &AuthSettings,
    user: &UserId,
    ttl: Duration,
    now: SystemTime,
) -> Result<(String, OffsetDateTime), KeyError> {
    let key: SigningKey =
        sqlx::query_as("SELECT kid, private_key FROM signing_keys WHERE retired_at IS NULL")
            .fetch_one(db)
            .await?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_err(|error| KeyError::Key(error.to_string()))?;
    let exp = now + ttl.min(MAX_TOKEN_TTL);
    let claims = Claims {
        sub: user.to_string(),
        iss: auth.auth_issuer.clone(),
        aud: auth.auth_audience.clone(),
        iat: now.as_secs(),
        exp: exp.as_secs(),
        nbf: None,
        jti: Some(uuid::Uuid::new_v4().to_string()),
    };
    let token = key.sign(&claims)?;
    let expires_at = OffsetDateTime::from_unix_timestamp(exp.as_secs() as i64)
        .map_err(|error| KeyError::Key(error.to_string()))?;
    Ok((token, expires_at))
}

/// `GET /auth/jwks.json`: cacheable for a minute (the services re-fetch on an unknown `kid`).
pub async fn jwks(State(pool): State<PgPool>) -> Result<impl IntoResponse, crate::error::ApiError> {
    let set = published(&pool).await?;
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(set),
    ))
}

impl From<KeyError> for crate::error::ApiError {
    fn from(error: KeyError) -> Self {
        match error {
            KeyError::Database(error) => Self::Database(error),
            KeyError::Key(error) => Self::Internal(error),
        }
    }
}
