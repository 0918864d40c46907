//! Waiting for every order to become final, then checking SPEC section 5 — through the API, and
//! against the payments ledger when its database is reachable.

use crate::{
    invariants::{Account, Movement, Refund, Settled, Status},
    sessions::Sessions,
};
use futures::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde_json::Value;
use sqlx::{Connection, PgConnection};
use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

/// An order the gateway acknowledged with 201.
#[derive(Debug, Clone)]
pub struct Placed {
    pub id: String,
    pub user_id: String,
    pub amount: i64,
    /// Its owner's cancel was accepted (202): it must not end `FINISHED`.
    pub cancel_accepted: bool,
}

pub struct Outcome {
    pub finished: u64,
    pub cancelled: u64,
    pub refunded: u64,
    /// CANCELLED orders whose payment went through after they were cancelled, and came back.
    pub cancelled_and_refunded: u64,
    /// From the first order's `created_at` to the last one's `updated_at`.
    pub span: Duration,
    /// `updated_at − created_at` of every settled order, microseconds.
    pub settle_us: Histogram<u64>,
    /// Each final order's creation (seconds after the first) and settle time (milliseconds),
    /// in creation order: the latency over time.
    pub timeline: Vec<(f64, f64)>,
    pub ledger_audited: bool,
    /// Orders the API lists for these users that no acknowledged request created: a request
    /// whose answer was lost may have created one. Not a violation in itself; a client that
    /// retried every request with its `Idempotency-Key` until answered should see none.
    pub unacknowledged: Vec<String>,
    pub violations: Vec<String>,
}

