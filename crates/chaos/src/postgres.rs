//! A private PostgreSQL server for one chaos run: its own data directory and port, run as the
//! `postgres` user (the server refuses root), so the machine's shared server is never touched.
//! A crash is an immediate shutdown — SIGQUIT to the postmaster: no checkpoint, every backend
//! gone at once, crash recovery from the WAL at the next start.

use crate::process::{log_file, send_signal, wait_until};
use anyhow::{Context, bail};
use nix::{sys::signal::Signal, unistd::User};
use sqlx::{Connection, PgConnection};
use std::{
    path::{Path, PathBuf},
    time::Duration,
};
use tokio::process::{Child, Command};

pub struct PrivatePostgres {
    bindir: PathBuf,
    data: PathBuf,
    log: PathBuf,
    port: u16,
    user: User,
    server: Option<Child>,
}

impl PrivatePostgres {
    /// Creates a cluster under `dir` with `initdb` from `bindir` and starts it on `port`.
    pub async fn start(bindir: &Path, dir: &Path, port: u16) -> anyhow::Result<Self> {
        let user = User::from_name("postgres")?
            .context("PostgreSQL runs as the user `postgres`, which does not exist")?;
        let home = dir.join("postgres");
        std::fs::create_dir_all(&home)?;
        std::os::unix::fs::chown(&home, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
        let data = home.join("data");
        let log = dir.join("postgres.log");
        let initdb = Command::new(bindir.join("initdb"))
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data)
            .uid(user.uid.as_raw())
            .gid(user.gid.as_raw())
            .stdout(log_file(&log)?)
            .stderr(log_file(&log)?)
            .status()
            .await
            .context("running initdb")?;
        if !initdb.success() {
            bail!("initdb failed; see {}", log.display());
        }
        let mut postgres = Self {
            bindir: bindir.to_owned(),
            data,
            log,
            port,
            user,
            server: None,
        };
        postgres.restart().await?;
        Ok(postgres)
    }

    /// `postgres://postgres@127.0.0.1:<port>`, without a database name.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the server (recovering from a crash if there was one) and waits until it accepts
    /// connections.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let server = Command::new(self.bindir.join("postgres"))
            .arg("-D")
            .arg(&self.data)
            .args([
                "-p",
                &self.port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
            ])
            .arg("-k")
            .arg(&self.data)
            .uid(self.user.uid.as_raw())
            .gid(self.user.gid.as_raw())
            .stdout(log_file(&self.log)?)
            .stderr(log_file(&self.log)?)
            .kill_on_drop(true)
            .spawn()
            .context("starting postgres")?;
        let url = format!("{}/postgres", self.url());
        let server = self.server.insert(server);
        wait_until(
            "PostgreSQL accepts connections",
            Duration::from_secs(60),
            Some(server),
            || {
                let url = url.clone();
                async move { PgConnection::connect(&url).await.is_ok() }
            },
        )
        .await
    }

    /// Immediate shutdown (what a power cut looks like to the clients), waiting until the
    /// postmaster has gone.
    pub async fn crash(&mut self) -> anyhow::Result<()> {
        self.signal_and_wait(Signal::SIGQUIT).await
    }

    /// Fast shutdown: clients disconnected, a checkpoint, a clean stop.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.signal_and_wait(Signal::SIGINT).await
    }

    async fn signal_and_wait(&mut self, signal: Signal) -> anyhow::Result<()> {
        if let Some(mut server) = self.server.take() {
            send_signal(&server, signal)?;
            server.wait().await?;
        }
        Ok(())
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        // Backends notice their postmaster's death and exit on their own.
        if let Some(server) = &self.server {
            let _ = send_signal(server, Signal::SIGQUIT);
        }
    }
}
