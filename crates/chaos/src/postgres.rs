//! A private PostgreSQL server for one chaos run: its own data directory and port, run as the
//! `postgres` user (the server refuses root), so the machine's shared server is never touched.
//! A crash is an immediate shutdown — SIGQUIT to the postmaster: no checkpoint, every backend
//! gone at once, crash recovery from the WAL at the next start.
//!
//! With a standby (`gozon-chaos --postgres-standby`) the server is a primary that commits only
//! once its synchronous standby has the WAL (`synchronous_standby_names`, `synchronous_commit =
//! on`), and [`PrivatePostgres::standby_of`] makes that standby by streaming a base backup.

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

/// The `application_name` of the synchronous standby, whichever server it is.
pub const STANDBY: &str = "standby";

/// A home for server `name` under `dir`, owned by `postgres`; its data directory and log.
/// Runs `command` (a PostgreSQL tool, `what`) as `user`, its output appended to `log`; fails
/// unless it succeeds.
async fn run_as(user: &User, mut command: Command, what: &str, log: &Path) -> anyhow::Result<()> {
    let status = command
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .stdout(log_file(log)?)
        .stderr(log_file(log)?)
        .status()
        .await
        .with_context(|| format!("running {what}"))?;
    if !status.success() {
        bail!("{what} failed; see {}", log.display());
    }
    Ok(())
}

/// Appends `lines` (and a newline) to the configuration file at `path`.
fn append(path: &Path, lines: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new().append(true).open(path)?;
    writeln!(file, "{lines}")?;
    Ok(())
}

fn home(dir: &Path, name: &str, user: &User) -> anyhow::Result<(PathBuf, PathBuf)> {
    let home = dir.join(name);
    std::fs::create_dir_all(&home)?;
    std::os::unix::fs::chown(&home, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
    Ok((home.join("data"), dir.join(format!("{name}.log"))))
}

/// The programs of the newest PostgreSQL under `/usr/lib/postgresql` (Debian's layout).
pub fn newest_bindir() -> anyhow::Result<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .context("no /usr/lib/postgresql; pass --postgres-bindir")?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort();
    Ok(versions
        .pop()
        .context("no PostgreSQL under /usr/lib/postgresql")?
        .1)
}

fn postgres_user() -> anyhow::Result<User> {
    User::from_name("postgres")?
        .context("PostgreSQL runs as the user `postgres`, which does not exist")
}

impl PrivatePostgres {
    /// Creates a cluster under `dir` with `initdb` from `bindir` and starts it on `port` — as a
    /// primary waiting for a synchronous standby when `with_standby`.
    pub async fn start(
        bindir: &Path,
        dir: &Path,
        port: u16,
        with_standby: bool,
    ) -> anyhow::Result<Self> {
        let user = postgres_user()?;
        let (data, log) = home(dir, "postgres", &user)?;
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
            .arg(&data);
        run_as(&user, initdb, "initdb", &log).await?;
        if with_standby {
            append(
                &data.join("postgresql.conf"),
                &format!(
                    "wal_level = replica\nmax_wal_senders = 10\nsynchronous_commit = on\n\
                     synchronous_standby_names = '{STANDBY}'\nhot_standby = on"
                ),
            )?;
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

    /// A standby of `primary`, in `dir`'s home `name`: a streamed base backup (`-R`: it follows
    /// the primary), started on `port`; returns once it streams (synchronously if the primary
    /// requires a synchronous standby: see [`PrivatePostgres::wait_for_standby`]).
    pub async fn standby_of(
        primary: &PrivatePostgres,
        dir: &Path,
        name: &str,
        port: u16,
    ) -> anyhow::Result<Self> {
        let user = postgres_user()?;
        let (data, log) = home(dir, name, &user)?;
        let mut backup = Command::new(primary.bindir.join("pg_basebackup"));
        backup
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-X",
                "stream",
                "-R",
                // A fast checkpoint: the default spreads it over minutes.
                "--checkpoint=fast",
                "-p",
            ])
            .arg(primary.port.to_string())
            .arg("-D")
            .arg(&data);
        run_as(&user, backup, "pg_basebackup", &log).await?;
        append(
            &data.join("postgresql.auto.conf"),
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name={STANDBY}'",
                primary.port
            ),
        )?;
        let mut standby = Self {
            bindir: primary.bindir.clone(),
            data,
            log,
            port,
            user,
            server: None,
        };
        standby.restart().await?;
        primary.wait_for_standby("streaming").await?;
        Ok(standby)
    }

    /// Waits until the standby's replication `state` (`streaming`) or `sync_state` (`sync`)
    /// on this server is `expected`.
    pub async fn wait_for_standby(&self, expected: &'static str) -> anyhow::Result<()> {
        let url = format!("{}/postgres", self.url());
        wait_until(
            &format!("the standby is {expected}"),
            Duration::from_secs(60),
            None,
            || {
                let url = url.clone();
                async move {
                    let Ok(mut db) = PgConnection::connect(&url).await else {
                        return false;
                    };
                    let states: Option<(String, String)> = sqlx::query_as(
                        "SELECT state, sync_state FROM pg_stat_replication \
                         WHERE application_name = $1",
                    )
                    .bind(STANDBY)
                    .fetch_optional(&mut db)
                    .await
                    .ok()
                    .flatten();
                    states.is_some_and(|(state, sync)| state == expected || sync == expected)
                }
            },
        )
        .await
    }

    /// Promotes this standby to primary (waiting until it is), alone for now: it commits without
    /// waiting for a standby until [`PrivatePostgres::require_sync_standby`].
    pub async fn promote(&self) -> anyhow::Result<()> {
        let mut db = PgConnection::connect(&format!("{}/postgres", self.url())).await?;
        let promoted: bool = sqlx::query_scalar("SELECT pg_promote(true, 60)")
            .fetch_one(&mut db)
            .await?;
        anyhow::ensure!(promoted, "the standby was not promoted within 60 s");
        self.commit_without_standby().await
    }

    /// Commits no longer wait for a synchronous standby; those waiting now return.
    pub async fn commit_without_standby(&self) -> anyhow::Result<()> {
        let mut db = PgConnection::connect(&format!("{}/postgres", self.url())).await?;
        self.set_synchronous_standby_names(&mut db, "").await
    }

    /// Commits wait for the synchronous standby again.
    pub async fn require_sync_standby(&self) -> anyhow::Result<()> {
        let mut db = PgConnection::connect(&format!("{}/postgres", self.url())).await?;
        self.set_synchronous_standby_names(&mut db, STANDBY).await
    }

    async fn set_synchronous_standby_names(
        &self,
        db: &mut PgConnection,
        names: &str,
    ) -> anyhow::Result<()> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{names}'"
        )))
        .execute(&mut *db)
        .await?;
        sqlx::query("SELECT pg_reload_conf()")
            .execute(&mut *db)
            .await?;
        Ok(())
    }

    /// SIGKILL of the postmaster, and the wait until it has gone; it is never started again.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.signal_and_wait(Signal::SIGKILL).await
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
