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

mod revocations;
mod verifier;

pub use revocations::{Revocations, Revoked};
pub use verifier::TokenVerifier;

use crate::Problem;
use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use gozon_contract::domain::UserId;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime};

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
