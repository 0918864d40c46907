//! What checking a token costs a service per request, and what a password hash costs identity
//! per sign-up or login: `cargo bench -p gozon-identity --bench token_check` (numbers in
//! `docs/benchmarks.md`).

use gozon_http::auth::{AuthSettings, Claims, TokenVerifier};
use gozon_identity::{
    keys::SigningKey,
    passwords::{Password, Passwords},
};
use jsonwebtoken::jwk::JwkSet;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let key = SigningKey::generate()?;
    let settings = AuthSettings {
        auth_issuer: "gozon".into(),
        auth_audience: "gozon".into(),
        auth_jwks_url: String::new(),
        auth_revocations_url: String::new(),
    };
    let verifier = TokenVerifier::with_keys(
        &settings,
        &JwkSet {
            keys: vec![key.public_jwk()?],
        },
        Default::default(),
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let token = key.sign(&Claims {
        sub: "bench-user".into(),
        iss: "gozon".into(),
        aud: "gozon".into(),
        iat: now,
        exp: now + 3600,
        nbf: None,
        jti: None,
    })?;

    const PER_ROUND: u32 = 2_000;
    let mut rounds = Vec::new();
    for _ in 0..9 {
        let started = Instant::now();
        for _ in 0..PER_ROUND {
            verifier.verify(&token).await?;
        }
        rounds.push(started.elapsed().as_secs_f64() * 1e6 / f64::from(PER_ROUND));
    }
    println!(
        "token check (EdDSA verify + claims): median {:.1} µs per request over 9 rounds of {PER_ROUND}",
        median(rounds)
    );

    let passwords = Passwords::new().await?;
    let mut hashes = Vec::new();
    for _ in 0..9 {
        let started = Instant::now();
        passwords
            .hash(serde_json::from_str::<Password>(
                "\"correct horse battery\"",
            )?)
            .await?;
        hashes.push(started.elapsed().as_secs_f64() * 1e3);
    }
    println!(
        "Argon2id hash (m=19 MiB, t=2, p=1): median {:.1} ms per sign-up or login over 9",
        median(hashes)
    );
    Ok(())
}
