//! Three private nodes as one cluster: joined, broken one at a time, and waited for until whole.

use super::{Placement, PrivateRabbitMq};
use crate::{
    network::Network,
    process::{free_port, say, wait_until},
    system::WORK_QUEUES,
};
use gozon_messaging::{amqp::BrokerSettings, broker_logins::Rabbitmqctl};
use std::{path::Path, time::Duration};

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
            let whole = wait_until(
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
            .await;
            if whole.is_err() {
                say_quorum_status(&rabbitmq_queues);
            }
            whole?;
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

/// What the node says of each work and dead-letter queue's members: which are leader, follower
/// or not running, and how far each has come — for the report of a cluster that did not recover.
fn say_quorum_status(rabbitmq_queues: &Rabbitmqctl) {
    for queue in WORK_QUEUES {
        for name in [queue.to_owned(), BrokerSettings::dead_letter_queue(queue)] {
            match rabbitmq_queues.run(&["quorum_status", &name]) {
                Ok(status) => say(&format!("  quorum status of {name}:\n{status}")),
                Err(error) => say(&format!("  quorum status of {name}: {error:#}")),
            }
        }
    }
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
