//! Judges a run from its recorded [`history`](crate::history) and the final state of the two
//! databases, and nothing else: SPEC section 5 as checks, each violation naming the operations
//! behind it.
//!
//! - No acknowledged write lost: every `ok` order exists as acknowledged; every account holds at
//!   least its `ok` deposits.
//! - Nothing from nowhere: an order no acknowledged request created must be explained by an
//!   unanswered one of that user and amount; an account's deposits are at most its `ok` and
//!   unanswered ones.
//! - The money: every balance = deposits − debits + refunds, never below zero; `FINISHED` ⇔ one
//!   debit of the order's amount and no refund, `REFUNDED` ⇔ a debit and a refund of it,
//!   `CANCELLED` ⇔ neither or both; every order final.
//! - An accepted cancel (202) never ends `FINISHED`.
//! - Nothing left behind: no dead letters, no unsent outbox rows (observed at the end).

use crate::history::{Entry, Operation, Outcome};
use sqlx::{Connection, PgConnection};
use std::collections::{BTreeMap, HashMap};

/// What the checker found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Verdict {
    /// Operations in the history, and how they ended.
    pub operations: usize,
    pub ok: usize,
    pub failed: usize,
    pub unknown: usize,
    /// Orders in the database checked against the ledger.
    pub orders_checked: usize,
    pub violations: Vec<String>,
}

/// One operation, invoked and (perhaps) completed.
#[derive(Debug, Clone)]
struct Op {
    op: u64,
    at_ms: f64,
    operation: Operation,
    user_id: String,
    amount: Option<i64>,
    /// For a cancel, its order; for an acknowledged order, the order created.
    order_id: Option<String>,
    outcome: Option<Outcome>,
}

impl Op {
    fn describe(&self) -> String {
        let what = match self.operation {
            Operation::Deposit => format!("deposit {} to", self.amount.unwrap_or_default()),
            Operation::Order => format!("order {} by", self.amount.unwrap_or_default()),
            Operation::Cancel => "cancel by".to_owned(),
        };
        format!(
            "op {} ({what} {} at {:.1} s, {:?})",
            self.op,
            self.user_id,
            self.at_ms / 1e3,
            self.outcome.unwrap_or(Outcome::Unknown)
        )
    }
}

/// An order as the orders database holds it.
#[derive(Debug, sqlx::FromRow)]
struct StoredOrder {
    id: String,
    user_id: String,
    amount: i64,
    status: String,
    refund: Option<String>,
}

