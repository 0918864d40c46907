//! Who is calling: the bearer token on every API request, checked by the service itself.
//!
//! - A token is a JWT signed with an asymmetric key (EdDSA from GoZon's identity service, or
//!   whatever an external OpenID Connect provider uses: EdDSA, RS256, ES256), whose public part
//!   is fetched from a JWKS URL ([`AuthSettings`]). No service trusts a user id that a client
//!   could set: the only identity a handler sees is the token's verified `sub`, as a [`Caller`].
//! - The algorithm is pinned by the key, never taken from the token: a token names its key
//!   (`kid`), and is checked with that key's own algorithm. `alg: none`, and HS256 "signed" with
//!   a public key, are therefore refused; so are tokens without `exp`, `iss`, `aud` or `sub`, or
//!   with the wrong issuer or audience.
//! - Keys rotate: a token signed with a key not yet known makes the verifier fetch the JWKS
//!   again (at most once per [`MIN_REFRESH`]), so a new key is picked up without a restart.
//! - Expiry (`exp`, with [`LEEWAY_SECONDS`] for clock skew) and start (`nbf`, when present) are
//!   compared with the verifier's [`Clock`].
//! - A token once accepted is remembered, whole, until it expires ([`MAX_ACCEPTED`] of them): the
//!   same token again skips the signature check (about 30 µs of CPU), any other byte string is
//!   checked afresh, and a change of the known keys forgets them all, so a withdrawn key's tokens
//!   are refused from then on.
//! - Signing out revokes the token: the identity service lists the revoked tokens' ids (`jti`),
//!   and every verifier fetches that list each second ([`TokenVerifier::keep_revocations`]) and
//!   refuses a revoked token from then on — cached or not, and an open live stream of it ends
//!   ([`TokenVerifier::signed_out`]). If the list cannot be fetched, what was revoked so far
//!   stays revoked and the rest stays valid (identity's outage does not stop the shop).
//! - Every refusal is a 401 problem with `WWW-Authenticate: Bearer` ([`AuthError`]); acting for
//!   another user is a 403 ([`Caller::acting_for`]).
//!
//! The browser's session cookie ([`SESSION_COOKIE`]) is turned into a bearer header by the
//! gateway, so the services read one thing only.

use crate::{Problem, clock::Clock};
use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use gozon_contract::domain::UserId;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm},
};
use serde::{Deserialize, Serialize};
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};
use tokio_util::sync::CancellationToken;

/// The web UI's session cookie: the same token, `HttpOnly`, `SameSite=Strict`.
pub const SESSION_COOKIE: &str = "gozon_session";

/// Shortest time between two fetches of the JWKS.
pub const MIN_REFRESH: Duration = Duration::from_secs(2);

/// Clock skew tolerated on `exp`: a token is accepted until `exp` + this.
pub const LEEWAY_SECONDS: u64 = 30;

/// How often a verifier reads the list of revoked tokens ([`TokenVerifier::keep_revocations`]).
pub const REVOCATIONS_EVERY: Duration = Duration::from_secs(1);

/// Most tokens a verifier remembers as accepted (a few MiB; beyond it the least used are
/// checked afresh).
pub const MAX_ACCEPTED: u64 = 10_000;

/// Which tokens the services accept.
#[derive(Debug, Clone, clap::Args)]
pub struct AuthSettings {
    /// The `iss` every token must carry: GoZon's identity service, or an external OpenID
    /// Connect provider's issuer URL.
    #[arg(long, env = "AUTH_ISSUER", default_value = "gozon")]
    pub auth_issuer: String,

    /// The `aud` every token must carry.
    #[arg(long, env = "AUTH_AUDIENCE", default_value = "gozon")]
    pub auth_audience: String,

    /// Where the issuer's public keys are (a JWKS document).
    #[arg(
        long,
        env = "AUTH_JWKS_URL",
        default_value = "http://127.0.0.1:8083/auth/jwks.json"
    )]
    pub auth_jwks_url: String,

    /// Where the issuer lists the tokens revoked by signing out (GoZon's identity service);
    /// empty where the issuer has no such list (an external provider's tokens then stay valid
    /// until they expire).
    #[arg(
        long,
        env = "AUTH_REVOCATIONS_URL",
        default_value = "http://127.0.0.1:8083/auth/revoked"
    )]
    pub auth_revocations_url: String,
}

