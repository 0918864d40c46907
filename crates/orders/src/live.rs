//! Live order status: every status change reaches the clients watching that user's orders, over
//! server-sent events, whichever orders instance they are connected to.
//!
//! - Whatever changes an order [`announce`]s it with `pg_notify` inside its transaction (the
//!   consumer once for its whole batch, through [`Outgoing`]), so the notice is sent on commit
//!   and never for a change that rolled back.
//! - Each instance [`listen`]s on the channel and fans notices out to its SSE clients through a
//!   broadcast channel. While its listener is reconnecting it may miss notices, so every
//!   reconnect broadcasts `resync`, and the clients reload.
//! - A stream ([`Live::watch`], served at `GET /orders/events` by [`crate::routes`]) carries
//!   `order` events (id = the change's time in microseconds, data = the order). A client that
//!   reconnects with `Last-Event-ID` first gets every change of its user after that id, then
//!   the live ones: nothing is missed in between.

use crate::{error::ApiError, order::Order};
use axum::response::sse::Event;
use futures::{Stream, StreamExt, stream};
use gozon_contract::domain::UserId;
use gozon_messaging::outgoing::Outgoing;
use serde::{Deserialize, Serialize};
use sqlx::{PgPool, postgres::PgListener};
use std::{
    collections::HashMap,
    convert::Infallible,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};
use tokio::sync::broadcast;
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use tokio_util::sync::CancellationToken;

const CHANNEL: &str = "gozon_order_status";

/// Largest event id a client may resume from: microseconds since 1970 up to the year 9999
/// (PostgreSQL's timestamps end there; beyond it the replay query would overflow).
pub const MAX_EVENT_ID: i64 = 253_402_300_799_000_000;

/// How many event streams an instance keeps open, and for how long.
#[derive(Debug, Clone, clap::Args)]
pub struct LiveSettings {
    /// Most event streams one orders instance keeps open at once; beyond, 503.
    #[arg(long, env = "LIVE_MAX_STREAMS", default_value_t = 1000)]
    pub live_max_streams: usize,
    /// Most event streams one user keeps open on one instance; beyond, 429.
    #[arg(long, env = "LIVE_MAX_STREAMS_PER_USER", default_value_t = 8)]
    pub live_max_streams_per_user: usize,
    /// Most event streams one client address keeps open on one instance, whatever its users;
    /// beyond, 429 — so that one client, signed up many times over, cannot take every place.
    #[arg(long, env = "LIVE_MAX_STREAMS_PER_CLIENT", default_value_t = 32)]
    pub live_max_streams_per_client: usize,
    /// A stream ends after this many seconds; the browser reconnects with `Last-Event-ID` and
    /// misses nothing. Bounds how long a connection (and a file descriptor) is held.
    #[arg(long, env = "LIVE_STREAM_LIFETIME_SECONDS", default_value_t = 1800)]
    pub live_stream_lifetime_seconds: u64,
}

/// One instance's fan-out of status changes to its SSE clients.
#[derive(Debug, Clone)]
pub struct Live {
    notices: broadcast::Sender<Arc<Notice>>,
    /// Cancelled when the service stops, ending every event stream: an open stream would
    /// otherwise hold graceful shutdown forever.
    closing: CancellationToken,
    settings: LiveSettings,
    /// Open streams per user and per client address.
    open: Arc<Mutex<Open>>,
}

#[derive(Debug, Default)]
struct Open {
    users: HashMap<UserId, usize>,
    clients: HashMap<IpAddr, usize>,
}

impl Live {
    pub fn new(settings: LiveSettings) -> Self {
        Self {
            notices: broadcast::channel(4096).0,
            closing: CancellationToken::new(),
            settings,
            open: Arc::default(),
        }
    }

    /// A stream of `user`'s changes for `client`, if there is room for one more: subscribed
    /// now, so that a change between this and reading the backlog is not lost.
    pub fn watch(&self, user: &UserId, client: IpAddr) -> Result<Watching, ApiError> {
        let slot = self.admit(user, client)?;
        Ok(Watching {
            slot,
            user: user.clone(),
            live: BroadcastStream::new(self.notices.subscribe()),
            closing: self.closing.clone(),
            lifetime: Duration::from_secs(self.settings.live_stream_lifetime_seconds),
        })
    }

    /// A place for one more stream of `user` from `client`, held until the returned guard
    /// drops.
    fn admit(&self, user: &UserId, client: IpAddr) -> Result<StreamSlot, ApiError> {
        let settings = &self.settings;
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.users.values().sum::<usize>() >= settings.live_max_streams {
            return Err(ApiError::TooManyStreams);
        }
        if open.users.get(user).copied().unwrap_or(0) >= settings.live_max_streams_per_user {
            return Err(ApiError::TooManyStreamsOfUser(
                settings.live_max_streams_per_user,
            ));
        }
        if open.clients.get(&client).copied().unwrap_or(0) >= settings.live_max_streams_per_client {
            return Err(ApiError::TooManyStreamsOfClient(
                settings.live_max_streams_per_client,
            ));
        }
        *open.users.entry(user.clone()).or_default() += 1;
        *open.clients.entry(client).or_default() += 1;
        Ok(StreamSlot {
            open: self.open.clone(),
            user: user.clone(),
            client,
        })
    }
}

