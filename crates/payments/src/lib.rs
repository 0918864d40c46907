//! The payments service: accounts and balances, and the consumer that debits each order at most
//! once.
//!
//! - [`accounts`]: the routes for creating an account, depositing and reading the balance.
//! - [`ledger`]: the only code that moves money — deposits, debits and refunds, each one conditional
//!   statement on the balance plus its ledger row, in the caller's transaction.
//! - [`inbox`]: the record of message ids already processed.
//! - [`sequences`]: each user's line — their requests decided in the order their orders were
//!   placed, an early one parked until its predecessor is decided.
//! - [`payment_requests`]: the consumer of `order.payments`: inbox, the user's line, the debit and
//!   the result's outbox row in one transaction.
//! - [`refund_requests`]: the consumer of `order.refunds`: inbox, refund and the result's outbox
//!   row in one transaction.
//! - [`state`]: what the handlers share; [`startup`]: the wiring (the `Application`).

pub mod accounts;
pub mod config;
pub mod error;
pub mod inbox;
pub mod ledger;
pub mod payment_requests;
pub mod refund_requests;
pub mod sequences;
pub mod startup;
pub mod state;

pub use config::Settings;
pub use startup::{Application, schema};
