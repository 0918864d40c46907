//! One batch's way to a commit, and the failure policy on the way ([`crate::retry`]).
//!
//! A batch is applied in one transaction: what the handler can apply together first, then each
//! remaining message alone, then what they send, then the commit. When that fails:
//! - a message the handler calls poison is left out and the rest applied again;
//! - the database unavailable: the batch waits ([`retry::unavailable`]) and is tried again,
//!   for as long as it takes;
//! - a conflict: the batch waits ([`retry::conflict`]) and is tried again, at most
//!   [`MAX_CONFLICTS`] times; then its messages are applied one at a time, and one that still
//!   conflicts [`MAX_CONFLICTS`] times alone is dead-lettered (`consumer_gave_up_total`);
//! - a poison refusal of what was applied together, which cannot name its message: the messages
//!   are applied one at a time, by [`Handler::handle`], whose refusal names one.

use super::{Consumer, Handler, HandlerError, Incoming, Parsed};
use crate::{
    outgoing::Outgoing,
    retry::{self, MAX_CONFLICTS},
};
use backon::BackoffBuilder;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// What became of one message of a batch.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Verdict {
    /// Not applied (yet, or ever: the consumer is stopping).
    Pending,
    /// Applied by a committed transaction: acknowledge it.
    Applied,
    /// Can never be applied, for this reason: dead-letter it.
    DeadLetter(String),
}

/// How one transaction over a batch ended.
enum Attempt {
    Committed,
    /// The message at this index can never be applied.
    Poison(usize, String),
    /// One of the messages applied together can never be applied; which is not known.
    Unattributed(String),
}

/// How trying a batch until it commits ended.
enum Tried {
    Committed,
    /// The database kept answering with a conflict.
    GaveUp(HandlerError),
    /// A message applied together with others can never be applied; which is not known.
    Unattributed(String),
    /// Stopping: what is pending stays unacknowledged.
    Stopped,
}

impl<H: Handler> Consumer<H> {
    /// Applies `batch` (sorted by key, so that every transaction takes its row locks in one
    /// order and none deadlocks with another instance's) and returns each message's verdict.
    pub(super) async fn apply_batch(
        &self,
        batch: &mut [Parsed<H::Message>],
        stop: &CancellationToken,
    ) -> Vec<Verdict> {
        // Stable: a key's messages keep their arrival order.
        batch.sort_by(|a, b| H::key(&a.message).cmp(&H::key(&b.message)));
        let mut verdicts = vec![Verdict::Pending; batch.len()];
        let isolate = match self.until_committed(batch, &mut verdicts, None, stop).await {
            Tried::GaveUp(error) => {
                tracing::warn!(queue = %self.queue, messages = batch.len(), %error, "batch kept conflicting; applying its messages one at a time");
                true
            }
            Tried::Unattributed(reason) => {
                tracing::warn!(queue = %self.queue, messages = batch.len(), %reason, "a message of the batch cannot be applied; applying them one at a time");
                true
            }
            Tried::Committed | Tried::Stopped => false,
        };
        if isolate {
            for index in 0..batch.len() {
                if verdicts[index] != Verdict::Pending {
                    continue;
                }
                match self
                    .until_committed(batch, &mut verdicts, Some(index), stop)
                    .await
                {
                    Tried::GaveUp(error) => {
                        let reason = format!("gave up after {MAX_CONFLICTS} conflicts: {error}");
                        tracing::error!(queue = %self.queue, message_id = %batch[index].message_id, %reason, "message keeps failing; dead-lettering it");
                        metrics::counter!("consumer_gave_up_total", "queue" => self.queue.clone())
                            .increment(1);
                        verdicts[index] = Verdict::DeadLetter(reason);
                    }
                    // Alone, a message is applied by `handle`, whose poison names it.
                    Tried::Committed | Tried::Unattributed(_) => {}
                    Tried::Stopped => break,
                }
            }
        }
        verdicts
    }

    /// Applies the pending messages of `batch` (or only the one at `only`) in one transaction,
    /// again and again until it commits: without the messages found poison, after a wait when
    /// the database is unavailable or conflicts — the latter at most [`MAX_CONFLICTS`] times.
    async fn until_committed(
        &self,
        batch: &[Parsed<H::Message>],
        verdicts: &mut [Verdict],
        only: Option<usize>,
        stop: &CancellationToken,
    ) -> Tried {
        let mut unavailable = retry::unavailable().build();
        let mut conflicting = retry::conflict().build();
        let mut conflicts = 0;
        loop {
            let error = match self.attempt(batch, verdicts, only).await {
                Ok(Attempt::Committed) => {
                    for (index, verdict) in verdicts.iter_mut().enumerate() {
                        if *verdict == Verdict::Pending && only.is_none_or(|only| only == index) {
                            *verdict = Verdict::Applied;
                        }
                    }
                    return Tried::Committed;
                }
                Ok(Attempt::Poison(index, reason)) => {
                    verdicts[index] = Verdict::DeadLetter(reason);
                    continue;
                }
                Ok(Attempt::Unattributed(reason)) => return Tried::Unattributed(reason),
                Err(error) => error,
            };
            let delay = if let HandlerError::Transient(_) = &error {
                conflicts += 1;
                if conflicts >= MAX_CONFLICTS {
                    return Tried::GaveUp(error);
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
                _ = stop.cancelled() => return Tried::Stopped,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// One transaction for the pending messages of `batch` (or only the one at `only`): those
    /// the handler applies together first (not when applying one alone), then each of the rest.
    /// Stops at the first poison verdict, rolling back, so the caller can apply the rest again
    /// without it.
    async fn attempt(
        &self,
        batch: &[Parsed<H::Message>],
        verdicts: &[Verdict],
        only: Option<usize>,
    ) -> Result<Attempt, HandlerError> {
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
        // A message found applied before is acknowledged on what was read: the commit waits
        // until the synchronous standby has that too (crate::standby).
        let mut tx = crate::standby::begin(&self.pool).await?;
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
                Err(HandlerError::Poison(reason)) => return Ok(Attempt::Unattributed(reason)),
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
                Err(HandlerError::Poison(reason)) => return Ok(Attempt::Poison(index, reason)),
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
        Ok(Attempt::Committed)
    }
}
