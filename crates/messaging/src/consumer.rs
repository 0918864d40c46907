//! A supervised queue consumer with manual acknowledgements and batched transactions.
//!
//! What it guarantees for every delivery:
//! - it is acknowledged only after the transaction that applied it committed;
//! - a message that can never be processed — a body that does not parse, no `message_id`, or a
//!   handler's [`HandlerError::Poison`] — is rejected without requeue, which the queue's
//!   dead-letter settings route to its `.dlq` at once; the other messages of its batch are not
//!   affected (the batch is applied again without it);
//! - what the database says decides what a failure is ([`HandlerError::from`], by SQLSTATE):
//!   the database unreachable or out of resources is retried with capped exponential backoff for
//!   as long as it takes — never dead-lettered for that; a conflict with concurrent work
//!   (serialization failure, deadlock, a lost race on a unique key) is retried too, but only
//!   [`MAX_ATTEMPTS`] times while the database answers: then the batch's messages are applied
//!   one at a time, and one that still fails [`MAX_ATTEMPTS`] times alone is dead-lettered
//!   (logged as an error, counted in `consumer_gave_up_total`); anything else the database
//!   refuses (bad data, a violated constraint) is poison at once. One message that can never
//!   succeed therefore never stops its queue;
//! - on shutdown no new batch is started, in-flight ones finish, and anything unacknowledged
//!   returns to the queue when the channel closes.
//!
//! Batching: deliveries are routed to `--consumer-concurrency` workers by the hash of
//! [`Handler::key`] (the row a message writes, e.g. the account it debits), and each worker takes
//! whatever its share already holds, up to `--consumer-batch-size`, into one transaction — one
//! commit for many messages under load, no added wait when idle. In that transaction the handler
//! first applies what it can of the batch together ([`Handler::handle_together`]: the common
//! case, a statement for all of them), then each of the rest on its own ([`Handler::handle`]),
//! and what the batch's messages send (outbox rows, notices: [`Outgoing`]) is written with one
//! statement each before the commit. Two workers of one consumer never
//! write the same row at once, so they do not wait on each other's locks. Consumers of other
//! instances may: every batch is applied in ascending key order (stable, so messages with one key
//! keep their arrival order), so all transactions take row locks in the same order and cannot
//! deadlock.
//!
//! Acknowledgements: a committed batch's deliveries are acknowledged together with those of other
//! committed batches, in one `multiple` frame up to the last delivery that nothing unapplied
//! precedes ([`acks::Window`](crate::acks::Window)) — still each only after its own commit.
//!
//! The consumer owns its connection and rebuilds connection, channel, topology, prefetch and
//! subscription whenever any of them breaks.

