//! `gozon run`: the roles as child processes of this binary, started and stopped together. Each
//! role gets the broker credentials it needs and no other's: orders and payments their own
//! login (in their `AMQP_URL`), identity and the gateway none at all.

use anyhow::Context;
use gozon_messaging::broker_logins::{Role, ServiceLogins};
use nix::{sys::signal, unistd::Pid};
use std::time::Duration;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;

/// What `gozon run` needs to know; each role reads the rest of its settings from the
/// environment, which the children inherit — but for the broker's secrets.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// The gateway's address, to wait for and to print (same variable as `gozon gateway`).
    #[arg(long, env = "GATEWAY_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub gateway_addr: String,

    /// The broker address the services share (each with its own login, if it has one).
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub amqp_url: String,

    #[command(flatten)]
    pub logins: ServiceLogins,
}

/// The environment variables that hold a broker secret: no child inherits them.
const BROKER_SECRETS: [&str; 4] = [
    "AMQP_URL",
    "ORDERS_AMQP_PASSWORD",
    "PAYMENTS_AMQP_PASSWORD",
    "GOZON_ADMIN_AMQP_PASSWORD",
];

const ROLES: [&str; 4] = ["identity", "payments", "orders", "gateway"];

/// glibc's allocator maps blocks of at least this many bytes on their own and unmaps them when
/// freed. By default it raises the threshold to the largest block freed, after which every
/// blocking-pool thread that ran an Argon2 hash keeps a freed 19 MiB in its own arena: identity
/// grew to 795 MiB resident over a benchmark's 100 sign-ups, and stays at 52 MiB with 1 MiB fixed
/// (the Dockerfile sets the same).
const MMAP_THRESHOLD: &str = "MALLOC_MMAP_THRESHOLD_";

pub async fn run(settings: Settings, stop: CancellationToken) -> anyhow::Result<()> {
    // Otherwise another GoZon on this address would answer the readiness probes below.
    drop(
        std::net::TcpListener::bind(&settings.gateway_addr).with_context(|| {
            format!(
                "{} is taken; is GoZon already running?",
                settings.gateway_addr
            )
        })?,
    );
    let exe = std::env::current_exe().context("cannot find the gozon binary")?;
    let logins = settings.logins.logins();
    if logins.len() < 2 {
        tracing::warn!(
            "a service has no broker login of its own (ORDERS_AMQP_PASSWORD, \
             PAYMENTS_AMQP_PASSWORD): it uses the login of AMQP_URL"
        );
    }
    let mut children = Vec::new();
    for role in ROLES {
        let mut command = tokio::process::Command::new(&exe);
        for secret in BROKER_SECRETS {
            command.env_remove(secret);
        }
        let own = match role {
            "orders" => Some(settings.logins.of(Role::Orders)),
            "payments" => Some(settings.logins.of(Role::Payments)),
            _ => None,
        };
        match own {
            Some(Some(login)) => {
                command.env("AMQP_URL", login.url(&settings.amqp_url));
            }
            Some(None) => {
                command.env("AMQP_URL", &settings.amqp_url);
            }
            None => {}
        }
        if role == "identity" && std::env::var_os(MMAP_THRESHOLD).is_none() {
            command.env(MMAP_THRESHOLD, "1048576");
        }
        let child = command
            .arg(role)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {role}"))?;
        children.push((role, child));
    }

    let ready = wait_for_gateway(&settings.gateway_addr);
    tokio::select! {
        _ = ready => println!("GoZon is running: http://{}/  (Ctrl-C stops it)", settings.gateway_addr),
        _ = stop.cancelled() => {}
        exited = first_exit(&mut children) => tracing::error!(role = exited, "a role exited during startup"),
    }

    let failed = tokio::select! {
        _ = stop.cancelled() => None,
        exited = first_exit(&mut children) => Some(exited),
    };
    if let Some(role) = failed {
        tracing::error!(role, "a role exited; stopping the others");
    }
    for (role, child) in &children {
        if let Some(pid) = child.id() {
            // The terminal's Ctrl-C reaches every child already; a SIGTERM from a service
            // manager reaches only this process, so pass it on.
            if let Err(error) = signal::kill(Pid::from_raw(pid as i32), signal::Signal::SIGTERM) {
                tracing::debug!(role, %error, "could not signal child");
            }
        }
    }
    let mut all_clean = failed.is_none();
    for (role, child) in &mut children {
        let status = child.wait().await?;
        tracing::info!(role, %status, "role exited");
        all_clean &= status.success();
    }
    anyhow::ensure!(all_clean, "a role failed");
    Ok(())
}

/// Waits until every service answers through the gateway (401 to these anonymous calls is an
/// answer): a service still waiting for its database is not listening yet, and the gateway
/// answers 502 for it.
async fn wait_for_gateway(addr: &str) {
    let client = reqwest::Client::new();
    let probes = [
        format!("http://{addr}/auth/jwks.json"),
        format!("http://{addr}/orders"),
        format!("http://{addr}/payments/accounts/readiness-probe/balance"),
    ];
    for probe in probes {
        loop {
            match client.get(&probe).send().await {
                Ok(response) if response.status() != reqwest::StatusCode::BAD_GATEWAY => break,
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }
}

/// Waits for the first child to exit and names it.
async fn first_exit(children: &mut [(&'static str, Child)]) -> &'static str {
    let waits = children.iter_mut().map(|(role, child)| {
        Box::pin(async move {
            let _ = child.wait().await;
            *role
        })
    });
    futures::future::select_all(waits).await.0
}
