//! Judges a run from its recorded [`history`](crate::history) and the final state of the two
//! databases, and nothing else: SPEC section 5 as checks, each [`Violation`] naming the
//! operations behind it. [`snapshot`] reads the databases; [`check`] is a pure function of the
//! history and that snapshot.
//!
//! - No acknowledged write lost: every `ok` order exists as acknowledged; every account holds at
//!   least its `ok` deposits.
//! - Nothing from nowhere: an order no acknowledged request created must be explained by an
//!   unanswered one of that user and amount; an account's deposits are at most its `ok` and
//!   unanswered ones.
//! - The money ([`gozon_loadgen::invariants`]): every balance = deposits − debits + refunds,
//!   never below zero; each order's status agrees with the money moved for it, and is final.
//! - An accepted cancel (202) never ends `FINISHED`.
//! - Order per user: if order B's request began after order A's 201 for the same user, A's
//!   payment was decided before B's.
//! - Nothing left behind: no dead letters, no unsent outbox rows (observed at the end).

mod snapshot;
mod violation;

pub use snapshot::{Snapshot, StoredOrder, snapshot};
pub use violation::Violation;

use crate::history::{Entry, Operation, Outcome};
use gozon_loadgen::invariants::{Settled, Status};
use std::collections::{BTreeMap, HashMap, HashSet};

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
    pub violations: Vec<Violation>,
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
    /// When its answer came.
    completed_ms: Option<f64>,
}

