//! The orders service: a REST API for orders, a transactional outbox that asks the payments
//! service to debit each new order (and to refund cancelled paid ones), and consumers that apply
//! the answers.
//!
//! - [`order`]: the order as the API shows it; [`status`]: where it stands and the moves between
//!   (the state machine); [`transitions`]: how one move is made, guarded, with its history.
//! - [`routes`]: the HTTP API. [`placing`]: orders placed at about the same time are committed
//!   together, each numbered in its user's line and with its payment request in the outbox;
//!   [`cancelling`]: a cancel, with its refund request; [`queries`]: what the API reads.
//! - [`payment_results`]: the consumer of `payment.status`; a result settles an order once.
//! - [`refund_results`]: the consumer of `refund.status`; a refund completes once.
//! - [`deadlines`]: cancels orders still unpaid past their payment deadline.
//! - [`reminders`]: asks payments again when an answer is overdue.
//! - [`live`]: status changes pushed to clients as server-sent events, across instances.
//! - [`state`]: what the handlers share; [`startup`]: the wiring; [`error`]: the API's errors.

pub mod cancelling;
pub mod config;
pub mod deadlines;
pub mod error;
pub mod live;
pub mod order;
pub mod payment_results;
pub mod placing;
pub mod queries;
pub mod refund_results;
pub mod reminders;
pub mod routes;
pub mod startup;
pub mod state;
pub mod status;
pub mod transitions;

pub use config::Settings;
pub use startup::{Application, schema};
