//! The transactional outbox and its relay.
//!
//! [`enqueue`] writes a message in the caller's transaction, so the message exists if and only if
//! the change it announces was committed. The [`Relay`] then publishes it, and the row leaves the
//! table — every row in the outbox is one not yet confirmed by the broker:
//!
//! - it claims a batch with `FOR UPDATE SKIP LOCKED`, so several relays (several instances of a
//!   service) drain one table without publishing a row twice at once;
//! - it publishes a claimed row only once a synchronous standby has it ([`crate::standby`]), so
//!   no consumer acts on a message whose cause a failover then loses;
//! - it publishes the whole batch, then awaits the broker's confirms together, and deletes a row
//!   only once its own confirm arrived, in the claim's transaction (mandatory publish: an
//!   unroutable message is not "sent", and stays); while a full batch awaits its confirms, the
//!   next is claimed and published, so a backlog is not held to one batch per confirm wait;
//! - it is woken in-process as soon as a writer commits ([`Wakeup`]) and otherwise polls slowly as
//!   the safety net for rows left by another or a crashed instance.
//!
//! A crash between the confirm and the commit re-publishes the row with the same `message_id`;
//! consumers de-duplicate, which is the at-least-once half of the contract.

use crate::{
    amqp::{self, BrokerSettings, RoleHealth, short},
    signing::{self, KeyRing, SignError},
};
use backon::BackoffBuilder;
use futures::future::join_all;
use gozon_telemetry::trace::TraceParent;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;
use sqlx::{PgExecutor, PgPool};
use std::{sync::Arc, time::Duration};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How the relay batches and how often it polls.
#[derive(Debug, Clone, clap::Args)]
pub struct RelaySettings {
    /// Most outbox rows claimed and published together, their confirms awaited as one.
    #[arg(long, env = "OUTBOX_BATCH_SIZE", default_value_t = 256)]
    pub outbox_batch_size: i64,

    /// Safety-net poll period (milliseconds) for rows no wake-up announced.
    #[arg(long, env = "OUTBOX_POLL_INTERVAL_MS", default_value_t = 1000)]
    pub outbox_poll_interval_ms: u64,
}

/// Writes `payload` to the outbox for `queue` within the caller's transaction and returns the
/// message's id; the message will carry the current span as its parent when spans are exported,
/// else a child of `trace`. Call [`Wakeup::notify`] after the transaction commits. (A consumer's
/// batch collects its messages in an [`Outgoing`](crate::outgoing::Outgoing) instead, written
/// with one statement.)
pub async fn enqueue<'e>(
    executor: impl PgExecutor<'e>,
    queue: &str,
    payload: &impl Serialize,
    trace: &TraceParent,
) -> sqlx::Result<Uuid> {
    let message = Message::new(queue, payload, trace)
        .map_err(|error| sqlx::Error::Encode(Box::new(error)))?;
    let id = message.message_id;
    insert(executor, std::slice::from_ref(&message)).await?;
    Ok(id)
}

/// A message on its way into the outbox: [`enqueue`] and [`Outgoing`](crate::outgoing::Outgoing)
/// write it, or a statement of the caller's makes its row ([`Message::push_rows`],
/// [`Message::push_insert_from`]).
#[derive(Debug)]
pub struct Message {
    pub(crate) message_id: Uuid,
    queue: String,
    payload: String,
    traceparent: String,
}

impl Message {
    /// Pushes into the statement `query` is building the relation of `messages`:
    /// `{alias}(message_id, queue, payload, traceparent, n)`, `n` their position from 1.
    pub fn push_rows(
        query: &mut sqlx::QueryBuilder<sqlx::Postgres>,
        messages: &[&Self],
        alias: &str,
    ) {
        let (ids, queues, payloads, traces) = columns(messages.iter().copied());
        query.push("unnest(");
        query.push_bind(ids);
        query.push("::uuid[], ");
        query.push_bind(queues);
        query.push("::text[], ");
        query.push_bind(payloads);
        query.push("::jsonb[], ");
        query.push_bind(traces);
        query.push(format_args!(
            "::text[]) WITH ORDINALITY AS {alias}(message_id, queue, payload, traceparent, n)"
        ));
    }

