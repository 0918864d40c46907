//! The transactional inbox: which messages were already processed.
//!
//! [`record`] runs first in a consumer's transaction (for payment requests, with the user's line
//! taken, [`crate::sequences::admit`]). The row commits together with the message's effects, so
//! a message is either processed with its id recorded, or neither. Ids older than
//! `INBOX_RETENTION_HOURS` are deleted by [`sweep`].

use gozon_runtime::retention::Sweep;
use sqlx::PgExecutor;
use std::time::Duration;

/// Records `message_id`; `false` means it was recorded before and the message is a duplicate.
/// A concurrent transaction holding the same id makes this wait for its outcome.
pub async fn record(db: impl PgExecutor<'_>, message_id: &str) -> sqlx::Result<bool> {
    let inserted = sqlx::query("INSERT INTO inbox (message_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(message_id)
        .execute(db)
        .await?
        .rows_affected();
    Ok(inserted == 1)
}

/// Forgets message ids older than `keep`. A redelivery comes within seconds; anything later is
/// still answered once, from the decision recorded in `payments`.
pub fn sweep(keep: Duration) -> Sweep {
    Sweep {
        name: "inbox",
        delete: "DELETE FROM inbox WHERE message_id IN \
                 (SELECT message_id FROM inbox WHERE received_at < $1 ORDER BY received_at LIMIT $2)",
        keep,
    }
}
