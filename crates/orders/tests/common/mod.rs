//! An orders service started in-process for one test, on its own database (reached through a
//! proxy the test can cut) and its own queues.
#![allow(dead_code)]

use clap::Parser;
use gozon_messaging::Role;
use gozon_orders::Settings;
use gozon_test_support::{
    Broker, Running, TcpProxy, TestIssuer, TestNames, TestPeer, amqp_url,
    create_database_from_template, eventually, postgres_base_url,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(20);

pub struct Orders {
    pub names: TestNames,
    /// The service reaches its database through this, so a test can cut it.
    pub database: TcpProxy,
    pub base: String,
    pub pool: PgPool,
    pub broker: Broker,
    pub http: reqwest::Client,
    /// Signs the tokens of the test's users; the service trusts it.
    pub issuer: TestIssuer,
    /// Payments, as far as the service can tell: the results the test publishes are its.
    pub payments: Arc<TestPeer>,
    pub stop: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Orders {
    pub async fn start(extra_args: &[&str]) -> Self {
        let payments = Arc::new(TestPeer::start(Role::Payments).await);
        let names = TestNames::new();
        create_database_from_template(&names.orders_database_url, &gozon_orders::schema()).await;
        Self::start_sharing(names, payments, extra_args).await
    }

    /// Another instance of this one: on its database and queues, with the same payments.
    pub async fn another(&self, extra_args: &[&str]) -> Self {
        Self::start_sharing(self.names.clone(), self.payments.clone(), extra_args).await
    }

    /// An instance on `names` (database and queues) whose results come from `payments`.
    pub async fn start_sharing(
        names: TestNames,
        payments: Arc<TestPeer>,
        extra_args: &[&str],
    ) -> Self {
        gozon_telemetry::init_for_tests();
        let database = TcpProxy::start(&postgres_address(), true).await.unwrap();
        let issuer = TestIssuer::start("gozon-tests").await;
        let mut args = names.service_args(
            "orders",
            &database.url_through(&names.orders_database_url),
            &amqp_url(),
        );
        args.extend(issuer.service_args());
        args.extend([
            "--payments-message-keys-url".to_owned(),
            payments.keys_url().to_owned(),
        ]);
        args.extend(extra_args.iter().map(|arg| arg.to_string()));
        let app =
            gozon_orders::Application::build(Settings::parse_from(args), &CancellationToken::new())
                .await
                .unwrap();
        let Running {
            base,
            pool,
            stop,
            task,
        } = gozon_test_support::run(app.port(), app.pool().clone(), |stop| {
            app.run_until_stopped(stop)
        })
        .await;
        payments.meet(&format!("{base}/messaging/keys")).await;
        let http = reqwest::Client::new();
        Self {
            names,
            database,
            base,
            pool,
            broker: Broker::connect().await.unwrap(),
            http,
            issuer,
            payments,
            stop,
            task,
        }
    }

    /// A token of `user`.
    pub fn token(&self, user: &str) -> String {
        self.issuer.token(user)
    }

    pub async fn place(&self, user_id: &str, amount: i64) -> Value {
        let response = self
            .http
            .post(format!("{}/orders", self.base))
            .bearer_auth(self.token(user_id))
            .json(&json!({"user_id": user_id, "amount": amount, "description": "test"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.json().await.unwrap()
    }

    /// The order as its owner sees it through the API.
    pub async fn order(&self, id: &str) -> Value {
        let owner: String = sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&self.pool)
            .await
            .unwrap();
        self.http
            .get(format!("{}/orders/{id}", self.base))
            .bearer_auth(self.token(&owner))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn publish_result(&self, message_id: &str, result: &Value) {
        let body = serde_json::to_vec(result).unwrap();
        self.broker
            .publish_signed(
                &self.names.payment_status_queue,
                Some(message_id),
                &body,
                &self.payments,
            )
            .await
            .unwrap();
    }

    /// `user` asks to cancel order `id`; the answer's status and body.
    pub async fn cancel(&self, user: &str, id: &str, key: Option<&str>) -> (u16, Value) {
        let mut request = self
            .http
            .post(format!("{}/orders/{id}/cancel", self.base))
            .bearer_auth(self.token(user));
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The events of order `id`'s history, oldest first.
    pub async fn history(&self, user: &str, id: &str) -> Vec<String> {
        let response = self
            .http
            .get(format!("{}/orders/{id}/history", self.base))
            .bearer_auth(self.token(user))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let history: Vec<Value> = response.json().await.unwrap();
        history
            .iter()
            .map(|entry| entry["event"].as_str().unwrap().to_owned())
            .collect()
    }

    pub async fn publish_refund_result(&self, message_id: &str, order: &Value) {
        let result = json!({
            "order_id": order["id"], "user_id": order["user_id"], "amount": order["amount"],
            "status": "REFUNDED",
        });
        self.broker
            .publish_signed(
                &self.names.refund_status_queue,
                Some(message_id),
                &serde_json::to_vec(&result).unwrap(),
                &self.payments,
            )
            .await
            .unwrap();
    }

    /// The refund requests this service has published so far (taken off the queue).
    pub async fn take_refund_requests(&self, count: usize) -> Vec<Value> {
        self.broker
            .take(&self.names.order_refunds_queue, count, WAIT)
            .await
            .iter()
            .map(|(_, body)| serde_json::from_slice(body).unwrap())
            .collect()
    }

    pub async fn wait_status(&self, id: &str, status: &str) -> Value {
        eventually(&format!("order {id} {status}"), WAIT, || async {
            let order = self.order(id).await;
            (order["status"] == status).then_some(order)
        })
        .await
    }

    /// Stops this instance. The test's databases and queues go once no instance shares them
    /// ([`TestNames`]).
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
        self.pool.close().await;
    }
}

pub fn postgres_address() -> String {
    postgres_base_url()
        .rsplit('@')
        .next()
        .unwrap()
        .trim_end_matches('/')
        .to_owned()
}

pub fn result(order: &Value, status: &str, reason: Option<&str>) -> Value {
    json!({
        "order_id": order["id"], "user_id": order["user_id"], "amount": order["amount"],
        "status": status, "reason": reason,
    })
}
