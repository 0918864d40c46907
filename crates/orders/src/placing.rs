//! `POST /orders` commits in groups: orders placed at about the same time share one transaction.
//!
//! A group is written by one statement ([`place`]), and each request is answered only after the
//! commit that made its order durable — but `BEGIN` and `COMMIT`, with the commit's WAL flush,
//! and the statement's own start-up (its plan, its executor, the tables' indexes and
//! constraints opened) are paid once per group instead of once per order. A group is what
//! has queued up while the writers (`ORDERS_PLACE_WRITERS` transactions at once) were busy: one
//! order when the service is idle (no wait is added to gather more), up to [`MAX_GROUP`] under
//! load.
//!
//! The statement numbers each user's orders (`seq`: one more than the user's last, under the
//! user's row of `user_sequences`), so an order placed after another's answer always comes
//! later in its user's line — the order payments decides them in.
//!
//! What one request does never decides another's fate:
//! - a refusal that writes nothing (an idempotency key used with another request) is that
//!   request's answer, and the group goes on;
//! - one key twice in a group: the second is written by a later statement in the same
//!   transaction, where it finds the first's key and is answered as its retry;
//! - a statement that fails aborts the transaction, so the group is rolled back and each of its
//!   orders is written again alone, in its own transaction;
//! - a failed `BEGIN` or `COMMIT` is every member's answer (503): after a failed commit the
//!   outcome is unknown, exactly as for a single order, and a client retries with its
//!   `Idempotency-Key` to learn it.

use crate::{
    error::ApiError,
    order::{COLUMNS, NewOrder, Order, Stamp, rfc3339},
    status::OrderEvent,
};
use axum::{http::StatusCode, response::Response};
use gozon_contract::{domain::OrderId, messages::UnnumberedPaymentRequest};
use gozon_messaging::outbox::{self, Wakeup};
use gozon_runtime::idempotency::{self, Claim, IdempotencyKey, KeyedResponse};
use gozon_telemetry::trace::TraceParent;
use serde_json::json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use std::{collections::HashMap, sync::Arc, time::Duration};
use tokio::sync::{Mutex, mpsc, oneshot};

/// Most orders in one group.
pub const MAX_GROUP: usize = 64;

/// The route whose idempotency keys the orders are stored under.
const ROUTE: &str = "POST /orders";

/// An order to write, with what is written with it ([`Placement::new`]).
pub struct Placement {
    pub stamp: Stamp,
    /// What the client asked for (a replay compares it with the stored request).
    pub new: NewOrder,
    pub key: Option<IdempotencyKey>,
    pub keyed: KeyedResponse,
    /// Its payment request, but for its `seq`, which the statement that numbers the order adds.
    pub payment_request: outbox::Message,
}

impl Placement {
    /// A new order of `new`, stamped now (`created_at` is when its write was asked for), due to
    /// be paid within `deadline`, with its payment request for `payments_queue` (a child of
    /// `trace`) and, if the request has a `key`, the response to store under it.
    pub fn new(
        new: NewOrder,
        key: Option<IdempotencyKey>,
        deadline: Duration,
        payments_queue: &str,
        trace: &TraceParent,
    ) -> Result<Self, ApiError> {
        let stamp = Stamp::now(deadline);
        let keyed = KeyedResponse::new(
            ROUTE,
            &new.user_id,
            key.as_ref(),
            &new,
            StatusCode::CREATED,
            &stamp.shown(&new),
        )?;
        let request = UnnumberedPaymentRequest {
            order_id: stamp.id,
            user_id: &new.user_id,
            amount: new.amount,
            deadline: stamp.payment_deadline,
        };
        let payment_request = outbox::Message::new(payments_queue, &request, trace)?;
        Ok(Self {
            stamp,
            new,
            key,
            keyed,
            payment_request,
        })
    }
}

/// What placing an order came to.
pub enum Placed {
    /// Written and committed.
    New(Order),
    /// The key was used before with the same request: the first response.
    Replayed(Response),
}

struct Job {
    placement: Placement,
    answer: oneshot::Sender<Result<Placed, ApiError>>,
}

/// The queue of orders to write, shared by the handlers; the writers end when the last handle
/// is dropped and the queue is empty.
#[derive(Debug, Clone)]
pub struct Placing {
    jobs: mpsc::Sender<Job>,
}

/// What every writer shares.
#[derive(Debug, Clone)]
struct Writers {
    pool: PgPool,
    wakeup: Wakeup,
    /// How long after placing to ask payments again if no answer came ([`crate::reminders`]).
    remind_after: Duration,
}

impl Placing {
    /// Starts `writers` writers on `pool`; they wake the relay (`wakeup`) after each commit.
    pub fn start(pool: PgPool, writers: u16, wakeup: Wakeup, remind_after: Duration) -> Self {
        let count = usize::from(writers.max(1));
        let (jobs, queue) = mpsc::channel(count * MAX_GROUP);
        let queue = Arc::new(Mutex::new(queue));
        let writers = Writers {
            pool,
            wakeup,
            remind_after,
        };
        for _ in 0..count {
            tokio::spawn(write(writers.clone(), queue.clone()));
        }
        Self { jobs }
    }

