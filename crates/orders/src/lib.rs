//! The orders service: a REST API for orders, a transactional outbox that asks the payments
//! service to debit each new order (and to refund cancelled paid ones), and consumers that apply
//! the answers.
//!
//! - [`orders`]: the order record, its state machine and all the SQL on it and its history.
//! - [`routes`]: the HTTP API; placing an order writes it and its payment request in one
//!   transaction, cancelling a paid one writes the move and its refund request.
//! - [`placing`]: orders placed at about the same time are committed together.
//! - [`payment_results`]: the consumer of `payment.status`; a result settles an order once.
//! - [`refund_results`]: the consumer of `refund.status`; a refund completes once.
//! - [`deadlines`]: cancels orders still unpaid past their payment deadline.
//! - [`live`]: status changes pushed to clients as server-sent events, across instances.
//! - [`state`]: what the handlers share; [`startup`]: the wiring.

pub mod config;
pub mod deadlines;
pub mod error;
pub mod live;
pub mod orders;
pub mod payment_results;
pub mod placing;
pub mod refund_results;
pub mod routes;
pub mod startup;
pub mod state;

pub use config::Settings;
pub use startup::Application;
