//! The token check: the issuer's public keys (fetched, and fetched again for a key not yet
//! known), each token's signature, claims and times, and the tokens accepted so far.

use super::{AuthError, AuthSettings, Caller, Claims, LEEWAY_SECONDS, MAX_ACCEPTED, MIN_REFRESH};
use crate::clock::Clock;
use gozon_contract::domain::UserId;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm},
};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
/// Checks tokens against the issuer's public keys.
#[derive(Clone)]
pub struct TokenVerifier {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    issuer: String,
    audience: String,
    /// `None`: the keys are given ([`TokenVerifier::with_keys`]), never fetched.
    jwks_url: Option<String>,
    http: reqwest::Client,
    keys: RwLock<HashMap<String, VerifyingKey>>,
    /// When the JWKS was last fetched; held while fetching, so concurrent misses fetch once.
    fetched: tokio::sync::Mutex<Option<Instant>>,
    /// Tokens accepted with these keys, each until it expires.
    accepted: moka::sync::Cache<String, Accepted>,
    /// What `exp` and `nbf` are compared with.
    pub(super) clock: Clock,
    /// Where the revoked tokens are listed (`None`: nowhere).
    pub(super) revocations_url: Option<String>,
    /// The ids of revoked tokens, each until it would have expired, and where the list was
    /// read up to.
    pub(super) revoked: RwLock<(HashMap<String, SystemTime>, i64)>,
    /// Bumped whenever tokens are revoked, for the streams that wait on it.
    pub(super) revoked_now: tokio::sync::watch::Sender<u64>,
}

/// A token's caller, until when the token is acceptable, and how long that was from when it was
/// accepted (the cache forgets it then).
#[derive(Clone)]
struct Accepted {
    caller: Caller,
    until: SystemTime,
    valid_for: Duration,
}

/// Forgets an accepted token when it expires.
struct UntilExpiry;

impl moka::Expiry<String, Accepted> for UntilExpiry {
    fn expire_after_create(&self, _: &String, accepted: &Accepted, _: Instant) -> Option<Duration> {
        Some(accepted.valid_for)
    }
}