    /// Writes `placement` with the next group, and answers once that group has committed.
    pub async fn place(&self, placement: Placement) -> Result<Placed, ApiError> {
        let (answer, answered) = oneshot::channel();
        self.jobs
            .send(Job { placement, answer })
            .await
            .map_err(|_| ApiError::WritersStopped)?;
        answered.await.map_err(|_| ApiError::WritersStopped)?
    }
}

/// One writer: takes what has queued up (at least one order), writes it as a group, repeats.
async fn write(writers: Writers, queue: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let group = {
            let mut queue = queue.lock().await;
            let Some(first) = queue.recv().await else {
                return;
            };
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match queue.try_recv() {
                    Ok(job) => group.push(job),
                    Err(_) => break,
                }
            }
            group
        };
        metrics::histogram!("order_commit_group_size").record(group.len() as f64);
        if let Err(group) = write_together(&writers, group).await {
            // A statement failed, and with it the transaction: each alone, so that a failure
            // is only its own request's.
            for job in group {
                // A group of one answers even a failed statement itself.
                let _ = write_together(&writers, vec![job]).await;
            }
        }
    }
}

/// Writes `group` in one transaction and answers every member; hands the group back, unanswered,
/// if a statement failed and it had more than one member.
async fn write_together(writers: &Writers, group: Vec<Job>) -> Result<(), Vec<Job>> {
    let mut tx = match writers.pool.begin().await {
        Ok(tx) => tx,
        Err(error) => {
            answer_all(group, &Arc::new(error));
            return Ok(());
        }
    };
    // Each member's answer with its index in the group; every member is in exactly one round.
    let mut answers = Vec::with_capacity(group.len());
    for round in rounds(&group) {
        let placements: Vec<&Placement> = round.iter().map(|&i| &group[i].placement).collect();
        match apply(&mut tx, &placements, writers.remind_after).await {
            Ok(applied) => answers.extend(round.into_iter().zip(applied)),
            Err(error) => {
                drop(tx); // rolled back
                if group.len() > 1 {
                    return Err(group);
                }
                answer_all(group, &Arc::new(error));
                return Ok(());
            }
        }
    }
    if let Err(error) = tx.commit().await {
        answer_all(group, &Arc::new(error));
        return Ok(());
    }
    if answers
        .iter()
        .any(|(_, answer)| matches!(answer, Ok(Placed::New(_))))
    {
        writers.wakeup.notify();
    }
    answers.sort_unstable_by_key(|&(i, _)| i);
    for (job, (_, answer)) in group.into_iter().zip(answers) {
        // A client that went away no longer waits for its answer; its order stands.
        let _ = job.answer.send(answer);
    }
    Ok(())
}

/// The group's members (their indexes) in the statements that write them: every first use of a
/// key in the first, with every order without one; a key's second use in the second; and so on.
fn rounds(group: &[Job]) -> Vec<Vec<usize>> {
    let mut uses: HashMap<(&str, &IdempotencyKey), usize> = HashMap::new();
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    for (i, job) in group.iter().enumerate() {
        let placement = &job.placement;
        let round = match &placement.key {
            None => 0,
            Some(key) => {
                let used = uses
                    .entry((placement.new.user_id.as_str(), key))
                    .or_insert(0);
                *used += 1;
                *used - 1
            }
        };
        if rounds.len() <= round {
            rounds.resize_with(round + 1, Vec::new);
        }
        rounds[round].push(i);
    }
    rounds
}

/// The same database failure as every member's answer.
fn answer_all(group: Vec<Job>, error: &Arc<sqlx::Error>) {
    for job in group {
        let _ = job.answer.send(Err(ApiError::GroupDatabase(error.clone())));
    }
}

/// Writes `placements` (their keys differ) in one statement within the group's transaction, and
/// answers each: its order, or the answer its key already has. A database error fails them all.
async fn apply(
    db: &mut PgConnection,
    placements: &[&Placement],
    remind_after: Duration,
) -> Result<Vec<Result<Placed, ApiError>>, sqlx::Error> {
    let mut written: HashMap<OrderId, Order> = place(db, placements, remind_after)
        .await?
        .into_iter()
        .map(|order| (order.id, order))
        .collect();
    let mut answers = Vec::with_capacity(placements.len());
    for placement in placements {
        let answer = match (written.remove(&placement.stamp.id), &placement.key) {
            (Some(order), _) => Ok(Placed::New(order)),
            // Only a keyed request writes nothing: its key was used before.
            (None, None) => Err(ApiError::Corrupt(
                "an order without a key was not written".into(),
            )),
            (None, Some(key)) => {
                match idempotency::replay(db, ROUTE, &placement.new.user_id, key, &placement.new)
                    .await?
                {
                    Claim::Replay(first) => Ok(Placed::Replayed(first)),
                    Claim::Conflict => Err(ApiError::IdempotencyConflict),
                    Claim::New => Err(ApiError::Corrupt(
                        "a used key has no stored response".into(),
                    )),
                }
            }
        };
        answers.push(answer);
    }
    Ok(answers)
}

