//! GoZon over RabbitMQ, with PostgreSQL on both ends: the transactional outbox and its relay
//! ([`outbox`]), what a transaction sends once it commits ([`outgoing`]), the supervised
//! consumer that applies messages in the receiver's transaction and acknowledges after commit
//! ([`consumer`]), the queue topology and connections ([`amqp`]), dead letters
//! ([`dead_letters`]), least-privilege broker logins ([`broker_logins`]), the retry policy
//! wherever a dependency may fail ([`retry`]), and the wait for a synchronous standby before
//! acting on what was read ([`standby`]).
//!
//! Nothing here knows about orders or accounts.

pub mod amqp;
pub mod batch;
pub mod broker_logins;
pub mod consumer;
pub mod dead_letters;
pub mod outbox;
pub mod outgoing;
pub mod retry;
pub mod signing;
pub mod standby;

/// A service that talks to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Orders,
    Payments,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Orders => "orders",
            Self::Payments => "payments",
        }
    }

    /// The service at the other end of its queues.
    pub fn peer(self) -> Self {
        match self {
            Self::Orders => Self::Payments,
            Self::Payments => Self::Orders,
        }
    }
}

/// The outbox table's migrations; [`gozon_runtime::db`] runs them with each service's own.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
