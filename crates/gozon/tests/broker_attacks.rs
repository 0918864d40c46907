//! What someone holding a service's broker login — and nothing else — can do with it: publish
//! where that service may publish, read where it may read. None of it moves money: every message
//! needs its producer's MAC ([`gozon_messaging::signing`]), and a request or result taken off
//! its queue is asked for again. Each attack below is one that moved money before messages were
//! signed; each is replayed unsigned and signed with a key of the attacker's own.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::{System, WAIT};
use gozon_messaging::{
    Role as Producer,
    amqp::BrokerSettings,
    broker_logins::{self, Login, Rabbitmqctl, Role},
    signing::{KeyRing, PeerKeys, keys},
};
use gozon_test_support::{Broker, TestNames, amqp_url, eventually};
use lapin::options::{BasicAckOptions, BasicGetOptions};
use serde_json::{Value, json};

/// The services' own least-privilege logins, made for this test.
struct Logins {
    names: TestNames,
    logins: [Login; 2],
    rabbitmqctl: Rabbitmqctl,
}

impl Logins {
    async fn provision() -> Self {
        let names = TestNames::new();
        let broker = names.broker(amqp_url());
        let password = uuid::Uuid::new_v4().simple().to_string();
        let logins = [Role::Orders, Role::Payments].map(|role| Login {
            role,
            user: format!("{}_{role:?}", names.id),
            password: password.clone(),
        });
        let rabbitmqctl = Rabbitmqctl {
            program: "rabbitmqctl".into(),
            node: None,
            home: None,
        };
        broker_logins::provision(&broker, &rabbitmqctl, None, &logins)
            .await
            .unwrap();
        Self {
            names,
            logins,
            rabbitmqctl,
        }
    }

    /// A connection to the broker with `role`'s login, as the attacker has it.
    async fn as_(&self, role: Role) -> Broker {
        let login = self.logins.iter().find(|login| login.role == role).unwrap();
        Broker::connect_to(&login.url(&amqp_url())).await.unwrap()
    }

    fn remove(&self) {
        for login in &self.logins {
            self.rabbitmqctl.delete_login(&login.user).unwrap();
        }
    }
}

/// Publishes `body` to `queue` through its publish exchange, unsigned and then signed with a
/// key the attacker made (as if it were `producer`'s, knowing the consumer's public key).
async fn forge(system: &System, attacker: &Broker, producer: Producer, queue: &str, body: Value) {
    let body = body.to_string().into_bytes();
    let exchange = BrokerSettings::publish_exchange(queue);
    attacker
        .publish_with(&exchange, queue, Some("forged-unsigned"), &body, None)
        .await
        .unwrap();
    let consumer_keys = match producer {
        Producer::Orders => &system.payments_pool,
        Producer::Payments => &system.orders_pool,
    };
    let peer = keys::published(&keys::announced(consumer_keys).await.unwrap()).unwrap();
    let own = keys::OwnKey::generate().unwrap();
    let forger = KeyRing::of_keys(producer, vec![own], PeerKeys::Given(peer));
    let signature = forger.sign(queue, "forged-signed", &body).await.unwrap();
    attacker
        .publish_with(
            &exchange,
            queue,
            Some("forged-signed"),
            &body,
            Some(&signature),
        )
        .await
        .unwrap();
}

/// Waits until both forgeries are in `queue`'s dead-letter queue, and takes them.
async fn dead_lettered(queue: &str) {
    let admin = Broker::connect().await.unwrap();
    let dead = admin.take(&format!("{queue}.dlq"), 2, WAIT).await;
    let mut ids: Vec<_> = dead.into_iter().map(|(id, _)| id.unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["forged-signed", "forged-unsigned"]);
}

#[tokio::test]
async fn a_payment_request_forged_with_orders_login_debits_no_one() {
    let logins = Logins::provision().await;
    let system = System::start_with_broker_logins(logins.names.clone(), &logins.logins).await;
    system.open_account("victim", 10_000).await;
    let attacker = logins.as_(Role::Orders).await;
    let queue = system.names.order_payments_queue.clone();
    let deadline = (time::OffsetDateTime::now_utc() + time::Duration::hours(1))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let request = json!({
        "order_id": uuid::Uuid::now_v7(), "user_id": "victim", "amount": 3000,
        "deadline": deadline, "seq": 1,
    });
    forge(&system, &attacker, Producer::Orders, &queue, request).await;
    dead_lettered(&queue).await;
    assert_eq!(system.balance("victim").await, 10_000);
    let decisions: i64 = sqlx::query_scalar("SELECT count(*) FROM payments")
        .fetch_one(&system.payments_pool)
        .await
        .unwrap();
    assert_eq!(decisions, 0, "no decision, no debit");
    system.stop().await;
    logins.remove();
}

