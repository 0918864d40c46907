//! The gateway: GoZon's one public entry.
//!
//! - `/auth…` goes to the identity service, `/orders…` to the orders service and `/payments…`
//!   to the payments service, through [`proxy`], which turns the browser's session cookie into
//!   a bearer token;
//! - everything else is the single-page web UI, served from a directory (unknown paths get its
//!   `index.html`, so client-side routes work);
//! - the services' own `/healthz`, `/readyz` and `/metrics` are not reachable through it.

pub mod config;
pub mod proxy;
pub mod startup;

pub use config::Settings;
pub use startup::Application;
