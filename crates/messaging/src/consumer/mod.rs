//! A supervised queue consumer with manual acknowledgements and batched transactions.
//!
//! What it guarantees for every delivery:
//! - nothing is applied unless its producer signed it ([`crate::signing`]): a message without a
//!   valid MAC is dead-lettered at once and counted (`messages_unauthenticated_total`);
//! - it is acknowledged only after the transaction that applied it committed;
//! - a message that can never be processed — a body that does not parse, no `message_id`, or a
//!   handler's [`HandlerError::Poison`] — is rejected without requeue, which the queue's
//!   dead-letter settings route to its `.dlq` at once; the other messages of its batch are not
//!   affected (the batch is applied again without it);
//! - a failure of the database is retried or dead-lettered by [`crate::retry`]'s policy
//!   ([`apply`]): unavailability for as long as it takes, a conflict a bounded number of times —
//!   so one message that can never succeed never stops its queue;
//! - messages of one key ([`Handler::key`], the row a message writes) are applied one batch at a
//!   time, in the order they arrived, and a key whose batch is slow delays no other key's
//!   messages ([`schedule`]);
//! - on shutdown no new batch is started, in-flight ones finish, and anything unacknowledged
//!   returns to the queue when the channel closes.
//!
//! Batching: up to `--consumer-concurrency` batches are in flight at once, each of up to
//! `--consumer-batch-size` messages taken from the keys that have none in flight — one commit
//! for many messages under load, no added wait when idle. In its transaction the handler first
//! applies what it can of the batch together ([`Handler::handle_together`]: the common case, a
//! statement for all of them), then each of the rest on its own ([`Handler::handle`]), and what
//! the batch's messages send (outbox rows, notices: [`Outgoing`]) is written with one statement
//! each before the commit. Two batches of one consumer never write the same row at once.
//! Consumers of other instances may: every batch is applied in ascending key order, so all
//! transactions take row locks in the same order and cannot deadlock.
//!
//! What is in memory is bounded by the channel's prefetch (batch size × concurrency): the broker
//! delivers no more than that unacknowledged.
//!
//! Acknowledgements: a committed batch's deliveries are acknowledged together with those of other
//! committed batches, in one `multiple` frame up to the last delivery that nothing unapplied
//! precedes ([`acks::Window`]) — still each only after its own commit, and each within
//! [`MOST_ACK_WAIT`] of it.
//!
//! The consumer owns its connection and rebuilds connection, channel, topology, prefetch and
//! subscription whenever any of them breaks.

pub mod acks;
mod apply;
mod handler;
pub mod schedule;

pub use handler::{Handler, HandlerError, Incoming};

use crate::{
    amqp::{self, BrokerHealth, BrokerSettings, RoleHealth, short},
    signing::{self, KeyRing},
};
use acks::{Ack, Window};
use apply::Verdict;
use backon::BackoffBuilder;
use futures::{StreamExt, stream::FuturesUnordered};
use gozon_telemetry::trace::TraceParent;
use lapin::{
    Acker, Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::{AMQPValue, FieldTable},
};
use schedule::{Batch, Schedule};
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use std::{sync::Arc, time::Duration};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The longest a committed delivery waits for its acknowledgement to go together with others'.
pub const MOST_ACK_WAIT: Duration = Duration::from_millis(200);

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
    /// What checks that a message is its producer's.
    pub signatures: KeyRing,
}

