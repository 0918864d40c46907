//! The consumer of `order.payments`: decides each order's payment at most once, each user's in
//! the order their orders were placed, and publishes the outcome.
//!
//! One transaction (the consumer's; several messages may share it) holds all of a message's
//! effects: its inbox row and its user's line taken ([`sequences::admit`]), then the decision
//! and its debit ([`ledger::debit`]) — or the request parked until its predecessor is decided
//! ([`sequences`]) — and the `payment.status` outbox row. Two layers stop a double charge:
//! - the inbox drops a message id seen before;
//! - the `payments` table answers an order seen before — under any message id, a reminder from
//!   orders say — with the decision already taken, and its keys (with the ledger's one debit per
//!   order) make the database refuse a second decision even if two requests race.
//!
//! A request that arrives after its deadline (by this service's clock) is declined with
//! `payment_timeout`; if orders' clock disagrees, the worst case is a debit of an order orders
//! has already given up, which orders then has refunded — never money kept for nothing.

use crate::{
    ledger::{self, Decided, ToDecide},
    sequences::{self, Line, Waiting},
};
use gozon_contract::{
    domain::UserId,
    messages::{FailureReason, PaymentOutcome, PaymentRequest, PaymentResult, Seq},
};
use gozon_messaging::{
    consumer::{Handler, HandlerError, Incoming},
    outbox::Wakeup,
    outgoing::Outgoing,
};
use gozon_telemetry::trace::TraceParent;
use sqlx::{PgConnection, PgPool};
use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

/// Processes payment requests.
pub struct DecidePayments {
    /// The queue consumed, for metric labels.
    pub payment_requests_queue: String,
    pub wakeup: Wakeup,
    pub payment_status_queue: String,
}

/// A request to decide, with where its answer goes.
struct Candidate {
    message_id: String,
    trace: TraceParent,
    /// The message's span, to enter for its answer (a parked request's is gone).
    span: Option<tracing::Span>,
    request: PaymentRequest,
    /// It waits in `parked_requests` already.
    parked: bool,
}

impl DecidePayments {
    /// Every decision's counter, at 0 from the start (see the consumer's counters).
    pub fn count_decisions_from_zero() {
        let outcomes = FailureReason::ALL.map(FailureReason::as_str);
        for outcome in ["succeeded", "repeated", "parked"]
            .into_iter()
            .chain(outcomes)
        {
            metrics::counter!("payment_decisions_total", "outcome" => outcome).increment(0);
        }
    }

    /// Records `arrived` (messages just delivered) in the inbox, drops those seen before, and
    /// decides the rest in their users' lines ([`decide_in_line`](Self::decide_in_line)).
    async fn decide(
        &self,
        db: &mut PgConnection,
        arrived: Vec<Candidate>,
        out: &mut Outgoing,
    ) -> Result<(), HandlerError> {
        let ids: Vec<&str> = arrived.iter().map(|c| c.message_id.as_str()).collect();
        let users: Vec<&UserId> = arrived.iter().map(|c| &c.request.user_id).collect();
        let (fresh, lines) = sequences::admit(db, &ids, &users).await?;
        // A message id recorded now is its first copy's: a second copy in the batch is seen.
        let mut unclaimed: HashSet<String> = fresh.into_iter().collect();
        let (fresh, seen): (Vec<Candidate>, Vec<Candidate>) = arrived
            .into_iter()
            .partition(|candidate| unclaimed.remove(&candidate.message_id));
        for candidate in &seen {
            tracing::debug!(message_id = candidate.message_id, order_id = %candidate.request.order_id, "duplicate payment request ignored");
        }
        metrics::counter!("messages_duplicate_total", "queue" => self.payment_requests_queue.clone())
            .increment(seen.len() as u64);
        self.decide_in_line(db, fresh, &lines, &HashMap::new(), out)
            .await
    }

    /// Decides what can be decided now of `arrived` and of what waits in the lines of their
    /// users (held by the caller, standing at `lines`), in each user's order; parks what must
    /// wait; answers what was decided. With `pass_over`, places of those users up to the given
    /// one that nothing fills are given up first ([`sequences::plan`]).
    async fn decide_in_line(
        &self,
        db: &mut PgConnection,
        arrived: Vec<Candidate>,
        lines: &HashMap<UserId, Line>,
        pass_over: &HashMap<UserId, Seq>,
        out: &mut Outgoing,
    ) -> Result<(), HandlerError> {
        // What waits behind the arrivals, for the users who have anything waiting.
        let waiting_users: Vec<&UserId> = lines
            .iter()
            .filter(|(_, line)| line.parked > 0)
            .map(|(user, _)| user)
            .collect();
        let mut candidates = arrived;
        if !waiting_users.is_empty() {
            for Waiting {
                message_id,
                traceparent,
                request,
            } in sequences::parked(db, &waiting_users).await?
            {
                candidates.push(Candidate {
                    message_id,
                    trace: TraceParent::parse(&traceparent).unwrap_or_default(),
                    span: None,
                    request,
                    parked: true,
                });
            }
        }
        let mut by_user: HashMap<UserId, Vec<(Seq, Candidate)>> = HashMap::new();
        for candidate in candidates {
            by_user
                .entry(candidate.request.user_id.clone())
                .or_default()
                .push((candidate.request.seq, candidate));
        }
        let now = OffsetDateTime::now_utc();
        let (mut deciding, mut parking) = (Vec::new(), Vec::new());
        for (user, requests) in by_user {
            let line = lines.get(&user).copied().unwrap_or_default();
            let plan = sequences::plan(line, requests, pass_over.get(&user).copied());
            for candidate in plan.decide {
                let in_time = now <= candidate.request.deadline;
                deciding.push((candidate, in_time));
            }
            deciding.extend(plan.late.into_iter().map(|candidate| (candidate, false)));
            parking.extend(plan.park.into_iter().filter(|candidate| !candidate.parked));
        }
        let to_decide: Vec<ToDecide> = deciding
            .iter()
            .map(|(candidate, in_time)| ToDecide {
                request: &candidate.request,
                in_time: *in_time,
            })
            .collect();
        let decided = ledger::debit(db, &to_decide).await?;
        for ((candidate, _), decided) in deciding.iter().zip(decided) {
            match &candidate.span {
                Some(span) => span.in_scope(|| self.answer(candidate, decided, out))?,
                None => self.answer(candidate, decided, out)?,
            }
        }
        let parking: Vec<Waiting> = parking
            .into_iter()
            .map(|candidate| {
                tracing::info!(message_id = candidate.message_id, order_id = %candidate.request.order_id, seq = candidate.request.seq.get(), "payment request parked until its predecessor is decided");
                Waiting {
                    message_id: candidate.message_id,
                    traceparent: candidate.trace.to_string(),
                    request: candidate.request,
                }
            })
            .collect();
        metrics::counter!("payment_decisions_total", "outcome" => "parked")
            .increment(parking.len() as u64);
        sequences::park(db, &parking.iter().collect::<Vec<_>>()).await?;
        Ok(())
    }

