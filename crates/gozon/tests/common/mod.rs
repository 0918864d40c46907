//! The whole system started in-process for one test: payments, orders and the gateway, on their
//! own databases and queues. The orders database and the broker are reached through proxies the
//! test can cut, to stage outages without touching the shared servers.
#![allow(dead_code)]

use clap::Parser;
use gozon_test_support::{Running, TcpProxy, TestNames, amqp_url, eventually, postgres_base_url};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct System {
    pub names: TestNames,
    pub gateway: String,
    pub orders_url: String,
    pub payments_url: String,
    pub http: reqwest::Client,
    pub orders_pool: PgPool,
    pub payments_pool: PgPool,
    pub orders_db: TcpProxy,
    pub rabbit: TcpProxy,
    stop: CancellationToken,
    services: Vec<Running>,
    gateway_task: JoinHandle<()>,
}

/// `host:port` of a `scheme://[user@]host:port[/…]` URL.
pub fn host_port(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_owned()
}

impl System {
    pub async fn start() -> Self {
        Self::start_with(TestNames::new()).await
    }

    /// Starts the system again on the databases and queues of an earlier (halted) one.
    pub async fn restart(names: TestNames) -> Self {
        Self::start_with(names).await
    }

    async fn start_with(names: TestNames) -> Self {
        gozon_shared::telemetry::init_for_tests();
        let orders_db = TcpProxy::start(&host_port(&postgres_base_url()), true)
            .await
            .unwrap();
        let rabbit = TcpProxy::start(&host_port(&amqp_url()), true)
            .await
            .unwrap();
        let amqp = rabbit.url_through(&amqp_url());
        let stop = CancellationToken::new();

        let payments_args = names.service_args("payments", &names.payments_database_url, &amqp);
        let payments =
            gozon_payments::build(gozon_payments::Settings::parse_from(payments_args), &stop)
                .await
                .unwrap()
                .unwrap();
        let payments = gozon_test_support::run(payments).await;

        let orders_database = orders_db.url_through(&names.orders_database_url);
        let orders_args = names.service_args("orders", &orders_database, &amqp);
        let orders = gozon_orders::build(gozon_orders::Settings::parse_from(orders_args), &stop)
            .await
            .unwrap()
            .unwrap();
        let orders = gozon_test_support::run(orders).await;
        let (payments_url, payments_pool) = (payments.base.clone(), payments.pool.clone());
        let (orders_url, orders_pool) = (orders.base.clone(), orders.pool.clone());
        let services = vec![payments, orders];

        let ui_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web");
        let gateway = gozon_gateway::Application::build(gozon_gateway::Settings::parse_from([
            "gateway",
            "--listen-addr",
            "127.0.0.1:0",
            "--orders-url",
            &orders_url,
            "--payments-url",
            &payments_url,
            "--ui-dir",
            ui_dir,
        ]))
        .await
        .unwrap();
        let gateway_url = format!("http://127.0.0.1:{}", gateway.port());
        let gateway_task = tokio::spawn({
            let stop = stop.clone();
            async move { gateway.run_until_stopped(stop).await.unwrap() }
        });
        let http = reqwest::Client::new();
        Self {
            names,
            gateway: gateway_url,
            orders_url,
            payments_url,
            http,
            orders_pool,
            payments_pool,
            orders_db,
            rabbit,
            stop,
            services,
            gateway_task,
        }
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}{path}", self.gateway))
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.gateway))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    pub async fn open_account(&self, user_id: &str, deposit: i64) {
        assert_eq!(
            self.post("/payments/accounts", json!({"user_id": user_id}))
                .await
                .0,
            201
        );
        if deposit > 0 {
            let (status, _) = self
                .post(
                    "/payments/accounts/deposit",
                    json!({"user_id": user_id, "amount": deposit}),
                )
                .await;
            assert_eq!(status, 200);
        }
    }

    pub async fn place_order(&self, user_id: &str, amount: i64) -> Value {
        let (status, order) = self
            .post(
                "/orders",
                json!({"user_id": user_id, "amount": amount, "description": "e2e"}),
            )
            .await;
        assert_eq!(status, 201, "{order}");
        order
    }

    pub async fn balance(&self, user_id: &str) -> i64 {
        let (status, body) = self
            .get(&format!("/payments/accounts/{user_id}/balance"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["balance"].as_i64().unwrap()
    }

    /// Waits until the order is FINISHED or CANCELLED and returns it.
    pub async fn settled(&self, id: &str) -> Value {
        eventually(&format!("order {id} settled"), WAIT, || async {
            let (status, order) = self.get(&format!("/orders/{id}")).await;
            (status == 200 && order["status"] != "NEW").then_some(order)
        })
        .await
    }

    /// Across both databases: FINISHED ⇔ exactly one debit of the order's amount, CANCELLED ⇔
    /// none; and each account's balance is its deposits minus its debits.
    pub async fn assert_money_is_consistent(&self) {
        let orders: Vec<(uuid::Uuid, String, i64)> =
            sqlx::query_as("SELECT id, status, amount FROM orders")
                .fetch_all(&self.orders_pool)
                .await
                .unwrap();
        for (id, status, amount) in orders {
            let debits: Vec<i64> = sqlx::query_scalar(
                "SELECT amount FROM ledger WHERE kind = 'DEBIT' AND order_id = $1",
            )
            .bind(id)
            .fetch_all(&self.payments_pool)
            .await
            .unwrap();
            match status.as_str() {
                "FINISHED" => assert_eq!(debits, [amount], "order {id}"),
                "CANCELLED" => assert!(debits.is_empty(), "order {id} cancelled but debited"),
                other => panic!("order {id} still {other}"),
            }
        }
        let unbalanced: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM accounts a WHERE a.balance < 0 OR a.balance <> COALESCE((SELECT sum(CASE kind WHEN 'DEPOSIT' THEN amount ELSE -amount END) FROM ledger l WHERE l.user_id = a.user_id), 0)",
        )
        .fetch_one(&self.payments_pool)
        .await
        .unwrap();
        assert_eq!(unbalanced, 0, "every balance equals deposits minus debits");
    }

    /// Stops everything gracefully (in-flight batches finish and are acknowledged) but keeps the
    /// test's databases and queues for inspection; returns their names for the cleanup.
    pub async fn halt(self) -> TestNames {
        self.stop.cancel();
        self.gateway_task.await.unwrap();
        for service in self.services {
            service.stop.cancel();
            service.task.await.unwrap();
        }
        self.orders_pool.close().await;
        self.payments_pool.close().await;
        self.names
    }

    /// Stops everything and removes the test's databases and queues.
    pub async fn stop(self) {
        self.halt().await.cleanup().await;
    }
}
