//! What one test owns on the shared servers — its databases and queues — and the migrated
//! templates its databases are copied from.

use crate::{Broker, PREFIX, postgres_base_url};
use gozon_messaging::amqp::short;
use lapin::options::QueueDeleteOptions;
use sqlx::migrate::Migrator;
use std::sync::Arc;
use uuid::Uuid;

/// The names one test owns: three databases and four queues (with their dead-letter queues).
/// Clones share them; when the last clone is dropped — the test ended, passed or panicked — the
/// databases are dropped and the queues deleted.
#[derive(Debug, Clone, Default)]
pub struct TestNames(Arc<Names>);

impl TestNames {
    pub fn new() -> Self {
        Self::default()
    }
}

impl std::ops::Deref for TestNames {
    type Target = Names;

    fn deref(&self) -> &Names {
        &self.0
    }
}

#[derive(Debug)]
pub struct Names {
    pub id: String,
    pub identity_database_url: String,
    pub orders_database_url: String,
    pub payments_database_url: String,
    pub order_payments_queue: String,
    pub payment_status_queue: String,
    pub order_refunds_queue: String,
    pub refund_status_queue: String,
}

impl Default for Names {
    fn default() -> Self {
        let id = format!("{PREFIX}{}", Uuid::new_v4().simple());
        let base = postgres_base_url();
        Self {
            identity_database_url: format!("{base}/{id}_identity"),
            orders_database_url: format!("{base}/{id}_orders"),
            payments_database_url: format!("{base}/{id}_payments"),
            order_payments_queue: format!("{id}.order.payments"),
            payment_status_queue: format!("{id}.payment.status"),
            order_refunds_queue: format!("{id}.order.refunds"),
            refund_status_queue: format!("{id}.refund.status"),
            id,
        }
    }
}

impl Names {
    /// Command-line arguments that point a service at this test's queues and the given database,
    /// on a free port, with queues that expire once the test has gone.
    pub fn service_args(&self, role: &str, database_url: &str, amqp_url: &str) -> Vec<String> {
        [
            role,
            "--listen-addr",
            "127.0.0.1:0",
            "--database-url",
            database_url,
            "--db-max-connections",
            "4",
            "--amqp-url",
            amqp_url,
            "--order-payments-queue",
            &self.order_payments_queue,
            "--payment-status-queue",
            &self.payment_status_queue,
            "--order-refunds-queue",
            &self.order_refunds_queue,
            "--refund-status-queue",
            &self.refund_status_queue,
            "--queue-expires-ms",
            "600000",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    /// Broker settings naming this test's queues (which expire once the test has gone).
    pub fn broker(&self, amqp_url: String) -> gozon_messaging::amqp::BrokerSettings {
        gozon_messaging::amqp::BrokerSettings {
            amqp_url,
            amqp_password_file: None,
            order_payments_queue: self.order_payments_queue.clone(),
            payment_status_queue: self.payment_status_queue.clone(),
            order_refunds_queue: self.order_refunds_queue.clone(),
            refund_status_queue: self.refund_status_queue.clone(),
            heartbeat_secs: 5,
            delivery_limit: 50,
            queue_expires_ms: Some(600_000),
            next_address: Default::default(),
            declare_topology: true,
        }
    }

    /// The test's work queues.
    pub fn queues(&self) -> [&str; 4] {
        [
            &self.order_payments_queue,
            &self.payment_status_queue,
            &self.order_refunds_queue,
            &self.refund_status_queue,
        ]
    }

    /// Drops this test's databases and deletes its queues, ignoring what is not there.
    async fn remove(&self) {
        if let Ok(mut admin) = admin_connection().await {
            for url in [
                &self.identity_database_url,
                &self.orders_database_url,
                &self.payments_database_url,
            ] {
                let sql = format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    database_name(url)
                );
                let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&mut admin)
                    .await;
            }
        }
        if let Ok(broker) = Broker::connect().await {
            for queue in self.queues() {
                for name in [queue.to_owned(), format!("{queue}.dlq")] {
                    let _ = broker
                        .channel
                        .queue_delete(short(&name), QueueDeleteOptions::default())
                        .await;
                }
            }
            // Last: a test that tapped no queue has no tap, and a failed delete closes the channel.
            for queue in self.queues() {
                let _ = broker
                    .channel
                    .queue_delete(
                        short(&format!("{queue}.tap")),
                        QueueDeleteOptions::default(),
                    )
                    .await;
            }
        }
    }
}

impl Drop for Names {
    /// Removes what the test made, on a thread and a runtime of its own: the test's runtime may
    /// be the one being dropped, or blocked in this very call.
    fn drop(&mut self) {
        let names = &*self;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    runtime.block_on(names.remove());
                }
            });
        });
    }
}

/// The database part of a `postgres://…/<database>` URL.
fn database_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or_default()
}

/// Creates the database at `url`, unless it exists, as a copy of a template that `migrator` was
/// run on. The template is made once per set of migrations on this server and kept (named
/// `gozon_test_template_<hash of the migrations>`), so a test starts on a migrated schema without
/// running the migrations; the service still runs them at startup and finds them applied.
pub async fn create_database_from_template(url: &str, migrator: &Migrator) {
    let name = database_name(url);
    let mut admin = admin_connection().await.expect("the test database server");
    if database_exists(&mut admin, name).await {
        return;
    }
    let template = template_for(migrator).await;
    let sql = format!("CREATE DATABASE \"{name}\" TEMPLATE \"{template}\"");
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
        .execute(&mut admin)
        .await
        .expect("a database copied from the template");
}

async fn database_exists(admin: &mut sqlx::PgConnection, name: &str) -> bool {
    sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(admin)
        .await
        .expect("the database looked up")
}

/// The name of the template database migrated with `migrator`, made if missing. Test processes
/// running at once take turns (an advisory lock), and a template is built under another name
/// and renamed when complete, so a process that dies half-way leaves no half-migrated template.
async fn template_for(migrator: &Migrator) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::hash::DefaultHasher::new();
    for migration in migrator.iter() {
        (migration.version, &migration.checksum[..]).hash(&mut hasher);
    }
    let hash = hasher.finish();
    let template = format!("{PREFIX}template_{hash:016x}");
    let mut admin = admin_connection().await.expect("the test database server");
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(hash as i64)
        .execute(&mut admin)
        .await
        .expect("the template's lock");
    if !database_exists(&mut admin, &template).await {
        let building = format!("{template}_building");
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{building}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{building}\""),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                .execute(&mut admin)
                .await
                .expect("the template's database");
        }
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{}/{building}", postgres_base_url()))
            .await
            .expect("the template's database");
        migrator.run(&pool).await.expect("the template migrated");
        pool.close().await;
        let sql = format!("ALTER DATABASE \"{building}\" RENAME TO \"{template}\"");
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
            .execute(&mut admin)
            .await
            .expect("the template named");
    }
    // Closing the connection releases the lock.
    template
}

pub(crate) async fn admin_connection() -> sqlx::Result<sqlx::PgConnection> {
    use sqlx::Connection as _;
    sqlx::PgConnection::connect(&format!("{}/postgres", postgres_base_url())).await
}
