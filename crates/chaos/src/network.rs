//! A private network for a broker cluster, made of Linux network namespaces and veth pairs that
//! the harness creates and removes itself: one namespace per node, and a "switch" namespace
//! holding a bridge that every node's link — and one link from the host, where the services and
//! the clients run — is plugged into.
//!
//! ```text
//!   host (services) ── veth ──┐
//!   node 0 ns ──────── veth ──┤ bridge (switch ns)
//!   node 1 ns ──────── veth ──┤
//!   node 2 ns ──────── veth ──┘
//! ```
//!
//! A partition pulls one node's cable out of the switch (its switch-side link goes down): that
//! node then reaches neither the other nodes nor the services, and they do not reach it — packets
//! are dropped, not refused, exactly as when a real network splits. Healing plugs the cable back
//! in. Nothing here touches the host's other interfaces or routes beyond one address on its own
//! veth, in a /24 that no interface on the host uses.

use anyhow::{Context, bail};
use std::process::Command;

/// Namespace names start with this, then the creating process's id.
const PREFIX: &str = "gozon-chaos-";

pub struct Network {
    /// The switch namespace, then each node's.
    namespaces: Vec<String>,
    /// The first three octets of the /24, e.g. `10.231.17`.
    subnet: String,
}

impl Network {
    /// Creates the switch, the host's link and `nodes` node namespaces, each with its link.
    pub fn create(nodes: usize) -> anyhow::Result<Self> {
        remove_leftovers();
        let id = format!("{PREFIX}{}-{}", std::process::id(), fastrand::u16(..));
        let mut network = Self {
            namespaces: Vec::new(),
            subnet: free_subnet()?,
        };
        let switch = format!("{id}-sw");
        ip(&["netns", "add", &switch])?;
        network.namespaces.push(switch.clone());
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        // The host's end is named after the namespace's random part, so two runs never clash.
        let host_link = format!("gzc{:05x}", fastrand::u32(..0xfffff));
        ip(&[
            "link", "add", &host_link, "type", "veth", "peer", "name", "host", "netns", &switch,
        ])?;
        network.plug_in("host")?;
        ip(&[
            "addr",
            "add",
            &format!("{}.1/24", network.subnet),
            "dev",
            &host_link,
        ])?;
        ip(&["link", "set", &host_link, "up"])?;
        for node in 0..nodes {
            let namespace = format!("{id}-n{node}");
            ip(&["netns", "add", &namespace])?;
            network.namespaces.push(namespace.clone());
            let port = Self::port(node);
            ip(&[
                "-n", &namespace, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                "netns", &switch,
            ])?;
            network.plug_in(&port)?;
            ip(&[
                "-n",
                &namespace,
                "addr",
                "add",
                &format!("{}/24", network.address(node)),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &namespace, "link", "set", "eth0", "up"])?;
            ip(&["-n", &namespace, "link", "set", "lo", "up"])?;
        }
        Ok(network)
    }

    /// The namespace node `node` runs in.
    pub fn namespace(&self, node: usize) -> &str {
        &self.namespaces[node + 1]
    }

    /// Node `node`'s address.
    pub fn address(&self, node: usize) -> String {
        format!("{}.{}", self.subnet, 11 + node)
    }

    /// Cuts node `node` off from the other nodes and from the host.
    pub fn isolate(&self, node: usize) -> anyhow::Result<()> {
        self.set_port(node, "down")
    }

    /// Connects node `node` again.
    pub fn heal(&self, node: usize) -> anyhow::Result<()> {
        self.set_port(node, "up")
    }

    pub fn nodes(&self) -> usize {
        self.namespaces.len() - 1
    }

    fn set_port(&self, node: usize, state: &str) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.namespaces[0],
            "link",
            "set",
            &Self::port(node),
            state,
        ])
    }

    /// The switch-side name of node `node`'s link.
    fn port(node: usize) -> String {
        format!("n{node}")
    }

    fn plug_in(&self, port: &str) -> anyhow::Result<()> {
        ip(&[
            "-n",
            &self.namespaces[0],
            "link",
            "set",
            port,
            "master",
            "br0",
            "up",
        ])
    }
}

impl Drop for Network {
    /// Removes the namespaces; their links, the bridge and the host's end of its link go with
    /// them. The nodes (which run inside) must be gone first.
    fn drop(&mut self) {
        for namespace in self.namespaces.iter().rev() {
            if let Err(error) = ip(&["netns", "del", namespace]) {
                eprintln!("[chaos] could not remove network namespace {namespace}: {error}");
            }
        }
    }
}

/// Removes namespaces an earlier harness left behind when it was killed: those named after a
/// process that no longer exists. Those of a running harness are left alone.
fn remove_leftovers() {
    let Ok(listed) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&listed.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// A `10.231.x` /24 that no interface on the host has an address in.
fn free_subnet() -> anyhow::Result<String> {
    let output = Command::new("ip")
        .args(["-o", "-4", "addr"])
        .output()
        .context("running ip")?;
    let used = String::from_utf8_lossy(&output.stdout).into_owned();
    for _ in 0..100 {
        let subnet = format!("10.231.{}", fastrand::u8(1..255));
        if !used.contains(&format!(" {subnet}.")) {
            return Ok(subnet);
        }
    }
    bail!("no free 10.231.x.0/24 subnet")
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
