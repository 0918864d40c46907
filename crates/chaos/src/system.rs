//! The system under test: a private PostgreSQL (with a synchronous standby on request) and
//! RabbitMQ (one node, or a cluster in network namespaces), TCP proxies in front of the database
//! and a lone broker node (to cut connections without stopping the servers), and the GoZon roles (identity, orders, payments,
//! gateway) as child processes of the real binary — and the one method that breaks any of it.

use crate::{
    faults::Fault,
    postgres::PrivatePostgres,
    process::{Role, free_port, say, wait_until},
    rabbitmq::Cluster,
};
use clap::Parser;
use gozon_messaging::{
    amqp::BrokerSettings,
    broker_logins::{self, Login, Role as Service},
};
use gozon_test_support::TcpProxy;
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

/// The work queues of the system's services (their default names; each has a dead-letter queue).
pub const WORK_QUEUES: [&str; 4] = [
    "order.payments",
    "payment.status",
    "order.refunds",
    "refund.status",
];

/// The broker's administrative settings (the defaults, at the private node's URL).
#[derive(clap::Parser)]
struct Admin {
    #[command(flatten)]
    broker: BrokerSettings,
}

/// A system broken from outside on purpose, for showing that the checker catches what it must.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Broken {
    /// Someone holding payments' message key forges a decline for one payment request in seven
    /// ([`crate::forger`]): those orders are cancelled while payments debits them.
    ForgedDeclines,
    /// Someone holding orders' message key takes payment requests off their queue and hands
    /// each user's on in pairs with their places in line swapped ([`crate::forger`]): a later
    /// order of a user is decided before an earlier one.
    ReorderedRequests,
}

/// Where the system's programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    /// The `gozon` binary.
    pub gozon: PathBuf,
    /// PostgreSQL's `bin` directory (with `initdb` and `postgres`).
    pub postgres_bindir: PathBuf,
    /// RabbitMQ's start script, run directly (not through Debian's wrapper that switches user).
    pub rabbitmq_server: PathBuf,
    /// The web UI the gateway serves.
    pub ui_dir: PathBuf,
}

pub struct System {
    /// The database the services use (the primary, with a standby).
    pub postgres: PrivatePostgres,
    /// Its synchronous standby, with `--postgres-standby`.
    standby: Option<PrivatePostgres>,
    /// How many standbys were made so far (each gets a home of its own).
    standbys_made: u32,
    dir: PathBuf,
    pub rabbitmq: Cluster,
    database_proxy: TcpProxy,
    /// In front of a lone broker node; a cluster's nodes are reached directly.
    broker_proxy: Option<TcpProxy>,
    /// Identity, every instance of orders and payments, then the gateway.
    roles: Vec<Role>,
    /// Base URLs of the services' instances, for the readiness probes.
    service_urls: Vec<String>,
    pub gateway_url: String,
}

/// What the system is made of.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Instances of each service (one gateway in front of them all).
    pub instances: usize,
    /// PostgreSQL with a synchronous standby.
    pub postgres_standby: bool,
    /// RabbitMQ nodes: 1, or a cluster.
    pub rabbitmq_nodes: usize,
}

