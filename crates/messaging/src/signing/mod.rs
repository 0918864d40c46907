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

use crate::Role;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use keys::{OwnKey, Published};
use sha2::Sha256;
use sqlx::PgPool;
use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;
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

/// How a service learns its peer's public keys.
#[derive(Debug, Clone)]
pub enum PeerKeys {
    /// Fetched from where the peer publishes them: one URL per instance (any will do).
    At(Vec<String>),
    /// Given by configuration, as the peer publishes them.
    Given(Published),
}

impl PeerKeys {
    /// The comma-separated URLs of `urls`.
    pub fn at(urls: &str) -> Self {
        Self::At(
            urls.split(',')
                .map(str::trim)
                .filter(|url| !url.is_empty())
                .map(str::to_owned)
                .collect(),
        )
    }

    /// A setting's value: the peer's published keys themselves (a JSON object, as
    /// `GET /messaging/keys` answers), or the URLs where it publishes them.
    pub fn from_setting(value: &str) -> Result<Self, serde_json::Error> {
        if value.trim_start().starts_with('{') {
            serde_json::from_str(value).map(Self::Given)
        } else {
            Ok(Self::at(value))
        }
    }
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
        let mac = mac_of(&key, queue, message_id, body);
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
        let mut check =
            <Hmac<Sha256> as KeyInit>::new_from_slice(&key).map_err(|_| Refusal::Forged)?;
        feed(&mut check, queue, message_id, body);
        check.verify_slice(&mac).map_err(|_| Refusal::Forged)
    }

    /// Reloads this service's own keys and fetches its peer's, every [`REFRESH_EVERY`], until
    /// `stop` fires: a rotation on either side is picked up without a restart.
    pub async fn keep_fresh(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH_EVERY) => {}
            }
            if let Err(error) = self.refresh_own().await {
                tracing::warn!(%error, "reloading this service's message keys failed");
            }
            if let Err(error) = self.refresh_peer().await {
                tracing::warn!(%error, "fetching the peer's message keys failed");
            }
        }
    }

    /// Fetches (or takes) the peer's keys now, rather than when first needed.
    pub async fn learn_peer(&self) -> Result<(), String> {
        self.refresh_peer().await
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
        let key = derive(own, peer, producer, producer_kid, consumer_kid)?;
        drop(state);
        self.write().macs.insert(id, key);
        Some(key)
    }

    async fn refresh_own_at_most_so_often(&self) -> Result<(), String> {
        let mut refreshed = self.inner.own_refreshed.lock().await;
        if refreshed.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return Ok(());
        }
        *refreshed = Some(Instant::now());
        self.refresh_own().await
    }

    async fn refresh_peer_at_most_so_often(&self) -> Result<(), String> {
        let mut refreshed = self.inner.peer_refreshed.lock().await;
        if refreshed.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return Ok(());
        }
        *refreshed = Some(Instant::now());
        self.refresh_peer().await
    }

    async fn refresh_own(&self) -> Result<(), String> {
        let Some(pool) = &self.inner.pool else {
            return Ok(());
        };
        let own = keys::announced(pool).await.map_err(|e| e.to_string())?;
        if own.is_empty() {
            return Err("no announced message key".into());
        }
        let mut state = self.write();
        state.own = own;
        state.macs.clear();
        Ok(())
    }

    /// Fetches the peer's published keys from the first of its URLs that answers (or takes
    /// those configured).
    async fn refresh_peer(&self) -> Result<(), String> {
        let urls = match &self.inner.peer {
            PeerKeys::Given(published) => return self.know_peer(published.clone()),
            PeerKeys::At(urls) => urls,
        };
        let mut failure = "no URL for the peer's message keys".to_owned();
        for url in urls {
            let fetched: Result<Published, reqwest::Error> = async {
                self.inner
                    .http
                    .get(url)
                    .send()
                    .await?
                    .error_for_status()?
                    .json()
                    .await
            }
            .await;
            match fetched {
                Ok(published) => match self.know_peer(published) {
                    Ok(()) => return Ok(()),
                    Err(error) => failure = format!("{url}: {error}"),
                },
                Err(error) => failure = format!("{url}: {error}"),
            }
        }
        Err(failure)
    }

    /// Takes `published` as the peer's keys (each whose id is not its own fingerprint left out).
    fn know_peer(&self, published: Published) -> Result<(), String> {
        let keys: HashMap<String, PublicKey> = published
            .keys
            .iter()
            .filter_map(|key| Some((key.kid.clone(), key.public()?)))
            .filter(|(kid, public)| *kid == keys::kid_of(public))
            .collect();
        if !keys.contains_key(&published.current) {
            return Err("its current key is not among its keys".into());
        }
        let mut state = self.write();
        state.peer = Some(PeerState {
            current: published.current,
            keys,
        });
        // Keys derived from a key no longer announced must not verify anything.
        state.macs.clear();
        Ok(())
    }
}

