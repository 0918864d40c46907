//! Private RabbitMQ nodes for one chaos run: their own node names, ports, data and log
//! directories, no plugins, so the machine's shared broker is never touched. A node can be
//! stopped cleanly, crashed (SIGKILL to the Erlang VM) and started again on the same data —
//! quorum queues recover from their write-ahead log, and only confirmed messages are promised to
//! survive — or paused (SIGSTOP). Alone it listens on loopback; in a [`Cluster`] each node runs
//! in a network namespace of its own ([`Network`]), so that one can be partitioned away.

use crate::{
    network::Network,
    process::{free_port, log_file, say, wait_until},
};
use anyhow::Context;
use gozon_messaging::broker_logins::Rabbitmqctl;
use lapin::{Connection, ConnectionProperties};
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::process::{Child, Command};

/// Where a node runs and listens.
pub struct Placement {
    /// The address it listens on (AMQP) and is named by.
    pub host: String,
    /// Its network namespace; `None`: the host's, on loopback.
    pub namespace: Option<String>,
    pub port: u16,
    /// Erlang distribution's port: it would default to `port` + 20000, which may be taken.
    pub dist_port: u16,
}

pub struct PrivateRabbitMq {
    server_script: PathBuf,
    dir: PathBuf,
    node: String,
    placement: Placement,
    server: Option<Child>,
}

impl PrivateRabbitMq {
    /// Starts a node with `server_script` (Debian: `/usr/lib/rabbitmq/bin/rabbitmq-server`)
    /// in `dir`, where `placement` says, with `config` as its `rabbitmq.conf` and `cookie` as
    /// its Erlang cookie (the same on every node of a cluster).
    pub async fn start(
        server_script: &Path,
        dir: &Path,
        placement: Placement,
        config: &str,
        cookie: &str,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        std::fs::write(dir.join("rabbitmq.conf"), config)?;
        if placement.namespace.is_some() {
            // Not the machine's /etc/rabbitmq/rabbitmq-env.conf, which pins Erlang's port mapper
            // and distribution to 127.0.0.1: unreachable from the other namespaces.
            std::fs::write(dir.join("rabbitmq-env.conf"), "")?;
        }
        write_cookie(&dir.join(".erlang.cookie"), cookie)?;
        let id = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let mut broker = Self {
            server_script: server_script.to_owned(),
            dir: dir.to_owned(),
            node: match placement.namespace {
                // A name with an address in it is a long name.
                Some(_) => format!("gozon-chaos-{id}@{}", placement.host),
                None => format!("gozon-chaos-{id}@localhost"),
            },
            placement,
            server: None,
        };
        broker.restart().await?;
        Ok(broker)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// `rabbitmqctl` for this node: the script beside the server's, with the node's `HOME` (its
    /// Erlang cookie) — not Debian's wrapper, which switches to the `rabbitmq` user.
    pub fn rabbitmqctl(&self) -> Rabbitmqctl {
        self.cli("rabbitmqctl")
    }

    /// `rabbitmq-queues` for this node, the same way.
    fn rabbitmq_queues(&self) -> Rabbitmqctl {
        self.cli("rabbitmq-queues")
    }

    fn cli(&self, program: &str) -> Rabbitmqctl {
        Rabbitmqctl {
            program: self.server_script.with_file_name(program),
            node: Some(self.node.clone()),
            home: Some(self.dir.clone()),
        }
    }

    /// The administrative (guest) URL.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.address())
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.placement.host, self.placement.port)
    }

    /// Starts the node and waits until it accepts AMQP connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let dir = &self.dir;
        let mut command = match &self.placement.namespace {
            Some(namespace) => {
                let mut command = Command::new("ip");
                command
                    .args(["netns", "exec", namespace])
                    .arg(&self.server_script)
                    .env("RABBITMQ_USE_LONGNAME", "true")
                    .env("RABBITMQ_CONF_ENV_FILE", dir.join("rabbitmq-env.conf"));
                command
            }
            None => Command::new(&self.server_script),
        };
        let server = command
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", &self.placement.host)
            .env("RABBITMQ_NODE_PORT", self.placement.port.to_string())
            .env("RABBITMQ_DIST_PORT", self.placement.dist_port.to_string())
            .env("ERL_CRASH_DUMP", dir.join("erl_crash.dump"))
            .current_dir(dir)
            .env("RABBITMQ_MNESIA_BASE", dir.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", dir.join("log"))
            .env("RABBITMQ_PID_FILE", dir.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", dir.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", dir.join("rabbitmq"))
            .stdout(log_file(&self.dir.join("console.log"))?)
            .stderr(log_file(&self.dir.join("console.log"))?)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .context("starting rabbitmq-server")?;
        let url = self.url();
        let server = self.server.insert(server);
        wait_until(
            "RabbitMQ accepts AMQP connections",
            Duration::from_secs(90),
            Some(server),
            || {
                let url = url.clone();
                async move {
                    match Connection::connect(&url, ConnectionProperties::default()).await {
                        Ok(connection) => {
                            let _ = connection.close(200, "ok".into()).await;
                            true
                        }
                        Err(_) => false,
                    }
                }
            },
        )
        .await
    }

    /// SIGKILL to every process of the node, and the wait until they are gone.
    pub async fn crash(&mut self) -> anyhow::Result<()> {
        self.signal_and_wait(Signal::SIGKILL).await
    }

    /// A clean stop (SIGTERM to the node).
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.signal_and_wait(Signal::SIGTERM).await
    }

    /// SIGSTOP to the Erlang VM: the node stands still, its sockets open, until [`Self::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal_vm(Signal::SIGSTOP)
    }

    /// SIGCONT: the node runs on from where it stood.
    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal_vm(Signal::SIGCONT)
    }

    fn signal_vm(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.vm_pid().context("the node's VM has no pid file")?;
        nix::sys::signal::kill(pid, signal)?;
        Ok(())
    }

    async fn signal_and_wait(&mut self, signal: Signal) -> anyhow::Result<()> {
        if let Some(mut server) = self.server.take() {
            signal_group(&server, signal);
            server.wait().await?;
            // The VM is a child of the start script; the script ends first.
            wait_until(
                "the RabbitMQ node has exited",
                Duration::from_secs(30),
                None,
                || {
                    let vm = self.vm_pid();
                    async move { vm.is_none_or(|pid| nix::sys::signal::kill(pid, None).is_err()) }
                },
            )
            .await?;
        }
        Ok(())
    }

    fn vm_pid(&self) -> Option<Pid> {
        let pid = std::fs::read_to_string(self.dir.join("pid")).ok()?;
        Some(Pid::from_raw(pid.trim().parse().ok()?))
    }
}