impl Op {
    fn describe(&self) -> String {
        let amount = self.amount.map(|a| a.to_string()).unwrap_or_default();
        let what = match self.operation {
            Operation::Deposit => format!("deposit {amount} to"),
            Operation::Order => format!("order {amount} by"),
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

/// The operations of a history by number, and what was observed at its end.
fn operations(entries: &[Entry]) -> (BTreeMap<u64, Op>, Option<(u32, i64)>) {
    let mut ops = BTreeMap::new();
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
                let invoked = Op {
                    op: *op,
                    at_ms: *at_ms,
                    operation: *operation,
                    user_id: user_id.clone(),
                    amount: *amount,
                    order_id: order_id.clone(),
                    outcome: None,
                    completed_ms: None,
                };
                ops.insert(*op, invoked);
            }
            Entry::Complete {
                op,
                at_ms,
                outcome,
                order_id,
                ..
            } => {
                if let Some(invoked) = ops.get_mut(op) {
                    invoked.outcome = Some(*outcome);
                    invoked.completed_ms = Some(*at_ms);
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
    (ops, observed)
}

/// Every check of the module's list, over `entries` and `snapshot`.
pub fn check(entries: &[Entry], snapshot: &Snapshot) -> Verdict {
    let (ops, observed) = operations(entries);
    let mut verdict = Verdict {
        operations: ops.len(),
        orders_checked: snapshot.orders.len(),
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
    for op in ops.values() {
        if op.operation != Operation::Cancel && op.amount.is_none() {
            violations.push(Violation::MalformedOperation { op: op.describe() });
        }
    }
    let stored: HashMap<&str, &StoredOrder> = snapshot
        .orders
        .iter()
        .map(|order| (order.id.as_str(), order))
        .collect();
    orders_as_acknowledged(&ops, &stored, violations);
    deposits_as_acknowledged(&ops, snapshot, violations);
    money(&ops, snapshot, &stored, violations);
    order_per_user(&ops, snapshot, violations);
    match observed {
        Some((0, 0)) => {}
        Some((dead_letters, unsent_outbox_rows)) => violations.push(Violation::LeftBehind {
            dead_letters,
            unsent_outbox_rows,
        }),
        None => violations.push(Violation::NoFinalObservation),
    }
    verdict
}

/// Acknowledged orders exist as acknowledged; every other order is explained by an unanswered
/// request of its user and amount.
fn orders_as_acknowledged(
    ops: &BTreeMap<u64, Op>,
    stored: &HashMap<&str, &StoredOrder>,
    violations: &mut Vec<Violation>,
) {
    let mut explained = HashSet::new();
    let mut unanswered: HashMap<(&str, i64), usize> = HashMap::new();
    for op in ops.values().filter(|op| op.operation == Operation::Order) {
        let Some(amount) = op.amount else { continue };
        match (op.outcome, &op.order_id) {
            (Some(Outcome::Ok), Some(id)) => match stored.get(id.as_str()) {
                Some(order) if order.user_id == op.user_id && order.amount == amount => {
                    explained.insert(id.as_str());
                }
                Some(order) => violations.push(Violation::AcknowledgedOrderChanged {
                    op: op.describe(),
                    order_id: id.clone(),
                    stored: (order.user_id.clone(), order.amount),
                }),
                None => violations.push(Violation::AcknowledgedOrderLost {
                    op: op.describe(),
                    order_id: id.clone(),
                }),
            },
            (Some(Outcome::Ok), None) => {
                violations.push(Violation::AcknowledgedWithoutId { op: op.describe() })
            }
            (Some(Outcome::Unknown) | None, _) => {
                *unanswered.entry((op.user_id.as_str(), amount)).or_default() += 1
            }
            (Some(Outcome::Failed), _) => {}
        }
    }
    let mut unexplained: Vec<&&StoredOrder> = stored
        .values()
        .filter(|order| !explained.contains(order.id.as_str()))
        .collect();
    unexplained.sort_by(|a, b| a.id.cmp(&b.id));
    for order in unexplained {
        match unanswered.get_mut(&(order.user_id.as_str(), order.amount)) {
            Some(left) if *left > 0 => *left -= 1,
            _ => violations.push(Violation::OrderFromNowhere {
                order_id: order.id.clone(),
                user_id: order.user_id.clone(),
                amount: order.amount,
            }),
        }
    }
}

/// Each account holds at least its acknowledged deposits, at most those and the unanswered ones.
fn deposits_as_acknowledged(
    ops: &BTreeMap<u64, Op>,
    snapshot: &Snapshot,
    violations: &mut Vec<Violation>,
) {
    let mut deposits: BTreeMap<&str, (i64, i64, Option<&Op>)> = BTreeMap::new();
    for op in ops.values().filter(|op| op.operation == Operation::Deposit) {
        let Some(amount) = op.amount else { continue };
        let entry = deposits.entry(op.user_id.as_str()).or_default();
        match op.outcome {
            Some(Outcome::Ok) => {
                entry.0 += amount;
                entry.2 = Some(op);
            }
            Some(Outcome::Unknown) | None => entry.1 += amount,
            Some(Outcome::Failed) => {}
        }
    }
    for (user_id, (acknowledged, unanswered, last)) in deposits {
        let held = snapshot
            .accounts
            .get(user_id)
            .map_or(0, |account| account.deposited);
        if held < acknowledged {
            violations.push(Violation::DepositsLost {
                user_id: user_id.to_owned(),
                held,
                acknowledged,
                last: last.map(Op::describe).unwrap_or_default(),
            });
        }
        if held > acknowledged + unanswered {
            violations.push(Violation::DepositsFromNowhere {
                user_id: user_id.to_owned(),
                held,
                acknowledged,
                unanswered,
            });
        }
    }
}

/// Every balance agrees with its ledger, every order's status with the money moved for it, and
/// an accepted cancel never ends `FINISHED`.
fn money(
    ops: &BTreeMap<u64, Op>,
    snapshot: &Snapshot,
    stored: &HashMap<&str, &StoredOrder>,
    violations: &mut Vec<Violation>,
) {
    let mut accounts: Vec<_> = snapshot.accounts.iter().collect();
    accounts.sort_by_key(|(user_id, _)| *user_id);
    for (user_id, account) in accounts {
        if !account.balances() {
            violations.push(Violation::Unbalanced {
                user_id: user_id.clone(),
                account: *account,
            });
        }
    }
    let accepted_cancels: HashMap<&str, &Op> = ops
        .values()
        .filter(|op| op.operation == Operation::Cancel && op.outcome == Some(Outcome::Ok))
        .filter_map(|op| op.order_id.as_deref().map(|id| (id, op)))
        .collect();
    let placed: HashMap<&str, &Op> = ops
        .values()
        .filter(|op| op.operation == Operation::Order)
        .filter_map(|op| op.order_id.as_deref().map(|id| (id, op)))
        .collect();
    for order in &snapshot.orders {
        let settled = Settled {
            status: order.status,
            refund: order.refund,
            amount: order.amount,
            moved: snapshot.moved.get(&order.id).cloned().unwrap_or_default(),
        };
        let placed_by = placed.get(order.id.as_str()).map(|op| op.describe());
        if !settled.money_agrees() {
            violations.push(Violation::MoneyDisagrees {
                order_id: order.id.clone(),
                status: order.status,
                refund: order.refund,
                moved: settled.moved,
                placed_by: placed_by.clone(),
            });
        }
        if order.status == Status::Finished
            && let Some(cancel) = accepted_cancels.get(order.id.as_str())
        {
            violations.push(Violation::FinishedThoughCancelled {
                order_id: order.id.clone(),
                cancel: cancel.describe(),
                placed_by,
            });
        }
    }
    let mut unknown: Vec<&String> = snapshot
        .moved
        .keys()
        .filter(|id| !stored.contains_key(id.as_str()))
        .collect();
    unknown.sort();
    for order_id in unknown {
        violations.push(Violation::MoneyForUnknownOrder {
            order_id: order_id.clone(),
        });
    }
}

/// For each user, every acknowledged order was decided before every order of theirs whose
/// request began after its 201.
fn order_per_user(ops: &BTreeMap<u64, Op>, snapshot: &Snapshot, violations: &mut Vec<Violation>) {
    let place: HashMap<&str, usize> = snapshot
        .decided
        .iter()
        .enumerate()
        .map(|(place, id)| (id.as_str(), place))
        .collect();
    let mut by_user: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops.values().filter(|op| op.operation == Operation::Order) {
        by_user.entry(op.user_id.as_str()).or_default().push(op);
    }
    for (user_id, orders) in by_user {
        for earlier in &orders {
            let (Some(Outcome::Ok), Some(earlier_id), Some(answered)) =
                (earlier.outcome, &earlier.order_id, earlier.completed_ms)
            else {
                continue;
            };
            let earlier_place = place.get(earlier_id.as_str());
            // The first later order decided before it is enough to name.
            let overtaken = orders
                .iter()
                .filter(|later| later.at_ms > answered)
                .filter_map(|later| {
                    let id = later.order_id.as_deref()?;
                    Some((*place.get(id)?, *later))
                })
                .filter(|(later_place, _)| earlier_place.is_none_or(|p| p > later_place))
                .min_by_key(|(later_place, _)| *later_place);
            if let Some((_, later)) = overtaken {
                violations.push(Violation::DecidedOutOfOrder {
                    user_id: user_id.to_owned(),
                    earlier: earlier.describe(),
                    later: later.describe(),
                    earlier_decided: earlier_place.is_some(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests;
