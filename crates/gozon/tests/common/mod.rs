//! The whole system started in-process for one test: identity, payments, orders and the
//! gateway, on their own databases and queues. Its users sign up through the gateway. The orders database and the broker are reached through proxies the
//! test can cut, to stage outages without touching the shared servers.
#![allow(dead_code)]

pub mod binary;

use clap::Parser;
use gozon_messaging::{
    broker_logins::{Login, Role},
    signing::{KeyRing, PeerKeys, keys},
};
use gozon_test_support::{
    Running, TcpProxy, TestNames, amqp_url, create_database_from_template, eventually, host_port,
    postgres_base_url,
};
use serde_json::{Value, json};
use sqlx::PgPool;
use std::{collections::HashMap, time::Duration};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(20);

/// How a test's system differs from the default.
#[derive(Default)]
struct Options<'a> {
    logins: Option<&'a [Login]>,
    orders_args: &'a [&'a str],
    two_broker_addresses: bool,
}

pub struct System {
    pub names: TestNames,
    pub gateway: String,
    pub identity_url: String,
    pub orders_url: String,
    pub payments_url: String,
    pub http: reqwest::Client,
    pub identity_pool: PgPool,
    pub orders_pool: PgPool,
    pub payments_pool: PgPool,
    pub orders_db: TcpProxy,
    pub rabbit: TcpProxy,
    /// A second way to the broker, listed after `rabbit` in the services' `AMQP_URL` when the
    /// system was started with [`System::start_with_two_broker_addresses`].
    pub rabbit_b: TcpProxy,
    /// The identity service's time (its tokens' `iat` and its login limits).
    pub clock: gozon_http::clock::ManualClock,
    /// Where payments fetches orders' message keys: a fixed address in front of orders, which
    /// binds its port after payments has started.
    orders_keys: TcpProxy,
    stop: CancellationToken,
    /// Payments (while running), then orders.
    services: Vec<Option<Running>>,
    /// How payments was started, to start it again on the same port.
    payments_args: Vec<String>,
    gateway_task: JoinHandle<()>,
    identity_task: JoinHandle<()>,
    /// Tokens of the users signed up so far; held while signing one up, so concurrent first
    /// uses of a user sign it up once.
    tokens: tokio::sync::Mutex<HashMap<String, String>>,
}

/// The password every test user signs up with.
pub fn password_of(user_id: &str) -> String {
    format!("password-of-{user_id}")
}

impl System {
    pub async fn start() -> Self {
        Self::start_with(TestNames::new()).await
    }

    /// Starts the system again on the databases and queues of an earlier (halted) one.
    pub async fn restart(names: TestNames) -> Self {
        Self::start_with(names).await
    }

    /// Starts the system with the services' own broker logins (made with `gozon_messaging::
    /// broker_logins::provision`), the topology provisioned and not declared by the services.
    pub async fn start_with_broker_logins(names: TestNames, logins: &[Login]) -> Self {
        let options = Options {
            logins: Some(logins),
            ..Options::default()
        };
        Self::start_as(names, options).await
    }

    /// [`start_with_broker_logins`](Self::start_with_broker_logins), with these further
    /// arguments for orders.
    pub async fn start_with_broker_logins_and_orders_args(
        names: TestNames,
        logins: &[Login],
        orders_args: &[&str],
    ) -> Self {
        let options = Options {
            logins: Some(logins),
            orders_args,
            ..Options::default()
        };
        Self::start_as(names, options).await
    }

    async fn start_with(names: TestNames) -> Self {
        Self::start_as(names, Options::default()).await
    }

    /// Starts the system with these further arguments for orders (a short payment deadline, say).
    pub async fn start_with_orders_args(orders_args: &[&str]) -> Self {
        let options = Options {
            orders_args,
            ..Options::default()
        };
        Self::start_as(TestNames::new(), options).await
    }

    /// Starts the system with `AMQP_URL` listing two addresses of the broker: `rabbit`, then
    /// `rabbit_b` — as a cluster of two nodes would be listed.
    pub async fn start_with_two_broker_addresses() -> Self {
        let options = Options {
            two_broker_addresses: true,
            ..Options::default()
        };
        Self::start_as(TestNames::new(), options).await
    }

