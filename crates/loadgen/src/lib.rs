//! Load generator and auditor for GoZon, through the public API of the gateway.
//!
//! A run signs its users up ([`sessions`]), opens accounts and deposits, places orders — at a fixed concurrency (closed loop) or at a
//! fixed arrival rate (open loop, latency counted from each order's scheduled time so slow
//! responses cannot hide) — waits until every order is final, and audits SPEC section 5:
//! every acknowledged order exists and is final; per account, balance = deposits − debits; an order
//! is FINISHED exactly when one debit of its amount exists. It reports throughput and
//! p50/p95/p99/max of the `POST /orders` latency and of the settle time (the order's
//! `updated_at − created_at`, both stamped by the orders service), and the CPU each process of
//! the system spent per order ([`cpu`]).

pub mod audit;
pub mod cpu;
pub mod invariants;
pub mod load;
mod options;
pub mod plot;
pub mod report;
pub mod sessions;

pub use load::run;
pub use options::Options;
pub use report::Report;
