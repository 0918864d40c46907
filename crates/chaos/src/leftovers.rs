//! What a recovered system must no longer hold: messages in dead-letter queues, outbox rows
//! the broker never confirmed.

use crate::system::WORK_QUEUES;
use gozon_messaging::amqp::BrokerSettings;
use gozon_test_support::Broker;
use sqlx::{Connection, PgConnection};
use std::time::Duration;

/// Messages in the dead-letter queues of both work queues.
pub(crate) async fn dead_letters(amqp_url: &str) -> anyhow::Result<u32> {
    let broker = Broker::connect_to(amqp_url).await?;
    let mut total = 0;
    for queue in WORK_QUEUES {
        total += broker
            .ready_count(&BrokerSettings::dead_letter_queue(queue))
            .await?;
    }
    Ok(total)
}

/// Outbox rows not yet confirmed by the broker, across the given databases, once they have had
/// ten seconds to drain (a row leaves the outbox a moment after the consumer may have seen it).
pub(crate) async fn unsent_outbox_rows(database_urls: &[String]) -> anyhow::Result<i64> {
    let mut databases = Vec::new();
    for url in database_urls {
        databases.push(PgConnection::connect(url).await?);
    }
    let mut total = 0;
    for _ in 0..50 {
        total = 0;
        for db in &mut databases {
            let (unsent,): (i64,) = sqlx::query_as("SELECT count(*) FROM outbox")
                .fetch_one(&mut *db)
                .await?;
            total += unsent;
        }
        if total == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(total)
}
