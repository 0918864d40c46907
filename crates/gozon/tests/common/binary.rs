//! The whole system as `make run` runs it: the real `gozon run` binary, each role a process of
//! its own (so each has its own metrics recorder and tracer), on free ports with the test's own
//! databases and queues. Stopped gracefully (SIGTERM, which `gozon run` passes to every role)
//! when dropped, passed or not.

use gozon_test_support::{TestNames, eventually, free_port};
use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

pub struct Processes {
    pub names: TestNames,
    pub gateway: String,
    pub orders_url: String,
    pub payments_url: String,
    child: Option<Child>,
}

impl Processes {
    /// Starts `gozon run` with `env` added, and waits until every service answers through the
    /// gateway.
    pub async fn start(env: &[(&str, String)]) -> Self {
        let names = TestNames::new();
        super::create_databases(&names).await;
        let [identity, orders, payments, gateway] =
            [free_port(), free_port(), free_port(), free_port()];
        let local = |port: u16| format!("127.0.0.1:{port}");
        let url = |port: u16| format!("http://127.0.0.1:{port}");
        let child = Command::new(env!("CARGO_BIN_EXE_gozon"))
            .arg("run")
            .envs([
                ("RUST_LOG", "warn".to_owned()),
                ("IDENTITY_LISTEN_ADDR", local(identity)),
                ("ORDERS_LISTEN_ADDR", local(orders)),
                ("PAYMENTS_LISTEN_ADDR", local(payments)),
                ("GATEWAY_LISTEN_ADDR", local(gateway)),
                ("GATEWAY_IDENTITY_URL", url(identity)),
                ("GATEWAY_ORDERS_URL", url(orders)),
                ("GATEWAY_PAYMENTS_URL", url(payments)),
                (
                    "ORDERS_MESSAGE_KEYS_URL",
                    format!("{}/messaging/keys", url(orders)),
                ),
                (
                    "PAYMENTS_MESSAGE_KEYS_URL",
                    format!("{}/messaging/keys", url(payments)),
                ),
                ("AUTH_JWKS_URL", format!("{}/auth/jwks.json", url(identity))),
                (
                    "AUTH_REVOCATIONS_URL",
                    format!("{}/auth/revoked", url(identity)),
                ),
                ("IDENTITY_DATABASE_URL", names.identity_database_url.clone()),
                ("ORDERS_DATABASE_URL", names.orders_database_url.clone()),
                ("PAYMENTS_DATABASE_URL", names.payments_database_url.clone()),
                ("ORDER_PAYMENTS_QUEUE", names.order_payments_queue.clone()),
                ("PAYMENT_STATUS_QUEUE", names.payment_status_queue.clone()),
                ("ORDER_REFUNDS_QUEUE", names.order_refunds_queue.clone()),
                ("REFUND_STATUS_QUEUE", names.refund_status_queue.clone()),
                ("AMQP_QUEUE_EXPIRES_MS", "600000".to_owned()),
                ("AUTH_SIGNUPS_PER_CLIENT", "1000000".to_owned()),
                (
                    "GATEWAY_UI_DIR",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../../web").to_owned(),
                ),
            ])
            .envs(env.iter().map(|(name, value)| (name, value)))
            .stdout(Stdio::null())
            .spawn()
            .expect("gozon run starts");
        let processes = Self {
            names,
            gateway: url(gateway),
            orders_url: url(orders),
            payments_url: url(payments),
            child: Some(child),
        };
        let http = reqwest::Client::new();
        for probe in [
            "/auth/jwks.json",
            "/orders",
            "/payments/accounts/probe/balance",
        ] {
            let probe = format!("{}{probe}", processes.gateway);
            eventually("the system ready", Duration::from_secs(60), || async {
                let status = http.get(&probe).send().await.ok()?.status();
                (status == 200 || status == 401).then_some(())
            })
            .await;
        }
        processes
    }

    /// The process id of `gozon run`.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Signs `user` up through the gateway; their token.
    pub async fn sign_up(&self, user: &str) -> String {
        let session: serde_json::Value = self
            .post(
                None,
                "/auth/signup",
                serde_json::json!({"user_id": user, "password": "a long password"}),
            )
            .await
            .json()
            .await
            .expect("a session");
        session["token"].as_str().expect("a token").to_owned()
    }

    /// A POST of `body` through the gateway, with `token` if given.
    pub async fn post(
        &self,
        token: Option<&str>,
        path: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new().post(format!("{}{path}", self.gateway));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.json(&body).send().await.expect("an answer")
    }

    /// Stops the processes and removes the test's databases and queues.
    pub async fn stop(mut self) {
        let child = self.child.take();
        tokio::task::spawn_blocking(move || child.map(terminate))
            .await
            .expect("stopped");
    }
}

fn terminate(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

impl Drop for Processes {
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            terminate(child);
        }
    }
}
