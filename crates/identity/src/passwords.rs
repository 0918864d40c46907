//! Passwords: checked for length, stored only as Argon2id hashes, verified in constant work.
//!
//! Hashing uses the argon2 crate's defaults, which are OWASP's recommendation for Argon2id
//! (m = 19 MiB, t = 2, p = 1). A hash costs tens of milliseconds of CPU and 19 MiB of memory,
//! so it runs on the blocking pool, at most [`CONCURRENT_HASHES`] at once: a flood of sign-ups
//! queues rather than exhausting memory or starving the async workers.
//!
//! A login for a user that does not exist verifies against [`Passwords::dummy`], a hash made at
//! start, so an unknown user and a wrong password cost the same time.

use argon2::{
    Argon2,
    password_hash::{PasswordHasher, PasswordVerifier, phc::PasswordHash},
};
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Fewest characters of a password.
pub const MIN_CHARS: usize = 8;
/// Most bytes of a password (Argon2 takes any length; this bounds the work a request can ask).
pub const MAX_BYTES: usize = 256;
/// Hashes computed at once.
pub const CONCURRENT_HASHES: usize = 2;

/// A password as a client sent it. Its `Debug` hides it, so it never reaches a log line.
#[derive(Clone, serde::Deserialize)]
#[serde(transparent)]
pub struct Password(String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(…)")
    }
}

impl Password {
    /// Whether it is long enough and not too long to be a password GoZon accepts.
    pub fn acceptable(&self) -> bool {
        self.0.chars().count() >= MIN_CHARS && self.0.len() <= MAX_BYTES
    }
}

/// Hashing and verification, bounded.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    dummy: Arc<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("password hashing failed: {0}")]
pub struct HashError(String);

impl Passwords {
    /// Makes the dummy hash (one hash's work).
    pub async fn new() -> Result<Self, HashError> {
        let permits = Arc::new(Semaphore::new(CONCURRENT_HASHES));
        let dummy = blocking(&permits, || {
            hash_now(&Password("gozon-dummy-password".into()))
        })
        .await??;
        Ok(Self {
            permits,
            dummy: Arc::new(dummy),
        })
    }

    /// The PHC string of a new Argon2id hash of `password`, with a random salt.
    pub async fn hash(&self, password: Password) -> Result<String, HashError> {
        metrics::counter!("password_hashes_total").increment(1);
        blocking(&self.permits, move || hash_now(&password)).await?
    }

    /// Whether `password` matches `stored`; with `stored` absent (no such user) it does the
    /// same work against the dummy hash and answers no.
    pub async fn verify(
        &self,
        password: Password,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let exists = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy.as_ref().clone());
        let matches = blocking(&self.permits, move || {
            let parsed = PasswordHash::new(&stored).map_err(|e| HashError(e.to_string()))?;
            Ok::<_, HashError>(
                Argon2::default()
                    .verify_password(password.0.as_bytes(), &parsed)
                    .is_ok(),
            )
        })
        .await??;
        Ok(exists && matches)
    }
}

fn hash_now(password: &Password) -> Result<String, HashError> {
    Argon2::default()
        .hash_password(password.0.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|error| HashError(error.to_string()))
}

/// Runs `work` on the blocking pool once a permit is free. The permit goes with the work: a
/// request that is cancelled meanwhile (its client hung up) leaves the hash running, and its
/// permit held, until the hash is done — so no more than the permits ever hash at once.
async fn blocking<T: Send + 'static>(
    permits: &Arc<Semaphore>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, HashError> {
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|error| HashError(error.to_string()))?;
    tokio::task::spawn_blocking(move || {
        let done = work();
        drop(permit);
        done
    })
    .await
    .map_err(|error| HashError(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_whose_request_was_cancelled_keeps_its_permit_until_it_is_done() {
        let passwords = Passwords::new().await.unwrap();
        // Ten sign-ups whose clients hang up at once: two of them start hashing.
        for _ in 0..10 {
            let hashing = passwords.hash(Password("a long password".into()));
            let _ = tokio::time::timeout(std::time::Duration::from_millis(1), hashing).await;
        }
        assert_eq!(
            passwords.permits.available_permits(),
            0,
            "the hashes still running hold both permits"
        );
        tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while passwords.permits.available_permits() < CONCURRENT_HASHES {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("both permits back once the hashes are done");
    }

    #[tokio::test]
    async fn a_hash_is_argon2id_and_verifies_only_its_own_password() {
        let passwords = Passwords::new().await.unwrap();
        let hash = passwords
            .hash(Password("correct horse".into()))
            .await
            .unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(!hash.contains("correct horse"));
        assert!(
            passwords
                .verify(Password("correct horse".into()), Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !passwords
                .verify(Password("wrong horse".into()), Some(hash))
                .await
                .unwrap()
        );
    }

    #[tokio::test]
    async fn no_password_matches_a_user_that_does_not_exist() {
        let passwords = Passwords::new().await.unwrap();
        assert!(
            !passwords
                .verify(Password("gozon-dummy-password".into()), None)
                .await
                .unwrap()
        );
    }

    #[test]
    fn passwords_under_8_characters_or_over_256_bytes_are_not_acceptable() {
        assert!(!Password("1234567".into()).acceptable());
        assert!(Password("12345678".into()).acceptable());
        assert!(Password("ж".repeat(8)).acceptable());
        assert!(Password("x".repeat(256)).acceptable());
        assert!(!Password("x".repeat(257)).acceptable());
    }

    #[test]
    fn a_password_never_shows_in_debug_output() {
        assert_eq!(
            format!("{:?}", Password("secret-pass".into())),
            "Password(…)"
        );
    }
}
