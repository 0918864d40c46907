//! Acting outside the database only on what a failover cannot take back.
//!
//! With a synchronous standby (`synchronous_standby_names`), a commit is answered once the
//! standby has its WAL. A commit whose wait is cut short is visible on the primary before the
//! standby has it: after the primary crashed (crash recovery replays it), to the backends left
//! running when its postmaster died, after the wait was cancelled. A failover then loses it. A
//! service may read such a write — an idempotency key's stored answer, an outbox row — so before
//! it acts on what it read outside the database (answers a client, publishes a message) it has
//! a commit of its own, later in the WAL, reach the standby: the standby then has everything
//! before it too.
//!
//! PostgreSQL makes a commit wait for the standby only if its transaction wrote WAL: an
//! assigned transaction id alone commits at once. The mark below writes a transactional logical
//! message of a few bytes, only where a synchronous standby is named. A transaction can carry it
//! in its `BEGIN` ([`begin`]), and a read can report whether a standby is named ([`ReadOn`]), so
//! that a server without one costs no round trip.

use sqlx::{PgConnection, PgPool, Postgres, Transaction};

/// Writes a few bytes of WAL in the current transaction when commits wait for a synchronous
/// standby; nothing otherwise.
macro_rules! mark {
    () => {
        "SELECT pg_logical_emit_message(true, 'gozon', '') \
         WHERE current_setting('synchronous_standby_names') <> ''"
    };
}

/// Makes the caller's transaction commit only once the synchronous standby has everything
/// committed before that commit, including whatever the transaction read.
pub async fn commit_waits_for_standby(tx: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query(mark!()).execute(tx).await?;
    Ok(())
}

/// Begins a transaction that [`commit_waits_for_standby`], in one round trip (`BEGIN` and the
/// mark sent together).
pub async fn begin(pool: &PgPool) -> sqlx::Result<Transaction<'static, Postgres>> {
    pool.begin_with(concat!("BEGIN; ", mark!())).await
}

/// The server a read was made on: `pg_postmaster_start_time()` in the reading statement. A
/// standby promoted since, or the same server restarted, is another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(transparent)]
pub struct Server(time::OffsetDateTime);

/// The columns a reading statement selects beside what it reads, for [`ReadOn`].
macro_rules! read_on {
    () => {
        "pg_postmaster_start_time() AS server, \
         current_setting('synchronous_standby_names') <> '' AS standby_named"
    };
}
pub(crate) use read_on;

/// Where a read was made, reported by the reading statement beside what it read ([`read_on!`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct ReadOn {
    pub server: Server,
    /// Whether that server's commits wait for a synchronous standby.
    pub standby_named: bool,
}

/// Why [`wait_for_standby`] did not return that the standby has it all.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("the database server changed since the read; read again")]
    ServerChanged,
}

/// Returns once the synchronous standby has everything committed before this call on the server
/// `read` was made on: a statement in a transaction of its own on one of `pool`'s connections,
/// or nothing at all when that server named no standby (its commits wait for none). Fails with
/// [`WaitError::ServerChanged`] if that connection reaches another server — a standby promoted
/// since lacks what the old primary had committed unreplicated.
pub async fn wait_for_standby(pool: &PgPool, read: &ReadOn) -> Result<(), WaitError> {
    if !read.standby_named {
        return Ok(());
    }
    let reached: Server = sqlx::query_scalar(concat!(
        "SELECT pg_postmaster_start_time(), (",
        mark!(),
        ")"
    ))
    .fetch_one(pool)
    .await?;
    if reached != read.server {
        return Err(WaitError::ServerChanged);
    }
    Ok(())
}