/// The HMAC key of messages from `producer` (key `producer_kid`) to its peer (`consumer_kid`),
/// from the X25519 agreement of `own` and `peer`; `None` for a peer key of low order (an
/// agreement anyone could compute).
fn derive(
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

fn mac_of(key: &[u8; 32], queue: &str, message_id: &str, body: &[u8]) -> Vec<u8> {
    // A 32-byte key is always accepted.
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(key) else {
        return Vec::new();
    };
    feed(&mut mac, queue, message_id, body);
    mac.finalize().into_bytes().to_vec()
}

/// What a MAC covers, each part length-prefixed so that no two messages read the same.
fn feed(mac: &mut Hmac<Sha256>, queue: &str, message_id: &str, body: &[u8]) {
    for part in [queue.as_bytes(), message_id.as_bytes(), body] {
        mac.update(&(part.len() as u64).to_be_bytes());
        mac.update(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Orders' and payments' rings, each knowing the other's keys as if fetched.
    fn pair() -> (KeyRing, KeyRing) {
        let (orders_key, payments_key) = (keys::generated(), keys::generated());
        let orders = KeyRing::of_keys(Role::Orders, vec![orders_key.clone()], PeerKeys::at(""));
        let payments =
            KeyRing::of_keys(Role::Payments, vec![payments_key.clone()], PeerKeys::at(""));
        knows(&orders, &[&payments_key]);
        knows(&payments, &[&orders_key]);
        (orders, payments)
    }

    /// Makes `ring` know `keys` as its peer's (the first current).
    fn knows(ring: &KeyRing, keys: &[&OwnKey]) {
        ring.write().peer = Some(PeerState {
            current: keys[0].kid.clone(),
            keys: keys
                .iter()
                .map(|key| (key.kid.clone(), key.public))
                .collect(),
        });
    }

    #[tokio::test]
    async fn a_message_signed_by_one_service_is_accepted_by_the_other_exactly_as_sent() {
        let (orders, payments) = pair();
        let header = orders.sign("order.payments", "m-1", b"{}").await.unwrap();
        assert_eq!(
            payments
                .verify("order.payments", "m-1", b"{}", Some(&header))
                .await,
            Ok(())
        );
        for (queue, id, body) in [
            ("order.payments", "m-1", &b"{ }"[..]),
            ("order.payments", "m-2", b"{}"),
            ("order.refunds", "m-1", b"{}"),
        ] {
            assert_eq!(
                payments.verify(queue, id, body, Some(&header)).await,
                Err(Refusal::Forged.into()),
                "{queue} {id}"
            );
        }
    }

    #[tokio::test]
    async fn a_message_cannot_be_passed_off_as_sent_the_other_way() {
        let (orders, _payments) = pair();
        let header = orders.sign("payment.status", "m-1", b"{}").await.unwrap();
        // The same agreement, named the other way round: a MAC of orders' direction does not
        // pass for one of payments'.
        let [version, producer, consumer, mac]: [&str; 4] =
            header.split(' ').collect::<Vec<_>>().try_into().unwrap();
        let swapped = format!("{version} {consumer} {producer} {mac}");
        assert_eq!(
            orders
                .verify("payment.status", "m-1", b"{}", Some(&swapped))
                .await,
            Err(Refusal::Forged.into())
        );
    }

    #[tokio::test]
    async fn unsigned_malformed_and_unannounced_messages_are_refused() {
        let (orders, payments) = pair();
        assert_eq!(
            payments.verify("q", "m", b"{}", None).await,
            Err(Refusal::Unsigned.into())
        );
        assert_eq!(
            payments.verify("q", "m", b"{}", Some("v1 a b")).await,
            Err(Refusal::Malformed.into())
        );
        let header = orders.sign("q", "m", b"{}").await.unwrap();
        let stranger = keys::generated();
        let foreign = header.replacen(header.split(' ').nth(1).unwrap(), &stranger.kid, 1);
        assert!(matches!(
            payments.verify("q", "m", b"{}", Some(&foreign)).await,
            Err(Unverified::Refused(Refusal::UnknownKey(_)))
        ));
    }

    #[tokio::test]
    async fn after_a_rotation_messages_under_the_previous_key_verify_while_it_is_announced() {
        let (orders, payments) = pair();
        let before = orders.sign("q", "m-1", b"{}").await.unwrap();
        // Orders rotates: a new current key, the previous one still announced.
        let previous = orders.read().own[0].clone();
        let next = keys::generated();
        orders.write().own = vec![next.clone(), previous.clone()];
        knows(&payments, &[&next, &previous]);
        let after = orders.sign("q", "m-2", b"{}").await.unwrap();
        assert_ne!(before.split(' ').nth(1), after.split(' ').nth(1));
        assert_eq!(
            payments.verify("q", "m-1", b"{}", Some(&before)).await,
            Ok(())
        );
        assert_eq!(
            payments.verify("q", "m-2", b"{}", Some(&after)).await,
            Ok(())
        );
        // Retired: no longer announced, no longer accepted.
        knows(&payments, &[&next]);
        payments.write().macs.clear();
        assert!(matches!(
            payments.verify("q", "m-1", b"{}", Some(&before)).await,
            Err(Unverified::Refused(Refusal::UnknownKey(_)))
        ));
    }
}
