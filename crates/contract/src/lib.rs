//! What GoZon's services agree on, and nothing else: the domain types every edge parses into
//! ([`domain`]: `UserId`, `Amount`, `OrderId`) and the messages they exchange over RabbitMQ
//! ([`messages`]). No I/O: the load generator, the tests and both services use these types; the
//! `sqlx` feature adds their database mappings for the services.

pub mod domain;
pub mod messages;