    async fn start_as(names: TestNames, options: Options<'_>) -> Self {
        let Options {
            logins,
            orders_args: orders_extra,
            two_broker_addresses,
        } = options;
        gozon_telemetry::init_for_tests();
        create_databases(&names).await;
        let orders_db = TcpProxy::start(&host_port(&postgres_base_url()), true)
            .await
            .unwrap();
        let rabbit = TcpProxy::start(&host_port(&amqp_url()), true)
            .await
            .unwrap();
        let rabbit_b = TcpProxy::start(&host_port(&amqp_url()), true)
            .await
            .unwrap();
        let amqp = if two_broker_addresses {
            format!(
                "{},{}",
                rabbit.url_through(&amqp_url()),
                rabbit_b.url_through(&amqp_url())
            )
        } else {
            rabbit.url_through(&amqp_url())
        };
        let stop = CancellationToken::new();

        // Identity's time moves only when a test says: limits refill when told.
        let clock = gozon_http::clock::ManualClock::default();
        let identity = gozon_identity::Application::build_with_clock(
            gozon_identity::Settings::parse_from([
                "identity",
                "--listen-addr",
                "127.0.0.1:0",
                "--database-url",
                &names.identity_database_url,
                "--db-max-connections",
                "2",
                // The tests sign up many users from one address: a sign-up limit of its own is
                // tested on its own.
                "--signups-per-client",
                "1000000",
            ]),
            clock.clone().into(),
            &stop,
        )
        .await
        .unwrap();
        let identity_url = format!("http://127.0.0.1:{}", identity.port());
        let identity_pool = identity.pool().clone();
        let identity_task = tokio::spawn({
            let stop = stop.clone();
            async move { identity.run_until_stopped(stop).await.unwrap() }
        });
        let jwks = format!("{identity_url}/auth/jwks.json");
        let revoked = format!("{identity_url}/auth/revoked");
        let with_auth = |mut args: Vec<String>| {
            args.extend(["--auth-jwks-url".to_owned(), jwks.clone()]);
            args.extend(["--auth-revocations-url".to_owned(), revoked.clone()]);
            if logins.is_some() {
                args.extend(["--amqp-declare-topology".to_owned(), "false".to_owned()]);
            }
            args
        };
        let amqp_of = |role: Role| {
            logins
                .and_then(|logins| logins.iter().find(|login| login.role == role))
                .map_or_else(|| amqp.clone(), |login| login.url(&amqp))
        };

        let orders_keys = TcpProxy::start("127.0.0.1:9", true).await.unwrap();
        let mut payments_args = with_auth(names.service_args(
            "payments",
            &names.payments_database_url,
            &amqp_of(Role::Payments),
        ));
        payments_args.extend([
            "--orders-message-keys-url".to_owned(),
            format!("http://{}/messaging/keys", orders_keys.addr),
        ]);
        let payments = start_payments(payments_args.clone()).await;
        let payments_args = [
            payments_args,
            vec!["--listen-addr".to_owned(), host_port(&payments.base)],
        ]
        .concat();

        let orders_database = orders_db.url_through(&names.orders_database_url);
        let mut orders_args =
            with_auth(names.service_args("orders", &orders_database, &amqp_of(Role::Orders)));
        orders_args.extend([
            "--payments-message-keys-url".to_owned(),
            format!("{}/messaging/keys", payments.base),
        ]);
        orders_args.extend(orders_extra.iter().map(|arg| arg.to_string()));
        let orders = gozon_orders::Application::build(
            gozon_orders::Settings::parse_from(orders_args),
            &stop,
        )
        .await
        .unwrap();
        orders_keys.retarget(&format!("127.0.0.1:{}", orders.port()));
        let orders = gozon_test_support::run(orders.port(), orders.pool().clone(), |stop| {
            orders.run_until_stopped(stop)
        })
        .await;
        let (payments_url, payments_pool) = (payments.base.clone(), payments.pool.clone());
        let (orders_url, orders_pool) = (orders.base.clone(), orders.pool.clone());
        let services = vec![Some(payments), Some(orders)];

        let ui_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../web");
        let gateway = gozon_gateway::Application::build(gozon_gateway::Settings::parse_from([
            "gateway",
            "--listen-addr",
            "127.0.0.1:0",
            "--orders-url",
            &orders_url,
            "--payments-url",
            &payments_url,
            "--identity-url",
            &identity_url,
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
            identity_url,
            orders_url,
            payments_url,
            http,
            identity_pool,
            orders_pool,
            payments_pool,
            orders_db,
            rabbit,
            rabbit_b,
            stop,
            services,
            payments_args,
            gateway_task,
            identity_task,
            tokens: tokio::sync::Mutex::new(HashMap::new()),
            clock,
            orders_keys,
        }
    }

    /// The token of `user_id`, signing them up through the gateway on first use.
    pub async fn token(&self, user_id: &str) -> String {
        let mut tokens = self.tokens.lock().await;
        if let Some(token) = tokens.get(user_id) {
            return token.clone();
        }
        let credentials = json!({"user_id": user_id, "password": password_of(user_id)});
        let (mut status, mut session) = self.post("/auth/signup", credentials.clone()).await;
        if status == 409 {
            // Signed up meanwhile (concurrent first uses, or by the test itself): sign in.
            (status, session) = self.post("/auth/login", credentials).await;
        }
        assert!(
            status == 201 || status == 200,
            "signing up {user_id}: {session}"
        );
        let token = session["token"].as_str().unwrap().to_owned();
        tokens.insert(user_id.to_owned(), token.clone());
        token
    }

    /// Forgets the user's cached token, for a test that signed it out: the next call signs
    /// in afresh.
    pub async fn forget_token(&self, user_id: &str) {
        self.tokens.lock().await.remove(user_id);
    }

    /// An anonymous POST through the gateway.
    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self
            .http
            .post(format!("{}{path}", self.gateway))
            .json(&body);
        answer(request).await
    }

    /// An anonymous GET through the gateway.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        answer(self.http.get(format!("{}{path}", self.gateway))).await
    }