/// One open stream, counted while it lives.
struct StreamSlot {
    open: Arc<Mutex<Open>>,
    user: UserId,
    client: IpAddr,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Open { users, clients } = &mut *open;
        if let Some(count) = users.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                users.remove(&self.user);
            }
        }
        if let Some(count) = clients.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                clients.remove(&self.client);
            }
        }
    }
}

/// One client's stream of its user's changes.
pub struct Watching {
    slot: StreamSlot,
    user: UserId,
    live: BroadcastStream<Arc<Notice>>,
    closing: CancellationToken,
    lifetime: Duration,
}

impl Watching {
    /// The events: `open`, then `backlog` (what changed since the client's `Last-Event-ID`),
    /// then every live change of the user, until the service stops, the stream's lifetime ends
    /// or `signed_out` resolves (its token was revoked). A `resync` asks the client to reload:
    /// notices may have been missed.
    pub fn events(
        self,
        backlog: Vec<Order>,
        signed_out: impl Future<Output = ()> + Send + 'static,
    ) -> impl Stream<Item = Result<Event, Infallible>> {
        let Self {
            slot,
            user,
            live,
            closing,
            lifetime,
        } = self;
        let backlog = stream::iter(backlog).map(|order| Ok(order_event(event_id(&order), &order)));
        let user_id = user.to_string();
        let live = live.filter_map(move |notice| {
            let event = match notice {
                Ok(notice) => match notice.as_ref() {
                    Notice::Changed {
                        user_id: owner,
                        event_id,
                        order,
                    } if *owner == user_id => Some(order_event(*event_id, order)),
                    Notice::Changed { .. } => None,
                    Notice::Resync => Some(Event::default().event("resync").data("{}")),
                },
                // This client fell behind the broadcast: have it reload.
                Err(BroadcastStreamRecvError::Lagged(_)) => {
                    Some(Event::default().event("resync").data("{}"))
                }
            };
            std::future::ready(event.map(Ok))
        });
        let opened = stream::once(std::future::ready(Ok(Event::default()
            .event("open")
            .data("{}"))));
        let ends = async move {
            tokio::select! {
                _ = closing.cancelled() => {}
                _ = tokio::time::sleep(lifetime) => {}
                () = signed_out => {}
            }
            // The stream's place is given back when it ends.
            drop(slot);
        };
        opened.chain(backlog).chain(live).take_until(Box::pin(ends))
    }
}

/// What travels through `pg_notify` and the broadcast channel.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Notice {
    Changed {
        user_id: String,
        event_id: i64,
        order: serde_json::Value,
    },
    /// Notices may have been missed: clients should reload.
    Resync,
}

/// Announces a status change in `out`: delivered to every instance once the transaction that
/// writes `out` commits.
pub fn announce(out: &mut Outgoing, order: &Order) -> Result<(), serde_json::Error> {
    let notice = Notice::Changed {
        user_id: order.user_id.to_string(),
        event_id: event_id(order),
        order: serde_json::to_value(order)?,
    };
    out.notify(CHANNEL, serde_json::to_string(&notice)?);
    Ok(())
}

fn event_id(order: &Order) -> i64 {
    (order.updated_at.unix_timestamp_nanos() / 1000) as i64
}

/// Relays this database's notices to `live` until `stop` fires, reconnecting as needed; then
/// ends every open event stream.
pub async fn listen(pool: PgPool, live: Live, stop: CancellationToken) {
    relay_notices(&pool, &live, &stop).await;
    live.closing.cancel();
}

async fn relay_notices(pool: &PgPool, live: &Live, stop: &CancellationToken) {
    loop {
        let connected = async {
            let mut listener = PgListener::connect_with(pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            _ = stop.cancelled() => return,
            connected = connected => match connected {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "live status listener cannot connect; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            },
        };
        // Whatever changed while we were not listening is reloaded by the clients.
        let _ = live.notices.send(Arc::new(Notice::Resync));
        loop {
            let received = tokio::select! {
                _ = stop.cancelled() => return,
                received = listener.try_recv() => received,
            };
            match received {
                Ok(Some(notification)) => {
                    match serde_json::from_str::<Notice>(notification.payload()) {
                        Ok(notice) => {
                            let _ = live.notices.send(Arc::new(notice));
                        }
                        Err(error) => tracing::warn!(%error, "unreadable live status notice"),
                    }
                }
                Ok(None) => {
                    tracing::warn!("live status listener lost its connection; reconnecting");
                    let _ = live.notices.send(Arc::new(Notice::Resync));
                }
                Err(error) => {
                    tracing::warn!(%error, "live status listener failed; rebuilding");
                    break;
                }
            }
        }
    }
}

fn order_event(event_id: i64, order: &impl Serialize) -> Event {
    Event::default()
        .event("order")
        .id(event_id.to_string())
        .json_data(order)
        .unwrap_or_else(|_| Event::default().event("resync").data("{}"))
}
