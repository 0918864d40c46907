//! A stand-in for the service at the other end of a service's queues: message keys of its own,
//! published at a URL the service under test is given, and the MAC of whatever a test publishes
//! as that service.

use gozon_messaging::{
    Role,
    signing::{
        KeyRing, PeerKeys,
        keys::{self, OwnKey},
    },
};
use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
};
use tokio_util::task::AbortOnDropHandle;

pub struct TestPeer {
    role: Role,
    key: OwnKey,
    keys_url: String,
    /// Made once the service under test is known ([`meet`](Self::meet)).
    ring: OnceLock<KeyRing>,
    /// As orders: the place it gave each order in its user's line, and each user's last.
    places: Mutex<(HashMap<String, i64>, HashMap<String, i64>)>,
    _server: AbortOnDropHandle<()>,
}

impl TestPeer {
    /// A stand-in for `role`, its keys served at [`keys_url`](Self::keys_url).
    pub async fn start(role: Role) -> Self {
        let key = OwnKey::generate().expect("randomness");
        let published = keys::published(std::slice::from_ref(&key)).expect("one key");
        let (keys_url, server) = crate::serve_json("/messaging/keys", published).await;
        Self {
            role,
            key,
            keys_url,
            ring: OnceLock::new(),
            places: Mutex::default(),
            _server: server,
        }
    }

    /// Where this stand-in's keys are: the service under test's setting for its peer.
    pub fn keys_url(&self) -> &str {
        &self.keys_url
    }

    /// The service under test publishes its keys at `service_keys_url` (call once it runs;
    /// they are fetched now, so the stand-in signs for it even once it stopped).
    pub async fn meet(&self, service_keys_url: &str) {
        self.meet_keys(PeerKeys::at(service_keys_url)).await;
    }

    /// The service under test has the keys of `ring` (a consumer tested without its service).
    pub async fn meet_ring(&self, ring: &KeyRing) {
        let published = ring.published().expect("the ring has a key");
        self.meet_keys(PeerKeys::Given(published)).await;
    }

    async fn meet_keys(&self, keys: PeerKeys) {
        let ring = KeyRing::of_keys(self.role, vec![self.key.clone()], keys);
        ring.learn_peer()
            .await
            .expect("the service under test publishes its keys");
        let _ = self.ring.set(ring);
    }

    /// As orders numbers its orders: the place of `order` in `user`'s line — one more than the
    /// user's last the first time, the same every time after.
    pub fn place_of(&self, user: &str, order: &str) -> i64 {
        let mut places = self
            .places
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(&place) = places.0.get(order) {
            return place;
        }
        let last = places.1.entry(user.to_owned()).or_default();
        *last += 1;
        let place = *last;
        places.0.insert(order.to_owned(), place);
        place
    }

    /// The signature header of a message of this stand-in to `queue`.
    pub async fn sign(&self, queue: &str, message_id: &str, body: &[u8]) -> String {
        self.ring
            .get()
            .expect("the peer met the service under test")
            .sign(queue, message_id, body)
            .await
            .expect("the service's keys are published")
    }
}