#[derive(Clone)]
struct VerifyingKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier")
            .field("issuer", &self.inner.issuer)
            .field("audience", &self.inner.audience)
            .field("jwks_url", &self.inner.jwks_url)
            .finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier that fetches its keys from `settings.auth_jwks_url` when it meets a new `kid`,
    /// and tells the time by `clock`.
    pub fn new(settings: &AuthSettings, clock: Clock) -> Self {
        Self::build(settings, Some(settings.auth_jwks_url.clone()), clock)
    }

    /// A verifier of the given keys only (the identity service checks its own tokens so).
    pub fn with_keys(settings: &AuthSettings, keys: &JwkSet, clock: Clock) -> Self {
        let verifier = Self::build(settings, None, clock);
        verifier.replace_keys(keys);
        verifier
    }

    fn build(settings: &AuthSettings, jwks_url: Option<String>, clock: Clock) -> Self {
        let revocations_url = Some(settings.auth_revocations_url.clone())
            .filter(|url| !url.is_empty() && jwks_url.is_some());
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                issuer: settings.auth_issuer.clone(),
                audience: settings.auth_audience.clone(),
                jwks_url,
                http,
                keys: RwLock::new(HashMap::new()),
                fetched: tokio::sync::Mutex::new(None),
                accepted: moka::sync::Cache::builder()
                    .max_capacity(MAX_ACCEPTED)
                    .expire_after(UntilExpiry)
                    .build(),
                clock,
                revocations_url,
                revoked: RwLock::new((HashMap::new(), 0)),
                revoked_now: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    /// Replaces the known keys with those of `set` that can verify signatures (keys without a
    /// `kid`, symmetric keys and unknown algorithms are skipped), and forgets the tokens accepted
    /// so far.
    pub fn replace_keys(&self, set: &JwkSet) {
        let keys = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, verifying_key(jwk)?)))
            .collect();
        if let Ok(mut known) = self.inner.keys.write() {
            *known = keys;
        }
        self.inner.accepted.invalidate_all();
    }

    /// Who a token was issued to, if its signature, issuer, audience, expiry and start (`nbf`)
    /// hold (or held when this very token was accepted, and it has not expired since) and it was
    /// not revoked.
    pub async fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let now = self.inner.clock.now();
        if let Some(accepted) = self.inner.accepted.get(token)
            && now < accepted.until
        {
            return self.unless_revoked(accepted.caller);
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|error| AuthError::Invalid(error.to_string()))?;
        let kid = header
            .kid
            .ok_or_else(|| AuthError::Invalid("the token names no key (kid)".into()))?;
        let key = match self.known(&kid) {
            Some(key) => key,
            None => {
                self.refresh().await?;
                self.known(&kid)
                    .ok_or_else(|| AuthError::Invalid(format!("unknown signing key {kid:?}")))?
            }
        };
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.inner.issuer]);
        validation.set_audience(&[&self.inner.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        // The times are checked below, by this verifier's clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|error| AuthError::Invalid(error.to_string()))?
            .claims;
        let at = |seconds: u64| UNIX_EPOCH + Duration::from_secs(seconds);
        let leeway = Duration::from_secs(LEEWAY_SECONDS);
        let until = at(claims.exp) + leeway;
        let Ok(valid_for) = until.duration_since(now) else {
            return Err(AuthError::Invalid("the token has expired".into()));
        };
        if valid_for.is_zero() {
            return Err(AuthError::Invalid("the token has expired".into()));
        }
        if let Some(nbf) = claims.nbf
            && now + leeway < at(nbf)
        {
            return Err(AuthError::Invalid("the token is not valid yet".into()));
        }
        let caller = Caller {
            user: UserId::parse(claims.sub).map_err(AuthError::Invalid)?,
            token_id: claims.jti,
            until,
        };
        self.inner.accepted.insert(
            token.to_owned(),
            Accepted {
                caller: caller.clone(),
                until,
                valid_for,
            },
        );
        self.unless_revoked(caller)
    }

    fn known(&self, kid: &str) -> Option<VerifyingKey> {
        self.inner.keys.read().ok()?.get(kid).cloned()
    }

    /// The JSON document at `url`, if it answered with a success.
    pub(super) async fn fetch<T: serde::de::DeserializeOwned>(
        &self,
        url: &str,
    ) -> Result<T, reqwest::Error> {
        self.inner
            .http
            .get(url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
    }

    /// Fetches the JWKS again, unless it was fetched less than [`MIN_REFRESH`] ago.
    async fn refresh(&self) -> Result<(), AuthError> {
        let Some(url) = &self.inner.jwks_url else {
            return Ok(());
        };
        let mut fetched = self.inner.fetched.lock().await;
        if fetched.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return Ok(());
        }
        let set: JwkSet = self.fetch(url).await.map_err(|error| {
            tracing::warn!(%error, %url, "fetching the token issuer's keys failed");
            AuthError::KeysUnavailable
        })?;
        self.replace_keys(&set);
        *fetched = Some(Instant::now());
        Ok(())
    }
}

/// The key and its algorithm, from a JWK: its `alg` if it names one, else the usual algorithm of
/// its key type. Symmetric (`oct`) keys are never used.
fn verifying_key(jwk: &Jwk) -> Option<VerifyingKey> {
    let algorithm = match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (_, AlgorithmParameters::OctetKey(_)) => return None,
        (Some(KeyAlgorithm::EdDSA), _) | (None, AlgorithmParameters::OctetKeyPair(_)) => {
            Algorithm::EdDSA
        }
        (Some(KeyAlgorithm::RS256), _) | (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (Some(KeyAlgorithm::ES256), _) | (None, AlgorithmParameters::EllipticCurve(_)) => {
            Algorithm::ES256
        }
        _ => return None,
    };
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyingKey { algorithm, key })
}