/// What a GoZon token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub sub: String,
    pub iss: String,
    pub aud: String,
    /// Issued at, seconds since the epoch.
    pub iat: u64,
    /// Expires at, seconds since the epoch.
    pub exp: u64,
    /// Not valid before, seconds since the epoch (checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The token's id: what signing out revokes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

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

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("sign in first: this call needs a bearer token or a session")]
    Missing,
    #[error("the token is not valid: {0}")]
    Invalid(String),
    #[error("a user_id that is not the caller's: {0}")]
    NotYours(UserId),
    #[error("tokens cannot be checked right now: the issuer's keys are unreachable")]
    KeysUnavailable,
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let challenge = match &self {
            Self::Missing => "Bearer realm=\"gozon\"",
            Self::Invalid(_) => "Bearer realm=\"gozon\", error=\"invalid_token\"",
            Self::NotYours(_) => {
                return Problem::new(StatusCode::FORBIDDEN, self.to_string())
                    .of_type("not-yours")
                    .into_response();
            }
            Self::KeysUnavailable => {
                tracing::error!("cannot fetch the token issuer's keys");
                return Problem::new(StatusCode::SERVICE_UNAVAILABLE, self.to_string())
                    .into_response();
            }
        };
        let mut response = Problem::new(StatusCode::UNAUTHORIZED, self.to_string())
            .of_type("unauthenticated")
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
        response
    }
}

/// The signed-in user a request acts for, and the token it came with.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: UserId,
    /// The token's id (`jti`), if it has one: what signing out revokes.
    pub token_id: Option<String>,
    /// When the token stops being accepted (its expiry and the leeway).
    pub until: SystemTime,
}

impl Caller {
    /// The user a request acts for: the `user_id` it names, which must be the caller's, or the
    /// caller when it names none.
    pub fn acting_for(&self, named: Option<UserId>) -> Result<UserId, AuthError> {
        match named {
            Some(user) if user != self.user => Err(AuthError::NotYours(user)),
            _ => Ok(self.user.clone()),
        }
    }
}

/// Reads a body's `user_id` that may be left out (`#[serde(default, deserialize_with = …)]`)
/// but, when present, is a user id: `"user_id": null` is refused like any other non-string.
pub fn named_user<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<UserId>, D::Error> {
    UserId::deserialize(deserializer).map(Some)
}

impl<S> FromRequestParts<S> for Caller
where
    TokenVerifier: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AuthError> {
        let token = bearer_token(&parts.headers).ok_or(AuthError::Missing)?;
        TokenVerifier::from_ref(state).verify(token).await
    }
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
}

/// Checks tokens against the issuer's public keys.
#[derive(Clone)]
pub struct TokenVerifier {
    inner: Arc<Inner>,
}

struct Inner {
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
    clock: Clock,
    /// Where the revoked tokens are listed (`None`: nowhere).
    revocations_url: Option<String>,
    /// The ids of revoked tokens, each until it would have expired, and where the list was
    /// read up to.
    revoked: RwLock<(HashMap<String, SystemTime>, i64)>,
    /// Bumped whenever tokens are revoked, for the streams that wait on it.
    revoked_now: tokio::sync::watch::Sender<u64>,
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

    fn unless_revoked(&self, caller: Caller) -> Result<Caller, AuthError> {
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

    fn known(&self, kid: &str) -> Option<VerifyingKey> {
        self.inner.keys.read().ok()?.get(kid).cloned()
    }

    /// The JSON document at `url`, if it answered with a success.
    async fn fetch<T: serde::de::DeserializeOwned>(&self, url: &str) -> Result<T, reqwest::Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderMap;

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_bearer_token_is_read_whatever_the_scheme_case() {
        assert_eq!(bearer_token(&headers("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&headers("bearer abc")), Some("abc"));
    }

    #[test]
    fn other_schemes_and_empty_tokens_are_no_token() {
        assert_eq!(bearer_token(&headers("Basic dXNlcjpwYXNz")), None);
        assert_eq!(bearer_token(&headers("Bearer ")), None);
        assert_eq!(bearer_token(&headers("Bearer")), None);
    }

    #[test]
    fn acting_for_another_user_is_refused_and_naming_none_means_the_caller() {
        let caller = Caller {
            user: UserId::parse("alice").unwrap(),
            token_id: None,
            until: SystemTime::now(),
        };
        assert_eq!(caller.acting_for(None).unwrap().as_str(), "alice");
        assert_eq!(
            caller
                .acting_for(Some(UserId::parse("alice").unwrap()))
                .unwrap()
                .as_str(),
            "alice"
        );
        assert!(matches!(
            caller.acting_for(Some(UserId::parse("bob").unwrap())),
            Err(AuthError::NotYours(_))
        ));
    }
}
