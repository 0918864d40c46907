//! How a ring learns keys: its own reloaded from its database, its peer's fetched from where the
//! peer publishes them — every [`REFRESH_EVERY`], and on meeting a key it does not know (at most
//! once per [`MIN_REFRESH`]).

use super::{KeyRing, MIN_REFRESH, PeerState, REFRESH_EVERY, keys, keys::Published};
use std::{collections::HashMap, time::Instant};
use tokio_util::sync::CancellationToken;
use x25519_dalek::PublicKey;

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

impl KeyRing {
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

    pub(super) async fn refresh_own_at_most_so_often(&self) -> Result<(), String> {
        let mut refreshed = self.inner.own_refreshed.lock().await;
        if refreshed.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return Ok(());
        }
        *refreshed = Some(Instant::now());
        self.refresh_own().await
    }

    pub(super) async fn refresh_peer_at_most_so_often(&self) -> Result<(), String> {
        let mut refreshed = self.inner.peer_refreshed.lock().await;
        if refreshed.is_some_and(|at| at.elapsed() < MIN_REFRESH) {
            return Ok(());
        }
        *refreshed = Some(Instant::now());
        self.refresh_peer().await
    }

    pub(super) async fn refresh_own(&self) -> Result<(), String> {
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
    pub(super) async fn refresh_peer(&self) -> Result<(), String> {
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
