//! What a consumer asks of the code that knows its messages: a [`Handler`] applies them in the
//! consumer's transaction and says, by a [`HandlerError`], whether a failure may pass.

use crate::{outgoing::Outgoing, retry::Failure};
use gozon_telemetry::trace::TraceParent;
use serde::de::DeserializeOwned;
use sqlx::PgConnection;
use std::{future::Future, hash::Hash};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How a handler failed, and so what the consumer does next ([`crate::retry`]).
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The message can never succeed: dead-letter it.
    #[error("cannot be processed: {0}")]
    Poison(String),
    /// A conflict with concurrent work: retry with backoff, at most
    /// [`MAX_CONFLICTS`](crate::retry::MAX_CONFLICTS) times.
    #[error("conflict: {0}")]
    Transient(#[source] BoxError),
    /// The database cannot be reached or has no room: retry with backoff, without limit.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] BoxError),
}

impl From<sqlx::Error> for HandlerError {
    /// As [`Failure::of`] reads it: a refusal of the database is poison, trying again cannot
    /// change the answer.
    fn from(error: sqlx::Error) -> Self {
        match Failure::of(&error) {
            Failure::Unavailable => Self::Unavailable(Box::new(error)),
            Failure::Conflict => Self::Transient(Box::new(error)),
            Failure::Refused => Self::Poison(format!("the database refused it: {error}")),
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
    type Key: Hash + Ord + Clone + Send + Sync;

    /// The row a message writes. Messages with equal keys are applied one batch at a time, in
    /// the order they arrived; a batch is applied in ascending key order.
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