#[tokio::test]
async fn a_refund_request_forged_with_orders_login_gives_nothing_back() {
    let logins = Logins::provision().await;
    let system = System::start_with_broker_logins(logins.names.clone(), &logins.logins).await;
    system.open_account("buyer", 10_000).await;
    let order = system.place_order("buyer", 400).await;
    let id = order["id"].as_str().unwrap();
    assert_eq!(system.settled(id).await["status"], "FINISHED");
    let attacker = logins.as_(Role::Orders).await;
    let queue = system.names.order_refunds_queue.clone();
    let refund = json!({"order_id": id, "user_id": "buyer", "amount": 400});
    forge(&system, &attacker, Producer::Orders, &queue, refund).await;
    dead_lettered(&queue).await;
    assert_eq!(system.balance("buyer").await, 9_600);
    assert_eq!(system.finished_with(id).await["status"], "FINISHED");
    system.assert_money_is_consistent().await;
    system.stop().await;
    logins.remove();
}

#[tokio::test]
async fn a_success_forged_with_payments_login_pays_no_order_without_an_account() {
    let logins = Logins::provision().await;
    let mut system = System::start_with_broker_logins(logins.names.clone(), &logins.logins).await;
    // Payments away, so that the forgery comes first.
    system.stop_payments().await;
    let order = system.place_order("no-account", 500).await;
    let id = order["id"].as_str().unwrap();
    let attacker = logins.as_(Role::Payments).await;
    let queue = system.names.payment_status_queue.clone();
    let success = json!({
        "order_id": id, "user_id": "no-account", "amount": 500,
        "status": "SUCCEEDED", "reason": null,
    });
    forge(&system, &attacker, Producer::Payments, &queue, success).await;
    dead_lettered(&queue).await;
    system.start_payments().await;
    let settled = system.finished_with(id).await;
    assert_eq!(
        (settled["status"].as_str(), settled["reason"].as_str()),
        (Some("CANCELLED"), Some("account_not_found"))
    );
    system.stop().await;
    logins.remove();
}

#[tokio::test]
async fn a_decline_forged_with_payments_login_leaves_a_paid_order_paid() {
    let logins = Logins::provision().await;
    let mut system = System::start_with_broker_logins(logins.names.clone(), &logins.logins).await;
    system.open_account("payer", 1_000).await;
    system.stop_payments().await;
    let order = system.place_order("payer", 300).await;
    let id = order["id"].as_str().unwrap();
    let attacker = logins.as_(Role::Payments).await;
    let queue = system.names.payment_status_queue.clone();
    let decline = json!({
        "order_id": id, "user_id": "payer", "amount": 300,
        "status": "FAILED", "reason": "insufficient_funds",
    });
    forge(&system, &attacker, Producer::Payments, &queue, decline).await;
    dead_lettered(&queue).await;
    // The real debit lands: the order is paid, not cancelled with its money kept.
    system.start_payments().await;
    assert_eq!(system.finished_with(id).await["status"], "FINISHED");
    assert_eq!(system.balance("payer").await, 700);
    system.assert_money_is_consistent().await;
    system.stop().await;
    logins.remove();
}

#[tokio::test]
async fn a_refund_request_stolen_with_payments_login_and_a_forged_refund_still_end_refunded() {
    let logins = Logins::provision().await;
    let quick = ["--remind-after", "1s", "--reminder-sweep-interval", "100ms"];
    let mut system = System::start_with_broker_logins_and_orders_args(
        logins.names.clone(),
        &logins.logins,
        &quick,
    )
    .await;
    system.open_account("refundee", 1_000).await;
    let order = system.place_order("refundee", 500).await;
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(system.settled(&id).await["status"], "FINISHED");
    system.stop_payments().await;
    let (status, _) = system
        .post_as("refundee", &format!("/orders/{id}/cancel"), json!({}))
        .await;
    assert_eq!(status, 202);
    // As a competing consumer of order.refunds: take the request and acknowledge it.
    let attacker = logins.as_(Role::Payments).await;
    let requests = system.names.order_refunds_queue.clone();
    let stolen = eventually("the refund request stolen", WAIT, || async {
        let got = attacker
            .channel
            .basic_get(requests.as_str().into(), BasicGetOptions::default())
            .await
            .ok()??;
        got.delivery
            .acker
            .ack(BasicAckOptions::default())
            .await
            .ok()?;
        Some(got.delivery.data)
    })
    .await;
    let stolen: Value = serde_json::from_slice(&stolen).unwrap();
    assert_eq!(stolen["order_id"], id);
    // And answer it: "refunded".
    let results = system.names.refund_status_queue.clone();
    let refunded =
        json!({"order_id": id, "user_id": "refundee", "amount": 500, "status": "REFUNDED"});
    forge(&system, &attacker, Producer::Payments, &results, refunded).await;
    dead_lettered(&results).await;
    assert_eq!(
        system.order_now(&id).await["status"],
        "REFUNDING",
        "the forged refund changed nothing"
    );
    // Orders asks again; payments gives the money back for real.
    system.start_payments().await;
    assert_eq!(system.finished_with(&id).await["status"], "REFUNDED");
    assert_eq!(system.balance("refundee").await, 1_000);
    system.assert_money_is_consistent().await;
    system.stop().await;
    logins.remove();
}
