//! A token issuer of the tests' own: an Ed25519 key, its JWKS served on a free port, and tokens
//! for any user — what an external OpenID Connect provider is to the services.

use gozon_http::auth::Claims;
use gozon_identity::keys::SigningKey;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::task::AbortOnDropHandle;

/// The audience GoZon's services expect by default.
pub const AUDIENCE: &str = "gozon";

pub struct TestIssuer {
    /// The `iss` of its tokens.
    pub issuer: String,
    /// Where its public keys are.
    pub jwks_url: String,
    key: SigningKey,
    _server: AbortOnDropHandle<()>,
}

impl TestIssuer {
    /// Starts serving the JWKS of a new key, for tokens with `iss` = `issuer`.
    pub async fn start(issuer: &str) -> Self {
        let key = SigningKey::generate().expect("a key");
        let jwks = serde_json::json!({ "keys": [key.public_jwk().expect("a public key")] });
        let (jwks_url, server) = crate::serve_json("/jwks.json", jwks).await;
        Self {
            issuer: issuer.to_owned(),
            jwks_url,
            key,
            _server: server,
        }
    }

    /// Command-line arguments that make a service accept this issuer's tokens.
    pub fn service_args(&self) -> Vec<String> {
        [
            "--auth-issuer",
            &self.issuer,
            "--auth-audience",
            AUDIENCE,
            "--auth-jwks-url",
            &self.jwks_url,
            // It revokes nothing.
            "--auth-revocations-url",
            "",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    /// The claims of a valid token for `user`, for an hour.
    pub fn claims(&self, user: &str) -> Claims {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        Claims {
            sub: user.to_owned(),
            iss: self.issuer.clone(),
            aud: AUDIENCE.to_owned(),
            iat: now,
            exp: now + 3600,
            nbf: None,
            jti: None,
        }
    }

    /// A valid token for `user`.
    pub fn token(&self, user: &str) -> String {
        self.sign(&self.claims(user))
    }

    /// A token of these claims, signed with this issuer's key.
    pub fn sign(&self, claims: &Claims) -> String {
        self.key.sign(claims).expect("signed")
    }

    /// This issuer's key (to forge tokens under its `kid`).
    pub fn key(&self) -> &SigningKey {
        &self.key
    }
}
