//! The retry policy, in one place: what a failure of the database means, and how long to wait
//! before trying again.
//!
//! - [`Failure::of`] reads a `sqlx::Error` (by SQLSTATE class where the server answered):
//!   the database unreachable or out of resources is [`Failure::Unavailable`], a conflict with
//!   concurrent work is [`Failure::Conflict`], and anything else it refuses is
//!   [`Failure::Refused`] — trying again cannot change that answer.
//! - Work that meets an unavailable dependency waits [`unavailable`] and tries again, for as long
//!   as it takes; a conflict waits [`conflict`] and is tried at most [`MAX_CONFLICTS`] times.
//!
//! The consumer ([`crate::consumer`]) retries and dead-letters by these classes, the relay and
//! the connection code wait [`unavailable`], and the HTTP services answer 503 "retry later" for
//! [`Failure::Unavailable`] alone.

use backon::ExponentialBuilder;
use std::time::Duration;

/// Times a batch (and, after that, one message alone) may meet a [`Failure::Conflict`] before
/// the consumer gives up on it.
pub const MAX_CONFLICTS: u32 = 8;

/// What a failure of the database means for the work that met it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot be reached or has no room right now: try again later, however long
    /// it takes.
    Unavailable,
    /// A conflict with concurrent work (serialization failure, deadlock, a unique key taken
    /// meanwhile): try again soon, a bounded number of times.
    Conflict,
    /// The database refused the work itself (bad data, a violated constraint, a value that does
    /// not encode or decode): the same work gets the same answer.
    Refused,
}

impl Failure {
    /// The connection or the server's resources — SQLSTATE classes 08, 53, 57 and 58; I/O, TLS,
    /// protocol and pool errors — are [`Unavailable`](Self::Unavailable); class 40 and 23505 a
    /// [`Conflict`](Self::Conflict); everything else [`Refused`](Self::Refused).
    pub fn of(error: &sqlx::Error) -> Self {
        use sqlx::Error as E;
        match error {
            E::Database(database) => {
                let code = database.code().unwrap_or_default();
                match code.get(..2).unwrap_or_default() {
                    "08" | "53" | "57" | "58" => Self::Unavailable,
                    "40" => Self::Conflict,
                    _ if code == "23505" => Self::Conflict,
                    _ => Self::Refused,
                }
            }
            E::Io(_)
            | E::Tls(_)
            | E::Protocol(_)
            | E::PoolTimedOut
            | E::PoolClosed
            | E::WorkerCrashed
            | E::BeginFailed => Self::Unavailable,
            _ => Self::Refused,
        }
    }
}

/// The wait before trying again with a dependency that was unavailable: 100 ms doubling to 5 s,
/// with jitter, forever.
pub fn unavailable() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times()
}

/// The wait before trying again after a conflict, which clears in milliseconds: 20 ms doubling
/// to 1 s, with jitter ([`MAX_CONFLICTS`] bounds the attempts).
pub fn conflict() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .without_max_times()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_connection_or_an_exhausted_pool_is_unavailable_and_a_decode_error_is_refused() {
        assert_eq!(
            Failure::of(&sqlx::Error::PoolTimedOut),
            Failure::Unavailable
        );
        assert_eq!(
            Failure::of(&sqlx::Error::Io(std::io::ErrorKind::ConnectionReset.into())),
            Failure::Unavailable
        );
        assert_eq!(
            Failure::of(&sqlx::Error::ColumnNotFound("x".into())),
            Failure::Refused
        );
    }
}