    /// A POST through the gateway, signed in as `user_id`.
    pub async fn post_as(&self, user_id: &str, path: &str, body: Value) -> (u16, Value) {
        let request = self
            .http
            .post(format!("{}{path}", self.gateway))
            .bearer_auth(self.token(user_id).await)
            .json(&body);
        answer(request).await
    }

    /// A GET through the gateway, signed in as `user_id`.
    pub async fn get_as(&self, user_id: &str, path: &str) -> (u16, Value) {
        let request = self
            .http
            .get(format!("{}{path}", self.gateway))
            .bearer_auth(self.token(user_id).await);
        answer(request).await
    }

    pub async fn open_account(&self, user_id: &str, deposit: i64) {
        assert_eq!(
            self.post_as(user_id, "/payments/accounts", json!({"user_id": user_id}))
                .await
                .0,
            201
        );
        if deposit > 0 {
            let (status, _) = self
                .post_as(
                    user_id,
                    "/payments/accounts/deposit",
                    json!({"user_id": user_id, "amount": deposit}),
                )
                .await;
            assert_eq!(status, 200);
        }
    }

    pub async fn place_order(&self, user_id: &str, amount: i64) -> Value {
        let (status, order) = self
            .post_as(
                user_id,
                "/orders",
                json!({"user_id": user_id, "amount": amount, "description": "e2e"}),
            )
            .await;
        assert_eq!(status, 201, "{order}");
        order
    }

    pub async fn balance(&self, user_id: &str) -> i64 {
        let (status, body) = self
            .get_as(user_id, &format!("/payments/accounts/{user_id}/balance"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["balance"].as_i64().unwrap()
    }

    /// Waits until the order is FINISHED or CANCELLED and returns it (as its owner sees it).
    pub async fn settled(&self, id: &str) -> Value {
        let owner: String = sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&self.orders_pool)
            .await
            .unwrap();
        eventually(&format!("order {id} settled"), WAIT, || async {
            let (status, order) = self.get_as(&owner, &format!("/orders/{id}")).await;
            (status == 200 && order["status"] != "NEW").then_some(order)
        })
        .await
    }

    /// Waits until the order is final — FINISHED, CANCELLED (with any refund asked for
    /// complete) or REFUNDED — and returns it (as its owner sees it).
    pub async fn finished_with(&self, id: &str) -> Value {
        let owner: String = sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&self.orders_pool)
            .await
            .unwrap();
        eventually(&format!("order {id} final"), WAIT, || async {
            let (status, order) = self.get_as(&owner, &format!("/orders/{id}")).await;
            let done = ["FINISHED", "CANCELLED", "REFUNDED"].contains(&order["status"].as_str()?)
                && order["refund"] != "REQUESTED";
            (status == 200 && done).then_some(order)
        })
        .await
    }

