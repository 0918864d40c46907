//! SPEC section 5's rules on money, over data, written once: the load generator's audit and the
//! chaos harness's checker both judge by these. Each reads what it gathered (through the API,
//! from the databases) into these types first; a status or a kind it cannot read is a finding of
//! its own, never a silent default.

use std::{fmt, str::FromStr};

/// Where an order stands, as the API and the orders database spell it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    New,
    Finished,
    Cancelled,
    Refunding,
    Refunded,
}

/// The give-back of a cancelled order's debit, as the API spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refund {
    Requested,
    Completed,
}

/// A movement of money for an order, as the payments ledger spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Movement {
    Debit,
    Refund,
}

/// A spelling none of the types above knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unknown(pub String);

impl fmt::Display for Unknown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown spelling {:?}", self.0)
    }
}

impl std::error::Error for Unknown {}

macro_rules! spelled {
    ($type:ty { $($variant:ident => $text:literal),* $(,)? }) => {
        impl FromStr for $type {
            type Err = Unknown;
            fn from_str(text: &str) -> Result<Self, Unknown> {
                match text {
                    $($text => Ok(Self::$variant),)*
                    other => Err(Unknown(other.to_owned())),
                }
            }
        }
        impl fmt::Display for $type {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self { $(Self::$variant => $text,)* })
            }
        }
    };
}

spelled!(Status {
    New => "NEW", Finished => "FINISHED", Cancelled => "CANCELLED",
    Refunding => "REFUNDING", Refunded => "REFUNDED",
});
spelled!(Refund { Requested => "REQUESTED", Completed => "COMPLETED" });
spelled!(Movement { Debit => "DEBIT", Refund => "REFUND" });

/// An order as it stands at the end, with the money moved for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    pub status: Status,
    pub refund: Option<Refund>,
    pub amount: i64,
    /// Its ledger rows, in any order.
    pub moved: Vec<(Movement, i64)>,
}

impl Settled {
    /// Whether the order has reached the end of its way: `FINISHED`, `REFUNDED`, or `CANCELLED`
    /// with no refund still under way.
    pub fn is_final(status: Status, refund: Option<Refund>) -> bool {
        match status {
            Status::Finished | Status::Refunded => true,
            Status::Cancelled => refund != Some(Refund::Requested),
            Status::New | Status::Refunding => false,
        }
    }

    /// SPEC 5, once everything has settled: `FINISHED` ⇔ one debit of its amount and no refund;
    /// `REFUNDED` ⇔ one debit and one refund of its amount; `CANCELLED` ⇔ no debit, or one
    /// debit and one refund. An order not final agrees with nothing.
    pub fn money_agrees(&self) -> bool {
        let mut moved = self.moved.clone();
        moved.sort();
        let debited = [(Movement::Debit, self.amount)];
        let given_back = [
            (Movement::Debit, self.amount),
            (Movement::Refund, self.amount),
        ];
        Self::is_final(self.status, self.refund)
            && match self.status {
                Status::Finished => moved == debited,
                Status::Refunded => moved == given_back,
                Status::Cancelled => moved.is_empty() || moved == given_back,
                Status::New | Status::Refunding => false,
            }
    }
}

/// An account's balance beside the sums of its ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Account {
    pub balance: i64,
    pub deposited: i64,
    pub debited: i64,
    pub refunded: i64,
    /// The lowest the ledger's running sum went, in the order its rows were written.
    pub lowest: i64,
}

impl Account {
    /// SPEC 5: balance = deposits − debits + refunds, and never below zero at any moment (no
    /// prefix of the ledger below zero).
    pub fn balances(&self) -> bool {
        self.balance == self.deposited - self.debited + self.refunded
            && self.balance >= 0
            && self.lowest >= 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(status: Status, refund: Option<Refund>, moved: &[(Movement, i64)]) -> Settled {
        Settled {
            status,
            refund,
            amount: 300,
            moved: moved.to_vec(),
        }
    }

    const DEBIT: (Movement, i64) = (Movement::Debit, 300);
    const REFUND: (Movement, i64) = (Movement::Refund, 300);

    #[test]
    fn each_final_status_agrees_with_exactly_its_movements() {
        use Status::*;
        assert!(settled(Finished, None, &[DEBIT]).money_agrees());
        assert!(!settled(Finished, None, &[]).money_agrees());
        assert!(!settled(Finished, None, &[DEBIT, REFUND]).money_agrees());
        assert!(!settled(Finished, None, &[(Movement::Debit, 200)]).money_agrees());
        assert!(settled(Refunded, Some(Refund::Completed), &[REFUND, DEBIT]).money_agrees());
        assert!(!settled(Refunded, Some(Refund::Completed), &[DEBIT]).money_agrees());
        assert!(settled(Cancelled, None, &[]).money_agrees());
        assert!(settled(Cancelled, Some(Refund::Completed), &[DEBIT, REFUND]).money_agrees());
        assert!(!settled(Cancelled, None, &[DEBIT]).money_agrees());
    }

    #[test]
    fn an_order_on_its_way_agrees_with_nothing() {
        assert!(!settled(Status::New, None, &[]).money_agrees());
        assert!(!settled(Status::Refunding, Some(Refund::Requested), &[DEBIT]).money_agrees());
        assert!(!settled(Status::Cancelled, Some(Refund::Requested), &[DEBIT]).money_agrees());
    }

    #[test]
    fn a_balance_agrees_only_with_its_ledger_and_never_below_zero() {
        let account = Account {
            balance: 700,
            deposited: 1000,
            debited: 500,
            refunded: 200,
            lowest: 500,
        };
        assert!(account.balances());
        assert!(
            !Account {
                balance: 800,
                ..account
            }
            .balances()
        );
        assert!(
            !Account {
                lowest: -1,
                ..account
            }
            .balances()
        );
    }

    #[test]
    fn spellings_read_back_and_an_unknown_one_is_refused() {
        for status in [
            Status::New,
            Status::Finished,
            Status::Cancelled,
            Status::Refunding,
        ] {
            assert_eq!(status.to_string().parse(), Ok(status));
        }
        assert_eq!("PAID".parse::<Status>(), Err(Unknown("PAID".into())));
    }
}