impl System {
    /// Starts the servers, the instances of each service and one gateway in front of them all.
    pub async fn start(programs: &Programs, dir: &Path, shape: Shape) -> anyhow::Result<Self> {
        let Shape {
            instances,
            postgres_standby: with_standby,
            rabbitmq_nodes,
        } = shape;
        say(&format!("private servers and logs in {}", dir.display()));
        let postgres =
            PrivatePostgres::start(&programs.postgres_bindir, dir, free_port()?, with_standby)
                .await?;
        let standby = match with_standby {
            true => {
                let standby =
                    PrivatePostgres::standby_of(&postgres, dir, "standby-1", free_port()?).await?;
                postgres.wait_for_standby("sync").await?;
                say("PostgreSQL primary with a synchronous standby");
                Some(standby)
            }
            false => None,
        };
        let rabbitmq = Cluster::start(&programs.rabbitmq_server, dir, rabbitmq_nodes).await?;
        let database_proxy = TcpProxy::start(&postgres.address(), true).await?;
        let database = database_proxy.url_through(&postgres.url());
        let (broker_proxy, broker) = match rabbitmq.is_cluster() {
            true => (None, rabbitmq.urls()),
            false => {
                let node = &rabbitmq.nodes[0];
                let proxy = TcpProxy::start(&node.address(), true).await?;
                let url = proxy.url_through(&node.url());
                (Some(proxy), url)
            }
        };
        // Each service on its own least-privilege login; the topology provisioned up front.
        let logins = [Service::Orders, Service::Payments].map(|role| Login {
            role,
            user: format!("gozon-{role:?}").to_lowercase(),
            password: uuid::Uuid::new_v4().simple().to_string(),
        });
        // Declared once the cluster is whole, the quorum queues get a member on every node.
        let admin = Admin::parse_from(["provision", "--amqp-url", &rabbitmq.urls()]).broker;
        broker_logins::provision(&admin, &rabbitmq.nodes[0].rabbitmqctl(), None, &logins).await?;

        let mut roles = Vec::new();
        let identity_port = free_port()?;
        let identity_url = format!("http://127.0.0.1:{identity_port}");
        roles.push(Role::start(
            "identity",
            1,
            &programs.gozon,
            vec![
                "--listen-addr".to_owned(),
                format!("127.0.0.1:{identity_port}"),
                "--database-url".to_owned(),
                format!("{database}/gozon_identity"),
                // The workload signs its users up from one address.
                "--signups-per-client".to_owned(),
                "1000000".to_owned(),
            ],
            dir,
        )?);
        // Every instance's port first: each service checks its peer's messages with the keys
        // any instance of the peer publishes.
        let ports: Vec<Vec<u16>> = (0..2)
            .map(|_| (0..instances.max(1)).map(|_| free_port()).collect())
            .collect::<anyhow::Result<_>>()?;
        let urls: Vec<Vec<String>> = ports
            .iter()
            .map(|ports| {
                ports
                    .iter()
                    .map(|port| format!("http://127.0.0.1:{port}"))
                    .collect()
            })
            .collect();
        let keys_of = |service: usize| {
            urls[service]
                .iter()
                .map(|url| format!("{url}/messaging/keys"))
                .collect::<Vec<_>>()
                .join(",")
        };
        for (service, ((name, database_name), login)) in
            [("orders", "gozon_orders"), ("payments", "gozon_payments")]
                .into_iter()
                .zip(&logins)
                .enumerate()
        {
            let (peer_keys_setting, peer) = match name {
                "orders" => ("--payments-message-keys-url", 1),
                _ => ("--orders-message-keys-url", 0),
            };
            for (instance, port) in ports[service].iter().enumerate() {
                let args = vec![
                    "--listen-addr".to_owned(),
                    format!("127.0.0.1:{port}"),
                    "--database-url".to_owned(),
                    format!("{database}/{database_name}"),
                    "--amqp-url".to_owned(),
                    login.url(&broker),
                    "--amqp-declare-topology".to_owned(),
                    "false".to_owned(),
                    "--auth-jwks-url".to_owned(),
                    format!("{identity_url}/auth/jwks.json"),
                    "--auth-revocations-url".to_owned(),
                    format!("{identity_url}/auth/revoked"),
                    peer_keys_setting.to_owned(),
                    keys_of(peer),
                ];
                roles.push(Role::start(name, instance + 1, &programs.gozon, args, dir)?);
            }
        }
        let gateway_port = free_port()?;
        let gateway_args = vec![
            "--listen-addr".to_owned(),
            format!("127.0.0.1:{gateway_port}"),
            "--orders-url".to_owned(),
            urls[0].join(","),
            "--payments-url".to_owned(),
            urls[1].join(","),
            "--identity-url".to_owned(),
            identity_url.clone(),
            "--ui-dir".to_owned(),
            programs.ui_dir.display().to_string(),
        ];
        roles.push(Role::start(
            "gateway",
            1,
            &programs.gozon,
            gateway_args,
            dir,
        )?);
        let system = Self {
            postgres,
            standby,
            standbys_made: 1,
            dir: dir.to_owned(),
            rabbitmq,
            database_proxy,
            broker_proxy,
            roles,
            service_urls: [vec![identity_url], urls.concat()].concat(),
            gateway_url: format!("http://127.0.0.1:{gateway_port}"),
        };
        system.wait_ready(Duration::from_secs(60)).await?;
        Ok(system)
    }

