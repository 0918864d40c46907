//! A payments service started in-process for one test, on its own database and queues.
#![allow(dead_code)]

use clap::Parser;
use gozon_contract::{
    domain::{Amount, UserId},
    messages::{PaymentRequest, RefundRequest, Seq},
};
use gozon_messaging::Role;
use gozon_payments::Settings;
use gozon_test_support::{
    Broker, Running, TestIssuer, TestNames, TestPeer, amqp_url, create_database_from_template,
    eventually,
};
use sqlx::PgPool;
use std::{sync::Arc, time::Duration};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// How long a test waits for the service to act.
const WAIT: Duration = Duration::from_secs(20);

pub struct Payments {
    pub names: TestNames,
    pub base: String,
    pub pool: PgPool,
    pub broker: Broker,
    pub http: reqwest::Client,
    /// Signs the tokens of the test's users; the service trusts it.
    pub issuer: TestIssuer,
    /// Orders, as far as the service can tell: the requests the test publishes are its.
    pub orders: Arc<TestPeer>,
    /// What has been read off the result queues so far, as (queue, body), oldest first.
    published: tokio::sync::Mutex<Vec<(String, serde_json::Value)>>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// A payment request body as `orders` writes it, due in an hour: its place in its user's line
/// is given by `orders` in the order orders are asked for here.
pub fn request_of(orders: &TestPeer, order_id: Uuid, user_id: &str, amount: i64) -> Vec<u8> {
    let deadline = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    request_due(orders, order_id, user_id, amount, deadline)
}

/// [`request_of`], due at `deadline`.
pub fn request_due(
    orders: &TestPeer,
    order_id: Uuid,
    user_id: &str,
    amount: i64,
    deadline: time::OffsetDateTime,
) -> Vec<u8> {
    let seq = orders.place_of(user_id, &order_id.to_string());
    serde_json::to_vec(&PaymentRequest {
        order_id: order_id.into(),
        user_id: UserId::parse(user_id).unwrap(),
        amount: Amount::parse(amount).unwrap(),
        deadline,
        seq: Seq::parse(seq).unwrap(),
    })
    .unwrap()
}

/// A refund request body as the orders service writes it.
pub fn refund(order_id: Uuid, user_id: &str, amount: i64) -> Vec<u8> {
    serde_json::to_vec(&RefundRequest {
        order_id: order_id.into(),
        user_id: UserId::parse(user_id).unwrap(),
        amount: Amount::parse(amount).unwrap(),
    })
    .unwrap()
}

impl Payments {
    pub async fn start(extra_args: &[&str]) -> Self {
        let orders = Arc::new(TestPeer::start(Role::Orders).await);
        let names = TestNames::new();
        create_database_from_template(&names.payments_database_url, &gozon_payments::schema())
            .await;
        Self::start_sharing(names, orders, extra_args).await
    }

    /// Another instance of this one: on its database and queues, with the same orders.
    pub async fn another(&self, extra_args: &[&str]) -> Self {
        Self::start_sharing(self.names.clone(), self.orders.clone(), extra_args).await
    }

    /// An instance on `names` (database and queues) whose requests come from `orders`.
    pub async fn start_sharing(
        names: TestNames,
        orders: Arc<TestPeer>,
        extra_args: &[&str],
    ) -> Self {
        gozon_telemetry::init_for_tests();
        let issuer = TestIssuer::start("gozon-tests").await;
        let mut args = names.service_args("payments", &names.payments_database_url, &amqp_url());
        args.extend(issuer.service_args());
        args.extend([
            "--orders-message-keys-url".to_owned(),
            orders.keys_url().to_owned(),
        ]);
        args.extend(extra_args.iter().map(|arg| arg.to_string()));
        let app = gozon_payments::Application::build(
            Settings::parse_from(args),
            &CancellationToken::new(),
        )
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
        orders.meet(&format!("{base}/messaging/keys")).await;
        let http = reqwest::Client::new();
        Self {
            names,
            base,
            pool,
            broker: Broker::connect().await.unwrap(),
            http,
            issuer,
            orders,
            published: Default::default(),
            stop,
            task,
        }
    }

    /// A payment request body for `order_id` as this service's orders writes it ([`request_of`]).
    pub fn request(&self, order_id: Uuid, user_id: &str, amount: i64) -> Vec<u8> {
        request_of(&self.orders, order_id, user_id, amount)
    }

    /// A token of `user`.
    pub fn token(&self, user: &str) -> String {
        self.issuer.token(user)
    }

    pub async fn publish(&self, message_id: Option<&str>, body: &[u8]) {
        self.broker
            .publish_signed(
                &self.names.order_payments_queue,
                message_id,
                body,
                &self.orders,
            )
            .await
            .unwrap();
    }

    pub async fn publish_refund(&self, message_id: Option<&str>, body: &[u8]) {
        self.broker
            .publish_signed(
                &self.names.order_refunds_queue,
                message_id,
                body,
                &self.orders,
            )
            .await
            .unwrap();
    }