/// Waits up to `timeout` for every placed order to be final, then audits. `deposits` holds, for
/// every user with an account, the sum of the deposits acknowledged to it; `sessions` may also
/// hold users without one (whose orders must be cancelled).
#[allow(clippy::too_many_arguments)]
pub async fn settle_and_audit(
    http: &reqwest::Client,
    gateway: &str,
    sessions: &Sessions,
    deposits: &HashMap<String, i64>,
    placed: &[Placed],
    timeout: Duration,
    payments_database_url: &str,
) -> anyhow::Result<Outcome> {
    let deadline = Instant::now() + timeout;
    let orders = loop {
        let orders = all_orders(http, gateway, sessions).await?;
        let pending = placed.iter().any(|p| !orders.contains_key(&p.id))
            || orders.values().any(|o| !is_final(o));
        if !pending || Instant::now() > deadline {
            break orders;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };

    let mut violations = Vec::new();
    let mut settle_us = Histogram::<u64>::new(3)?;
    let (mut finished, mut cancelled, mut refunded, mut cancelled_and_refunded) = (0, 0, 0, 0);
    let (mut first, mut last) = (None::<OffsetDateTime>, None::<OffsetDateTime>);
    let mut settled_at = Vec::new();
    for p in placed {
        let Some(order) = orders.get(&p.id) else {
            violations.push(format!("acknowledged order {} does not exist", p.id));
            continue;
        };
        if order["user_id"] != p.user_id.as_str() || order["amount"] != p.amount {
            violations.push(format!(
                "order {} is not what was acknowledged: {order}",
                p.id
            ));
        }
        if !is_final(order) {
            violations.push(format!("order {} is not final: {order}", p.id));
            continue;
        }
        match standing(order) {
            Ok((Status::Finished, _)) if p.cancel_accepted => violations.push(format!(
                "order {} was cancelled (202) but ended FINISHED",
                p.id
            )),
            Ok((Status::Finished, _)) => finished += 1,
            Ok((Status::Cancelled, refund)) => {
                cancelled += 1;
                cancelled_and_refunded += u64::from(refund == Some(Refund::Completed));
            }
            Ok(_) => refunded += 1,
            Err(error) => violations.push(format!("order {}: {error}", p.id)),
        }
        if let (Some(created), Some(updated)) = (
            timestamp(&order["created_at"]),
            timestamp(&order["updated_at"]),
        ) {
            let _ = settle_us.record((updated - created).whole_microseconds().max(0) as u64);
            settled_at.push((created, (updated - created).as_seconds_f64() * 1e3));
            first = Some(first.map_or(created, |f| f.min(created)));
            last = Some(last.map_or(updated, |l| l.max(updated)));
        }
    }

    let acknowledged: HashSet<&str> = placed.iter().map(|p| p.id.as_str()).collect();
    let mut unacknowledged = Vec::new();
    let mut paid_by_user: HashMap<&str, i64> = HashMap::new();
    for (id, order) in &orders {
        if !acknowledged.contains(id.as_str()) {
            unacknowledged.push(id.clone());
            if !is_final(order) {
                violations.push(format!("order {id} (never acknowledged) is not final"));
            }
        }
        if let (Ok((Status::Finished, _)), Some(user_id), Some(amount)) = (
            standing(order),
            order["user_id"].as_str(),
            order["amount"].as_i64(),
        ) {
            *paid_by_user.entry(user_id).or_default() += amount;
        }
    }

    for (user_id, deposited) in deposits {
        let expected = deposited - paid_by_user.get(user_id.as_str()).copied().unwrap_or(0);
        let balance: Value = sessions
            .as_user(
                user_id,
                http.get(format!("{gateway}/payments/accounts/{user_id}/balance")),
            )
            .send()
            .await?
            .json()
            .await?;
        if balance["balance"].as_i64() != Some(expected) {
            violations.push(format!(
                "{user_id}: balance {} but deposits − FINISHED orders = {expected} (CANCELLED and REFUNDED ones cost nothing)",
                balance["balance"]
            ));
        }
    }

    let ledger_audited = match PgConnection::connect(payments_database_url).await {
        Ok(mut db) => {
            let users: Vec<&str> = sessions.users().collect();
            audit_ledger(&mut db, &users, deposits, &orders, &mut violations).await?;
            true
        }
        Err(error) => {
            eprintln!("ledger audit skipped: cannot reach the payments database: {error}");
            false
        }
    };

    let mut timeline: Vec<(f64, f64)> = match first {
        Some(first) => settled_at
            .into_iter()
            .map(|(created, ms)| ((created - first).as_seconds_f64(), ms))
            .collect(),
        None => Vec::new(),
    };
    timeline.sort_by(|a, b| a.0.total_cmp(&b.0));
    let span = match (first, last) {
        (Some(first), Some(last)) => {
            Duration::from_micros((last - first).whole_microseconds().max(1) as u64)
        }
        _ => Duration::from_micros(1),
    };
    Ok(Outcome {
        finished,
        cancelled,
        refunded,
        cancelled_and_refunded,
        span,
        settle_us,
        timeline,
        ledger_audited,
        unacknowledged,
        violations,
    })
}

/// SPEC 5: FINISHED ⇔ one debit of the order's amount and no refund; REFUNDED ⇔ one debit and
/// one refund of its amount; CANCELLED ⇔ no debit, or one debit and one refund. The deposits in
/// the ledger are exactly the acknowledged ones; every balance = deposits − debits + refunds,
/// and no prefix of an account's ledger goes below zero.
async fn audit_ledger(
    db: &mut PgConnection,
    users: &[&str],
    deposits: &HashMap<String, i64>,
    orders: &HashMap<String, Value>,
    violations: &mut Vec<String>,
) -> anyhow::Result<()> {
    let moved: Vec<(uuid::Uuid, Vec<String>, Vec<i64>)> = sqlx::query_as(
        "SELECT order_id, array_agg(kind ORDER BY kind), array_agg(amount ORDER BY kind) FROM ledger \
         WHERE order_id IS NOT NULL AND user_id = ANY($1) GROUP BY order_id",
    )
    .bind(users)
    .fetch_all(&mut *db)
    .await?;
    let mut by_order: HashMap<String, Vec<(Movement, i64)>> = HashMap::new();
    for (id, kinds, amounts) in moved {
        let entries = by_order.entry(id.to_string()).or_default();
        for (kind, amount) in kinds.into_iter().zip(amounts) {
            match kind.parse() {
                Ok(movement) => entries.push((movement, amount)),
                Err(error) => violations.push(format!("ledger row of order {id}: {error}")),
            }
        }
    }
    let moved = by_order;
    for (id, order) in orders {
        let (Ok((status, refund)), Some(amount)) = (standing(order), order["amount"].as_i64())
        else {
            violations.push(format!("order {id} cannot be read: {order}"));
            continue;
        };
        // An order still on its way was reported above; here only the money of final ones.
        if !Settled::is_final(status, refund) {
            continue;
        }
        let settled = Settled {
            status,
            refund,
            amount,
            moved: moved.get(id).cloned().unwrap_or_default(),
        };
        if !settled.money_agrees() {
            violations.push(format!(
                "order {id} is {status} with ledger entries {:?}",
                settled.moved
            ));
        }
    }
    for id in moved.keys().filter(|id| !orders.contains_key(*id)) {
        violations.push(format!("money moved for order {id}, which does not exist"));
    }

    let mut seen = HashSet::new();
    for (user_id, account) in accounts(db, Some(users)).await? {
        let expected = deposits.get(&user_id).copied();
        if expected != Some(account.deposited) {
            violations.push(format!(
                "{user_id}: the ledger holds deposits of {}, the acknowledged ones sum to {expected:?}",
                account.deposited
            ));
        }
        if !account.balances() {
            violations.push(format!(
                "{user_id}: the balance disagrees with its ledger: {account:?}"
            ));
        }
        seen.insert(user_id);
    }
    for user_id in deposits.keys().filter(|u| !seen.contains(*u)) {
        violations.push(format!("{user_id}: acknowledged account does not exist"));
    }
    Ok(())
}

/// Every account of `users` (of everyone, with `None`), its balance beside the sums of its
/// ledger and the lowest its running sum went.
pub async fn accounts(
    db: &mut PgConnection,
    users: Option<&[&str]>,
) -> sqlx::Result<HashMap<String, Account>> {
    let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT a.user_id, a.balance, \
                COALESCE(sum(l.amount) FILTER (WHERE l.kind = 'DEPOSIT'), 0)::bigint, \
                COALESCE(sum(l.amount) FILTER (WHERE l.kind = 'DEBIT'), 0)::bigint, \
                COALESCE(sum(l.amount) FILTER (WHERE l.kind = 'REFUND'), 0)::bigint, \
                COALESCE(min(l.running), 0)::bigint \
         FROM accounts a LEFT JOIN ( \
             SELECT user_id, kind, amount, sum(CASE kind WHEN 'DEBIT' THEN -amount ELSE amount END) \
                 OVER (PARTITION BY user_id ORDER BY id) AS running \
             FROM ledger WHERE $1::text[] IS NULL OR user_id = ANY($1)) l USING (user_id) \
         WHERE $1::text[] IS NULL OR a.user_id = ANY($1) GROUP BY a.user_id, a.balance",
    )
    .bind(users)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(user_id, balance, deposited, debited, refunded, lowest)| {
            let account = Account {
                balance,
                deposited,
                debited,
                refunded,
                lowest,
            };
            (user_id, account)
        })
        .collect())
}

