//! Signed-out tokens: the issuer's list of revoked token ids, read every second, and a
//! verifier that refuses those tokens from then on.

use super::{AuthError, Caller, TokenVerifier};
use serde::{Deserialize, Serialize};
use std::time::{Duration, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
/// What the issuer lists of revoked tokens (`GET /auth/revoked?after=…`): each after the
/// position `after`, oldest first, with the position of the last.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revocations {
    pub revoked: Vec<Revoked>,
    /// Where the next request starts: `after` of it.
    pub last: i64,
}

/// A revoked token, until it would have expired anyway.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Revoked {
    pub jti: String,
    /// When it would have expired (its `exp` and the leeway), seconds since the epoch.
    pub until: u64,
}

impl TokenVerifier {
    pub(super) fn unless_revoked(&self, caller: Caller) -> Result<Caller, AuthError> {
        if let Some(id) = &caller.token_id
            && self.is_revoked(id)
        {
            return Err(AuthError::Invalid("the token was signed out".into()));
        }
        Ok(caller)
    }

    /// Whether the token `id` was revoked (signed out).
    pub fn is_revoked(&self, id: &str) -> bool {
        self.inner
            .revoked
            .read()
            .is_ok_and(|revoked| revoked.0.contains_key(id))
    }

    /// Resolves once the token `id` is revoked (never for a token without an id).
    pub async fn signed_out(&self, id: Option<String>) {
        let Some(id) = id else {
            return std::future::pending().await;
        };
        let mut changes = self.inner.revoked_now.subscribe();
        while !self.is_revoked(&id) {
            if changes.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    /// Takes `listed` as revoked, up to its `last` position.
    pub fn revoke(&self, listed: Revocations) {
        let now = self.inner.clock.now();
        let Ok(mut revoked) = self.inner.revoked.write() else {
            return;
        };
        let (ids, read_up_to) = &mut *revoked;
        let before = ids.len();
        for token in listed.revoked {
            ids.insert(token.jti, UNIX_EPOCH + Duration::from_secs(token.until));
        }
        let added = ids.len() > before;
        // A token past its expiry is refused anyway: forget it.
        ids.retain(|_, exp| *exp > now);
        *read_up_to = (*read_up_to).max(listed.last);
        drop(revoked);
        if added {
            self.inner.revoked_now.send_modify(|n| *n += 1);
        }
    }

    /// Reads the list of revoked tokens every `interval` until `stop` fires (nothing to do
    /// where the issuer lists none).
    pub async fn keep_revocations(self, interval: Duration, stop: CancellationToken) {
        let Some(url) = self.inner.revocations_url.clone() else {
            return;
        };
        loop {
            let after = self.inner.revoked.read().map_or(0, |revoked| revoked.1);
            match self
                .fetch::<Revocations>(&format!("{url}?after={after}"))
                .await
            {
                Ok(listed) => self.revoke(listed),
                Err(error) => {
                    tracing::debug!(%error, %url, "the list of revoked tokens cannot be read now")
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
