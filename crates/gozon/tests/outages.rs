//! The system riding out outages of its database and its broker, staged with proxies that cut
//! the connections of one test's services and leave the shared servers alone.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use clap::Parser;
use common::{System, WAIT};
use gozon_test_support::{TcpProxy, TestNames, amqp_url, eventually, host_port, postgres_base_url};
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn orders_placed_while_the_broker_is_down_settle_once_it_is_back() {
    let system = System::start().await;
    system.open_account("patient", 1000).await;
    system.rabbit.cut();
    let readyz = format!("{}/readyz", system.orders_url);
    let report = eventually("orders reports the broker down", WAIT, || async {
        let response = system.http.get(&readyz).send().await.ok()?;
        (response.status() == 503).then_some(response.json::<serde_json::Value>().await.ok()?)
    })
    .await;
    assert!(
        report["broker"].as_str().unwrap().contains("disconnected"),
        "{report}"
    );

    // Accepted (place_order asserts the 201) while the broker is away: their payment requests
    // wait in the outbox, and nothing settles them.
    let during: Vec<_> =
        futures::future::join_all((0..5).map(|_| system.place_order("patient", 100))).await;
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&system.orders_pool)
        .await
        .unwrap();
    assert_eq!(unsent, 5, "each payment request waits in the outbox");
    for order in &during {
        let id = order["id"].as_str().unwrap();
        let (status, now) = system.get_as("patient", &format!("/orders/{id}")).await;
        assert_eq!((status, now["status"].as_str()), (200, Some("NEW")));
    }
    assert_eq!(system.balance("patient").await, 1000, "nothing debited yet");
    system.rabbit.restore();
    for order in &during {
        assert_eq!(
            system.settled(order["id"].as_str().unwrap()).await["status"],
            "FINISHED"
        );
    }
    assert_eq!(system.balance("patient").await, 500);
    eventually("orders ready again", WAIT, || async {
        (system.http.get(&readyz).send().await.ok()?.status() == 200).then_some(())
    })
    .await;
    system.assert_money_is_consistent().await;
    system.stop().await;
}

#[tokio::test]
async fn with_two_broker_addresses_every_role_moves_to_the_other_when_its_node_is_cut_off() {
    let system = System::start_with_two_broker_addresses().await;
    system.open_account("roamer", 1000).await;
    let first = system.place_order("roamer", 100).await;
    assert_eq!(
        system.settled(first["id"].as_str().unwrap()).await["status"],
        "FINISHED"
    );
    // Each address in turn is cut off (its connections dropped, new ones refused) while the
    // other stays: every role of both services must end up on the one that answers.
    for (cut, kept) in [
        (&system.rabbit, &system.rabbit_b),
        (&system.rabbit_b, &system.rabbit),
    ] {
        cut.cut();
        let order = system.place_order("roamer", 100).await;
        assert_eq!(
            system.settled(order["id"].as_str().unwrap()).await["status"],
            "FINISHED",
            "settled through the other address"
        );
        for service in [&system.orders_url, &system.payments_url] {
            eventually("ready on the other address", WAIT, || async {
                let response = system
                    .http
                    .get(format!("{service}/readyz"))
                    .send()
                    .await
                    .ok()?;
                (response.status() == 200).then_some(())
            })
            .await;
        }
        kept.restore();
        cut.restore();
    }
    assert_eq!(system.balance("roamer").await, 700);
    system.assert_money_is_consistent().await;
    system.stop().await;
}

#[tokio::test]
async fn the_orders_service_answers_503_while_its_database_is_down_and_recovers() {
    let system = System::start().await;
    system.open_account("steady", 1000).await;
    system.orders_db.cut();
    let (status, problem) = system
        .post_as(
            "steady",
            "/orders",
            serde_json::json!({"user_id": "steady", "amount": 100, "description": "x"}),
        )
        .await;
    assert_eq!(status, 503, "{problem}");
    assert!(problem["detail"].as_str().unwrap().contains("unavailable"));
    let readyz = system
        .http
        .get(format!("{}/readyz", system.orders_url))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    assert_eq!(
        readyz.json::<serde_json::Value>().await.unwrap()["database"],
        "unreachable"
    );

    system.orders_db.restore();
    let order = eventually("orders accepted again", WAIT, || async {
        let (status, order) = system
            .post_as(
                "steady",
                "/orders",
                serde_json::json!({"user_id": "steady", "amount": 100, "description": "x"}),
            )
            .await;
        (status == 201).then_some(order)
    })
    .await;
    assert_eq!(
        system.settled(order["id"].as_str().unwrap()).await["status"],
        "FINISHED"
    );
    assert_eq!(
        system.balance("steady").await,
        900,
        "the refused order moved no money"
    );
    system.assert_money_is_consistent().await;
    system.stop().await;
}

#[tokio::test]
async fn a_service_started_while_its_database_is_down_waits_for_it() {
    gozon_telemetry::init_for_tests();
    let names = TestNames::new();
    let database = TcpProxy::start(&host_port(&postgres_base_url()), false)
        .await
        .unwrap();
    let args = names.service_args(
        "orders",
        &database.url_through(&names.orders_database_url),
        &amqp_url(),
    );
    let stop = CancellationToken::new();
    let build = tokio::spawn({
        let stop = stop.clone();
        async move {
            gozon_orders::Application::build(gozon_orders::Settings::parse_from(args), &stop).await
        }
    });
    eventually("several connection attempts", WAIT, || async {
        (database.attempts() >= 3).then_some(())
    })
    .await;
    assert!(!build.is_finished(), "still waiting, not crashed");

    database.restore();
    let app = build
        .await
        .unwrap()
        .expect("built once the database is back");
    let base = format!("http://127.0.0.1:{}", app.port());
    let task = tokio::spawn({
        let stop = stop.clone();
        async move { app.run_until_stopped(stop).await.unwrap() }
    });
    let http = reqwest::Client::new();
    eventually("ready", WAIT, || async {
        (http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .ok()?
            .status()
            == 200)
            .then_some(())
    })
    .await;
    stop.cancel();
    task.await.unwrap();
}