    /// Order `id` as its owner sees it now (it must exist).
    pub async fn order_now(&self, id: &str) -> Value {
        let owner: String = sqlx::query_scalar("SELECT user_id FROM orders WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&self.orders_pool)
            .await
            .unwrap();
        let (status, order) = self.get_as(&owner, &format!("/orders/{id}")).await;
        assert_eq!(status, 200);
        order
    }

    /// SPEC 5 across both databases, once everything has settled: FINISHED ⇔ one debit of the
    /// order's amount and no refund; REFUNDED ⇔ one debit and one refund of its amount;
    /// CANCELLED ⇔ no debit, or one debit and one refund; and each account's balance is its
    /// deposits minus its debits plus its refunds, never below zero.
    pub async fn assert_money_is_consistent(&self) {
        let orders: Vec<(uuid::Uuid, String, i64)> =
            sqlx::query_as("SELECT id, status, amount FROM orders")
                .fetch_all(&self.orders_pool)
                .await
                .unwrap();
        for (id, status, amount) in orders {
            let entries: Vec<(String, i64)> =
                sqlx::query_as("SELECT kind, amount FROM ledger WHERE order_id = $1 ORDER BY kind")
                    .bind(id)
                    .fetch_all(&self.payments_pool)
                    .await
                    .unwrap();
            let debit = ("DEBIT".to_owned(), amount);
            let refund = ("REFUND".to_owned(), amount);
            match status.as_str() {
                "FINISHED" => assert_eq!(entries, [debit], "order {id}"),
                "REFUNDED" => assert_eq!(entries, [debit, refund], "order {id}"),
                "CANCELLED" => assert!(
                    entries.is_empty() || entries == [debit, refund],
                    "order {id} cancelled, and its money moved as {entries:?}"
                ),
                other => panic!("order {id} still {other}"),
            }
        }
        let unbalanced: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM accounts a WHERE a.balance < 0 OR a.balance <> COALESCE((SELECT sum(CASE kind WHEN 'DEBIT' THEN -amount ELSE amount END) FROM ledger l WHERE l.user_id = a.user_id), 0)",
        )
        .fetch_one(&self.payments_pool)
        .await
        .unwrap();
        assert_eq!(
            unbalanced, 0,
            "every balance equals deposits − debits + refunds"
        );
    }

    /// Stops everything gracefully (in-flight batches finish and are acknowledged) but keeps the
    /// test's databases and queues for inspection; returns their names for the cleanup.
    pub async fn halt(self) -> TestNames {
        self.stop.cancel();
        self.gateway_task.await.unwrap();
        self.identity_task.await.unwrap();
        for service in self.services.into_iter().flatten() {
            service.stop.cancel();
            service.task.await.unwrap();
        }
        self.orders_pool.close().await;
        self.names
    }

    /// What signs messages as `role` does: its keys and its peer's, read from their databases
    /// (a test publishing as one of the services).
    pub async fn signer_of(&self, role: Role) -> KeyRing {
        let orders = PgPool::connect(&self.names.orders_database_url)
            .await
            .unwrap();
        let payments = PgPool::connect(&self.names.payments_database_url)
            .await
            .unwrap();
        let ring = match role {
            Role::Orders => producer_ring(role, &orders, &payments).await,
            Role::Payments => producer_ring(role, &payments, &orders).await,
        };
        orders.close().await;
        payments.close().await;
        ring
    }

    /// Stops the payments service (gracefully); its queues fill meanwhile.
    pub async fn stop_payments(&mut self) {
        if let Some(payments) = self.services[0].take() {
            payments.stop.cancel();
            payments.task.await.unwrap();
        }
    }

    /// Starts the payments service again, on its database, queues and port.
    pub async fn start_payments(&mut self) {
        assert!(self.services[0].is_none(), "payments is running");
        let payments = start_payments(self.payments_args.clone()).await;
        self.payments_pool = payments.pool.clone();
        self.services[0] = Some(payments);
    }

    /// Stops everything and removes the test's databases and queues.
    pub async fn stop(self) {
        self.halt().await;
    }
}

/// The test's three databases, unless they exist, copied from migrated templates.
pub async fn create_databases(names: &TestNames) {
    for (url, schema) in [
        (&names.identity_database_url, gozon_identity::schema()),
        (&names.orders_database_url, gozon_orders::schema()),
        (&names.payments_database_url, gozon_payments::schema()),
    ] {
        create_database_from_template(url, &schema).await;
    }
}

async fn start_payments(args: Vec<String>) -> Running {
    let payments = gozon_payments::Application::build(
        gozon_payments::Settings::parse_from(args),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    gozon_test_support::run(payments.port(), payments.pool().clone(), |stop| {
        payments.run_until_stopped(stop)
    })
    .await
}

/// The key ring of `role` whose keys are in `own`, knowing its peer's keys in `peer`.
pub async fn producer_ring(role: Role, own: &PgPool, peer: &PgPool) -> KeyRing {
    let own_keys = keys::announced(own).await.unwrap();
    let peer_keys = keys::published(&keys::announced(peer).await.unwrap()).unwrap();
    let ring = KeyRing::of_keys(role, own_keys, PeerKeys::Given(peer_keys));
    ring.learn_peer().await.unwrap();
    ring
}

async fn answer(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}
