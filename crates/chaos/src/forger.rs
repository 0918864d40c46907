//! A system broken from outside, for showing that the checker catches what it must. Each forger
//! holds a service's message key (read from its database) and an administrative broker login —
//! what no MAC check can stop once the key is out, and what the checker must report:
//!
//! - [`forge_declines`], with payments' key, watches the payment requests and, for one in
//!   `every`, races payments with a forged decline. Orders cancels the order for
//!   `insufficient_funds`; payments' real debit then contradicts it and is dead-lettered, so the
//!   money stays debited for a cancelled order.
//! - [`reorder_requests`], with orders' key, takes payment requests off their queue as a
//!   competing consumer and hands each user's on with their places in line swapped in pairs, so
//!   payments decides a later order of a user before an earlier one. The money stays right;
//!   only the order per user breaks.

use futures::StreamExt;
use gozon_messaging::{
    Role,
    amqp::{BrokerSettings, short},
    signing::{KeyRing, PeerKeys, keys},
};
use gozon_test_support::Broker;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions},
    types::FieldTable,
};
use serde_json::{Value, json};
use std::{collections::HashMap, time::Duration};
use tokio_util::{sync::CancellationToken, task::AbortOnDropHandle};

/// Where the forger works.
pub struct Target {
    /// An administrative login to the broker.
    pub amqp_url: String,
    pub payments_database_url: String,
    pub orders_database_url: String,
    pub broker: BrokerSettings,
}

/// What signs messages as `role` does: its keys, read from its database, and its peer's.
async fn stolen_keys(target: &Target, role: Role) -> anyhow::Result<KeyRing> {
    let (own, peer) = match role {
        Role::Orders => (&target.orders_database_url, &target.payments_database_url),
        Role::Payments => (&target.payments_database_url, &target.orders_database_url),
    };
    let own = keys::announced(&sqlx::PgPool::connect(own).await?).await?;
    let peer = keys::published(&keys::announced(&sqlx::PgPool::connect(peer).await?).await?)
        .ok_or_else(|| anyhow::anyhow!("the peer of {role:?} has no message key"))?;
    let ring = KeyRing::of_keys(role, own, PeerKeys::Given(peer));
    ring.learn_peer().await.map_err(anyhow::Error::msg)?;
    Ok(ring)
}

/// Starts forging a decline for one payment request in `every`, until `stop` fires.
pub async fn forge_declines(
    target: Target,
    every: usize,
    stop: CancellationToken,
) -> anyhow::Result<AbortOnDropHandle<()>> {
    let forger = stolen_keys(&target, Role::Payments).await?;
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

/// How long a taken request waits for another of its user to swap places with; past it, it goes
/// on unchanged.
const PARTNER_WAIT: Duration = Duration::from_millis(500);

/// Starts taking payment requests off their queue and handing each user's on in pairs with
/// their `seq` swapped, until `stop` fires.
pub async fn reorder_requests(
    target: Target,
    stop: CancellationToken,
) -> anyhow::Result<AbortOnDropHandle<()>> {
    let forger = stolen_keys(&target, Role::Orders).await?;
    let broker = Broker::connect_to(&target.amqp_url).await?;
    let requests = target.broker.order_payments_queue.clone();
    let mut deliveries = broker
        .channel
        .basic_consume(
            short(&requests),
            short("reorderer"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    Ok(AbortOnDropHandle::new(tokio::spawn(async move {
        // Per user, the request taken and not handed on yet.
        let mut held: HashMap<String, (Delivery, Value)> = HashMap::new();
        let hand_on = async |delivery: Delivery, request: &Value| {
            let body = request.to_string().into_bytes();
            let id = uuid::Uuid::now_v7().to_string();
            if let Ok(signature) = forger.sign(&requests, &id, &body).await {
                let exchange = BrokerSettings::publish_exchange(&requests);
                let _ = broker
                    .publish_with(&exchange, &requests, Some(&id), &body, Some(&signature))
                    .await;
            }
            let _ = delivery.acker.ack(BasicAckOptions::default()).await;
        };
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(PARTNER_WAIT), if !held.is_empty() => {
                    for (_, (delivery, request)) in held.drain() {
                        hand_on(delivery, &request).await;
                    }
                    continue;
                }
                delivery = deliveries.next() => match delivery {
                    Some(Ok(delivery)) => delivery,
                    _ => return,
                },
            };
            let Ok(mut request) = serde_json::from_slice::<Value>(&delivery.data) else {
                let _ = delivery.acker.ack(BasicAckOptions::default()).await;
                continue;
            };
            let user = request["user_id"].as_str().unwrap_or_default().to_owned();
            match held.remove(&user) {
                None => {
                    held.insert(user, (delivery, request));
                }
                Some((earlier, mut earlier_request)) => {
                    let seq = earlier_request["seq"].take();
                    earlier_request["seq"] = request["seq"].take();
                    request["seq"] = seq;
                    hand_on(delivery, &request).await;
                    hand_on(earlier, &earlier_request).await;
                }
            }
        }
    })))
}
