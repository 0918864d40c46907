//! Messages only their producer could have sent.
//!
//! A broker login lets its holder publish to, and read from, the queues it is allowed: by itself
//! it must not let anyone move money. So every message orders and payments send carries a MAC
//! that only the two services can make, and every consumer checks it before anything changes; a
//! message without one, with a wrong one or under a key nobody announced is dead-lettered and
//! counted (`messages_unauthenticated_total`).
//!
//! How the two services come to share a key without sending a secret anywhere:
//! - each has its own X25519 key pairs ([`keys`]: made at first start, kept in its database),
//!   and publishes their public halves at `GET /messaging/keys`;
//! - each fetches its peer's from the peer's endpoint (or the URL configured for it) when it
//!   meets a key it does not know, and every [`REFRESH_EVERY`];
//! - for a message from `producer` (key `p`) to the peer (key `c`), both ends compute the same
//!   X25519 agreement and derive from it, with HKDF-SHA256 over the direction and both key ids,
//!   an HMAC-SHA256 key of that direction and that pair of keys alone;
//! - the relay puts [`HEADER`]: `v1 <p> <c> <MAC>` on the message, the MAC over the queue, the
//!   `message_id` and the body; the consumer derives the same key and compares in constant time.
//!
//! A MAC costs about a microsecond per message (an Ed25519 signature and its check cost 22 and
//! 44 µs here, four messages per order). The price of a shared key is that either end could make
//! the other's messages — and each of them can already move its own money.
//!
//! Rotation ([`keys::rotate`]): a new key becomes current at once, the previous stays announced
//! for a day. A producer uses its own current key and the peer's current key; a consumer accepts
//! any pair of announced keys, so messages made just before a rotation still verify.

pub mod keys;
mod mac;
mod refresh;

pub use refresh::PeerKeys;

use crate::Role;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use keys::{OwnKey, Published};
use sqlx::PgPool;
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};
use x25519_dalek::PublicKey;

/// The AMQP header carrying a message's MAC.
pub const HEADER: &str = "x-gozon-signature";

/// How often a service reloads its own keys and fetches its peer's, whatever it meets.
pub const REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Shortest time between two refreshes caused by an unknown key (a flood of made-up key ids
/// costs one fetch per this).
pub const MIN_REFRESH: Duration = Duration::from_secs(2);

/// Why a message was not accepted as its producer's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the message carries no {HEADER} header")]
    Unsigned,
    #[error("its {HEADER} header is not `v1 <key> <key> <mac>`")]
    Malformed,
    #[error("it names a key nobody announced: {0}")]
    UnknownKey(String),
    #[error("its MAC does not match: it was changed, or not made by its producer")]
    Forged,
}

impl Refusal {
    /// The metric label of this refusal.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Unsigned => "unsigned",
            Self::Malformed => "malformed",
            Self::UnknownKey(_) => "unknown_key",
            Self::Forged => "forged",
        }
    }
}

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unverified {
    /// It is not its producer's.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// The peer's keys have never been fetched (it may not be up yet): nothing can be checked;
    /// try again later.
    #[error("the peer's message keys are not known yet: {0}")]
    PeerKeysUnknown(String),
}

/// Why a message cannot be signed right now.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("the peer's message keys are not known yet: {0}")]
    PeerUnknown(String),
}

/// A service's keys and its peer's: what signs its messages and checks its peer's.
#[derive(Clone)]
pub struct KeyRing {
    inner: Arc<Inner>,
}

struct Inner {
    role: Role,
    pool: Option<PgPool>,
    peer: PeerKeys,
    http: reqwest::Client,
    state: RwLock<State>,
    /// When each side was last refreshed because of an unknown key.
    own_refreshed: tokio::sync::Mutex<Option<Instant>>,
    peer_refreshed: tokio::sync::Mutex<Option<Instant>>,
}

#[derive(Default)]
struct State {
    /// Newest (current) first.
    own: Vec<OwnKey>,
    peer: Option<PeerState>,
    /// Derived MAC keys by (producer, producer's key, consumer's key).
    macs: HashMap<(Role, String, String), [u8; 32]>,
}

struct PeerState {
    current: String,
    keys: HashMap<String, PublicKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("role", &self.inner.role)
            .field("peer", &self.inner.peer)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// The ring of `role`, whose keys are in `pool` (made there if it has none), and whose peer
    /// publishes its keys at `peer`.
    pub async fn load(role: Role, pool: &PgPool, peer: PeerKeys) -> sqlx::Result<Self> {
        keys::ensure_current(pool).await?;
        let own = keys::announced(pool).await?;
        Ok(Self::new(role, Some(pool.clone()), own, peer))
    }

    /// A ring of the given own keys (newest first), which never reloads them: a stand-in for a
    /// peer in tests.
    pub fn of_keys(role: Role, own: Vec<OwnKey>, peer: PeerKeys) -> Self {
        Self::new(role, None, own, peer)
    }

