//! What the GoZon services really share: the money and identity types parsed at the edge, the
//! database bootstrap, the AMQP topology, the transactional outbox relay, the supervised consumer
//! and the HTTP plumbing (problem responses, health probes, shutdown).
//!
//! Nothing here knows about orders or accounts; each service owns its business tables and logic.

pub mod amqp;
pub mod auth;
pub mod broker_logins;
pub mod consumer;
pub mod db;
pub mod dead_letters;
pub mod domain;
pub mod http;
pub mod idempotency;
pub mod messages;
pub mod metrics;
pub mod outbox;
pub mod retention;
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
