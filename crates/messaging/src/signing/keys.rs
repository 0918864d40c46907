//! A service's own message keys: X25519 key pairs kept in its database (`message_keys`), each
//! announced — published, and accepted — from when it is made until it is retired, and the
//! newest whose time has come current: what this service signs with.
//!
//! The first start makes one, current at once ([`ensure_current`]). [`rotate`] makes the next:
//! announced at once, current only [`ANNOUNCED_BEFORE_USE`] later — by then every peer has
//! fetched it (they refresh every [`REFRESH_EVERY`](super::REFRESH_EVERY)), so a peer that
//! meets a key it does not know may take the message as forged. The keys it replaces are
//! retired a day after that, so that messages made with them meanwhile still verify.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgExecutor, PgPool};
use std::time::Duration;
use x25519_dalek::{PublicKey, StaticSecret};

/// How long a key is announced before it is used: two of the peers' refreshes.
pub const ANNOUNCED_BEFORE_USE: Duration = Duration::from_secs(60);

/// How long a key that rotation replaced stays announced once the new one is in use.
pub const ANNOUNCED_AFTER_ROTATION_HOURS: i32 = 24;

/// One of this service's key pairs.
#[derive(Clone)]
pub struct OwnKey {
    pub kid: String,
    pub secret: StaticSecret,
    pub public: PublicKey,
}

impl std::fmt::Debug for OwnKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OwnKey")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl OwnKey {
    /// A new random key pair (one that lives in memory only: a stand-in for a peer in tests).
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes)?;
        Ok(Self::from_secret(bytes))
    }

    fn from_secret(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        Self {
            kid: kid_of(&public),
            secret,
            public,
        }
    }
}

/// A key's id: the first 66 bits of the SHA-256 of its public half, base64url.
pub fn kid_of(public: &PublicKey) -> String {
    let digest = Sha256::digest(public.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..9])
}

/// What a service publishes of its keys (`GET /messaging/keys`): the public halves of the
/// announced ones, and which is current.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Published {
    pub current: String,
    pub keys: Vec<PublishedKey>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PublishedKey {
    pub kid: String,
    /// The X25519 public key, base64url without padding.
    pub x25519: String,
}

impl PublishedKey {
    /// The public key, if it is 32 bytes of base64url.
    pub fn public(&self) -> Option<PublicKey> {
        let bytes: [u8; 32] = URL_SAFE_NO_PAD.decode(&self.x25519).ok()?.try_into().ok()?;
        Some(PublicKey::from(bytes))
    }
}

/// Makes this service's first key if it has none announced.
pub async fn ensure_current(pool: &PgPool) -> sqlx::Result<()> {
    let mut tx = pool.begin().await?;
    // One instance makes it; the others, starting at the same moment, wait and find it.
    sqlx::query("LOCK TABLE message_keys IN SHARE ROW EXCLUSIVE MODE")
        .execute(&mut *tx)
        .await?;
    if announced(&mut *tx).await?.is_empty() {
        insert_new(&mut *tx, 0.0).await?;
    }
    tx.commit().await
}

/// Makes the next key, current [`ANNOUNCED_BEFORE_USE`] from now; the keys it replaces stay
/// announced until [`ANNOUNCED_AFTER_ROTATION_HOURS`] after that. Returns the new key's id.
pub async fn rotate(pool: &PgPool) -> sqlx::Result<String> {
    let mut tx = pool.begin().await?;
    let before_use = ANNOUNCED_BEFORE_USE.as_secs_f64();
    sqlx::query(
        "UPDATE message_keys \
         SET retired_at = now() + make_interval(secs => $1) + make_interval(hours => $2) \
         WHERE retired_at IS NULL",
    )
    .bind(before_use)
    .bind(ANNOUNCED_AFTER_ROTATION_HOURS)
    .execute(&mut *tx)
    .await?;
    let kid = insert_new(&mut *tx, before_use).await?;
    tx.commit().await?;
    Ok(kid)
}

/// The announced keys, the current one first.
pub async fn announced(db: impl PgExecutor<'_>) -> sqlx::Result<Vec<OwnKey>> {
    let secrets: Vec<Vec<u8>> = sqlx::query_scalar(
        "SELECT secret FROM message_keys WHERE retired_at IS NULL OR retired_at > now() \
         ORDER BY current_from <= now() DESC, current_from DESC, kid",
    )
    .fetch_all(db)
    .await?;
    secrets
        .into_iter()
        .map(|secret| {
            let bytes: [u8; 32] = secret.try_into().map_err(|_| {
                sqlx::Error::Decode("a message key's secret is not 32 bytes".into())
            })?;
            Ok(OwnKey::from_secret(bytes))
        })
        .collect()
}

/// What to publish of `keys` (the current one first, as [`announced`] returns them).
pub fn published(keys: &[OwnKey]) -> Option<Published> {
    Some(Published {
        current: keys.first()?.kid.clone(),
        keys: keys
            .iter()
            .map(|key| PublishedKey {
                kid: key.kid.clone(),
                x25519: URL_SAFE_NO_PAD.encode(key.public.as_bytes()),
            })
            .collect(),
    })
}

/// Stores a new key, current `after_seconds` from now.
async fn insert_new(db: impl PgExecutor<'_>, after_seconds: f64) -> sqlx::Result<String> {
    let key = OwnKey::generate()
        .map_err(|error| sqlx::Error::Encode(format!("no randomness: {error}").into()))?;
    sqlx::query(
        "INSERT INTO message_keys (kid, secret, current_from) \
         VALUES ($1, $2, now() + make_interval(secs => $3))",
    )
    .bind(&key.kid)
    .bind(key.secret.to_bytes().as_slice())
    .bind(after_seconds)
    .execute(db)
    .await?;
    Ok(key.kid)
}

#[cfg(test)]
pub(crate) fn generated() -> OwnKey {
    OwnKey::generate().expect("randomness")
}