#[derive(Debug, thiserror::Error)]
enum ConsumeError {
    #[error("broker: {0}")]
    Broker(#[from] lapin::Error),
    #[error("the broker ended the subscription")]
    Ended,
    #[error("broker connection lost: {0}")]
    Lost(String),
    #[error("the producer's message keys are unknown: {0}")]
    Keys(String),
}

/// A delivery whose body parsed.
struct Parsed<M> {
    delivery: Delivery,
    message_id: String,
    trace: TraceParent,
    message: M,
}

impl<H: Handler> Consumer<H> {
    /// A consumer of `queue` applying its messages with `handler` once `signatures` accepted
    /// them, reporting to `health`.
    pub fn new(
        queue: &str,
        handler: H,
        pool: &PgPool,
        broker: &BrokerSettings,
        settings: &ConsumerSettings,
        health: &BrokerHealth,
        signatures: &KeyRing,
    ) -> Self {
        Self {
            queue: queue.to_owned(),
            pool: pool.clone(),
            broker: broker.clone(),
            settings: settings.clone(),
            handler: Arc::new(handler),
            health: health.register(&format!("consumer of {queue}")),
            signatures: signatures.clone(),
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
        for reason in ["unsigned", "malformed", "unknown_key", "forged"] {
            metrics::counter!("messages_unauthenticated_total", "queue" => self.queue.clone(), "reason" => reason)
                .increment(0);
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
        let batch_size = usize::from(self.settings.consumer_batch_size.max(1));
        let concurrency = usize::from(self.settings.consumer_concurrency.max(1));
        let prefetch = u16::try_from(batch_size * concurrency).unwrap_or(u16::MAX);
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        // The broker is reachable; what waits for the producer's keys stays in the queue.
        self.health.set(true);
        if !self.await_producer_keys(stop).await {
            return Ok(());
        }
        let deliveries = channel
            .basic_consume(
                short(&self.queue),
                short(""),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        tracing::info!(queue = %self.queue, batch_size, concurrency, "consumer subscribed");

        // Half the prefetch may wait for a slower batch before being acknowledged one by one.
        let mut window = Window::new(usize::from(prefetch) / 2, MOST_ACK_WAIT);
        let mut schedule = Schedule::default();
        let mut in_flight = FuturesUnordered::new();
        let mut deliveries = std::pin::pin!(deliveries.take_until(stop.cancelled()));
        let mut subscribed = true;
        loop {
            // On shutdown, or once the subscription ended, no new batch starts; what waits
            // returns to the queue with the channel.
            if subscribed {
                while in_flight.len() < concurrency {
                    let Batch { keys, mut messages } = schedule.next_batch(batch_size);
                    if messages.is_empty() {
                        break;
                    }
                    in_flight.push(async move {
                        let verdicts = self.apply_batch(&mut messages, stop).await;
                        (keys, messages, verdicts)
                    });
                }
            } else if in_flight.is_empty() {
                break;
            }
            let due = window.due();
            tokio::select! {
                delivery = deliveries.next(), if subscribed => match delivery {
                    Some(delivery) => self.receive(delivery?, &mut schedule, &mut window).await?,
                    None => subscribed = false,
                },
                Some((keys, messages, verdicts)) = in_flight.next(), if !in_flight.is_empty() => {
                    schedule.done(keys);
                    self.conclude(messages, verdicts, &mut window).await?;
                }
                () = sleep_until(due), if due.is_some() => {
                    send(window.overdue(Instant::now())).await?;
                }
            }
        }
        if !stop.is_cancelled() {
            return Err(ConsumeError::Ended);
        }
        // What was applied but held back goes now, one by one; closing the channel first
        // returns its unacknowledged deliveries cleanly.
        send(window.drain()).await?;
        let _ = channel.close(200, short("consumer stopping")).await;
        Ok(())
    }

    /// Checks and parses a delivery: what its producer did not sign, or what cannot be parsed,
    /// is dead-lettered; the rest waits for its batch.
    async fn receive(
        &self,
        delivery: Delivery,
        schedule: &mut Schedule<H::Key, Parsed<H::Message>>,
        window: &mut Window<Acker>,
    ) -> Result<(), ConsumeError> {
        window.delivered(delivery.delivery_tag);
        if let Err(refusal) = self.authenticate(&delivery).await? {
            metrics::counter!("messages_unauthenticated_total", "queue" => self.queue.clone(), "reason" => refusal.reason())
                .increment(1);
            let message_id = message_id_of(&delivery).unwrap_or_default();
            let reason = format!("not its producer's: {refusal}");
            self.dead_letter(&delivery, &message_id, &reason).await?;
            return Ok(send(window.rejected(delivery.delivery_tag, Instant::now())).await?);
        }
        match parse::<H::Message>(&delivery) {
            Ok((message_id, message)) => {
                let trace = trace_of(&delivery);
                schedule.push(
                    H::key(&message),
                    Parsed {
                        delivery,
                        message_id,
                        trace,
                        message,
                    },
                );
                Ok(())
            }
            Err((message_id, reason)) => {
                self.dead_letter(&delivery, &message_id, &reason).await?;
                Ok(send(window.rejected(delivery.delivery_tag, Instant::now())).await?)
            }
        }
    }

    /// Dead-letters each message of a finished batch so judged and acknowledges the applied ones
    /// (with others', as the window allows); pending ones stay unacknowledged.
    async fn conclude(
        &self,
        batch: Vec<Parsed<H::Message>>,
        verdicts: Vec<Verdict>,
        window: &mut Window<Acker>,
    ) -> lapin::Result<()> {
        let applied = verdicts.iter().filter(|v| **v == Verdict::Applied).count();
        if applied > 0 {
            self.handler.committed();
        }
        metrics::counter!("messages_consumed_total", "queue" => self.queue.clone())
            .increment(applied as u64);
        metrics::histogram!("consumer_batch_size", "queue" => self.queue.clone())
            .record(batch.len() as f64);
        let mut committed = Vec::with_capacity(applied);
        for (parsed, verdict) in batch.into_iter().zip(verdicts) {
            let tag = parsed.delivery.delivery_tag;
            match verdict {
                Verdict::Applied => committed.push((tag, parsed.delivery.acker)),
                Verdict::DeadLetter(reason) => {
                    self.dead_letter(&parsed.delivery, &parsed.message_id, &reason)
                        .await?;
                    send(window.rejected(tag, Instant::now())).await?;
                }
                // Left unacknowledged (stopping): the broker redelivers it once the channel closes.
                Verdict::Pending => {}
            }
        }
        send(window.applied(committed, Instant::now())).await
    }

    /// Whether the delivery carries its producer's MAC over this queue, its `message_id` and
    /// its body. (The producer's keys are known before the consumer subscribes.)
    async fn authenticate(
        &self,
        delivery: &Delivery,
    ) -> Result<Result<(), signing::Refusal>, ConsumeError> {
        let message_id = message_id_of(delivery).unwrap_or_default();
        let header = header_text(delivery, signing::HEADER);
        match self
            .signatures
            .verify(&self.queue, &message_id, &delivery.data, header.as_deref())
            .await
        {
            Ok(()) => Ok(Ok(())),
            Err(signing::Unverified::Refused(refusal)) => Ok(Err(refusal)),
            Err(signing::Unverified::PeerKeysUnknown(reason)) => Err(ConsumeError::Keys(reason)),
        }
    }

    /// Waits until the producer's keys are known (it may not be up yet): a consumer that
    /// cannot check its messages does not take them. `false` if `stop` fires first.
    async fn await_producer_keys(&self, stop: &CancellationToken) -> bool {
        let mut waits = crate::retry::unavailable().build();
        loop {
            match self.signatures.learn_peer().await {
                Ok(()) => return true,
                Err(reason) => {
                    let delay = waits.next().unwrap_or(signing::MIN_REFRESH);
                    tracing::warn!(queue = %self.queue, %reason, ?delay, "waiting for the producer's message keys before consuming");
                    tokio::select! {
                        _ = stop.cancelled() => return false,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
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

/// Waits until `due`, or forever.
async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(due) => tokio::time::sleep_until(due).await,
        None => std::future::pending().await,
    }
}

/// Sends `acks`, in order.
async fn send(acks: Vec<Ack<Acker>>) -> lapin::Result<()> {
    for Ack { handle, multiple } in acks {
        handle.ack(BasicAckOptions { multiple }).await?;
    }
    Ok(())
}

/// The delivery's `traceparent` header, or a new trace.
fn trace_of(delivery: &Delivery) -> TraceParent {
    header_text(delivery, TraceParent::HEADER)
        .and_then(|value| TraceParent::parse(&value))
        .unwrap_or_default()
}

/// The delivery's `message_id`, if it has one.
fn message_id_of(delivery: &Delivery) -> Option<String> {
    delivery
        .properties
        .message_id()
        .as_ref()
        .map(|id| id.to_string())
}

/// The text of the delivery's header `name`, if it has one.
fn header_text(delivery: &Delivery, name: &str) -> Option<String> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(value) => Some(value.to_string()),
        _ => None,
    }
}

/// The `message_id` and parsed body of a delivery, or why it can never be processed.
fn parse<M: DeserializeOwned>(delivery: &Delivery) -> Result<(String, M), (String, String)> {
    let Some(message_id) = message_id_of(delivery) else {
        return Err((String::new(), "message has no message_id".into()));
    };
    match serde_json::from_slice(&delivery.data) {
        Ok(message) => Ok((message_id, message)),
        Err(error) => Err((message_id, format!("body does not parse: {error}"))),
    }
}