    /// Pushes the statement (or common table expression) that makes each row of `source` — a
    /// relation with the columns of [`push_rows`](Self::push_rows) — an outbox row.
    pub fn push_insert_from(query: &mut sqlx::QueryBuilder<sqlx::Postgres>, source: &str) {
        query.push(format_args!(
            "INSERT INTO outbox (message_id, queue, payload, traceparent) \
             SELECT message_id, queue, payload, traceparent FROM {source}"
        ));
    }

    /// `payload` for `queue`; it carries the current span as its parent when spans are exported,
    /// else a child of `trace`.
    pub fn new(
        queue: &str,
        payload: &impl Serialize,
        trace: &TraceParent,
    ) -> Result<Self, serde_json::Error> {
        Ok(Self {
            message_id: Uuid::now_v7(),
            queue: queue.to_owned(),
            payload: serde_json::to_string(payload)?,
            traceparent: TraceParent::of_current_span()
                .unwrap_or_else(|| trace.child())
                .to_string(),
        })
    }
}

/// Writes `messages` to the outbox in one statement (none if there are none).
pub(crate) async fn insert<'e>(
    executor: impl PgExecutor<'e>,
    messages: &[Message],
) -> sqlx::Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let (ids, queues, payloads, traces) = columns(messages.iter());
    sqlx::query(
        "INSERT INTO outbox (message_id, queue, payload, traceparent) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::text[])",
    )
    .bind(ids)
    .bind(queues)
    .bind(payloads)
    .bind(traces)
    .execute(executor)
    .await?;
    Ok(())
}

/// The columns of `messages` as arrays, in their order.
fn columns<'m>(
    messages: impl Iterator<Item = &'m Message> + Clone,
) -> (Vec<Uuid>, Vec<&'m str>, Vec<&'m str>, Vec<&'m str>) {
    (
        messages.clone().map(|m| m.message_id).collect(),
        messages.clone().map(|m| m.queue.as_str()).collect(),
        messages.clone().map(|m| m.payload.as_str()).collect(),
        messages.map(|m| m.traceparent.as_str()).collect(),
    )
}

/// Wakes this process's relay after a transaction that wrote outbox rows commits.
#[derive(Debug, Clone, Default)]
pub struct Wakeup(Arc<Notify>);

impl Wakeup {
    pub fn notify(&self) {
        // A stored permit makes a wake-up that arrives mid-drain start another drain.
        self.0.notify_one();
    }
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("broker did not confirm a batch within {0:?}")]
    ConfirmTimeout(Duration),
    #[error("broker connection lost: {0}")]
    Disconnected(String),
    #[error("cannot sign: {0}")]
    Signing(#[from] SignError),
    #[error("{0}")]
    Standby(#[from] crate::standby::WaitError),
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    message_id: Uuid,
    queue: String,
    payload: String,
    traceparent: Option<String>,
    /// Where the row was read.
    #[sqlx(flatten)]
    read_on: crate::standby::ReadOn,
}

/// Publishes the outbox of one database.
pub struct Relay {
    pub pool: PgPool,
    pub broker: BrokerSettings,
    pub settings: RelaySettings,
    pub wakeup: Wakeup,
    pub health: RoleHealth,
    /// What signs each message as this service's.
    pub signatures: KeyRing,
}

const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

/// Sets `outbox_unsent` and `outbox_oldest_unsent_age_seconds` from the table (at scrape time):
/// every row in it is unsent.
pub async fn record_backlog(pool: &PgPool) {
    let backlog: Result<(i64, Option<f64>), _> = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM now() - min(created_at))::float8 FROM outbox",
    )
    .fetch_one(pool)
    .await;
    if let Ok((unsent, oldest)) = backlog {
        metrics::gauge!("outbox_unsent").set(unsent as f64);
        metrics::gauge!("outbox_oldest_unsent_age_seconds").set(oldest.unwrap_or(0.0));
    }
}