    /// Publishes what was decided for `candidate`, and counts it.
    fn answer(
        &self,
        candidate: &Candidate,
        decided: Decided,
        out: &mut Outgoing,
    ) -> Result<(), HandlerError> {
        let (message_id, request) = (&candidate.message_id, &candidate.request);
        let order_id = request.order_id;
        let result = match decided {
            Decided::Before {
                user_id,
                amount,
                outcome,
            } => {
                tracing::info!(message_id, %order_id, "order already decided; repeating the decision");
                metrics::counter!("payment_decisions_total", "outcome" => "repeated").increment(1);
                PaymentResult {
                    order_id,
                    user_id,
                    amount,
                    outcome,
                }
            }
            Decided::Now(outcome) => {
                let counted = match outcome {
                    PaymentOutcome::Paid => "succeeded",
                    PaymentOutcome::Declined(reason) => reason.as_str(),
                };
                metrics::counter!("payment_decisions_total", "outcome" => counted).increment(1);
                PaymentResult {
                    order_id,
                    user_id: request.user_id.clone(),
                    amount: request.amount,
                    outcome,
                }
            }
        };
        out.publish(&self.payment_status_queue, &result, &candidate.trace)?;
        tracing::info!(message_id, %order_id, seq = request.seq.get(), outcome = ?result.outcome, "payment decided");
        Ok(())
    }

    /// Declines every parked request whose deadline passed while its predecessor never came,
    /// passing over the missing places, and decides what waited behind it — every `interval`
    /// until `stop` fires. Sets the gauges of what is parked on the way.
    pub async fn sweep_overdue(self, pool: PgPool, interval: Duration, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            sequences::record_parked(&pool).await;
            match self.sweep_once(&pool).await {
                Ok(0) => {}
                Ok(users) => {
                    tracing::warn!(
                        users,
                        "parked requests past their deadline declined; their lines moved on"
                    );
                    self.wakeup.notify();
                }
                Err(error) => {
                    tracing::warn!(%error, "sweep of parked requests failed; retrying later")
                }
            }
        }
    }

    /// One sweep; returns how many users' lines it moved on.
    pub async fn sweep_once(&self, pool: &PgPool) -> Result<usize, HandlerError> {
        let mut tx = pool.begin().await?;
        let overdue = sequences::overdue(&mut tx, 100).await?;
        if overdue.is_empty() {
            return Ok(0);
        }
        let users: Vec<&UserId> = overdue.iter().map(|(user, _)| user).collect();
        let (_, lines) = sequences::admit(&mut tx, &[], &users).await?;
        let pass_over: HashMap<UserId, Seq> = overdue.iter().cloned().collect();
        let mut out = Outgoing::default();
        self.decide_in_line(&mut tx, Vec::new(), &lines, &pass_over, &mut out)
            .await?;
        out.write(&mut tx).await?;
        tx.commit().await?;
        Ok(overdue.len())
    }
}

impl Handler for DecidePayments {
    type Message = PaymentRequest;
    /// Batches take a user's line one at a time and lock lines and accounts in user order, so
    /// they neither contend within an instance nor deadlock across instances.
    type Key = UserId;

    fn key(request: &PaymentRequest) -> UserId {
        request.user_id.clone()
    }

    async fn handle(
        &self,
        tx: &mut PgConnection,
        message_id: &str,
        trace: &TraceParent,
        request: &PaymentRequest,
        out: &mut Outgoing,
    ) -> Result<(), HandlerError> {
        // The consumer runs this inside the message's span already.
        let candidate = Candidate {
            message_id: message_id.to_owned(),
            trace: *trace,
            span: None,
            request: request.clone(),
            parked: false,
        };
        self.decide(tx, vec![candidate], out).await
    }

    /// The whole batch's requests, in their users' lines together.
    async fn handle_together(
        &self,
        tx: &mut PgConnection,
        batch: &[Incoming<'_, PaymentRequest>],
        out: &mut Outgoing,
    ) -> Result<Vec<bool>, HandlerError> {
        let arrived = batch
            .iter()
            .map(|incoming| Candidate {
                message_id: incoming.message_id.to_owned(),
                trace: *incoming.trace,
                span: Some(incoming.span.clone()),
                request: incoming.message.clone(),
                parked: false,
            })
            .collect();
        self.decide(tx, arrived, out).await?;
        Ok(vec![true; batch.len()])
    }

    fn committed(&self) {
        self.wakeup.notify();
    }
}