    fn new(role: Role, pool: Option<PgPool>, own: Vec<OwnKey>, peer: PeerKeys) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                role,
                pool,
                peer,
                http,
                state: RwLock::new(State {
                    own,
                    ..State::default()
                }),
                own_refreshed: tokio::sync::Mutex::new(None),
                peer_refreshed: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// What this service publishes: its announced keys' public halves.
    pub fn published(&self) -> Option<Published> {
        keys::published(&self.read().own)
    }

    /// The value of [`HEADER`] for a message of this service to `queue`: the MAC of `queue`,
    /// `message_id` and `body` under its current key and its peer's current one.
    pub async fn sign(
        &self,
        queue: &str,
        message_id: &str,
        body: &[u8],
    ) -> Result<String, SignError> {
        if self.read().peer.is_none() {
            self.refresh_peer().await.map_err(SignError::PeerUnknown)?;
        }
        let state = self.read();
        let (Some(own), Some(peer)) = (state.own.first(), &state.peer) else {
            return Err(SignError::PeerUnknown("no keys".into()));
        };
        let consumer = peer.current.clone();
        let producer = own.kid.clone();
        drop(state);
        let key = self
            .mac_key(self.inner.role, &producer, &consumer)
            .ok_or_else(|| SignError::PeerUnknown(format!("no usable key {consumer}")))?;
        let mac = mac::mac_of(&key, queue, message_id, body);
        Ok(format!(
            "v1 {producer} {consumer} {}",
            URL_SAFE_NO_PAD.encode(mac)
        ))
    }

    /// Accepts a message the peer sent to `queue` only if `header` is the MAC of `queue`,
    /// `message_id` and `body` under a pair of announced keys. A key not known yet makes the
    /// ring refresh that side first (at most once per [`MIN_REFRESH`]); a key still unknown
    /// then is refused, since keys are announced before they are used ([`keys::rotate`]).
    pub async fn verify(
        &self,
        queue: &str,
        message_id: &str,
        body: &[u8],
        header: Option<&str>,
    ) -> Result<(), Unverified> {
        if self.read().peer.is_none() {
            let _ = self.refresh_peer_at_most_so_often().await;
            if self.read().peer.is_none() {
                return Err(Unverified::PeerKeysUnknown(format!(
                    "{:?}",
                    self.inner.peer
                )));
            }
        }
        Ok(self.check(queue, message_id, body, header).await?)
    }

    async fn check(
        &self,
        queue: &str,
        message_id: &str,
        body: &[u8],
        header: Option<&str>,
    ) -> Result<(), Refusal> {
        let header = header.ok_or(Refusal::Unsigned)?;
        let mut parts = header.split(' ');
        let (Some("v1"), Some(producer), Some(consumer), Some(mac), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(Refusal::Malformed);
        };
        let mac = URL_SAFE_NO_PAD
            .decode(mac)
            .map_err(|_| Refusal::Malformed)?;
        let peer = self.inner.role.peer();
        if !self.knows_peer(producer) {
            let _ = self.refresh_peer_at_most_so_often().await;
        }
        if !self.knows_own(consumer) {
            let _ = self.refresh_own_at_most_so_often().await;
        }
        let key = self
            .mac_key(peer, producer, consumer)
            .ok_or_else(|| Refusal::UnknownKey(format!("{producer} {consumer}")))?;
        if mac::matches(&key, queue, message_id, body, &mac) {
            Ok(())
        } else {
            Err(Refusal::Forged)
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.inner
            .state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.inner
            .state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn knows_peer(&self, kid: &str) -> bool {
        self.read()
            .peer
            .as_ref()
            .is_some_and(|peer| peer.keys.contains_key(kid))
    }

    fn knows_own(&self, kid: &str) -> bool {
        self.read().own.iter().any(|key| key.kid == kid)
    }

    /// The MAC key of messages from `producer` under these keys, derived once and remembered.
    fn mac_key(&self, producer: Role, producer_kid: &str, consumer_kid: &str) -> Option<[u8; 32]> {
        let id = (producer, producer_kid.to_owned(), consumer_kid.to_owned());
        if let Some(key) = self.read().macs.get(&id) {
            return Some(*key);
        }
        // Ours is the producer's key when we produce, the consumer's when we consume.
        let (own_kid, peer_kid) = if producer == self.inner.role {
            (producer_kid, consumer_kid)
        } else {
            (consumer_kid, producer_kid)
        };
        let state = self.read();
        let own = state.own.iter().find(|key| key.kid == own_kid)?;
        let peer = state.peer.as_ref()?.keys.get(peer_kid)?;
        let key = mac::derive(own, peer, producer, producer_kid, consumer_kid)?;
        drop(state);
        self.write().macs.insert(id, key);
        Some(key)
    }
}

#[cfg(test)]
mod tests;
