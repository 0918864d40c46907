//! Private RabbitMQ nodes for one chaos run: their own node names, ports, data and log
//! directories, no plugins, so the machine's shared broker is never touched. A node can be
//! stopped cleanly, crashed (SIGKILL to the Erlang VM) and started again on the same data —
//! quorum queues recover from their write-ahead log, and only confirmed messages are promised to
//! survive — or paused (SIGSTOP). Alone it listens on loopback; in a [`Cluster`] each node runs
//! in a network namespace of its own ([`Network`](crate::network::Network)), so that one can be partitioned away.

mod cluster;

pub use cluster::Cluster;

use crate::process::{log_file, wait_until};
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