    /// The payments database, directly (not through the proxy), for the audit.
    pub fn payments_database_url(&self) -> String {
        format!("{}/gozon_payments", self.postgres.url())
    }

    pub fn orders_database_url(&self) -> String {
        format!("{}/gozon_orders", self.postgres.url())
    }

    /// What someone who stole payments' message key and an administrative broker login reaches.
    pub fn forger_target(&self) -> crate::forger::Target {
        let amqp_url = self.rabbitmq.urls();
        crate::forger::Target {
            broker: Admin::parse_from(["forger", "--amqp-url", &amqp_url]).broker,
            amqp_url: self.rabbitmq.nodes[0].url(),
            payments_database_url: self.payments_database_url(),
            orders_database_url: self.orders_database_url(),
        }
    }

    /// Waits until both services report their database and broker reachable and the gateway
    /// answers.
    pub async fn wait_ready(&self, timeout: Duration) -> anyhow::Result<()> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let probes = self
            .service_urls
            .iter()
            .map(|url| format!("{url}/readyz"))
            .chain([format!("{}/healthz", self.gateway_url)]);
        for probe in probes {
            wait_until(&format!("{probe} answers 200"), timeout, None, || {
                let request = http.get(&probe);
                async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
            })
            .await?;
        }
        Ok(())
    }

    /// Breaks one thing, and mends it after `downtime`; `pick` chooses which instance of a
    /// service is killed.
    pub async fn inject(
        &mut self,
        fault: Fault,
        downtime: Duration,
        pick: usize,
    ) -> anyhow::Result<()> {
        match fault {
            Fault::KillOrders => self.kill_and_restart("orders", pick, downtime).await,
            Fault::KillPayments => self.kill_and_restart("payments", pick, downtime).await,
            Fault::KillGateway => self.kill_and_restart("gateway", pick, downtime).await,
            Fault::RestartRabbitMq => self.rabbitmq.restart(pick, false, downtime).await,
            Fault::CrashRabbitMq => self.rabbitmq.restart(pick, true, downtime).await,
            Fault::PauseRabbitMq => self.rabbitmq.pause(pick, downtime).await,
            Fault::PartitionRabbitMq => self.rabbitmq.partition(pick, downtime).await,
            Fault::CrashPostgres => {
                self.postgres.crash().await?;
                tokio::time::sleep(downtime).await;
                self.postgres.restart().await
            }
            Fault::CutDatabase => {
                self.database_proxy.cut();
                tokio::time::sleep(downtime).await;
                self.database_proxy.restore();
                Ok(())
            }
            Fault::CutBroker => {
                let Some(proxy) = &self.broker_proxy else {
                    anyhow::bail!("a cluster's nodes are reached directly: partition one instead");
                };
                proxy.cut();
                tokio::time::sleep(downtime).await;
                proxy.restore();
                Ok(())
            }
            Fault::FailoverPostgres => self.fail_over(downtime).await,
            Fault::PauseOrders => self.pause("orders", pick, downtime).await,
            Fault::PausePayments => self.pause("payments", pick, downtime).await,
        }
    }

    /// What `fault` with `pick` breaks, as the history records it.
    pub fn target_of(&self, fault: Fault, pick: usize) -> String {
        match fault {
            Fault::KillOrders | Fault::PauseOrders => self.pick_label("orders", pick),
            Fault::KillPayments | Fault::PausePayments => self.pick_label("payments", pick),
            Fault::KillGateway => self.pick_label("gateway", pick),
            Fault::RestartRabbitMq
            | Fault::CrashRabbitMq
            | Fault::PauseRabbitMq
            | Fault::PartitionRabbitMq
            | Fault::CutBroker => self.rabbitmq.label(pick),
            Fault::CrashPostgres | Fault::CutDatabase | Fault::FailoverPostgres => {
                "postgresql".into()
            }
        }
    }

    /// Kills the primary for good, promotes the standby and points the services' database
    /// address at it; after `downtime`, gives it a synchronous standby of its own again.
    async fn fail_over(&mut self, downtime: Duration) -> anyhow::Result<()> {
        let Some(standby) = self.standby.take() else {
            anyhow::bail!("a failover needs --postgres-standby");
        };
        say("  killing the primary; promoting the standby");
        self.postgres.kill().await?;
        standby.promote().await?;
        self.database_proxy.retarget(&standby.address());
        // The old primary's data is left as it is, and never started again.
        self.postgres = standby;
        tokio::time::sleep(downtime).await;
        self.standbys_made += 1;
        let name = format!("standby-{}", self.standbys_made);
        let next =
            PrivatePostgres::standby_of(&self.postgres, &self.dir, &name, free_port()?).await?;
        self.postgres.require_sync_standby().await?;
        self.postgres.wait_for_standby("sync").await?;
        say(&format!("  {name} is the new synchronous standby"));
        self.standby = Some(next);
        Ok(())
    }

    /// The label of the instance of `name` that `pick` chooses.
    pub fn pick_label(&self, name: &str, pick: usize) -> String {
        let instances: Vec<&Role> = self.roles.iter().filter(|role| role.name == name).collect();
        instances
            .get(pick % instances.len().max(1))
            .map_or_else(|| name.to_owned(), |role| role.label.clone())
    }

    async fn pause(&mut self, name: &str, pick: usize, stopped: Duration) -> anyhow::Result<()> {
        let instances: Vec<&Role> = self.roles.iter().filter(|role| role.name == name).collect();
        let Some(role) = instances.get(pick % instances.len().max(1)) else {
            return Ok(());
        };
        say(&format!(
            "  stopping {} for {} ms",
            role.label,
            stopped.as_millis()
        ));
        role.pause()?;
        tokio::time::sleep(stopped).await;
        role.resume()
    }

    async fn kill_and_restart(
        &mut self,
        name: &str,
        pick: usize,
        downtime: Duration,
    ) -> anyhow::Result<()> {
        let mut instances: Vec<&mut Role> = self
            .roles
            .iter_mut()
            .filter(|role| role.name == name)
            .collect();
        let count = instances.len().max(1);
        let Some(role) = instances.get_mut(pick % count) else {
            return Ok(());
        };
        say(&format!("  killing {}", role.label));
        role.kill().await?;
        tokio::time::sleep(downtime).await;
        role.restart()
    }

    /// Starts again any role that exited on its own; see [`Role::unexpected_exits`].
    pub fn revive_exited(&mut self) -> anyhow::Result<()> {
        self.roles.iter_mut().try_for_each(Role::revive_if_exited)
    }

    pub fn unexpected_exits(&self) -> Vec<(String, u32)> {
        self.roles
            .iter()
            .filter(|role| role.unexpected_exits > 0)
            .map(|role| (role.label.clone(), role.unexpected_exits))
            .collect()
    }

    /// Stops everything gracefully: the gateway, the services, then the servers.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for role in self.roles.iter_mut().rev() {
            role.stop().await?;
        }
        self.rabbitmq.stop().await?;
        if let Some(standby) = &mut self.standby {
            standby.stop().await?;
        }
        self.postgres.stop().await
    }
}