use crate::{
    acks::{Ack, Window},
    amqp::{self, BrokerHealth, BrokerSettings, RoleHealth, short},
    outgoing::Outgoing,
};
use backon::BackoffBuilder;
use futures::{SinkExt, StreamExt, channel::mpsc};
use gozon_telemetry::trace::TraceParent;
use lapin::{
    Acker, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use serde::de::DeserializeOwned;
use sqlx::{PgConnection, PgPool};
use std::{
    future::Future,
    hash::{BuildHasher, Hash},
    sync::Arc,
};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Attempts of a batch (or, after that, of one message) that the database answered with a
/// conflict, before giving up on it.
pub const MAX_ATTEMPTS: u32 = 8;

/// How a handler failed, and so what the consumer does next.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The message can never succeed: dead-letter it.
    #[error("cannot be processed: {0}")]
    Poison(String),
    /// A conflict with concurrent work: retry with backoff, at most [`MAX_ATTEMPTS`] times.
    #[error("conflict: {0}")]
    Transient(#[source] BoxError),
    /// The database cannot be reached or has no room: retry with backoff, without limit.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] BoxError),
}

impl From<sqlx::Error> for HandlerError {
    /// By what failed: the connection or the server's resources (SQLSTATE classes 08, 53, 57,
    /// 58; I/O, TLS, protocol and pool errors) → [`Unavailable`](Self::Unavailable); a conflict
    /// with concurrent work (class 40 — serialization failure, deadlock — and 23505, a unique
    /// key taken meanwhile) → [`Transient`](Self::Transient); any other refusal of the database
    /// (data exceptions, constraint violations, …) or a value that cannot be encoded or decoded
    /// → [`Poison`](Self::Poison): trying again cannot change the answer.
    fn from(error: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &error {
            E::Database(database) => {
                let code = database.code().unwrap_or_default();
                match code.get(..2).unwrap_or_default() {
                    "08" | "53" | "57" | "58" => Self::Unavailable(Box::new(error)),
                    "40" => Self::Transient(Box::new(error)),
                    _ if code == "23505" => Self::Transient(Box::new(error)),
                    _ => Self::Poison(format!("the database refused it: {error}")),
                }
            }
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::BeginFailed => Self::Unavailable(Box::new(error)),
            _ => Self::Poison(format!("cannot be stored or read: {error}")),
        }
    }
}

impl From<serde_json::Error> for HandlerError {
    /// A message this one causes cannot be encoded: trying again cannot change that.
    fn from(error: serde_json::Error) -> Self {
        Self::Poison(format!("what it sends cannot be encoded: {error}"))
    }
}

/// Applies parsed messages of one queue inside the consumer's transaction.
pub trait Handler: Send + Sync + 'static {
    type Message: DeserializeOwned + Send + Sync;
    type Key: Hash + Ord;

    /// The row a message writes; messages with equal keys are applied by the same worker, in
    /// the order they arrived, and a batch is applied in ascending key order.
    fn key(message: &Self::Message) -> Self::Key;

    /// Applies one message within `db`, the batch's transaction. An error rolls back the whole
    /// batch: a transient one retries it, a poison one retries it without this message.
    /// `trace` is the message's trace context (a new trace if it carried none); pass it on to
    /// the messages this one causes. What the message sends — messages to publish, notices —
    /// goes to `out`, which the consumer writes once for the whole batch before it commits.
    fn handle(
        &self,
        db: &mut PgConnection,
        message_id: &str,
        trace: &TraceParent,
        message: &Self::Message,
        out: &mut Outgoing,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;

    /// Applies what it can of a batch's messages together — the common case, in a statement or
    /// two for all of them — within `db`, before [`handle`](Self::handle) is called, in the same
    /// transaction, for each message it did not apply; returns which it applied (`true` at a
    /// message's index). An error rolls the batch back like one of `handle`'s, except that a
    /// poison one cannot name its message: the batch's messages are then applied one at a time,
    /// by `handle` alone. The default applies none.
    fn handle_together(
        &self,
        db: &mut PgConnection,
        batch: &[Incoming<'_, Self::Message>],
        out: &mut Outgoing,
    ) -> impl Future<Output = Result<Vec<bool>, HandlerError>> + Send {
        let none = vec![false; batch.len()];
        let _ = (db, out);
        async move { Ok(none) }
    }

    /// Called after a transaction holding at least one applied message committed.
    fn committed(&self) {}
}

/// A message of a batch, as [`Handler::handle_together`] sees it.
pub struct Incoming<'a, M> {
    pub message_id: &'a str,
    /// Its trace context (a new trace if it carried none).
    pub trace: &'a TraceParent,
    pub message: &'a M,
    /// Its span: enter it for what is done for this message alone (its logs, and the messages
    /// it causes, which take the span as their parent).
    pub span: &'a tracing::Span,
}

/// How many messages one consumer works on at once.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerSettings {
    /// Most messages applied in one database transaction.
    #[arg(long, env = "CONSUMER_BATCH_SIZE", default_value_t = 64)]
    pub consumer_batch_size: u16,

    /// Batches one consumer applies concurrently; the prefetch is batch size × this.
    #[arg(long, env = "CONSUMER_CONCURRENCY", default_value_t = 4)]
    pub consumer_concurrency: u16,
}