/// The Erlang cookie file: readable by its owner only, or Erlang refuses it.
fn write_cookie(path: &Path, cookie: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if path.exists() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    std::fs::write(path, cookie)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o400))?;
    Ok(())
}

/// The start script runs in its own process group, the Erlang VM and its helpers with it.
fn signal_group(server: &Child, signal: Signal) {
    if let Some(pid) = server.id() {
        let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), signal);
    }
}

impl Drop for PrivateRabbitMq {
    fn drop(&mut self) {
        if let Some(server) = &self.server {
            signal_group(server, Signal::SIGKILL);
        }
    }
}

/// What every clustered node is told. `autoheal`: once a partition ends, the nodes agree on a
/// winning side and restart RabbitMQ on the others, which then rejoin — also after a partition
/// shorter than the tick time, which the nodes only notice once it is over (`pause_minority`
/// would leave the cluster split until an operator restarted a node: the first long run showed
/// it). Quorum queues keep their data either way (Raft); this is about the cluster's metadata.
/// Nodes notice a silent peer after 10 s rather than a minute. The administrative `guest` login
/// may connect from the host's address (it is refused beyond loopback by default); the nodes'
/// network is private to the run.
const CLUSTER_CONFIG: &str = "cluster_partition_handling = autoheal\nnet_ticktime = 10\n\
                              loopback_users.guest = false\n";

/// The broker of a chaos run: one node on loopback, or several clustered nodes, each in a
/// network namespace of its own.
pub struct Cluster {
    pub nodes: Vec<PrivateRabbitMq>,
    /// Declared after the nodes: dropped after them, once nothing runs inside.
    network: Option<Network>,
}