pub async fn check(
    entries: &[Entry],
    orders_database_url: &str,
    payments_database_url: &str,
) -> anyhow::Result<Verdict> {
    let mut ops: BTreeMap<u64, Op> = BTreeMap::new();
    let mut observed = None;
    for entry in entries {
        match entry {
            Entry::Invoke {
                op,
                at_ms,
                operation,
                user_id,
                amount,
                order_id,
            } => {
                ops.insert(
                    *op,
                    Op {
                        op: *op,
                        at_ms: *at_ms,
                        operation: *operation,
                        user_id: user_id.clone(),
                        amount: *amount,
                        order_id: order_id.clone(),
                        outcome: None,
                    },
                );
            }
            Entry::Complete {
                op,
                outcome,
                order_id,
                ..
            } => {
                if let Some(invoked) = ops.get_mut(op) {
                    invoked.outcome = Some(*outcome);
                    if invoked.operation == Operation::Order {
                        invoked.order_id = order_id.clone();
                    }
                }
            }
            Entry::Observed {
                dead_letters,
                unsent_outbox_rows,
                ..
            } => observed = Some((*dead_letters, *unsent_outbox_rows)),
            Entry::Began { .. } | Entry::FaultBegan { .. } | Entry::FaultEnded { .. } => {}
        }
    }
    let mut verdict = Verdict {
        operations: ops.len(),
        ..Verdict::default()
    };
    for op in ops.values() {
        match op.outcome {
            Some(Outcome::Ok) => verdict.ok += 1,
            Some(Outcome::Failed) => verdict.failed += 1,
            Some(Outcome::Unknown) | None => verdict.unknown += 1,
        }
    }
    let violations = &mut verdict.violations;

    let mut orders_db = PgConnection::connect(orders_database_url).await?;
    let mut payments_db = PgConnection::connect(payments_database_url).await?;
    let stored: Vec<StoredOrder> =
        sqlx::query_as("SELECT id::text, user_id, amount, status, refund FROM orders")
            .fetch_all(&mut orders_db)
            .await?;
    let stored: HashMap<&str, &StoredOrder> = stored
        .iter()
        .map(|order| (order.id.as_str(), order))
        .collect();
    verdict.orders_checked = stored.len();

    // Acknowledged orders exist as acknowledged; the rest must be explained.
    let mut explained: HashMap<&str, ()> = HashMap::new();
    let mut unanswered_orders: HashMap<(&str, i64), Vec<&Op>> = HashMap::new();
    for op in ops.values().filter(|op| op.operation == Operation::Order) {
        match (op.outcome, &op.order_id) {
            (Some(Outcome::Ok), Some(id)) => match stored.get(id.as_str()) {
                Some(order) if order.user_id == op.user_id && Some(order.amount) == op.amount => {
                    explained.insert(id.as_str(), ());
                }
                Some(order) => violations.push(format!(
                    "{}: order {id} is stored as {} {} instead",
                    op.describe(),
                    order.user_id,
                    order.amount
                )),
                None => violations.push(format!(
                    "{}: acknowledged order {id} was lost",
                    op.describe()
                )),
            },
            (Some(Outcome::Ok), None) => violations.push(format!(
                "{}: acknowledged without an order id",
                op.describe()
            )),
            (Some(Outcome::Unknown) | None, _) => unanswered_orders
                .entry((op.user_id.as_str(), op.amount.unwrap_or_default()))
                .or_default()
                .push(op),
            (Some(Outcome::Failed), _) => {}
        }
    }
    for order in stored
        .values()
        .filter(|o| !explained.contains_key(o.id.as_str()))
    {
        let candidates = unanswered_orders
            .get_mut(&(order.user_id.as_str(), order.amount))
            .filter(|candidates| !candidates.is_empty());
        match candidates {
            Some(candidates) => {
                candidates.pop();
            }
            None => violations.push(format!(
                "order {} ({} {}) exists, but no acknowledged or unanswered request made it",
                order.id, order.user_id, order.amount
            )),
        }
    }

    // Deposits: at least the acknowledged ones, at most those plus the unanswered ones.
    let ledger_deposits: Vec<(String, i64)> = sqlx::query_as(
        "SELECT user_id, sum(amount)::bigint FROM ledger WHERE kind = 'DEPOSIT' GROUP BY user_id",
    )
    .fetch_all(&mut payments_db)
    .await?;
    let ledger_deposits: HashMap<String, i64> = ledger_deposits.into_iter().collect();
    let mut deposits: HashMap<&str, (i64, i64, Vec<&Op>)> = HashMap::new();
    for op in ops.values().filter(|op| op.operation == Operation::Deposit) {
        let entry = deposits.entry(op.user_id.as_str()).or_default();
        match op.outcome {
            Some(Outcome::Ok) => {
                entry.0 += op.amount.unwrap_or_default();
                entry.2.push(op);
            }
            Some(Outcome::Unknown) | None => entry.1 += op.amount.unwrap_or_default(),
            Some(Outcome::Failed) => {}
        }
    }
    for (user_id, (acknowledged, unanswered, ops)) in &deposits {
        let held = ledger_deposits.get(*user_id).copied().unwrap_or(0);
        if held < *acknowledged {
            let last = ops.last().map(|op| op.describe()).unwrap_or_default();
            violations.push(format!(
                "{user_id}: the ledger holds deposits of {held}, less than the {acknowledged} acknowledged (last: {last})"
            ));
        }
        if held > acknowledged + unanswered {
            violations.push(format!(
                "{user_id}: the ledger holds deposits of {held}, more than the {acknowledged} acknowledged and {unanswered} unanswered"
            ));
        }
    }

    // Every balance; then every order against its ledger rows.
    let unbalanced: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT a.user_id, a.balance, \
           COALESCE(sum(CASE l.kind WHEN 'DEBIT' THEN -l.amount ELSE l.amount END), 0)::bigint \
         FROM accounts a LEFT JOIN ledger l USING (user_id) GROUP BY a.user_id, a.balance \
         HAVING a.balance < 0 OR a.balance <> \
           COALESCE(sum(CASE l.kind WHEN 'DEBIT' THEN -l.amount ELSE l.amount END), 0)",
    )
    .fetch_all(&mut payments_db)
    .await?;
    for (user_id, balance, ledger) in unbalanced {
        violations.push(format!(
            "{user_id}: balance {balance}, but deposits − debits + refunds = {ledger}"
        ));
    }
    let moved: Vec<(String, Vec<String>, Vec<i64>)> = sqlx::query_as(
        "SELECT order_id::text, array_agg(kind ORDER BY kind), array_agg(amount ORDER BY kind) \
         FROM ledger WHERE order_id IS NOT NULL GROUP BY order_id",
    )
    .fetch_all(&mut payments_db)
    .await?;
    let moved: HashMap<String, Vec<(String, i64)>> = moved
        .into_iter()
        .map(|(id, kinds, amounts)| (id, kinds.into_iter().zip(amounts).collect()))
        .collect();
    let accepted_cancels: HashMap<&str, &Op> = ops
        .values()
        .filter(|op| op.operation == Operation::Cancel && op.outcome == Some(Outcome::Ok))
        .filter_map(|op| op.order_id.as_deref().map(|id| (id, op)))
        .collect();
    let by_order: HashMap<&str, &Op> = ops
        .values()
        .filter(|op| op.operation == Operation::Order)
        .filter_map(|op| op.order_id.as_deref().map(|id| (id, op)))
        .collect();
    let none = Vec::new();
    for order in stored.values() {
        let entries = moved.get(&order.id).unwrap_or(&none);
        let debit = ("DEBIT".to_owned(), order.amount);
        let refund = ("REFUND".to_owned(), order.amount);
        let given_back = *entries == [debit.clone(), refund];
        let holds = match order.status.as_str() {
            "FINISHED" => *entries == [debit],
            "REFUNDED" => given_back,
            "CANCELLED" => {
                order.refund.as_deref() != Some("REQUESTED") && (entries.is_empty() || given_back)
            }
            _ => false,
        };
        let placed_by = by_order
            .get(order.id.as_str())
            .map(|op| format!(", placed by {}", op.describe()))
            .unwrap_or_default();
        if !holds {
            violations.push(format!(
                "order {} is {}{} with ledger entries {entries:?}{placed_by}",
                order.id,
                order.status,
                order
                    .refund
                    .as_deref()
                    .map(|refund| format!(" (refund {refund})"))
                    .unwrap_or_default()
            ));
        }
        if order.status == "FINISHED"
            && let Some(cancel) = accepted_cancels.get(order.id.as_str())
        {
            violations.push(format!(
                "order {} ended FINISHED although {} was accepted{placed_by}",
                order.id,
                cancel.describe()
            ));
        }
    }
    for id in moved.keys().filter(|id| !stored.contains_key(id.as_str())) {
        violations.push(format!("money moved for order {id}, which does not exist"));
    }

    match observed {
        Some((0, 0)) => {}
        Some((dead_letters, unsent)) => violations.push(format!(
            "left behind: {dead_letters} dead letters, {unsent} unsent outbox rows"
        )),
        None => violations.push("the history ends without the final observation".to_owned()),
    }
    Ok(verdict)
}
