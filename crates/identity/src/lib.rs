//! GoZon identity: who may call the API.
//!
//! - [`users`]: `POST /auth/signup`, `POST /auth/login`, `POST /auth/logout` — accounts of
//!   people, passwords only as Argon2id hashes ([`passwords`]), repeated login attempts slowed
//!   down ([`limits`]);
//! - [`keys`]: the Ed25519 keys tokens are signed with, made on first start and kept in the
//!   identity database, rotated with `gozon rotate-signing-key`, published at
//!   `GET /auth/jwks.json` for the services to check tokens themselves;
//! - [`startup`]: the `Application` (database, listener, routes).
//!
//! Identity owns its own database (`gozon_identity`); nothing else reads it.

pub mod config;
pub mod error;
pub mod keys;
pub mod limits;
pub mod passwords;
pub mod startup;
pub mod state;
pub mod users;

pub use config::Settings;
pub use startup::{Application, schema};
