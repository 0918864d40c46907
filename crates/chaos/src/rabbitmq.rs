//! A private RabbitMQ node for one chaos run: its own node name, port, data and log directories,
//! no plugins, so the machine's shared broker is never touched. It can be stopped cleanly or
//! crashed (SIGKILL to the Erlang VM) and started again on the same data: quorum queues recover
//! from their write-ahead log, and only confirmed messages are promised to survive.

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

pub struct PrivateRabbitMq {
    server_script: PathBuf,
    dir: PathBuf,
    node: String,
    port: u16,
    dist_port: u16,
    server: Option<Child>,
}

impl PrivateRabbitMq {
    /// Starts a node with `server_script` (Debian: `/usr/lib/rabbitmq/bin/rabbitmq-server`)
    /// under `dir`, on `port` for AMQP and `dist_port` for Erlang distribution.
    pub async fn start(
        server_script: &Path,
        dir: &Path,
        port: u16,
        dist_port: u16,
    ) -> anyhow::Result<Self> {
        let home = dir.join("rabbitmq");
        std::fs::create_dir_all(&home)?;
        std::fs::write(home.join("enabled_plugins"), "[].\n")?;
        std::fs::write(home.join("rabbitmq.conf"), "")?;
        let mut broker = Self {
            server_script: server_script.to_owned(),
            dir: home,
            node: format!(
                "gozon-chaos-{}@localhost",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            port,
            dist_port,
            server: None,
        };
        broker.restart().await?;
        Ok(broker)
    }

    /// `rabbitmqctl` for this node: the script beside the server's, with the node's `HOME` (its
    /// Erlang cookie) — not Debian's wrapper, which switches to the `rabbitmq` user.
    pub fn rabbitmqctl(&self) -> Rabbitmqctl {
        Rabbitmqctl {
            program: self.server_script.with_file_name("rabbitmqctl"),
            node: Some(self.node.clone()),
            home: Some(self.dir.clone()),
        }
    }

    /// The administrative (guest) URL.
    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the node and waits until it accepts AMQP connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let dir = &self.dir;
        let server = Command::new(&self.server_script)
            .env("HOME", dir)
            .env("RABBITMQ_NODENAME", &self.node)
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", self.port.to_string())
            // It would default to port + 20000, which may be taken.
            .env("RABBITMQ_DIST_PORT", self.dist_port.to_string())
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
