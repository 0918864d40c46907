//! How a GoZon service runs: its database made ready ([`db`]), its parts run and stopped in an
//! order that loses nothing ([`service`]), its health probes and `/metrics` ([`health`]), the
//! stored answers of `Idempotency-Key` requests ([`idempotency`]), the deletion of old rows
//! ([`retention`]) and the stop signal ([`shutdown`]).

pub mod db;
pub mod health;
pub mod idempotency;
pub mod retention;
pub mod service;
pub mod shutdown;
