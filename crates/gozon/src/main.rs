//! `gozon`: one binary with a subcommand per role.
//!
//! - `gozon identity`, `gozon orders`, `gozon payments`, `gozon gateway` run one role each
//!   (what containers and tests run);
//! - `gozon rotate-signing-key` makes a new token signing key (the old one keeps verifying the
//!   tokens it signed until they expire);
//! - `gozon rotate-message-key --database-url <orders' or payments' database>` makes that
//!   service's next message key (announced at once, used a minute later; the previous one is
//!   accepted for a day after that);
//! - `gozon dlq list|requeue` shows and replays dead letters;
//! - `gozon provision-broker` declares the broker topology and makes the services' own logins;
//! - `gozon healthcheck <url>` is the containers' health probe;
//! - `gozon run` starts all three as child processes of itself and supervises them: it prints the
//!   gateway URL once everything is ready, forwards SIGINT/SIGTERM so each role shuts down
//!   gracefully, and stops the others if one of them dies.

mod supervisor;

use clap::{Parser, Subcommand};
use gozon_messaging::{amqp::BrokerSettings, broker_logins, dead_letters};
use gozon_runtime::shutdown;
use gozon_telemetry as telemetry;

#[derive(Debug, Parser)]
#[command(
    name = "gozon",
    version,
    about = "GoZon: orders and payments over RabbitMQ"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the identity service (sign-up, sign-in, token signing keys).
    Identity(gozon_identity::Settings),
    /// Retire the current token signing key and make a new one.
    RotateSigningKey(gozon_identity::config::DatabaseSettings),
    /// Make the next message key of the service whose database this is (orders or payments).
    RotateMessageKey {
        /// The service's database.
        #[arg(long)]
        database_url: String,
    },
    /// Run the orders service.
    Orders(gozon_orders::Settings),
    /// Run the payments service.
    Payments(gozon_payments::Settings),
    /// Run the gateway (API proxy and web UI).
    Gateway(gozon_gateway::Settings),
    /// Run the whole system: both services and the gateway, supervised.
    Run(supervisor::Settings),
    /// Declare the broker topology with an administrative AMQP_URL and make the services' own
    /// least-privilege logins (with rabbitmqctl).
    ProvisionBroker {
        #[command(flatten)]
        broker: BrokerSettings,
        #[command(flatten)]
        rabbitmqctl: broker_logins::Rabbitmqctl,
        #[command(flatten)]
        admin: broker_logins::AdminLogin,
        #[command(flatten)]
        logins: broker_logins::ServiceLogins,
    },
    /// Inspect or replay dead-lettered messages (an operator's tool; nothing public exposes it).
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Exit 0 if `url` answers 2xx within two seconds (for container health checks).
    Healthcheck {
        /// e.g. http://127.0.0.1:8081/readyz
        url: String,
    },
}

