//! The orders service: a REST API for orders, a transactional outbox that asks the payments
//! service to debit each new order, and a consumer that applies the payment results.
//!
//! - [`orders`]: the routes, the order record and its SQL; `POST /orders` writes the order and its
//!   payment request in one transaction.
//! - [`payment_results`]: the consumer of `payment.status`; a result moves an order out of `NEW`
//!   once and only once.
//! - [`live`]: status changes pushed to clients as server-sent events, across instances.
//! - [`startup`]: wires the database, the relay, the consumer and the HTTP server together.

pub mod config;
pub mod error;
pub mod live;
pub mod orders;
pub mod payment_results;
pub mod startup;

pub use config::Settings;
pub use startup::{Application, build};