async fn all_orders(
    http: &reqwest::Client,
    gateway: &str,
    sessions: &Sessions,
) -> anyhow::Result<HashMap<String, Value>> {
    let lists: Vec<anyhow::Result<Vec<Value>>> = stream::iter(sessions.users())
        .map(|user_id| async move {
            let list = sessions
                .as_user(
                    user_id,
                    http.get(format!("{gateway}/orders?user_id={user_id}")),
                )
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            Ok(list)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut orders = HashMap::new();
    for list in lists {
        for order in list? {
            if let Some(id) = order["id"].as_str() {
                orders.insert(id.to_owned(), order.clone());
            }
        }
    }
    Ok(orders)
}

/// Where an order of the API stands: its status and refund, read into the shared types.
fn standing(order: &Value) -> Result<(Status, Option<Refund>), String> {
    let status = order["status"]
        .as_str()
        .ok_or("no status")?
        .parse()
        .map_err(|error| format!("status: {error}"))?;
    let refund = match order["refund"].as_str() {
        None => None,
        Some(refund) => Some(refund.parse().map_err(|error| format!("refund: {error}"))?),
    };
    Ok((status, refund))
}

/// Whether an order has reached the end of its way ([`Settled::is_final`]).
fn is_final(order: &Value) -> bool {
    standing(order).is_ok_and(|(status, refund)| Settled::is_final(status, refund))
}

fn timestamp(value: &Value) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(value.as_str()?, &Rfc3339).ok()
}
