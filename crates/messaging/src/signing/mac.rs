//! The MAC itself: the key of one direction and one pair of keys, derived from an X25519
//! agreement with HKDF-SHA256, and HMAC-SHA256 over a message's queue, id and body.

use super::keys::OwnKey;
use crate::Role;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use x25519_dalek::PublicKey;

/// The HMAC key of messages from `producer` (key `producer_kid`) to its peer (`consumer_kid`),
/// from the X25519 agreement of `own` and `peer`; `None` for a peer key of low order (an
/// agreement anyone could compute).
pub(super) fn derive(
    own: &OwnKey,
    peer: &PublicKey,
    producer: Role,
    producer_kid: &str,
    consumer_kid: &str,
) -> Option<[u8; 32]> {
    let shared = own.secret.diffie_hellman(peer);
    if !shared.was_contributory() {
        return None;
    }
    let info = format!(
        "gozon message mac v1\0{}\0{producer_kid}\0{consumer_kid}",
        producer.as_str()
    );
    let mut key = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(None, shared.as_bytes())
        .expand(info.as_bytes(), &mut key)
        .ok()?;
    Some(key)
}

pub(super) fn mac_of(key: &[u8; 32], queue: &str, message_id: &str, body: &[u8]) -> Vec<u8> {
    // A 32-byte key is always accepted.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    feed(&mut mac, queue, message_id, body);
    mac.finalize().into_bytes().to_vec()
}

/// Whether `mac` is the MAC of `queue`, `message_id` and `body` under `key` (compared in constant
/// time).
pub(super) fn matches(
    key: &[u8; 32],
    queue: &str,
    message_id: &str,
    body: &[u8],
    mac: &[u8],
) -> bool {
    let Ok(mut check) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return false;
    };
    feed(&mut check, queue, message_id, body);
    check.verify_slice(mac).is_ok()
}

/// What a MAC covers, each part length-prefixed so that no two messages read the same.
fn feed(mac: &mut Hmac<Sha256>, queue: &str, message_id: &str, body: &[u8]) {
    for part in [queue.as_bytes(), message_id.as_bytes(), body] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
}
