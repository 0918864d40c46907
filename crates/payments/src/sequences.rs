//! Each user's line: their payment requests are decided in the order their orders were placed.
//!
//! Orders numbers each user's orders (`seq`: 1, 2, …) as it places them, so an order placed after
//! another's answer always has the higher number. Here each user has a row of
//! `payment_sequences`: every request up to `decided_through` is decided. A request is decided
//! only when it is next in line (`decided_through + 1`); one that arrives early — another
//! instance, a redelivery or a slow relay overtook its predecessor — is *parked*
//! (`parked_requests`, and acknowledged) until its predecessor is decided, and then decided in
//! the same transaction. Deciding or parking a user's request takes that user's row lock first
//! ([`admit`]), so a user's requests are decided one at a time whichever instance holds them;
//! every other user's go on.
//!
//! How long a parked request waits: until its predecessor arrives — normally milliseconds — or
//! until its own deadline passes while the predecessor is still missing (lost to a bug, or
//! dead-lettered): then [`sweep`] declines it (`payment_timeout`), passes over the missing places
//! (a request for one of them that still comes is declined as late: its own deadline, earlier
//! still, has passed too) and decides what was parked behind. What a user sees meanwhile: the
//! later order stays `NEW`; orders' own deadline sweep cancels it at the same moment. What an
//! operator sees: `payment_requests_parked` and the age of the oldest
//! (`payment_requests_parked_oldest_seconds`).
//!
//! [`plan`] is the rule, over data; the statements around it only read and write what it says.

use gozon_contract::{
    domain::{Amount, OrderId, UserId},
    messages::{PaymentRequest, Seq},
};
use sqlx::PgConnection;
use std::collections::HashMap;
use time::OffsetDateTime;

/// A user's place in line, as [`admit`] read it under the user's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Line {
    /// Every request up to this place is decided (or passed over).
    pub decided_through: i64,
    /// Requests further on, waiting.
    pub parked: i32,
}

/// What to do with a user's requests now.
#[derive(Debug, PartialEq, Eq)]
pub struct Plan<T> {
    /// Next in line, in order: decide them, one after the other.
    pub decide: Vec<T>,
    /// Of a place already decided or passed over: answered from the decision if there is one,
    /// else declined as late.
    pub late: Vec<T>,
    /// Further on than the next place: park them.
    pub park: Vec<T>,
    /// Where the line stands once `decide` is decided.
    pub decided_through: i64,
}

/// Sorts `requests` (each with its place) of one user standing at `line`. With `pass_over`, the
/// places up to it that nothing fills are given up first ([`sweep`]).
pub fn plan<T>(line: Line, requests: Vec<(Seq, T)>, pass_over: Option<Seq>) -> Plan<T> {
    let mut requests = requests;
    requests.sort_by_key(|(seq, _)| *seq);
    let mut through = line.decided_through;
    if let Some(pass_over) = pass_over {
        // Passing over stops short of the first request at or before it: that one is decided.
        let first = requests
            .iter()
            .map(|(seq, _)| seq.get())
            .find(|&seq| seq > through)
            .unwrap_or(i64::MAX);
        through = through.max(pass_over.get().min(first) - 1);
    }
    let mut plan = Plan {
        decide: Vec::new(),
        late: Vec::new(),
        park: Vec::new(),
        decided_through: through,
    };
    for (seq, request) in requests {
        let seq = seq.get();
        // Sorted: a second request for a place decided just before it is late too.
        if seq <= plan.decided_through {
            plan.late.push(request);
        } else if seq == plan.decided_through + 1 {
            plan.decided_through = seq;
            plan.decide.push(request);
        } else {
            plan.park.push(request);
        }
    }
    plan
}

/// A payment request with what its answer needs: its message id and trace.
#[derive(Debug, Clone)]
pub struct Waiting {
    pub message_id: String,
    pub traceparent: String,
    pub request: PaymentRequest,
}

