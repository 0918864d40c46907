//! A supervised queue consumer with manual acknowledgements.
//!
//! What it guarantees for every delivery:
//! - it is acknowledged only after the [`Handler`] returned `Ok`, i.e. after the handler's
//!   database transaction committed;
//! - a message that can never be processed — a body that does not parse, no `message_id`, or a
//!   handler's [`HandlerError::Poison`] — is rejected without requeue, which the queue's
//!   dead-letter settings route to its `.dlq` at once;
//! - a transient failure (database unreachable, a lost race on a unique key) is retried in place
//!   with capped exponential backoff for as long as it takes, and never dead-lettered;
//! - on shutdown no new delivery is started, in-flight ones finish, and anything unacknowledged
//!   returns to the queue when the channel closes.
//!
//! The consumer owns its connection and rebuilds connection, channel, topology, prefetch and
//! subscription whenever any of them breaks.

use crate::amqp::{BrokerSettings, RoleHealth, short};
use backon::BackoffBuilder;
use futures::{StreamExt, TryStreamExt};
use lapin::{
    Connection,
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
};
use serde::de::DeserializeOwned;
use std::{future::Future, sync::Arc};
use tokio_util::sync::CancellationToken;

/// How a handler failed, and so what the consumer does next.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The message can never succeed: dead-letter it.
    #[error("cannot be processed: {0}")]
    Poison(String),
    /// It may succeed later: retry with backoff.
    #[error("transient: {0}")]
    Transient(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl From<sqlx::Error> for HandlerError {
    /// Every database error is worth retrying: the input was validated before the transaction,
    /// so what fails inside it is the database being away or a concurrent writer winning a race.
    fn from(error: sqlx::Error) -> Self {
        Self::Transient(Box::new(error))
    }
}

/// Processes one parsed message inside its own database transaction.
pub trait Handler: Send + Sync + 'static {
    type Message: DeserializeOwned + Send + Sync;

    fn handle(
        &self,
        message_id: &str,
        message: &Self::Message,
    ) -> impl Future<Output = Result<(), HandlerError>> + Send;
}

/// How many messages one consumer works on at once.
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumerSettings {
    /// Deliveries processed concurrently by one consumer; twice as many are prefetched.
    #[arg(long, env = "CONSUMER_CONCURRENCY", default_value_t = 16)]
    pub consumer_concurrency: u16,
}

/// Consumes one queue with one handler.
pub struct Consumer<H> {
    pub queue: String,
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
}

impl<H: Handler> Consumer<H> {
    /// Runs until `stop` is cancelled, rebuilding the subscription whenever it breaks.
    pub async fn run(self, stop: CancellationToken) {
        let role = format!("consumer of {}", self.queue);
        while let Some(connection) = self.broker.connect(&role, &stop).await {
            let outcome = self.consume(&connection, &stop).await;
            self.health.set(false);
            let _ = connection.close(200, short("consumer stopping")).await;
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
        self.broker.declare_topology(&channel).await?;
        let concurrency = usize::from(self.settings.consumer_concurrency.max(1));
        channel
            .basic_qos((concurrency * 2) as u16, BasicQosOptions::default())
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
        tracing::info!(queue = %self.queue, "consumer subscribed");

        deliveries
            .take_until(stop.cancelled())
            .map_err(ConsumeError::from)
            .try_for_each_concurrent(concurrency, |delivery| async move {
                self.process(delivery, stop)
                    .await
                    .map_err(ConsumeError::from)
            })
            .await?;
        if stop.is_cancelled() {
            Ok(())
        } else {
            Err(ConsumeError::Ended)
        }
    }

    async fn process(&self, delivery: Delivery, stop: &CancellationToken) -> lapin::Result<()> {
        let Some(message_id) = delivery.properties.message_id().clone() else {
            return self
                .dead_letter(&delivery, "", "message has no message_id")
                .await;
        };
        let message_id = message_id.as_str();
        let message = match serde_json::from_slice::<H::Message>(&delivery.data) {
            Ok(message) => message,
            Err(error) => {
                let reason = format!("body does not parse: {error}");
                return self.dead_letter(&delivery, message_id, &reason).await;
            }
        };

        let mut backoff = crate::db::retry_forever().build();
        for attempt in 1.. {
            match self.handler.handle(message_id, &message).await {
                Ok(()) => {
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                    return Ok(());
                }
                Err(HandlerError::Poison(reason)) => {
                    return self.dead_letter(&delivery, message_id, &reason).await;
                }
                Err(HandlerError::Transient(error)) => {
                    let delay = backoff.next().unwrap_or_default();
                    tracing::warn!(
                        queue = %self.queue, message_id, attempt, %error, ?delay,
                        "message failed transiently; retrying"
                    );
                    tokio::select! {
                        // Left unacknowledged: the broker redelivers it once the channel closes.
                        _ = stop.cancelled() => return Ok(()),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        Ok(())
    }

    async fn dead_letter(
        &self,
        delivery: &Delivery,
        message_id: &str,
        reason: &str,
    ) -> lapin::Result<()> {
        tracing::error!(queue = %self.queue, message_id, reason, "dead-lettering message");
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