/// Consumes one queue with one handler.
pub struct Consumer<H> {
    pub queue: String,
    pub pool: PgPool,
    pub broker: BrokerSettings,
    pub settings: ConsumerSettings,
    pub handler: Arc<H>,
    pub health: RoleHealth,
}

#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker ended the subscription")]
    Ended,
    #[error("broker connection lost: {0}")]
    Lost(String),
}

enum Applied {
    Committed,
    /// The message at this index can never be applied.
    Poison(usize, String),
    /// One of the messages applied together can never be applied; which is not known.
    Unattributed(String),
}

/// How [`Consumer::settle`] ended.
enum Settled {
    Done,
    /// The database kept answering with a conflict.
    GaveUp(HandlerError),
    /// A message applied together with others can never be applied; which is not known.
    Unattributed(String),
    /// Stopping: what is pending stays unacknowledged.
    Stopped,
}

/// What became of one message of a batch.
#[derive(Debug, Clone, PartialEq)]
enum Verdict {
    Pending,
    Applied,
    DeadLetter(String),
}

/// A delivery whose body parsed.
struct Parsed<M> {
    delivery: Delivery,
    message_id: String,
    trace: TraceParent,
    message: M,
}

impl<H: Handler> Consumer<H> {
    /// A consumer of `queue` applying its messages with `handler`, reporting to `health`.
    pub fn new(
        queue: &str,
        handler: H,
        pool: &PgPool,
        broker: &BrokerSettings,
        settings: &ConsumerSettings,
        health: &BrokerHealth,
    ) -> Self {
        Self {
            queue: queue.to_owned(),
            pool: pool.clone(),
            broker: broker.clone(),
            settings: settings.clone(),
            handler: Arc::new(handler),
            health: health.register(&format!("consumer of {queue}")),
        }
    }