/// Records `message_ids` in the inbox and takes the line of each of `users` (made at 0 if it is
/// new), locked for this transaction. Returns the message ids recorded now — the others were
/// processed before — and each user's line as it stands under the lock.
pub async fn admit(
    db: &mut PgConnection,
    message_ids: &[&str],
    users: &[&UserId],
) -> sqlx::Result<(Vec<String>, HashMap<UserId, Line>)> {
    #[derive(sqlx::FromRow)]
    struct Row {
        fresh: Option<String>,
        user_id: Option<UserId>,
        decided_through: Option<i64>,
        parked: Option<i32>,
    }
    let mut users: Vec<&str> = users.iter().map(|user| user.as_str()).collect();
    users.sort_unstable();
    users.dedup();
    // Users in one order in every transaction: lines are locked without deadlocks.
    let rows: Vec<Row> = sqlx::query_as(
        "WITH fresh AS ( \
           INSERT INTO inbox (message_id) SELECT unnest($1::text[]) \
           ON CONFLICT DO NOTHING RETURNING message_id), \
         lines AS ( \
           INSERT INTO payment_sequences (user_id) SELECT unnest($2::text[]) \
           ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id \
           RETURNING user_id, decided_through, parked) \
         SELECT message_id AS fresh, NULL::text AS user_id, NULL::bigint AS decided_through, \
           NULL::int AS parked FROM fresh \
         UNION ALL SELECT NULL, user_id, decided_through, parked FROM lines",
    )
    .bind(message_ids)
    .bind(users)
    .fetch_all(db)
    .await?;
    let mut fresh = Vec::new();
    let mut lines = HashMap::new();
    for row in rows {
        match row {
            Row {
                fresh: Some(id), ..
            } => fresh.push(id),
            Row {
                user_id: Some(user),
                decided_through: Some(decided_through),
                parked: Some(parked),
                ..
            } => {
                lines.insert(
                    user,
                    Line {
                        decided_through,
                        parked,
                    },
                );
            }
            _ => {}
        }
    }
    Ok((fresh, lines))
}

/// The requests parked for `users` (whose lines the caller holds).
pub async fn parked(db: &mut PgConnection, users: &[&UserId]) -> sqlx::Result<Vec<Waiting>> {
    #[derive(sqlx::FromRow)]
    struct Row {
        message_id: String,
        traceparent: String,
        order_id: OrderId,
        user_id: UserId,
        amount: Amount,
        deadline: OffsetDateTime,
        seq: Seq,
    }
    let users: Vec<&str> = users.iter().map(|user| user.as_str()).collect();
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT message_id, traceparent, order_id, user_id, amount, deadline, seq \
         FROM parked_requests WHERE user_id = ANY($1)",
    )
    .bind(users)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| Waiting {
            message_id: row.message_id,
            traceparent: row.traceparent,
            request: PaymentRequest {
                order_id: row.order_id,
                user_id: row.user_id,
                amount: row.amount,
                deadline: row.deadline,
                seq: row.seq,
            },
        })
        .collect())
}

