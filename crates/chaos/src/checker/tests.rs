//! Each rule of the checker, shown to hold on a clean run and to catch the one history or
//! snapshot that breaks it.

use super::*;
use gozon_loadgen::invariants::{Account, Movement};

fn invoke(
    op: u64,
    at_ms: f64,
    operation: Operation,
    amount: Option<i64>,
    order_id: Option<&str>,
) -> Entry {
    Entry::Invoke {
        op,
        at_ms,
        operation,
        user_id: "u".to_owned(),
        amount,
        order_id: order_id.map(str::to_owned),
    }
}

fn complete(op: u64, at_ms: f64, outcome: Outcome, order_id: Option<&str>) -> Entry {
    Entry::Complete {
        op,
        at_ms,
        outcome,
        status: None,
        order_id: order_id.map(str::to_owned),
    }
}

const OBSERVED: Entry = Entry::Observed {
    at_ms: 100.0,
    dead_letters: 0,
    unsent_outbox_rows: 0,
};

/// A deposit of 1000, then order `a` of 300 and, after its 201, order `b` of 200: both paid.
fn clean() -> (Vec<Entry>, Snapshot) {
    let history = vec![
        invoke(1, 0.0, Operation::Deposit, Some(1000), None),
        complete(1, 5.0, Outcome::Ok, None),
        invoke(2, 10.0, Operation::Order, Some(300), None),
        complete(2, 20.0, Outcome::Ok, Some("a")),
        invoke(3, 30.0, Operation::Order, Some(200), None),
        complete(3, 40.0, Outcome::Ok, Some("b")),
        OBSERVED,
    ];
    let order = |id: &str, amount| StoredOrder {
        id: id.to_owned(),
        user_id: "u".to_owned(),
        amount,
        status: Status::Finished,
        refund: None,
    };
    let snapshot = Snapshot {
        orders: vec![order("a", 300), order("b", 200)],
        moved: HashMap::from([
            ("a".to_owned(), vec![(Movement::Debit, 300)]),
            ("b".to_owned(), vec![(Movement::Debit, 200)]),
        ]),
        accounts: HashMap::from([(
            "u".to_owned(),
            Account {
                balance: 500,
                deposited: 1000,
                debited: 500,
                refunded: 0,
                lowest: 500,
            },
        )]),
        decided: vec!["a".to_owned(), "b".to_owned()],
    };
    (history, snapshot)
}

/// The violations of a clean run changed by `change`.
fn found(change: impl FnOnce(&mut Vec<Entry>, &mut Snapshot)) -> Vec<Violation> {
    let (mut history, mut snapshot) = clean();
    change(&mut history, &mut snapshot);
    check(&history, &snapshot).violations
}

#[test]
fn a_clean_run_breaks_nothing() {
    let (history, snapshot) = clean();
    let verdict = check(&history, &snapshot);
    assert_eq!(verdict.violations, []);
    assert_eq!((verdict.operations, verdict.ok), (3, 3));
}

#[test]
fn an_acknowledged_order_missing_or_changed_is_caught() {
    // Lost from the orders database after payments took its money.
    let lost = found(|_, s| s.orders.retain(|o| o.id != "a"));
    assert_eq!(
        lost,
        [
            Violation::AcknowledgedOrderLost {
                op: "op 2 (order 300 by u at 0.0 s, Ok)".to_owned(),
                order_id: "a".to_owned()
            },
            Violation::MoneyForUnknownOrder {
                order_id: "a".to_owned()
            }
        ]
    );
    let changed = found(|_, s| s.orders[0].amount = 301);
    assert!(
        changed
            .iter()
            .any(|v| matches!(v, Violation::AcknowledgedOrderChanged { .. })),
        "{changed:?}"
    );
}