/// Writes each of `placements` in one statement: for a keyed request, the key with its response
/// first ([`KeyedResponse::push_admitted`]); then — for each request admitted — the order,
/// numbered in its user's line, with its first two history lines, and its payment request, that
/// number added, into the outbox. Returns the orders written, in no particular order; a keyed
/// request whose order is not among them wrote nothing: its key was used before. The keys of one
/// call must differ.
pub async fn place(
    db: &mut PgConnection,
    placements: &[&Placement],
    remind_after: Duration,
) -> sqlx::Result<Vec<Order>> {
    let keyed: Vec<&KeyedResponse> = placements.iter().map(|p| &p.keyed).collect();
    let requests: Vec<&outbox::Message> = placements.iter().map(|p| &p.payment_request).collect();
    let mut query = QueryBuilder::<Postgres>::new("WITH ");
    KeyedResponse::push_admitted(&mut query, &keyed, "admitted");
    query.push(", input AS (SELECT * FROM unnest(");
    query.push_bind(each(placements, |p| p.stamp.id.as_uuid()));
    query.push("::uuid[], ");
    query.push_bind(each(placements, |p| p.new.user_id.as_str()));
    query.push("::text[], ");
    query.push_bind(each(placements, |p| p.new.amount.kopecks()));
    query.push("::bigint[], ");
    query.push_bind(each(placements, |p| p.new.description.as_str()));
    query.push("::text[], ");
    query.push_bind(each(placements, |p| p.stamp.payment_deadline));
    query.push("::timestamptz[], ");
    query.push_bind(each(placements, |p| p.stamp.created_at));
    query.push("::timestamptz[], ");
    query.push_bind(each(placements, |p| json!({ "amount": p.new.amount })));
    query.push("::jsonb[], ");
    query.push_bind(each(
        placements,
        |p| json!({ "deadline": rfc3339(p.stamp.payment_deadline) }),
    ));
    query.push(
        "::jsonb[]) WITH ORDINALITY AS i(id, user_id, amount, description, payment_deadline, \
           created_at, placed, requested, n)), \
         going_ahead AS ( \
           SELECT input.*, row_number() OVER same_user AS k, count(*) OVER same_user AS of \
           FROM input JOIN admitted USING (n) WINDOW same_user AS (PARTITION BY user_id ORDER BY n \
             ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)), \
         counted AS ( \
           INSERT INTO user_sequences (user_id, last_seq) \
           SELECT user_id, count(*) FROM going_ahead GROUP BY user_id ORDER BY user_id \
           ON CONFLICT (user_id) DO UPDATE SET last_seq = user_sequences.last_seq + EXCLUDED.last_seq \
           RETURNING user_id, last_seq), \
         numbered AS ( \
           SELECT going_ahead.*, counted.last_seq - going_ahead.of + going_ahead.k AS seq \
           FROM going_ahead JOIN counted USING (user_id)), \
         changed AS ( \
           INSERT INTO orders (id, user_id, seq, amount, description, payment_deadline, \
             created_at, updated_at, remind_at) \
           SELECT id, user_id, seq, amount, description, payment_deadline, created_at, created_at, \
             created_at + ",
    );
    query.push_bind(remind_after.as_secs_f64());
    query.push(format_args!(
        " * interval '1 second' FROM numbered RETURNING {COLUMNS}), \
         lines AS ( \
           INSERT INTO order_events (order_id, at, event, detail) \
           SELECT numbered.id, numbered.created_at, e.event, e.detail FROM numbered, \
             unnest(ARRAY["
    ));
    query.push_bind(OrderEvent::Placed);
    query.push(", ");
    query.push_bind(OrderEvent::PaymentRequested);
    query.push(
        "]::text[], ARRAY[numbered.placed, numbered.requested]) AS e(event, detail)), \
         requests AS ( \
           SELECT m.message_id, m.queue, m.payload || jsonb_build_object('seq', numbered.seq) \
             AS payload, m.traceparent \
           FROM ",
    );
    outbox::Message::push_rows(&mut query, &requests, "m");
    query.push(" JOIN numbered USING (n)), sent AS (");
    outbox::Message::push_insert_from(&mut query, "requests");
    query.push(") SELECT * FROM changed");
    query.build_query_as().fetch_all(db).await
}

/// One column of `placements`, as an array to bind.
fn each<'p, T>(placements: &[&'p Placement], column: impl Fn(&'p Placement) -> T) -> Vec<T> {
    placements.iter().map(|&p| column(p)).collect()
}