impl Relay {
    /// The relay of `pool`'s outbox, woken by `wakeup`, signing with `signatures`, reporting
    /// to `health`.
    pub fn new(
        pool: &PgPool,
        broker: &BrokerSettings,
        settings: RelaySettings,
        wakeup: &Wakeup,
        health: &amqp::BrokerHealth,
        signatures: &KeyRing,
    ) -> Self {
        Self {
            pool: pool.clone(),
            broker: broker.clone(),
            settings,
            wakeup: wakeup.clone(),
            health: health.register("outbox relay"),
            signatures: signatures.clone(),
        }
    }

    /// Runs until `stop` is cancelled, reconnecting to the broker whenever the connection breaks.
    /// A batch in flight when `stop` fires is finished first.
    pub async fn run(self, stop: CancellationToken) {
        metrics::counter!("outbox_published_total").increment(0);
        while let Some(connection) = self.broker.connect("outbox relay", &stop).await {
            let outcome = self.run_connected(&connection, &stop).await;
            self.health.set(false);
            amqp::close(&connection, "relay stopping").await;
            match outcome {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(%error, "outbox relay lost the broker; reconnecting");
                }
            }
        }
        tracing::info!("outbox relay stopped");
    }

    async fn run_connected(
        &self,
        connection: &Connection,
        stop: &CancellationToken,
    ) -> Result<(), RelayError> {
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        self.broker.ensure_topology(&channel).await?;
        self.health.set(true);
        tracing::info!("outbox relay connected");

        let poll = Duration::from_millis(self.settings.outbox_poll_interval_ms);
        let mut database_backoff = crate::retry::unavailable().build();
        let lost = amqp::lost(connection);
        tokio::pin!(lost);
        loop {
            match self.drain(&channel, stop).await {
                Ok(()) => database_backoff = crate::retry::unavailable().build(),
                Err(
                    error @ (RelayError::Database(_)
                    | RelayError::Signing(_)
                    | RelayError::Standby(_)),
                ) => {
                    let delay = database_backoff.next().unwrap_or(poll);
                    tracing::warn!(%error, ?delay, "outbox relay cannot publish yet; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
                Err(broker_error) => return Err(broker_error),
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = channel.close(200, short("relay stopping")).await;
                    return Ok(());
                }
                _ = self.wakeup.0.notified() => {}
                _ = tokio::time::sleep(poll) => {}
                reason = &mut lost => return Err(RelayError::Disconnected(reason)),
            }
        }
    }

    /// Publishes batches until the outbox has no unsent row left (or `stop` fires). While the
    /// broker confirms one full batch, the next is claimed and published on the same channel (so
    /// the queue receives them in claim order): the broker's confirm wait, most of a batch's
    /// time, no longer caps how many rows a second the relay moves.
    async fn drain(&self, channel: &Channel, stop: &CancellationToken) -> Result<(), RelayError> {
        let mut confirming: Option<InFlight> = None;
        loop {
            let next = if stop.is_cancelled() {
                Ok(None)
            } else {
                self.claim_and_publish(channel).await
            };
            if let Some(batch) = confirming.take() {
                self.finish(batch).await?;
            }
            match next? {
                Some(batch) if batch.claimed == self.settings.outbox_batch_size as usize => {
                    confirming = Some(batch);
                }
                Some(batch) => return self.finish(batch).await,
                None => return Ok(()),
            }
        }
    }

    /// Claims one batch and publishes it; `None` if the outbox has no unsent row to claim.
    async fn claim_and_publish(&self, channel: &Channel) -> Result<Option<InFlight>, RelayError> {
        let started = std::time::Instant::now();
        let mut tx = self.pool.begin().await?;
        let rows: Vec<OutboxRow> = sqlx::query_as(concat!(
            "SELECT id, message_id, queue, payload::text AS payload, traceparent, ",
            crate::standby::read_on!(),
            " FROM outbox ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED"
        ))
        .bind(self.settings.outbox_batch_size)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(None);
        }
        // A row may be a write the synchronous standby does not have yet (crate::standby):
        // published, it would be decided by a consumer even after a failover lost it.
        crate::standby::wait_for_standby(&self.pool, &rows[0].read_on).await?;

        // A row for a queue outside the topology has no exchange to go to (publishing to a
        // missing exchange would close the channel and fail the whole batch): it stays unsent.
        let (publishable, unknown): (Vec<&OutboxRow>, Vec<&OutboxRow>) = rows
            .iter()
            .partition(|row| self.broker.is_work_queue(&row.queue));
        for row in unknown {
            tracing::error!(
                queue = %row.queue, message_id = %row.message_id,
                "no exchange publishes to this queue; the row stays in the outbox"
            );
        }
        let mut confirms = Vec::with_capacity(publishable.len());
        for row in &publishable {
            let message_id = row.message_id.to_string();
            let signature = self
                .signatures
                .sign(&row.queue, &message_id, row.payload.as_bytes())
                .await?;
            let mut headers = FieldTable::default();
            headers.insert(
                short(signing::HEADER),
                AMQPValue::LongString(signature.as_str().into()),
            );
            if let Some(traceparent) = &row.traceparent {
                headers.insert(
                    short(TraceParent::HEADER),
                    AMQPValue::LongString(traceparent.as_str().into()),
                );
            }
            let properties = BasicProperties::default()
                .with_headers(headers)
                .with_message_id(short(&message_id))
                .with_content_type(short("application/json"))
                .with_delivery_mode(2);
            let confirm = channel
                .basic_publish(
                    short(&BrokerSettings::publish_exchange(&row.queue)),
                    short(&row.queue),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    row.payload.as_bytes(),
                    properties,
                )
                .await?;
            confirms.push((row.id, row.queue.clone(), row.message_id, confirm));
        }
        Ok(Some(InFlight {
            tx,
            claimed: rows.len(),
            confirms,
            started,
        }))
    }

    /// Awaits the confirms of `batch` together, deletes exactly the rows the broker confirmed,
    /// and commits.
    async fn finish(&self, batch: InFlight) -> Result<(), RelayError> {
        let InFlight {
            mut tx,
            claimed,
            confirms,
            started,
        } = batch;
        let (published, pending): (Vec<_>, Vec<_>) = confirms
            .into_iter()
            .map(|(id, queue, message_id, confirm)| ((id, queue, message_id), confirm))
            .unzip();
        let confirmations = tokio::time::timeout(CONFIRM_TIMEOUT, join_all(pending))
            .await
            .map_err(|_| RelayError::ConfirmTimeout(CONFIRM_TIMEOUT))?;

        let mut sent = Vec::with_capacity(claimed);
        for ((id, queue, message_id), confirmation) in published.into_iter().zip(confirmations) {
            match confirmation? {
                Confirmation::Ack(None) => sent.push(id),
                Confirmation::Ack(Some(returned)) => tracing::error!(
                    %queue, %message_id, reply = ?returned.reply_text,
                    "broker returned an unroutable message; it stays in the outbox"
                ),
                Confirmation::Nack(_) | Confirmation::NotRequested => tracing::warn!(
                    %queue, %message_id,
                    "broker did not confirm a message; it will be published again"
                ),
            }
        }
        if !sent.is_empty() {
            let rows = crate::batch::rows("unnest($1::bigint[]) AS s(id)", sent.len());
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM outbox USING ({rows}) AS s WHERE outbox.id = s.id"
            )))
            .bind(&sent)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        metrics::counter!("outbox_published_total").increment(sent.len() as u64);
        metrics::histogram!("outbox_batch_size").record(claimed as f64);
        metrics::histogram!("outbox_publish_seconds").record(started.elapsed().as_secs_f64());
        tracing::debug!(claimed, sent = sent.len(), "outbox batch published");
        Ok(())
    }
}

/// A claimed batch, published, whose confirms are still to come: its rows stay locked by its
/// transaction until [`Relay::finish`] deletes the confirmed ones and commits.
struct InFlight {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    /// How many rows were claimed, published or not.
    claimed: usize,
    /// Each published row (id, queue, message id) with its confirm to come.
    confirms: Vec<(i64, String, Uuid, lapin::PublisherConfirm)>,
    started: std::time::Instant,
}
