//! A plain connection to the test broker: publishing as a service would (signed or not),
//! taking messages, tapping a queue, counting what waits.

use crate::{TestPeer, amqp_url};
use gozon_messaging::amqp::short;
use lapin::{
    BasicProperties, Channel, Connection, ConnectionProperties,
    options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions},
};
use std::time::Duration;

/// A plain connection to the test broker, for publishing and inspecting messages directly.
pub struct Broker {
    _connection: Connection,
    pub channel: Channel,
}

impl Broker {
    pub async fn connect() -> lapin::Result<Self> {
        Self::connect_to(&amqp_url()).await
    }

    /// A connection to the broker at `url` rather than the test broker.
    pub async fn connect_to(url: &str) -> lapin::Result<Self> {
        let connection = Connection::connect(url, ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok(Self {
            _connection: connection,
            channel,
        })
    }

    /// Publishes `body` to `queue` (through the default exchange) as a persistent message with
    /// the given `message_id`, and waits for the broker's confirm.
    pub async fn publish(
        &self,
        queue: &str,
        message_id: Option<&str>,
        body: &[u8],
    ) -> lapin::Result<()> {
        self.publish_to("", queue, message_id, body).await
    }

    /// Publishes `body` to `queue` as [`publish`](Self::publish) does, signed by `peer` as its
    /// producer would sign it.
    pub async fn publish_signed(
        &self,
        queue: &str,
        message_id: Option<&str>,
        body: &[u8],
        peer: &TestPeer,
    ) -> lapin::Result<()> {
        let signature = peer.sign(queue, message_id.unwrap_or(""), body).await;
        self.publish_with("", queue, message_id, body, Some(&signature))
            .await
    }

    /// Publishes `body` to `exchange` with `routing_key` and waits for the broker's confirm.
    pub async fn publish_to(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: Option<&str>,
        body: &[u8],
    ) -> lapin::Result<()> {
        self.publish_with(exchange, routing_key, message_id, body, None)
            .await
    }

    /// Publishes `body` to `exchange` with `routing_key`, with `signature` as its
    /// [`HEADER`](gozon_messaging::signing::HEADER) if given, and waits for the confirm.
    pub async fn publish_with(
        &self,
        exchange: &str,
        routing_key: &str,
        message_id: Option<&str>,
        body: &[u8],
        signature: Option<&str>,
    ) -> lapin::Result<()> {
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type(short("application/json"));
        if let Some(id) = message_id {
            properties = properties.with_message_id(short(id));
        }
        if let Some(signature) = signature {
            let mut headers = lapin::types::FieldTable::default();
            headers.insert(
                short(gozon_messaging::signing::HEADER),
                lapin::types::AMQPValue::LongString(signature.into()),
            );
            properties = properties.with_headers(headers);
        }
        self.channel
            .basic_publish(
                short(exchange),
                short(routing_key),
                BasicPublishOptions::default(),
                body,
                properties,
            )
            .await?
            .await?;
        Ok(())
    }

    /// Takes messages from `queue` until `count` have arrived, waiting up to `timeout`; panics if
    /// fewer arrive.
    pub async fn take(
        &self,
        queue: &str,
        count: usize,
        timeout: Duration,
    ) -> Vec<(Option<String>, Vec<u8>)> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut taken = Vec::new();
        while taken.len() < count {
            match self.drain(queue).await {
                Ok(more) => taken.extend(more),
                Err(error) => panic!("cannot read {queue}: {error}"),
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {count} messages arrived in {queue} within {timeout:?}",
                taken.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        taken
    }

    /// Takes every message now in `queue` (acknowledging them) and returns their bodies and ids.
    pub async fn drain(&self, queue: &str) -> lapin::Result<Vec<(Option<String>, Vec<u8>)>> {
        Ok(self
            .drain_deliveries(queue)
            .await?
            .into_iter()
            .map(|delivery| {
                let id = delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(|id| id.to_string());
                (id, delivery.data)
            })
            .collect())
    }

    /// Takes every message now in `queue` (acknowledging them), whole: properties and headers too.
    pub async fn drain_deliveries(
        &self,
        queue: &str,
    ) -> lapin::Result<Vec<lapin::message::Delivery>> {
        let mut taken = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(short(queue), BasicGetOptions::default())
            .await?
        {
            message
                .delivery
                .acker
                .ack(BasicAckOptions::default())
                .await?;
            taken.push(message.delivery);
        }
        Ok(taken)
    }

    /// Binds a queue of the test's own, `<queue>.tap`, to the exchange the services publish
    /// `queue`'s messages through, so that it receives a copy of every message published for
    /// `queue` from now on — what was published can be read even though the services consume the
    /// originals. Returns the tap's name; it expires ten minutes after its last use.
    pub async fn tap(&self, queue: &str) -> lapin::Result<String> {
        let tap = format!("{queue}.tap");
        let mut args = lapin::types::FieldTable::default();
        args.insert(
            "x-expires".into(),
            lapin::types::AMQPValue::LongLongInt(600_000),
        );
        self.channel
            .queue_declare(
                short(&tap),
                lapin::options::QueueDeclareOptions::durable(),
                args,
            )
            .await?;
        self.channel
            .queue_bind(
                short(&tap),
                short(&gozon_messaging::amqp::BrokerSettings::publish_exchange(
                    queue,
                )),
                short(queue),
                lapin::options::QueueBindOptions::default(),
                lapin::types::FieldTable::default(),
            )
            .await?;
        Ok(tap)
    }

    /// Messages in `queue` that no consumer holds (ready ones).
    pub async fn ready_count(&self, queue: &str) -> lapin::Result<u32> {
        let declared = self
            .channel
            .queue_declare(
                short(queue),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await?;
        Ok(declared.message_count())
    }
}