    /// Runs until `stop` is cancelled, rebuilding the subscription whenever it breaks.
    pub async fn run(self, stop: CancellationToken) {
        // Every counter of this queue exists from the start, at 0, so that a rate or an
        // increase (an alert on the first dead letter, say) sees the first event.
        for counter in [
            "messages_consumed_total",
            "messages_dead_lettered_total",
            "messages_duplicate_total",
            "consumer_batches_retried_total",
            "consumer_gave_up_total",
        ] {
            metrics::counter!(counter, "queue" => self.queue.clone()).increment(0);
        }
        let role = format!("consumer of {}", self.queue);
        while let Some(connection) = self.broker.connect(&role, &stop).await {
            // Dropping `consume` abandons the batches in flight: their transactions roll back,
            // their deliveries go back to the queue with the connection.
            let outcome = tokio::select! {
                outcome = self.consume(&connection, &stop) => outcome,
                reason = amqp::lost(&connection) => Err(ConsumeError::Lost(reason)),
            };
            self.health.set(false);
            amqp::close(&connection, "consumer stopping").await;
            match outcome {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(queue = %self.queue, %error, "consumer lost the broker; reconnecting");
                }
            }
        }
        tracing::info!(queue = %self.queue, "consumer stopped");
    }

    async fn consume(
        &self,
        connection: &Connection,
        stop: &CancellationToken,
    ) -> Result<(), ConsumeError> {
        let channel = connection.create_channel().await?;
        self.broker.ensure_topology(&channel).await?;
        let batch = usize::from(self.settings.consumer_batch_size.max(1));
        let concurrency = usize::from(self.settings.consumer_concurrency.max(1));
        let prefetch = u16::try_from(batch * concurrency).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let deliveries = channel
            .basic_consume(
                short(&self.queue),
                short(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        self.health.set(true);
        tracing::info!(queue = %self.queue, batch, concurrency, "consumer subscribed");

        // Half the prefetch may wait for a slower batch before being acknowledged one by one.
        let acks = Acks::new(Window::new(usize::from(prefetch) / 2));
        let (routes, shares): (Vec<_>, Vec<_>) =
            (0..concurrency).map(|_| mpsc::channel(batch)).unzip();
        let acks_ref = &acks;
        let workers = futures::future::join_all(shares.into_iter().map(|share| async move {
            let mut batches = share.ready_chunks(batch);
            while let Some(batch) = batches.next().await {
                self.process(batch, acks_ref, stop).await?;
            }
            Ok::<(), lapin::Error>(())
        }));
        let dispatch = self.dispatch(deliveries, routes, &acks, stop);
        // The dispatcher ends on shutdown or a broken subscription, dropping its routes; the
        // workers then finish what they were handed and end too.
        let (dispatched, worked) = futures::join!(dispatch, workers);
        dispatched?;
        worked.into_iter().collect::<Result<(), _>>()?;
        if stop.is_cancelled() {
            // What was applied but held back goes now, one by one; closing the channel first
            // returns its unacknowledged deliveries cleanly.
            let mut window = acks.lock().await;
            let held = window.drain();
            send(held).await?;
            let _ = channel.close(200, short("consumer stopping")).await;
            Ok(())
        } else {
            Err(ConsumeError::Ended)
        }
    }

    /// Parses each delivery, dead-letters what cannot be parsed, and hands the rest to the worker
    /// that owns its key.
    async fn dispatch(
        &self,
        deliveries: lapin::Consumer,
        mut routes: Vec<mpsc::Sender<Parsed<H::Message>>>,
        acks: &Acks,
        stop: &CancellationToken,
    ) -> Result<(), ConsumeError> {
        let hasher = std::hash::RandomState::new();
        let mut deliveries = std::pin::pin!(deliveries.take_until(stop.cancelled()));
        while let Some(delivery) = deliveries.next().await {
            let delivery = delivery?;
            acks.lock().await.delivered(delivery.delivery_tag);
            match parse::<H::Message>(&delivery) {
                Ok((message_id, message)) => {
                    let worker = hasher.hash_one(H::key(&message)) as usize % routes.len();
                    let trace = trace_of(&delivery);
                    let parsed = Parsed {
                        delivery,
                        message_id,
                        trace,
                        message,
                    };
                    if routes[worker].send(parsed).await.is_err() {
                        return Err(ConsumeError::Ended);
                    }
                }
                Err((message_id, reason)) => {
                    let mut window = acks.lock().await;
                    self.dead_letter(&delivery, &message_id, &reason).await?;
                    send(window.settled(delivery.delivery_tag)).await?;
                }
            }
        }
        Ok(())
    }

    /// Applies a batch in one transaction (see the module's failure policy), then dead-letters
    /// each message so judged and hands the applied ones to the channel's acknowledgements.
    async fn process(
        &self,
        mut batch: Vec<Parsed<H::Message>>,
        acks: &Acks,
        stop: &CancellationToken,
    ) -> lapin::Result<()> {
        batch.sort_by(|a, b| H::key(&a.message).cmp(&H::key(&b.message)));
        let mut verdicts = vec![Verdict::Pending; batch.len()];
        let isolate = match self.settle(&batch, &mut verdicts, None, stop).await {
            Settled::GaveUp(error) => {
                tracing::warn!(queue = %self.queue, messages = batch.len(), %error, "batch kept conflicting; applying its messages one at a time");
                true
            }
            Settled::Unattributed(reason) => {
                tracing::warn!(queue = %self.queue, messages = batch.len(), %reason, "a message of the batch cannot be applied; applying them one at a time");
                true
            }
            Settled::Done | Settled::Stopped => false,
        };
        if isolate {
            // One message may be at fault: find it by applying them one at a time.
            for index in 0..batch.len() {
                if verdicts[index] != Verdict::Pending {
                    continue;
                }
                match self.settle(&batch, &mut verdicts, Some(index), stop).await {
                    Settled::GaveUp(error) => {
                        let reason = format!("gave up after {MAX_ATTEMPTS} attempts: {error}");
                        tracing::error!(queue = %self.queue, message_id = %batch[index].message_id, %reason, "message keeps failing; dead-lettering it");
                        metrics::counter!("consumer_gave_up_total", "queue" => self.queue.clone())
                            .increment(1);
                        verdicts[index] = Verdict::DeadLetter(reason);
                    }
                    // Alone, a message is applied by `handle`, whose poison names it.
                    Settled::Done | Settled::Unattributed(_) => {}
                    Settled::Stopped => break,
                }
            }
        }
        let applied = verdicts.iter().filter(|v| **v == Verdict::Applied).count();
        if applied > 0 {
            self.handler.committed();
        }
        metrics::counter!("messages_consumed_total", "queue" => self.queue.clone())
            .increment(applied as u64);
        metrics::histogram!("consumer_batch_size", "queue" => self.queue.clone())
            .record(batch.len() as f64);
        let mut window = acks.lock().await;
        let mut committed = Vec::with_capacity(applied);
        for (parsed, verdict) in batch.iter().zip(verdicts) {
            let tag = parsed.delivery.delivery_tag;
            match verdict {
                Verdict::Applied => committed.push((tag, parsed.delivery.acker.clone())),
                Verdict::DeadLetter(reason) => {
                    self.dead_letter(&parsed.delivery, &parsed.message_id, &reason)
                        .await?;
                    send(window.settled(tag)).await?;
                }
                // Left unacknowledged (stopping): the broker redelivers it once the channel closes.
                Verdict::Pending => {}
            }
        }
        send(window.applied(committed)).await
    }

    /// Applies the pending messages of `batch` (or only the one at `only`) in one transaction,
    /// again and again until it commits: without the messages found poison, after a wait when
    /// the database is unavailable or conflicts — the latter at most [`MAX_ATTEMPTS`] times.
    async fn settle(
        &self,
        batch: &[Parsed<H::Message>],
        verdicts: &mut [Verdict],
        only: Option<usize>,
        stop: &CancellationToken,
    ) -> Settled {
        let mut unavailable = crate::backoff::retry_forever().build();
        // A conflict with concurrent work clears in milliseconds: shorter waits.
        let mut conflicting = backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(20))
            .with_max_delay(std::time::Duration::from_secs(1))
            .with_jitter()
            .without_max_times()
            .build();
        let mut conflicts = 0;
        loop {
            let error = match self.apply(batch, verdicts, only).await {
                Ok(Applied::Committed) => {
                    for (index, verdict) in verdicts.iter_mut().enumerate() {
                        if *verdict == Verdict::Pending && only.is_none_or(|only| only == index) {
                            *verdict = Verdict::Applied;
                        }
                    }
                    return Settled::Done;
                }
                Ok(Applied::Poison(index, reason)) => {
                    verdicts[index] = Verdict::DeadLetter(reason);
                    continue;
                }
                Ok(Applied::Unattributed(reason)) => return Settled::Unattributed(reason),
                Err(error) => error,
            };
            let delay = if let HandlerError::Transient(_) = &error {
                conflicts += 1;
                if conflicts >= MAX_ATTEMPTS {
                    return Settled::GaveUp(error);
                }
                conflicting.next()
            } else {
                unavailable.next()
            }
            .unwrap_or_default();
            metrics::counter!("consumer_batches_retried_total", "queue" => self.queue.clone())
                .increment(1);
            tracing::warn!(
                queue = %self.queue, messages = batch.len(), conflicts, %error, ?delay,
                "batch failed; retrying"
            );
            tokio::select! {
                _ = stop.cancelled() => return Settled::Stopped,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One transaction for the pending messages of `batch` (or only the one at `only`): those
    /// the handler applies together first (not when applying one alone), then each of the rest.
    /// Stops at the first poison verdict, rolling back, so the caller can apply the rest again
    /// without it.
    async fn apply(
        &self,
        batch: &[Parsed<H::Message>],
        verdicts: &[Verdict],
        only: Option<usize>,
    ) -> Result<Applied, HandlerError> {
        let pending: Vec<usize> = (0..batch.len())
            .filter(|&index| {
                verdicts[index] == Verdict::Pending && only.is_none_or(|only| only == index)
            })
            .collect();
        let spans: Vec<tracing::Span> = pending
            .iter()
            .map(|&index| {
                let parsed = &batch[index];
                let span = tracing::info_span!(
                    "message",
                    queue = %self.queue,
                    message_id = %parsed.message_id,
                    trace_id = %parsed.trace.trace_id(),
                );
                gozon_telemetry::trace::adopt(&span, &parsed.trace);
                span
            })
            .collect();
        let mut tx = self.pool.begin().await?;
        let mut out = Outgoing::default();
        let together = if only.is_none() {
            let incoming: Vec<Incoming<'_, H::Message>> = pending
                .iter()
                .zip(&spans)
                .map(|(&index, span)| Incoming {
                    message_id: &batch[index].message_id,
                    trace: &batch[index].trace,
                    message: &batch[index].message,
                    span,
                })
                .collect();
            match self
                .handler
                .handle_together(&mut tx, &incoming, &mut out)
                .await
            {
                Ok(applied) => applied,
                Err(HandlerError::Poison(reason)) => return Ok(Applied::Unattributed(reason)),
                Err(error) => return Err(error),
            }
        } else {
            Vec::new()
        };
        for (position, (&index, span)) in pending.iter().zip(spans).enumerate() {
            if together.get(position).copied().unwrap_or(false) {
                continue;
            }
            let parsed = &batch[index];
            let handled = self
                .handler
                .handle(
                    &mut tx,
                    &parsed.message_id,
                    &parsed.trace,
                    &parsed.message,
                    &mut out,
                )
                .instrument(span)
                .await;
            match handled {
                Ok(()) => {}
                Err(HandlerError::Poison(reason)) => return Ok(Applied::Poison(index, reason)),
                Err(error) => return Err(error),
            }
        }
        // A refusal of what the batch sends, or at commit (a deferred constraint), cannot be
        // pinned on one message: it is retried like a conflict, and so isolated message by
        // message if it persists.
        let unpinned = |error| match HandlerError::from(error) {
            HandlerError::Poison(reason) => HandlerError::Transient(reason.into()),
            other => other,
        };
        out.write(&mut tx).await.map_err(unpinned)?;
        tx.commit().await.map_err(unpinned)?;
        Ok(Applied::Committed)
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        message_id: &str,
        reason: &str,
    ) -> lapin::Result<()> {
        tracing::error!(queue = %self.queue, message_id, reason, "dead-lettering message");
        metrics::counter!("messages_dead_lettered_total", "queue" => self.queue.clone())
            .increment(1);
        delivery
            .acker
            .nack(BasicNackOptions {
                requeue: false,
                multiple: false,
            })
            .await?;
        Ok(())
    }
}

/// The channel's [`Window`], locked while what it answers is sent: frames leave in the order it
/// decided them, never one acknowledgement overtaking another.
type Acks = tokio::sync::Mutex<Window<Acker>>;

/// Sends `acks`, in order.
async fn send(acks: Vec<Ack<Acker>>) -> lapin::Result<()> {
    for Ack { handle, multiple } in acks {
        handle.ack(BasicAckOptions { multiple }).await?;
    }
    Ok(())
}

/// The delivery's `traceparent` header, or a new trace.
fn trace_of(delivery: &Delivery) -> TraceParent {
    delivery
        .properties
        .headers()
        .as_ref()
        .and_then(|headers| match headers.inner().get(TraceParent::HEADER) {
            Some(AMQPValue::LongString(value)) => TraceParent::parse(&value.to_string()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The `message_id` and parsed body of a delivery, or why it can never be processed.
fn parse<M: DeserializeOwned>(delivery: &Delivery) -> Result<(String, M), (String, String)> {
    let Some(message_id) = delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
    else {
        return Err((String::new(), "message has no message_id".into()));
    };
    match serde_json::from_slice(&delivery.data) {
        Ok(message) => Ok((message_id, message)),
        Err(error) => Err((message_id, format!("body does not parse: {error}"))),
    }
}
