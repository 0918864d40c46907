//! The services' token check remembers the tokens it accepted (`gozon_http::auth`): these tests
//! show that remembering never accepts what checking afresh would refuse. Real Ed25519 keys and
//! signatures; no database needed.

use gozon_http::{
    auth::{AuthError, AuthSettings, Claims, LEEWAY_SECONDS, TokenVerifier},
    clock::{Clock, ManualClock},
};
use gozon_identity::keys::SigningKey;
use jsonwebtoken::jwk::JwkSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn settings() -> AuthSettings {
    AuthSettings {
        auth_issuer: "gozon".into(),
        auth_audience: "gozon".into(),
        auth_jwks_url: String::new(),
        auth_revocations_url: String::new(),
    }
}

fn verifier_of(key: &SigningKey) -> TokenVerifier {
    TokenVerifier::with_keys(&settings(), &published(key), Clock::System)
}

fn published(key: &SigningKey) -> JwkSet {
    JwkSet {
        keys: vec![key.public_jwk().expect("public key")],
    }
}

fn seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

fn now() -> u64 {
    seconds(SystemTime::now())
}

/// A token of `user` with these times.
fn token_with(key: &SigningKey, user: &str, iat: u64, exp: u64, nbf: Option<u64>) -> String {
    key.sign(&Claims {
        sub: user.into(),
        iss: "gozon".into(),
        aud: "gozon".into(),
        iat,
        exp,
        nbf,
        jti: None,
    })
    .expect("signed")
}

/// A token of `user` acceptable for about `for_seconds` more seconds (`exp` plus the leeway).
fn token(key: &SigningKey, user: &str, for_seconds: u64) -> String {
    let exp = (now() + for_seconds).saturating_sub(LEEWAY_SECONDS);
    token_with(key, user, now(), exp, None)
}

#[tokio::test]
async fn a_token_accepted_before_is_refused_from_the_second_its_expiry_and_leeway_have_passed() {
    let key = SigningKey::generate().unwrap();
    let time = ManualClock::default();
    let verifier = TokenVerifier::with_keys(&settings(), &published(&key), time.clone().into());
    let issued = seconds(Clock::from(time.clone()).now());
    let token = token_with(&key, "alice", issued, issued + 60, None);
    assert_eq!(
        verifier.verify(&token).await.unwrap().user.as_str(),
        "alice"
    );

    // Remembered as accepted, until exp + leeway: accepted one second before, refused at it.
    let until = Duration::from_secs(60 + LEEWAY_SECONDS);
    time.advance(until - Duration::from_secs(1));
    assert_eq!(
        verifier.verify(&token).await.unwrap().user.as_str(),
        "alice"
    );
    time.advance(Duration::from_secs(1));
    assert!(matches!(
        verifier.verify(&token).await,
        Err(AuthError::Invalid(_))
    ));
}

#[tokio::test]
async fn a_token_is_refused_before_its_not_before_time_less_the_leeway() {
    let key = SigningKey::generate().unwrap();
    let time = ManualClock::default();
    let verifier = TokenVerifier::with_keys(&settings(), &published(&key), time.clone().into());
    let now = seconds(Clock::from(time.clone()).now());
    let starts = now + LEEWAY_SECONDS + 10;
    let token = token_with(&key, "alice", now, now + 3600, Some(starts));
    assert!(matches!(
        verifier.verify(&token).await,
        Err(AuthError::Invalid(_))
    ));
    time.advance(Duration::from_secs(10));
    assert_eq!(
        verifier.verify(&token).await.unwrap().user.as_str(),
        "alice"
    );
}

#[tokio::test]
async fn a_token_that_differs_from_an_accepted_one_only_in_its_signature_is_refused() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_of(&key);
    let token = token(&key, "alice", 3_600);
    verifier.verify(&token).await.unwrap();

    // Same header and claims; the signature's first character changed.
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let first = if signature.starts_with('A') { 'B' } else { 'A' };
    let forged = format!("{signed}.{first}{}", &signature[1..]);
    assert!(matches!(
        verifier.verify(&forged).await,
        Err(AuthError::Invalid(_))
    ));
    assert_eq!(
        verifier.verify(&token).await.unwrap().user.as_str(),
        "alice"
    );
}

#[tokio::test]
async fn tokens_accepted_with_a_key_that_is_withdrawn_are_refused_from_then_on() {
    let withdrawn = SigningKey::generate().unwrap();
    let verifier = verifier_of(&withdrawn);
    let token = token(&withdrawn, "alice", 3_600);
    verifier.verify(&token).await.unwrap();

    verifier.replace_keys(&published(&SigningKey::generate().unwrap()));
    assert!(matches!(
        verifier.verify(&token).await,
        Err(AuthError::Invalid(_))
    ));
}
