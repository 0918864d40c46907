//! What the checker reports: one broken guarantee, naming the operations behind it.

use gozon_loadgen::invariants::{Account, Movement, Refund, Status};
use std::fmt;

/// One broken guarantee. Operations are described as `op <n> (<what> <user> at <t> s, <outcome>)`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(into = "String")]
pub enum Violation {
    AcknowledgedOrderLost {
        op: String,
        order_id: String,
    },
    AcknowledgedOrderChanged {
        op: String,
        order_id: String,
        stored: (String, i64),
    },
    AcknowledgedWithoutId {
        op: String,
    },
    /// An operation without the amount its kind needs: the history itself is broken.
    MalformedOperation {
        op: String,
    },
    OrderFromNowhere {
        order_id: String,
        user_id: String,
        amount: i64,
    },
    DepositsLost {
        user_id: String,
        held: i64,
        acknowledged: i64,
        last: String,
    },
    DepositsFromNowhere {
        user_id: String,
        held: i64,
        acknowledged: i64,
        unanswered: i64,
    },
    Unbalanced {
        user_id: String,
        account: Account,
    },
    MoneyDisagrees {
        order_id: String,
        status: Status,
        refund: Option<Refund>,
        moved: Vec<(Movement, i64)>,
        placed_by: Option<String>,
    },
    FinishedThoughCancelled {
        order_id: String,
        cancel: String,
        placed_by: Option<String>,
    },
    MoneyForUnknownOrder {
        order_id: String,
    },
    /// `later` began after `earlier`'s 201, yet was decided first (or `earlier` never was).
    DecidedOutOfOrder {
        user_id: String,
        earlier: String,
        later: String,
        earlier_decided: bool,
    },
    LeftBehind {
        dead_letters: u32,
        unsent_outbox_rows: i64,
    },
    NoFinalObservation,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let by = |placed_by: &Option<String>| {
            placed_by
                .as_ref()
                .map(|op| format!(", placed by {op}"))
                .unwrap_or_default()
        };
        match self {
            Self::AcknowledgedOrderLost { op, order_id } => {
                write!(f, "{op}: acknowledged order {order_id} was lost")
            }
            Self::AcknowledgedOrderChanged {
                op,
                order_id,
                stored: (user, amount),
            } => write!(
                f,
                "{op}: order {order_id} is stored as {user} {amount} instead"
            ),
            Self::AcknowledgedWithoutId { op } => {
                write!(f, "{op}: acknowledged without an order id")
            }
            Self::MalformedOperation { op } => write!(f, "{op}: recorded without its amount"),
            Self::OrderFromNowhere {
                order_id,
                user_id,
                amount,
            } => write!(
                f,
                "order {order_id} ({user_id} {amount}) exists, but no acknowledged or unanswered request made it"
            ),
            Self::DepositsLost {
                user_id,
                held,
                acknowledged,
                last,
            } => write!(
                f,
                "{user_id}: the ledger holds deposits of {held}, less than the {acknowledged} acknowledged (last: {last})"
            ),
            Self::DepositsFromNowhere {
                user_id,
                held,
                acknowledged,
                unanswered,
            } => write!(
                f,
                "{user_id}: the ledger holds deposits of {held}, more than the {acknowledged} acknowledged and {unanswered} unanswered"
            ),
            Self::Unbalanced { user_id, account } => write!(
                f,
                "{user_id}: balance {}, but deposits {} − debits {} + refunds {} (lowest {})",
                account.balance,
                account.deposited,
                account.debited,
                account.refunded,
                account.lowest
            ),
            Self::MoneyDisagrees {
                order_id,
                status,
                refund,
                moved,
                placed_by,
            } => {
                let refund = refund.map(|r| format!(" (refund {r})")).unwrap_or_default();
                write!(
                    f,
                    "order {order_id} is {status}{refund} with ledger entries {moved:?}{}",
                    by(placed_by)
                )
            }
            Self::FinishedThoughCancelled {
                order_id,
                cancel,
                placed_by,
            } => write!(
                f,
                "order {order_id} ended FINISHED although {cancel} was accepted{}",
                by(placed_by)
            ),
            Self::MoneyForUnknownOrder { order_id } => {
                write!(f, "money moved for order {order_id}, which does not exist")
            }
            Self::DecidedOutOfOrder {
                user_id,
                earlier,
                later,
                earlier_decided,
            } => {
                let when = if *earlier_decided {
                    "was decided after"
                } else {
                    "was never decided, unlike"
                };
                write!(
                    f,
                    "{user_id}: {earlier} {when} {later}, which began after its 201"
                )
            }
            Self::LeftBehind {
                dead_letters,
                unsent_outbox_rows,
            } => write!(
                f,
                "left behind: {dead_letters} dead letters, {unsent_outbox_rows} unsent outbox rows"
            ),
            Self::NoFinalObservation => write!(f, "the history ends without the final observation"),
        }
    }
}

impl From<Violation> for String {
    fn from(violation: Violation) -> Self {
        violation.to_string()
    }
}