#[derive(Debug, Subcommand)]
enum DlqAction {
    /// Print the messages in `<queue>.dlq` as JSON lines, leaving them there.
    List {
        #[command(flatten)]
        broker: BrokerSettings,
        /// The work queue whose dead letters to show, e.g. order.payments.
        #[arg(long)]
        queue: String,
        /// Show at most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Move messages from `<queue>.dlq` back to `<queue>` for processing.
    Requeue {
        #[command(flatten)]
        broker: BrokerSettings,
        #[arg(long)]
        queue: String,
        /// Only the message with this message_id.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        message_id: Option<String>,
        /// Every message.
        #[arg(long)]
        all: bool,
    },
}

impl Command {
    /// The name this process reports in logs and traces (`service.name`).
    fn role(&self) -> &'static str {
        match self {
            Self::Identity(_) => "identity",
            Self::Orders(_) => "orders",
            Self::Payments(_) => "payments",
            Self::Gateway(_) => "gateway",
            Self::Run(_) => "supervisor",
            _ => "gozon",
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = telemetry::init(cli.command.role());
    let outcome = run(cli.command).await;
    // Blocking: the last spans are sent before the process ends.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    outcome
}

async fn run(command: Command) -> anyhow::Result<()> {
    let stop = shutdown::on_signal();
    match command {
        Command::Identity(settings) => {
            match gozon_identity::Application::build(settings, &stop).await {
                Ok(app) => app.run_until_stopped(stop).await?,
                Err(error) if stopped_while_waiting(&error) => {}
                Err(error) => return Err(error),
            }
        }
        Command::RotateSigningKey(database) => {
            let pool = sqlx::PgPool::connect(&database.database_url).await?;
            let kid = gozon_identity::keys::rotate(&pool).await?;
            println!("new signing key {kid}; the previous one stays published for 24 h");
        }
        Command::RotateMessageKey { database_url } => {
            let pool = sqlx::PgPool::connect(&database_url).await?;
            let kid = gozon_messaging::signing::keys::rotate(&pool).await?;
            println!(
                "new message key {kid}: announced now, used from {} s on; the previous ones are \
                 accepted for {} h after that",
                gozon_messaging::signing::keys::ANNOUNCED_BEFORE_USE.as_secs(),
                gozon_messaging::signing::keys::ANNOUNCED_AFTER_ROTATION_HOURS
            );
        }
        Command::Orders(settings) => {
            match gozon_orders::Application::build(settings, &stop).await {
                Ok(app) => app.run_until_stopped(stop).await?,
                Err(error) if stopped_while_waiting(&error) => {}
                Err(error) => return Err(error),
            }
        }
        Command::Payments(settings) => {
            match gozon_payments::Application::build(settings, &stop).await {
                Ok(app) => app.run_until_stopped(stop).await?,
                Err(error) if stopped_while_waiting(&error) => {}
                Err(error) => return Err(error),
            }
        }
        Command::Gateway(settings) => {
            gozon_gateway::Application::build(settings)
                .await?
                .run_until_stopped(stop)
                .await?;
        }
        Command::Run(settings) => supervisor::run(settings, stop).await?,
        Command::ProvisionBroker {
            broker,
            rabbitmqctl,
            admin,
            logins,
        } => {
            let logins = logins.logins();
            anyhow::ensure!(
                !logins.is_empty(),
                "no password for either service's login (ORDERS_AMQP_PASSWORD, PAYMENTS_AMQP_PASSWORD)"
            );
            broker_logins::provision(&broker, &rabbitmqctl, admin.login(), &logins).await?;
            for login in &logins {
                println!(
                    "{:?} may publish to {} and read {}",
                    login.role,
                    broker.permissions(login.role).write,
                    broker.permissions(login.role).read
                );
            }
        }
        Command::Dlq {
            action:
                DlqAction::List {
                    broker,
                    queue,
                    limit,
                },
        } => {
            for letter in dead_letters::list(&broker, &queue, limit).await? {
                println!("{}", serde_json::to_string(&letter)?);
            }
        }
        Command::Dlq {
            action:
                DlqAction::Requeue {
                    broker,
                    queue,
                    message_id,
                    all: _,
                },
        } => {
            let moved = dead_letters::requeue(&broker, &queue, message_id.as_deref()).await?;
            println!("moved {moved} message(s) from {queue}.dlq back to {queue}");
        }
        Command::Healthcheck { url } => {
            let response = reqwest::Client::new()
                .get(&url)
                .timeout(std::time::Duration::from_secs(2))
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{url} answered {}",
                response.status()
            );
        }
    }
    Ok(())
}

/// A stop signal while a role still waited for its database: a clean exit, not a failure.
fn stopped_while_waiting(error: &anyhow::Error) -> bool {
    matches!(
        error.downcast_ref::<gozon_runtime::db::BootstrapError>(),
        Some(gozon_runtime::db::BootstrapError::Cancelled)
    )
}
