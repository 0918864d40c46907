//! What a transaction tells others once it commits: messages for the [`outbox`](crate::outbox)
//! (the relay publishes them) and notices to this database's `LISTEN`ers (`pg_notify`).
//!
//! A consumer's batch collects them from all its messages and writes them just before its commit
//! in at most two statements, whatever the batch's size, instead of one or two per message. They
//! are written in the transaction, so they exist if and only if it commits; a batch applied again
//! (after a conflict, or without a poison message) starts from an empty `Outgoing`.

use gozon_telemetry::trace::TraceParent;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// Messages and notices collected for one transaction; [`write`](Self::write) stores them.
#[derive(Debug, Default)]
pub struct Outgoing {
    messages: Vec<crate::outbox::Message>,
    notices: Vec<(&'static str, String)>,
}

impl Outgoing {
    /// Adds `payload` for `queue` and returns the message's id; the message carries the current
    /// span as its parent when spans are exported, else a child of `trace`. Wake the relay
    /// ([`Wakeup::notify`](crate::outbox::Wakeup::notify)) after the transaction commits.
    pub fn publish(
        &mut self,
        queue: &str,
        payload: &impl Serialize,
        trace: &TraceParent,
    ) -> Result<Uuid, serde_json::Error> {
        let message = crate::outbox::Message::new(queue, payload, trace)?;
        let id = message.message_id;
        self.messages.push(message);
        Ok(id)
    }

    /// Adds a notice for `channel`'s listeners, delivered once the transaction commits (in the
    /// order added; PostgreSQL folds identical notices of one transaction into one).
    pub fn notify(&mut self, channel: &'static str, payload: String) {
        self.notices.push((channel, payload));
    }

    /// Writes what was collected in `db`'s transaction: one `INSERT` for the messages, one
    /// statement for the notices, none for what is empty.
    pub async fn write(self, db: &mut PgConnection) -> sqlx::Result<()> {
        crate::outbox::insert(&mut *db, &self.messages).await?;
        if !self.notices.is_empty() {
            let (channels, payloads): (Vec<&str>, Vec<String>) = self.notices.into_iter().unzip();
            sqlx::query("SELECT pg_notify(channel, payload) FROM unnest($1::text[], $2::text[]) AS n(channel, payload)")
                .bind(channels)
                .bind(payloads)
                .execute(db)
                .await?;
        }
        Ok(())
    }
}
