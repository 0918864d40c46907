//! The services' own broker logins, with the least each needs (SPEC 5: no one moves another's
//! money — a broker login is a door too).
//!
//! | login | configure | write (publish to) | read (consume) |
//! | --- | --- | --- | --- |
//! | orders | nothing | `order.payments.exchange` | `payment.status` |
//! | payments | nothing | `payment.status.exchange` | `order.payments` |
//!
//! Publishing needs write permission on an exchange, so each work queue has a publish exchange
//! of its own ([`BrokerSettings::publish_exchange`]); neither login may publish to the default
//! exchange, which reaches every queue. Neither may configure anything: an operator provisions
//! the topology with an administrative login ([`provision`]) and the services run with
//! `AMQP_DECLARE_TOPOLOGY=false`. Dead-lettering is the broker's own doing and needs no
//! permission; reading the dead-letter queues is the operator's (`gozon dlq`).
//!
//! Users are made with `rabbitmqctl` (AMQP has no command for it).

pub use crate::Role;
use crate::amqp::{BrokerSettings, short};
use anyhow::{Context, bail};

use std::{path::PathBuf, process::Command};

/// RabbitMQ's three permission patterns (regular expressions over resource names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub configure: String,
    pub write: String,
    pub read: String,
}

impl BrokerSettings {
    /// What `role`'s login may do with this topology.
    pub fn permissions(&self, role: Role) -> Permissions {
        let requests = [&self.order_payments_queue, &self.order_refunds_queue];
        let results = [&self.payment_status_queue, &self.refund_status_queue];
        let (publishes, consumes) = match role {
            Role::Orders => (requests, results),
            Role::Payments => (results, requests),
        };
        Permissions {
            configure: "^$".to_owned(),
            write: exactly(publishes.map(|queue| Self::publish_exchange(queue))),
            read: exactly(consumes),
        }
    }
}

/// A pattern matching these names and nothing else.
fn exactly(names: [impl AsRef<str>; 2]) -> String {
    let escaped = names.map(|name| {
        name.as_ref()
            .chars()
            .flat_map(|c| {
                let escape = !(c.is_ascii_alphanumeric() || c == '_' || c == '-');
                escape.then_some('\\').into_iter().chain([c])
            })
            .collect::<String>()
    });
    format!("^({})$", escaped.join("|"))
}

/// How to reach `rabbitmqctl` for the broker being provisioned.
#[derive(Debug, Clone, clap::Args)]
pub struct Rabbitmqctl {
    /// The `rabbitmqctl` program.
    #[arg(
        long = "rabbitmqctl",
        env = "RABBITMQCTL",
        default_value = "rabbitmqctl"
    )]
    pub program: PathBuf,
    /// The broker's node name, if not the local default.
    #[arg(long = "rabbitmq-node", env = "RABBITMQ_NODENAME")]
    pub node: Option<String>,
    /// `HOME` for `rabbitmqctl` (where the node's Erlang cookie is), if not the caller's.
    #[arg(skip)]
    pub home: Option<PathBuf>,
}

impl Rabbitmqctl {
    /// Runs `rabbitmqctl <args>` against the node; what it printed, or why it failed.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut command = Command::new(&self.program);
        if let Some(node) = &self.node {
            command.args(["-n", node]);
            // A node named by a fully qualified host or an address has a long name, and the CLI
            // must be told.
            if node
                .split_once('@')
                .is_some_and(|(_, host)| host.contains('.'))
            {
                command.arg("--longnames");
            }
        }
        if let Some(home) = &self.home {
            command.env("HOME", home);
        }
        let output = command
            .args(args)
            .output()
            .with_context(|| format!("cannot run {}", self.program.display()))?;
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if !output.status.success() {
            bail!("rabbitmqctl {} failed: {}", args[0], said.trim());
        }
        Ok(said)
    }

    /// Makes `user` (or sets its password, if it exists) with `permissions` on vhost `/`.
    pub fn set_login(
        &self,
        user: &str,
        password: &str,
        permissions: &Permissions,
    ) -> anyhow::Result<()> {
        if let Err(error) = self.run(&["add_user", user, password]) {
            if !error.to_string().contains("already exists") {
                return Err(error);
            }
            self.run(&["change_password", user, password])?;
        }
        self.run(&[
            "set_permissions",
            "-p",
            "/",
            user,
            &permissions.configure,
            &permissions.write,
            &permissions.read,
        ])?;
        Ok(())
    }

    /// Makes `user` (or sets its password) an administrator with every permission on vhost `/`:
    /// the login that provisions the topology.
    pub fn set_admin(&self, user: &str, password: &str) -> anyhow::Result<()> {
        let everything = Permissions {
            configure: ".*".into(),
            write: ".*".into(),
            read: ".*".into(),
        };
        self.set_login(user, password, &everything)?;
        self.run(&["set_user_tags", user, "administrator"])?;
        Ok(())
    }

    /// Removes `user` (tests clean up the logins they made).
    pub fn delete_login(&self, user: &str) -> anyhow::Result<()> {
        self.run(&["delete_user", user]).map(drop)
    }
}

/// A login to give a role.
#[derive(Debug, Clone)]
pub struct Login {
    pub role: Role,
    pub user: String,
    pub password: String,
}

impl Login {
    /// `base_url` (one URL or a comma-separated list) with this login in place of its own.
    pub fn url(&self, base_url: &str) -> String {
        with_login(base_url, &self.user, &self.password)
    }
}

