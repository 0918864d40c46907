//! Dead letters for operators: see what sits in a queue's `.dlq`, and send messages back to the
//! queue once whatever made them fail is fixed (`gozon dlq list|requeue`).
//!
//! Looking changes nothing: messages are taken without acknowledgement and returned when the
//! channel closes. Sending back is at-least-once: a message is published to the work queue (same
//! body, `message_id` and properties), the broker's confirm awaited, and only then removed from the
//! dead-letter queue; the consumers de-duplicate if a crash repeats it.

use crate::amqp::{BrokerSettings, short};
use gozon_telemetry::trace::TraceParent;
use lapin::{
    BasicProperties,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::FieldTable,
};

/// A dead-lettered message.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeadLetter {
    pub message_id: Option<String>,
    pub body: String,
    /// Why and how often the broker dead-lettered it (`x-death` header), when it says.
    pub death: Option<String>,
}

/// Up to `limit` messages of `queue`'s dead-letter queue, left in place.
pub async fn list(
    broker: &BrokerSettings,
    queue: &str,
    limit: usize,
) -> anyhow::Result<Vec<DeadLetter>> {
    let connection = broker
        .connect_once("dlq")
        .await
        .map_err(anyhow::Error::msg)?;
    let channel = connection.create_channel().await?;
    let dlq = BrokerSettings::dead_letter_queue(queue);
    let mut seen = Vec::new();
    while seen.len() < limit {
        let Some(message) = channel
            .basic_get(short(&dlq), BasicGetOptions::default())
            .await?
        else {
            break;
        };
        seen.push(describe(
            &message.delivery.properties,
            &message.delivery.data,
        ));
    }
    // Unacknowledged, so closing returns every message to the dead-letter queue.
    channel.close(200, short("listed")).await?;
    connection.close(200, short("listed")).await?;
    Ok(seen)
}

/// Moves messages from `queue`'s dead-letter queue back to `queue`: all of them, or only those
/// whose `message_id` is `only`. Returns how many were moved.
pub async fn requeue(
    broker: &BrokerSettings,
    queue: &str,
    only: Option<&str>,
) -> anyhow::Result<usize> {
    let connection = broker
        .connect_once("dlq")
        .await
        .map_err(anyhow::Error::msg)?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let dlq = BrokerSettings::dead_letter_queue(queue);
    let mut moved = 0;
    while let Some(message) = channel
        .basic_get(short(&dlq), BasicGetOptions::default())
        .await?
    {
        let delivery = &message.delivery;
        let id = delivery
            .properties
            .message_id()
            .as_ref()
            .map(|id| id.as_str());
        if only.is_some_and(|wanted| id != Some(wanted)) {
            continue; // left unacknowledged: back in the DLQ when the channel closes
        }
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(short("application/json"))
            .with_headers(carried_over(&delivery.properties));
        let properties = match delivery.properties.message_id() {
            Some(id) => properties.with_message_id(id.clone()),
            None => properties,
        };
        channel
            .basic_publish(
                short(""),
                short(queue),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            )
            .await?
            .await?;
        delivery.acker.ack(BasicAckOptions::default()).await?;
        moved += 1;
    }
    channel.close(200, short("requeued")).await?;
    connection.close(200, short("requeued")).await?;
    Ok(moved)
}

/// The headers a message sent back keeps: its producer's signature (without which it would be
/// refused again) and its trace; not the broker's record of its deaths.
fn carried_over(properties: &BasicProperties) -> FieldTable {
    let mut kept = FieldTable::default();
    if let Some(headers) = properties.headers() {
        for name in [crate::signing::HEADER, TraceParent::HEADER] {
            if let Some(value) = headers.inner().get(name) {
                kept.insert(short(name), value.clone());
            }
        }
    }
    kept
}

fn describe(properties: &BasicProperties, data: &[u8]) -> DeadLetter {
    let death = properties.headers().as_ref().and_then(|headers| {
        headers
            .inner()
            .get("x-death")
            .map(|death| format!("{death:?}"))
    });
    DeadLetter {
        message_id: properties.message_id().as_ref().map(|id| id.to_string()),
        body: String::from_utf8_lossy(data).into_owned(),
        death,
    }
}
