//! Child processes of the harness: a GoZon role that can be SIGKILLed and started again, and the
//! small helpers the private servers share.

use anyhow::{Context, bail};
use nix::{sys::signal::Signal, unistd::Pid};
use std::{
    collections::BTreeSet,
    fs::OpenOptions,
    future::Future,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};
use tokio::process::{Child, Command};

/// `path` opened for appending, as a child's stdout or stderr.
pub fn log_file(path: &Path) -> anyhow::Result<Stdio> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Ok(Stdio::from(file))
}

pub fn send_signal(child: &Child, signal: Signal) -> anyhow::Result<()> {
    if let Some(pid) = child.id() {
        nix::sys::signal::kill(Pid::from_raw(pid as i32), signal)?;
    }
    Ok(())
}

/// Polls `check` every 100 ms until it holds; fails after `timeout`, or at once if `server` (a
/// server just started, being waited for) exits.
pub async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    mut server: Option<&mut Child>,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        if let Some(server) = server.as_deref_mut()
            && let Some(status) = server.try_wait()?
        {
            bail!("{what}: the server exited ({status})");
        }
        if tokio::time::Instant::now() > deadline {
            bail!("gave up after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// One GoZon role (`gozon orders …`) run as a child process, its output appended to a log file.
pub struct Role {
    /// The subcommand: `orders`, `payments` or `gateway`.
    pub name: &'static str,
    /// The name and instance, e.g. `orders-2`: what logs and reports call it.
    pub label: String,
    binary: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// Times the role exited without being killed by the harness.
    pub unexpected_exits: u32,
}

impl Role {
    pub fn start(
        name: &'static str,
        instance: usize,
        binary: &Path,
        args: Vec<String>,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let label = format!("{name}-{instance}");
        let mut role = Self {
            name,
            log: dir.join(format!("{label}.log")),
            label,
            binary: binary.to_owned(),
            args,
            child: None,
            unexpected_exits: 0,
        };
        role.spawn()?;
        Ok(role)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(&self.binary)
            .arg(self.name)
            .args(&self.args)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(log_file(&self.log)?)
            .stderr(log_file(&self.log)?)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} {}", self.binary.display(), self.name))?;
        self.child = Some(child);
        Ok(())
    }

    /// SIGKILL: no shutdown hook runs, whatever was in flight is cut off.
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill().await?;
        }
        Ok(())
    }

    /// SIGSTOP: the process stands still, holding whatever it held, until [`Role::resume`].
    pub fn pause(&self) -> anyhow::Result<()> {
        match &self.child {
            Some(child) => send_signal(child, Signal::SIGSTOP),
            None => Ok(()),
        }
    }

    /// SIGCONT: it runs on from where it stood.
    pub fn resume(&self) -> anyhow::Result<()> {
        match &self.child {
            Some(child) => send_signal(child, Signal::SIGCONT),
            None => Ok(()),
        }
    }

    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.spawn()
    }

    /// Starts the role again if it exited on its own (and counts that), as a container runtime
    /// with a restart policy would.
    pub fn revive_if_exited(&mut self) -> anyhow::Result<()> {
        let exited = match &mut self.child {
            Some(child) => child.try_wait()?.is_some(),
            None => false,
        };
        if exited {
            self.unexpected_exits += 1;
            say(&format!(
                "{} exited on its own; starting it again (see {})",
                self.label,
                self.log.display()
            ));
            self.spawn()?;
        }
        Ok(())
    }

    /// SIGTERM and the wait for a graceful exit.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            send_signal(&child, Signal::SIGTERM)?;
            child.wait().await?;
        }
        Ok(())
    }
}

/// A TCP port on loopback that nothing listens on just now, given once per process, and below
/// the kernel's range of ephemeral ports: the processes here keep their ports across restarts,
/// and a port of that range can be taken meanwhile as the local end of any outgoing connection
/// (a pooled database connection, say) and stay taken as long as that connection lives.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<BTreeSet<u16>> = std::sync::Mutex::new(BTreeSet::new());
    let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let ports = 10_000.min(ephemeral_from / 2)..ephemeral_from;
    let mut given = GIVEN
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for _ in 0..1000 {
        let port = fastrand::u16(ports.clone());
        if !given.contains(&port) && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.insert(port);
            return Ok(port);
        }
    }
    bail!("no free port in {ports:?}")
}

/// Progress goes to stderr, so the report on stdout stays clean.
pub fn say(line: &str) {
    eprintln!("[chaos] {line}");
}