    /// The ledger rows of `order_id`, as (kind, amount), debit first.
    pub async fn entries_of(&self, order_id: Uuid) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT kind, amount FROM ledger WHERE order_id = $1 ORDER BY kind")
            .bind(order_id)
            .fetch_all(&self.pool)
            .await
            .unwrap()
    }

    /// The messages this service has published on `queue` about `order_id`, oldest first, read
    /// off the broker: once the outbox is empty (everything written is confirmed by the broker),
    /// the queue — which nothing else consumes in these tests — is drained into what was read.
    pub async fn published_for(&self, queue: &str, order_id: Uuid) -> Vec<serde_json::Value> {
        eventually("the outbox relayed", WAIT, || async {
            let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                .fetch_one(&self.pool)
                .await
                .ok()?;
            (unsent == 0).then_some(())
        })
        .await;
        let mut published = self.published.lock().await;
        for result_queue in [
            &self.names.payment_status_queue,
            &self.names.refund_status_queue,
        ] {
            for (_, body) in self.broker.drain(result_queue).await.unwrap() {
                published.push((result_queue.clone(), serde_json::from_slice(&body).unwrap()));
            }
        }
        let order_id = order_id.to_string();
        published
            .iter()
            .filter(|(on, body)| on == queue && body["order_id"] == order_id.as_str())
            .map(|(_, body)| body.clone())
            .collect()
    }

    /// The `payment.status` messages published for `order_id`, oldest first.
    pub async fn payment_results_for(&self, order_id: Uuid) -> Vec<serde_json::Value> {
        self.published_for(&self.names.payment_status_queue, order_id)
            .await
    }

    /// One field of each `payment.status` message published for `order_id`, oldest first.
    pub async fn payment_results_field(
        &self,
        order_id: Uuid,
        field: &str,
    ) -> Vec<serde_json::Value> {
        self.payment_results_for(order_id)
            .await
            .iter()
            .map(|result| result[field].clone())
            .collect()
    }

    /// How many `refund.status` messages saying REFUNDED were published for `order_id`.
    pub async fn refund_results_for(&self, order_id: Uuid) -> usize {
        self.published_for(&self.names.refund_status_queue, order_id)
            .await
            .iter()
            .filter(|body| body["status"] == "REFUNDED")
            .count()
    }

    pub async fn open_account(&self, user_id: &str, balance: i64) {
        let response = self
            .http
            .post(format!("{}/payments/accounts", self.base))
            .bearer_auth(self.token(user_id))
            .json(&serde_json::json!({ "user_id": user_id }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        if balance > 0 {
            self.deposit(user_id, balance).await;
        }
    }

    pub async fn deposit(&self, user_id: &str, amount: i64) {
        let response = self
            .http
            .post(format!("{}/payments/accounts/deposit", self.base))
            .bearer_auth(self.token(user_id))
            .json(&serde_json::json!({ "user_id": user_id, "amount": amount }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    pub async fn balance(&self, user_id: &str) -> i64 {
        sqlx::query_scalar("SELECT balance FROM accounts WHERE user_id = $1")
            .bind(user_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn debits_of(&self, order_id: Uuid) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM ledger WHERE kind = 'DEBIT' AND order_id = $1")
            .bind(order_id)
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn decided_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM payments")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    pub async fn wait_decided(&self, orders: &[Uuid]) {
        eventually("every order decided", Duration::from_secs(30), || async {
            let decided: i64 =
                sqlx::query_scalar("SELECT count(*) FROM payments WHERE order_id = ANY($1)")
                    .bind(orders)
                    .fetch_one(&self.pool)
                    .await
                    .ok()?;
            (decided == orders.len() as i64).then_some(())
        })
        .await;
    }

    /// For every account: balance = Σ deposits − Σ debits + Σ refunds, and never negative.
    pub async fn assert_ledger_balances(&self) {
        let broken: Vec<(String, i64, i64)> = sqlx::query_as(
            "SELECT a.user_id, a.balance, \
                    COALESCE(sum(CASE l.kind WHEN 'DEBIT' THEN -l.amount ELSE l.amount END), 0)::bigint \
             FROM accounts a LEFT JOIN ledger l USING (user_id) \
             GROUP BY a.user_id, a.balance \
             HAVING a.balance <> COALESCE(sum(CASE l.kind WHEN 'DEBIT' THEN -l.amount ELSE l.amount END), 0) \
                 OR a.balance < 0",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap();
        assert!(broken.is_empty(), "ledger does not balance: {broken:?}");
        let stray: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM payments p \
             LEFT JOIN ledger l ON l.order_id = p.order_id AND l.kind = 'DEBIT' \
             WHERE (p.status = 'SUCCEEDED') <> (l.id IS NOT NULL)",
        )
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(stray, 0, "SUCCEEDED must equal 'one debit exists'");
    }

    /// Stops this instance. The test's databases and queues go once no instance shares them
    /// ([`TestNames`]).
    pub async fn stop(self) {
        self.stop.cancel();
        self.task.await.unwrap();
        self.pool.close().await;
    }

    /// A crash: the service's task is dropped wherever it stands.
    pub fn kill(self) {
        self.task.abort();
    }
}