/// Parks `waiting` (of users whose lines the caller holds) until their turn; one already parked
/// at its place stays as it is.
pub async fn park(db: &mut PgConnection, waiting: &[&Waiting]) -> sqlx::Result<()> {
    if waiting.is_empty() {
        return Ok(());
    }
    let column = |value: fn(&Waiting) -> String| waiting.iter().map(|w| value(w)).collect();
    let (message_ids, traceparents): (Vec<String>, Vec<String>) = (
        column(|w| w.message_id.clone()),
        column(|w| w.traceparent.clone()),
    );
    sqlx::query(
        "WITH parked AS ( \
           INSERT INTO parked_requests \
             (message_id, traceparent, order_id, user_id, amount, deadline, seq) \
           SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::text[], $5::bigint[], \
             $6::timestamptz[], $7::bigint[]) \
           ON CONFLICT (user_id, seq) DO NOTHING RETURNING user_id) \
         UPDATE payment_sequences s SET parked = s.parked + p.count \
         FROM (SELECT user_id, count(*) FROM parked GROUP BY user_id) AS p \
         WHERE s.user_id = p.user_id",
    )
    .bind(message_ids)
    .bind(traceparents)
    .bind(
        waiting
            .iter()
            .map(|w| w.request.order_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        waiting
            .iter()
            .map(|w| &w.request.user_id)
            .collect::<Vec<_>>(),
    )
    .bind(waiting.iter().map(|w| w.request.amount).collect::<Vec<_>>())
    .bind(
        waiting
            .iter()
            .map(|w| w.request.deadline)
            .collect::<Vec<_>>(),
    )
    .bind(waiting.iter().map(|w| w.request.seq).collect::<Vec<_>>())
    .execute(db)
    .await?;
    Ok(())
}

/// Up to `limit` users with a parked request past its deadline, with the latest such place of
/// each, their lines locked for this transaction (`SKIP LOCKED`: a line busy elsewhere is left
/// for the next sweep).
pub async fn overdue(db: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<(UserId, Seq)>> {
    sqlx::query_as(
        "SELECT s.user_id, o.seq FROM payment_sequences s \
         JOIN (SELECT user_id, max(seq) AS seq FROM parked_requests WHERE deadline < now() \
               GROUP BY user_id ORDER BY user_id LIMIT $1) AS o USING (user_id) \
         ORDER BY s.user_id FOR UPDATE OF s SKIP LOCKED",
    )
    .bind(limit)
    .fetch_all(db)
    .await
}

/// `payment_requests_parked` and `payment_requests_parked_oldest_seconds`, from the table (at
/// scrape time).
pub async fn record_parked(db: impl sqlx::PgExecutor<'_>) {
    let parked: Result<(i64, Option<f64>), _> = sqlx::query_as(
        "SELECT count(*), extract(epoch FROM now() - min(parked_at))::float8 FROM parked_requests",
    )
    .fetch_one(db)
    .await;
    if let Ok((count, oldest)) = parked {
        metrics::gauge!("payment_requests_parked").set(count as f64);
        metrics::gauge!("payment_requests_parked_oldest_seconds").set(oldest.unwrap_or(0.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(n: i64) -> Seq {
        Seq::parse(n).unwrap_or(Seq::FIRST)
    }

    fn line(decided_through: i64) -> Line {
        Line {
            decided_through,
            parked: 0,
        }
    }

    fn requests(places: &[i64]) -> Vec<(Seq, i64)> {
        places.iter().map(|&n| (seq(n), n)).collect()
    }

    #[test]
    fn the_next_in_line_is_decided_and_each_that_follows_it_after() {
        let plan = plan(line(2), requests(&[5, 3, 4]), None);
        assert_eq!(
            plan.decide,
            [3, 4, 5],
            "in their order, whatever the arrival"
        );
        assert_eq!(plan.decided_through, 5);
        assert!(plan.late.is_empty() && plan.park.is_empty());
    }

    #[test]
    fn a_request_that_comes_before_its_predecessor_is_parked() {
        let plan = plan(line(2), requests(&[4, 6]), None);
        assert!(plan.decide.is_empty());
        assert_eq!(plan.park, [4, 6]);
        assert_eq!(plan.decided_through, 2);
    }

    #[test]
    fn only_the_run_from_the_next_place_is_decided_the_rest_waits() {
        let plan = plan(line(0), requests(&[1, 2, 4]), None);
        assert_eq!(plan.decide, [1, 2]);
        assert_eq!(plan.park, [4]);
        assert_eq!(plan.decided_through, 2);
    }

    #[test]
    fn a_request_for_a_place_already_decided_is_late() {
        let plan = plan(line(3), requests(&[2, 3, 4]), None);
        assert_eq!(plan.late, [2, 3]);
        assert_eq!(plan.decide, [4]);
    }

    #[test]
    fn passing_over_gives_up_the_missing_places_up_to_the_first_request_and_decides_on() {
        // 3 and 4 never came; 5 waited past its deadline, 6 behind it, 8 further on.
        let plan = plan(line(2), requests(&[6, 5, 8]), Some(seq(5)));
        assert_eq!(plan.decide, [5, 6]);
        assert_eq!(plan.park, [8]);
        assert_eq!(plan.decided_through, 6);
    }

    #[test]
    fn a_second_request_for_a_place_decided_in_the_same_plan_is_late() {
        let plan = plan(line(0), requests(&[1, 1, 2]), None);
        assert_eq!(plan.decide, [1, 2]);
        assert_eq!(plan.late, [1]);
    }

    #[test]
    fn passing_over_never_goes_back() {
        let plan = plan(line(7), requests(&[8]), Some(seq(5)));
        assert_eq!(plan.decide, [8]);
        assert_eq!(plan.decided_through, 8);
    }
}