/// `base_url` (one URL or a comma-separated list) with `user` and `password` in place of its
/// own login.
pub fn with_login(base_url: &str, user: &str, password: &str) -> String {
    crate::amqp::addresses(base_url)
        .into_iter()
        .map(|url| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("amqp", url));
            let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            format!("{scheme}://{user}:{password}@{host}")
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The services' logins, as settings: a role without a password keeps the login of `AMQP_URL`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceLogins {
    /// The orders service's broker user.
    #[arg(long, env = "ORDERS_AMQP_USER", default_value = "gozon-orders")]
    pub orders_amqp_user: String,
    /// Its password; set, the orders service connects as that user.
    #[arg(long, env = "ORDERS_AMQP_PASSWORD", hide_env_values = true)]
    pub orders_amqp_password: Option<String>,
    /// The payments service's broker user.
    #[arg(long, env = "PAYMENTS_AMQP_USER", default_value = "gozon-payments")]
    pub payments_amqp_user: String,
    /// Its password; set, the payments service connects as that user.
    #[arg(long, env = "PAYMENTS_AMQP_PASSWORD", hide_env_values = true)]
    pub payments_amqp_password: Option<String>,
}

impl ServiceLogins {
    /// The logins that have a password.
    pub fn logins(&self) -> Vec<Login> {
        [
            (
                Role::Orders,
                &self.orders_amqp_user,
                &self.orders_amqp_password,
            ),
            (
                Role::Payments,
                &self.payments_amqp_user,
                &self.payments_amqp_password,
            ),
        ]
        .into_iter()
        .filter_map(|(role, user, password)| {
            Some(Login {
                role,
                user: user.clone(),
                password: password.clone()?,
            })
        })
        .collect()
    }

    /// The login of `role`, if it has one.
    pub fn of(&self, role: Role) -> Option<Login> {
        self.logins().into_iter().find(|login| login.role == role)
    }
}

/// The administrative login `gozon provision-broker` makes and declares the topology with.
#[derive(Debug, Clone, clap::Args)]
pub struct AdminLogin {
    /// The administrative broker user to make (with rabbitmqctl) and provision with.
    #[arg(long, env = "GOZON_ADMIN_AMQP_USER", default_value = "gozon-admin")]
    pub admin_amqp_user: String,
    /// Its password; unset, the login of `AMQP_URL` provisions (it must be an administrator's).
    #[arg(long, env = "GOZON_ADMIN_AMQP_PASSWORD", hide_env_values = true)]
    pub admin_amqp_password: Option<String>,
}

impl AdminLogin {
    /// The login, if it has a password.
    pub fn login(&self) -> Option<(String, String)> {
        Some((
            self.admin_amqp_user.clone(),
            self.admin_amqp_password.clone()?,
        ))
    }
}

/// Makes `admin` an administrator (if given) and declares the topology with it — else with
/// `broker`'s own login — then makes each of `logins` with the permissions of its role.
pub async fn provision(
    broker: &BrokerSettings,
    rabbitmqctl: &Rabbitmqctl,
    admin: Option<(String, String)>,
    logins: &[Login],
) -> anyhow::Result<()> {
    let mut broker = broker.clone();
    if let Some((user, password)) = admin {
        rabbitmqctl.set_admin(&user, &password)?;
        broker.amqp_url = with_login(&broker.amqp_url, &user, &password);
    }
    let connection = broker
        .connect_once("provisioning")
        .await
        .map_err(anyhow::Error::msg)
        .context("connecting with the administrative login")?;
    let channel = connection.create_channel().await?;
    broker.declare_topology(&channel).await?;
    let _ = connection.close(200, short("provisioned")).await;
    for login in logins {
        rabbitmqctl.set_login(
            &login.user,
            &login.password,
            &broker.permissions(login.role),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(clap::Parser)]
    struct Settings {
        #[command(flatten)]
        broker: BrokerSettings,
    }

    #[test]
    fn each_login_may_publish_only_its_own_messages_and_read_only_its_own_queue() {
        let broker = Settings::parse_from(["x"]).broker;
        assert_eq!(
            broker.permissions(Role::Orders),
            Permissions {
                configure: "^$".into(),
                write: r"^(order\.payments\.exchange|order\.refunds\.exchange)$".into(),
                read: r"^(payment\.status|refund\.status)$".into(),
            }
        );
        assert_eq!(
            broker.permissions(Role::Payments),
            Permissions {
                configure: "^$".into(),
                write: r"^(payment\.status\.exchange|refund\.status\.exchange)$".into(),
                read: r"^(order\.payments|order\.refunds)$".into(),
            }
        );
    }

    #[test]
    fn a_login_replaces_the_one_in_a_url() {
        let login = Login {
            role: Role::Orders,
            user: "gozon-orders".into(),
            password: "pw".into(),
        };
        assert_eq!(
            login.url("amqp://guest:guest@127.0.0.1:5672/%2f"),
            "amqp://gozon-orders:pw@127.0.0.1:5672/%2f"
        );
        assert_eq!(
            login.url("amqp://rabbit:5672/%2f"),
            "amqp://gozon-orders:pw@rabbit:5672/%2f"
        );
        assert_eq!(
            login.url("amqp://a@r1:5672/%2f, amqp://b@r2:5673/%2f"),
            "amqp://gozon-orders:pw@r1:5672/%2f,amqp://gozon-orders:pw@r2:5673/%2f"
        );
    }
}