impl Cluster {
    /// One node (`nodes` ≤ 1) on loopback ports, or `nodes` nodes joined into one cluster.
    pub async fn start(server_script: &Path, dir: &Path, nodes: usize) -> anyhow::Result<Self> {
        let cookie = uuid::Uuid::new_v4().simple().to_string();
        if nodes <= 1 {
            let placement = Placement {
                host: "127.0.0.1".to_owned(),
                namespace: None,
                port: free_port()?,
                dist_port: free_port()?,
            };
            let node = PrivateRabbitMq::start(
                server_script,
                &dir.join("rabbitmq"),
                placement,
                "",
                &cookie,
            )
            .await?;
            return Ok(Self {
                nodes: vec![node],
                network: None,
            });
        }
        let network = Network::create(nodes)?;
        say(&format!(
            "RabbitMQ cluster of {nodes} nodes at {}",
            (0..nodes)
                .map(|node| network.address(node))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        let started = futures::future::try_join_all((0..nodes).map(|node| {
            let placement = Placement {
                host: network.address(node),
                namespace: Some(network.namespace(node).to_owned()),
                // Each namespace has its ports to itself.
                port: 5672,
                dist_port: 25672,
            };
            let dir = dir.join(format!("rabbitmq-{node}"));
            let cookie = cookie.clone();
            async move {
                PrivateRabbitMq::start(server_script, &dir, placement, CLUSTER_CONFIG, &cookie)
                    .await
            }
        }))
        .await?;
        let cluster = Self {
            nodes: started,
            network: Some(network),
        };
        let first = cluster.nodes[0].node().to_owned();
        for node in &cluster.nodes[1..] {
            let rabbitmqctl = node.rabbitmqctl();
            rabbitmqctl.run(&["stop_app"])?;
            rabbitmqctl.run(&["join_cluster", &first])?;
            rabbitmqctl.run(&["start_app"])?;
        }
        cluster.wait_whole().await?;
        Ok(cluster)
    }

    pub fn is_cluster(&self) -> bool {
        self.network.is_some()
    }

    /// Every node's administrative URL, comma-separated (as `AMQP_URL` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(PrivateRabbitMq::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Which node `pick` chooses, by name, as the history records it.
    pub fn label(&self, pick: usize) -> String {
        match self.is_cluster() {
            true => format!("rabbitmq-{}", pick % self.nodes.len()),
            false => "rabbitmq".to_owned(),
        }
    }

    /// Stops node `pick` cleanly (`crash`: SIGKILL), and starts it again after `downtime`.
    pub async fn restart(
        &mut self,
        pick: usize,
        crash: bool,
        downtime: Duration,
    ) -> anyhow::Result<()> {
        let count = self.nodes.len();
        let node = &mut self.nodes[pick % count];
        match crash {
            true => node.crash().await?,
            false => node.stop().await?,
        }
        tokio::time::sleep(downtime).await;
        node.restart().await?;
        self.wait_whole().await
    }

    /// Stops node `pick` (SIGSTOP) for `stopped`, then lets it run on.
    pub async fn pause(&mut self, pick: usize, stopped: Duration) -> anyhow::Result<()> {
        let node = &self.nodes[pick % self.nodes.len()];
        node.pause()?;
        tokio::time::sleep(stopped).await;
        node.resume()?;
        self.wait_whole().await
    }

    /// Cuts node `pick` off from the other nodes and from the services, for `downtime`.
    pub async fn partition(&mut self, pick: usize, downtime: Duration) -> anyhow::Result<()> {
        let Some(network) = &self.network else {
            anyhow::bail!("a partition needs a cluster (--rabbitmq-nodes 3)");
        };
        let node = pick % network.nodes();
        say(&format!("  isolating rabbitmq-{node}"));
        network.isolate(node)?;
        tokio::time::sleep(downtime).await;
        network.heal(node)?;
        self.wait_whole().await
    }

    /// Waits until every node runs in the cluster again and every quorum queue has all its
    /// members back (no node is "quorum critical", RabbitMQ's own check before a rolling
    /// restart): the faults break one node at a time (SPEC 7), and breaking a second while
    /// the first still recovers would leave some queue without a majority — two faults at once.
    async fn wait_whole(&self) -> anyhow::Result<()> {
        if !self.is_cluster() {
            return Ok(());
        }
        let count = self.nodes.len();
        let rabbitmqctls: Vec<Rabbitmqctl> = self
            .nodes
            .iter()
            .map(PrivateRabbitMq::rabbitmqctl)
            .collect();
        let started = std::time::Instant::now();
        wait_until(
            "every node runs in the cluster",
            Duration::from_secs(120),
            None,
            || {
                let rabbitmqctls = rabbitmqctls.clone();
                off_the_runtime(move || {
                    rabbitmqctls
                        .iter()
                        .any(|rabbitmqctl| running_nodes(rabbitmqctl) == count)
                })
            },
        )
        .await?;
        for node in &self.nodes {
            let rabbitmq_queues = node.rabbitmq_queues();
            wait_until(
                &format!("no quorum queue depends on {} alone", node.node()),
                Duration::from_secs(120),
                None,
                || {
                    let rabbitmq_queues = rabbitmq_queues.clone();
                    off_the_runtime(move || {
                        rabbitmq_queues
                            .run(&["check_if_node_is_quorum_critical"])
                            .is_ok()
                    })
                },
            )
            .await?;
        }
        say(&format!(
            "  all {count} nodes run in the cluster ({:.1} s)",
            started.elapsed().as_secs_f64()
        ));
        Ok(())
    }

    pub async fn stop(&mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            node.stop().await?;
        }
        Ok(())
    }
}

/// Runs `check` (a CLI call: a second or two) on a blocking thread, so that the clients, which
/// share the runtime, keep their pace meanwhile; false if it could not run.
async fn off_the_runtime(check: impl FnOnce() -> bool + Send + 'static) -> bool {
    tokio::task::spawn_blocking(check).await.unwrap_or(false)
}

/// How many nodes `rabbitmqctl cluster_status` reports running (0 if it cannot tell).
fn running_nodes(rabbitmqctl: &Rabbitmqctl) -> usize {
    rabbitmqctl
        .run(&["cluster_status", "--formatter", "json"])
        .ok()
        .and_then(|said| {
            let start = said.find('{')?;
            let status: serde_json::Value = serde_json::from_str(&said[start..]).ok()?;
            Some(status["running_nodes"].as_array()?.len())
        })
        .unwrap_or(0)
}