#[test]
fn an_order_no_request_made_is_caught_and_one_an_unanswered_request_may_have_made_is_not() {
    let extra = StoredOrder {
        id: "c".to_owned(),
        user_id: "u".to_owned(),
        amount: 50,
        status: Status::Cancelled,
        refund: None,
    };
    let from_nowhere = found(|_, s| s.orders.push(extra.clone()));
    assert!(
        matches!(&from_nowhere[..], [Violation::OrderFromNowhere { order_id, .. }] if order_id == "c")
    );
    let explained = found(|h, s| {
        h.insert(6, invoke(4, 50.0, Operation::Order, Some(50), None));
        s.orders.push(extra);
    });
    assert_eq!(explained, []);
}

#[test]
fn deposits_lost_or_from_nowhere_are_caught() {
    let lost = found(|_, s| {
        let account = s.accounts.get_mut("u").unwrap();
        account.deposited = 900;
        account.balance = 400;
    });
    assert!(
        matches!(
            &lost[..],
            [Violation::DepositsLost {
                held: 900,
                acknowledged: 1000,
                ..
            }]
        ),
        "{lost:?}"
    );
    let extra = found(|_, s| {
        let account = s.accounts.get_mut("u").unwrap();
        account.deposited = 1100;
        account.balance = 600;
    });
    assert!(
        matches!(
            &extra[..],
            [Violation::DepositsFromNowhere { held: 1100, .. }]
        ),
        "{extra:?}"
    );
}

#[test]
fn a_balance_off_its_ledger_is_caught() {
    let off = found(|_, s| s.accounts.get_mut("u").unwrap().balance = 600);
    assert!(
        matches!(&off[..], [Violation::Unbalanced { .. }]),
        "{off:?}"
    );
}

#[test]
fn a_status_that_disagrees_with_the_money_is_caught() {
    let kept = found(|_, s| s.orders[0].status = Status::Cancelled);
    assert!(
        matches!(
            &kept[..],
            [Violation::MoneyDisagrees {
                status: Status::Cancelled,
                placed_by: Some(_),
                ..
            }]
        ),
        "{kept:?}"
    );
    let unknown = found(|_, s| {
        s.moved.insert("z".to_owned(), vec![(Movement::Debit, 1)]);
    });
    assert!(unknown.contains(&Violation::MoneyForUnknownOrder {
        order_id: "z".to_owned()
    }));
}

#[test]
fn an_accepted_cancel_of_an_order_that_ends_finished_is_caught() {
    let finished = found(|h, _| {
        h.insert(6, invoke(4, 45.0, Operation::Cancel, None, Some("b")));
        h.insert(7, complete(4, 46.0, Outcome::Ok, None));
    });
    assert!(
        matches!(&finished[..], [Violation::FinishedThoughCancelled { order_id, .. }] if order_id == "b"),
        "{finished:?}"
    );
}

#[test]
fn an_order_decided_before_one_acknowledged_before_it_began_is_caught() {
    let swapped = found(|_, s| s.decided.reverse());
    assert!(
        matches!(
            &swapped[..],
            [Violation::DecidedOutOfOrder {
                earlier_decided: true,
                ..
            }]
        ),
        "{swapped:?}"
    );
    let skipped = found(|_, s| s.decided.retain(|id| id != "a"));
    assert!(
        matches!(
            &skipped[..],
            [Violation::DecidedOutOfOrder {
                earlier_decided: false,
                ..
            }]
        ),
        "{skipped:?}"
    );
}

#[test]
fn orders_that_overlapped_may_be_decided_in_either_order() {
    // `b` began before `a`'s 201: they were concurrent, and no order between them is promised.
    let overlapping = found(|h, s| {
        h[4] = invoke(3, 15.0, Operation::Order, Some(200), None);
        s.decided.reverse();
    });
    assert_eq!(overlapping, []);
}

#[test]
fn dead_letters_or_unsent_rows_left_behind_and_a_history_without_its_end_are_caught() {
    let left = found(|h, _| {
        *h.last_mut().unwrap() = Entry::Observed {
            at_ms: 100.0,
            dead_letters: 1,
            unsent_outbox_rows: 0,
        }
    });
    assert!(matches!(
        &left[..],
        [Violation::LeftBehind {
            dead_letters: 1,
            ..
        }]
    ));
    let unfinished = found(|h, _| {
        h.pop();
    });
    assert_eq!(unfinished, [Violation::NoFinalObservation]);
}
