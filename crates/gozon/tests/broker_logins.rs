//! The services' own broker logins (made with `rabbitmqctl` on the test broker, removed after):
//! each may publish only its own messages and consume only its own queues — a forged payment or
//! refund result or request is refused by the broker — and the whole system, refunds included,
//! runs on them.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use common::System;
use gozon_messaging::{
    amqp::BrokerSettings,
    broker_logins::{self, Login, Rabbitmqctl, Role},
};
use gozon_test_support::{Broker, TestNames, amqp_url};
use lapin::options::BasicGetOptions;

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
    let [orders, payments] = &logins;
    let (orders_url, payments_url) = (orders.url(&amqp_url()), payments.url(&amqp_url()));
    // Each pair: what orders sends and payments reads, what payments answers and orders reads.
    let admin = Broker::connect().await.unwrap();
    for (requests, results) in [
        (&names.order_payments_queue, &names.payment_status_queue),
        (&names.order_refunds_queue, &names.refund_status_queue),
    ] {
        let (requests_exchange, results_exchange) = (
            BrokerSettings::publish_exchange(requests),
            BrokerSettings::publish_exchange(results),
        );
        assert!(may_publish(&orders_url, &requests_exchange, requests).await);
        assert!(
            !may_publish(&orders_url, &results_exchange, results).await,
            "orders may not forge a result ({results})"
        );
        assert!(
            !may_publish(&orders_url, "", results).await,
            "nor reach any queue through the default exchange"
        );
        assert!(may_read(&orders_url, results).await);
        assert!(
            !may_read(&orders_url, requests).await,
            "nor read requests ({requests})"
        );

        assert!(may_publish(&payments_url, &results_exchange, results).await);
        assert!(
            !may_publish(&payments_url, &requests_exchange, requests).await,
            "payments may not forge a request ({requests})"
        );
        assert!(!may_publish(&payments_url, "", requests).await);
        assert!(
            !may_read(&payments_url, results).await,
            "nor read results ({results})"
        );
        // What the checks above published would be consumed by the system below: drop it.
        admin.drain(requests).await.unwrap();
        admin.drain(results).await.unwrap();
    }

    let system = System::start_with_broker_logins(names, &logins).await;
    system.open_account("least", 1000).await;
    let order = system.place_order("least", 300).await;
    let id = order["id"].as_str().unwrap();
    let settled = system.settled(id).await;
    assert_eq!(settled["status"], "FINISHED");
    let (status, _) = system
        .post_as(
            "least",
            &format!("/orders/{id}/cancel"),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(system.finished_with(id).await["status"], "REFUNDED");
    assert_eq!(system.balance("least").await, 1000);
    system.assert_money_is_consistent().await;
    system.stop().await;
    for login in &logins {
        rabbitmqctl.delete_login(&login.user).unwrap();
    }
}
