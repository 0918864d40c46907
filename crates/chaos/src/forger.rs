//! A system broken from outside, for showing that the checker catches what it must: someone who
//! holds payments' message key (read from its database) and an administrative broker login
//! watches the payment requests and, for one in `every`, races payments with a forged decline.
//! Orders cancels the order for `insufficient_funds`; payments' real debit then contradicts it
//! and is dead-lettered, so the money stays debited for a cancelled order — what no signature
//! check can stop once the key is out, and what the checker must report.

use futures::StreamExt;
use gozon_messaging::{
    Role,
    amqp::{BrokerSettings, short},
    signing::{KeyRing, PeerKeys, keys},
};
use gozon_test_support::Broker;
use lapin::{
    options::{BasicAckOptions, BasicConsumeOptions},
    types::FieldTable,
};
use serde_json::{Value, json};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

/// Where the forger works.
pub struct Target {
    /// An administrative login to the broker.
    pub amqp_url: String,
    pub payments_database_url: String,
    pub orders_database_url: String,
    pub broker: BrokerSettings,
}

/// Starts forging a decline for one payment request in `every`, until `stop` fires.
pub async fn forge_declines(
    target: Target,
    every: usize,
    stop: CancellationToken,
) -> anyhow::Result<AbortOnDropHandle<()>> {
    let payments_db = sqlx::PgPool::connect(&target.payments_database_url).await?;
    let orders_db = sqlx::PgPool::connect(&target.orders_database_url).await?;
    let payments_keys = keys::announced(&payments_db).await?;
    let orders_keys = keys::published(&keys::announced(&orders_db).await?)
        .ok_or_else(|| anyhow::anyhow!("orders has no message key"))?;
    let forger = KeyRing::of_keys(Role::Payments, payments_keys, PeerKeys::Given(orders_keys));
    forger.learn_peer().await.map_err(anyhow::Error::msg)?;
    let broker = Broker::connect_to(&target.amqp_url).await?;
    let requests = &target.broker.order_payments_queue;
    let tap = broker.tap(requests).await?;
    let mut deliveries = broker
        .channel
        .basic_consume(
            short(&tap),
            short("forger"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let results = target.broker.payment_status_queue.clone();
    Ok(AbortOnDropHandle::new(tokio::spawn(async move {
        let mut seen = 0;
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => return,
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => delivery,
                    _ => return,
                },
            };
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
            seen += 1;
            if seen % every != 0 {
                continue;
            }
            let Ok(request) = serde_json::from_slice::<Value>(&delivery.data) else {
                continue;
            };
            let decline = json!({
                "order_id": request["order_id"], "user_id": request["user_id"],
                "amount": request["amount"], "status": "FAILED", "reason": "insufficient_funds",
            });
            let body = decline.to_string().into_bytes();
            let id = uuid::Uuid::now_v7().to_string();
            let Ok(signature) = forger.sign(&results, &id, &body).await else {
                continue;
            };
            let exchange = BrokerSettings::publish_exchange(&results);
            let _ = broker
                .publish_with(&exchange, &results, Some(&id), &body, Some(&signature))
                .await;
        }
    })))
}
