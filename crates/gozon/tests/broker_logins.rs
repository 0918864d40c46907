//! The services' own broker logins (made with `rabbitmqctl` on the test broker, removed after):
//! each may publish only its own messages and consume only its own queue — a forged payment
//! result or request is refused by the broker — and the whole system runs on them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use clap::Parser;
use common::System;
use gozon_shared::{
    amqp::BrokerSettings,
    broker_logins::{self, Login, Rabbitmqctl, Role},
};
use gozon_test_support::{Broker, TestNames, amqp_url};
use lapin::options::BasicGetOptions;

#[derive(clap::Parser)]
struct Settings {
    #[command(flatten)]
    broker: BrokerSettings,
}

/// Whether `url`'s login may publish to `exchange` (routed to `queue`): confirmed, or refused.
async fn may_publish(url: &str, exchange: &str, queue: &str) -> bool {
    let broker = Broker::connect_to(url).await.unwrap();
    broker
        .publish_to(exchange, queue, Some("forged"), b"{}")
        .await
        .is_ok()
}

/// Whether `url`'s login may take messages from `queue`.
async fn may_read(url: &str, queue: &str) -> bool {
    let broker = Broker::connect_to(url).await.unwrap();
    broker
        .channel
        .basic_get(queue.into(), BasicGetOptions::default())
        .await
        .is_ok()
}

#[tokio::test]
async fn a_service_login_may_publish_only_its_own_messages_and_the_system_runs_on_them() {
    let names = TestNames::new();
    let broker = Settings::parse_from([
        "x",
        "--amqp-url",
        &amqp_url(),
        "--order-payments-queue",
        &names.order_payments_queue,
        "--payment-status-queue",
        &names.payment_status_queue,
        "--queue-expires-ms",
        "600000",
    ])
    .broker;
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
    broker_logins::provision(&broker, &rabbitmqctl, &logins)
        .await
        .unwrap();
    let [orders, payments] = &logins;
    let (orders_url, payments_url) = (orders.url(&amqp_url()), payments.url(&amqp_url()));
    let (requests, results) = (&names.order_payments_queue, &names.payment_status_queue);
    let (requests_exchange, results_exchange) = (
        BrokerSettings::publish_exchange(requests),
        BrokerSettings::publish_exchange(results),
    );

    assert!(may_publish(&orders_url, &requests_exchange, requests).await);
    assert!(
        !may_publish(&orders_url, &results_exchange, results).await,
        "orders may not forge a payment result"
    );
    assert!(
        !may_publish(&orders_url, "", results).await,
        "nor reach any queue through the default exchange"
    );
    assert!(may_read(&orders_url, results).await);
    assert!(
        !may_read(&orders_url, requests).await,
        "nor read payment requests"
    );

    assert!(may_publish(&payments_url, &results_exchange, results).await);
    assert!(
        !may_publish(&payments_url, &requests_exchange, requests).await,
        "payments may not forge a payment request"
    );
    assert!(!may_publish(&payments_url, "", requests).await);
    assert!(
        !may_read(&payments_url, results).await,
        "nor read payment results"
    );
    // What the checks above published is consumed by the system below: drop it first.
    let admin = Broker::connect().await.unwrap();
    admin.drain(requests).await.unwrap();
    admin.drain(results).await.unwrap();

    let system = System::start_with_broker_logins(names, &logins).await;
    system.open_account("least", 1000).await;
    let order = system.place_order("least", 300).await;
    let settled = system.settled(order["id"].as_str().unwrap()).await;
    assert_eq!(settled["status"], "FINISHED");
    system.assert_money_is_consistent().await;
    system.stop().await;
    for login in &logins {
        rabbitmqctl.delete_login(&login.user).unwrap();
    }
}
