//! The faults a chaos run injects, and the order it injects them in.

use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// SIGKILL the orders service, start it again.
    KillOrders,
    /// SIGKILL the payments service, start it again.
    KillPayments,
    /// SIGKILL the gateway, start it again.
    KillGateway,
    /// Stop a RabbitMQ node (SIGTERM), start it again on the same data.
    RestartRabbitMq,
    /// SIGKILL a RabbitMQ node, start it again on the same data. On a single node opt-in
    /// (`--rabbitmq-sigkill`): RabbitMQ 3.10 can leave a single-node quorum queue without a
    /// leader after it (rabbitmq-server#10070), which no client can repair; a cluster is the
    /// real answer, and there it is on by default.
    CrashRabbitMq,
    /// With `--rabbitmq-nodes 3`: SIGSTOP a RabbitMQ node's VM for seconds, then SIGCONT. Its
    /// sockets stay open and silent; the quorum queues it led elect new leaders meanwhile.
    PauseRabbitMq,
    /// With `--rabbitmq-nodes 3`: cut one RabbitMQ node off from the other two and from the
    /// services (its link out of the network switch goes down), then heal.
    PartitionRabbitMq,
    /// Immediate shutdown of PostgreSQL, start it again (crash recovery).
    CrashPostgres,
    /// Close every connection to PostgreSQL and refuse new ones for a moment.
    CutDatabase,
    /// Close every connection to RabbitMQ and refuse new ones for a moment.
    CutBroker,
    /// SIGSTOP an orders instance for seconds, then SIGCONT: it wakes up believing it still
    /// holds its claimed outbox rows and unacknowledged deliveries.
    PauseOrders,
    /// SIGSTOP a payments instance for seconds, then SIGCONT.
    PausePayments,
    /// With `--postgres-standby`: SIGKILL the primary, promote the synchronous standby, move
    /// the services' database address (the proxy) to it, then make a new standby of it. The old
    /// primary never serves again.
    FailoverPostgres,
}

impl Fault {
    pub const ALL: [Fault; 13] = [
        Fault::KillOrders,
        Fault::KillPayments,
        Fault::KillGateway,
        Fault::RestartRabbitMq,
        Fault::CrashRabbitMq,
        Fault::PauseRabbitMq,
        Fault::PartitionRabbitMq,
        Fault::CrashPostgres,
        Fault::CutDatabase,
        Fault::CutBroker,
        Fault::PauseOrders,
        Fault::PausePayments,
        Fault::FailoverPostgres,
    ];

    pub fn describe(self) -> &'static str {
        match self {
            Fault::KillOrders => "SIGKILL orders, restart",
            Fault::KillPayments => "SIGKILL payments, restart",
            Fault::KillGateway => "SIGKILL gateway, restart",
            Fault::RestartRabbitMq => "RabbitMQ stopped, restarted",
            Fault::CrashRabbitMq => "SIGKILL RabbitMQ, restart",
            Fault::PauseRabbitMq => "SIGSTOP a RabbitMQ node, SIGCONT",
            Fault::PartitionRabbitMq => "a RabbitMQ node partitioned away, healed",
            Fault::CrashPostgres => "PostgreSQL immediate shutdown, restart",
            Fault::CutDatabase => "database connections cut",
            Fault::CutBroker => "broker connections cut",
            Fault::PauseOrders => "SIGSTOP orders, SIGCONT",
            Fault::PausePayments => "SIGSTOP payments, SIGCONT",
            Fault::FailoverPostgres => "PostgreSQL primary killed, standby promoted",
        }
    }

    /// A few letters for a picture's label.
    pub fn short(self) -> &'static str {
        match self {
            Fault::KillOrders => "kill orders",
            Fault::KillPayments => "kill payments",
            Fault::KillGateway => "kill gateway",
            Fault::RestartRabbitMq => "restart mq",
            Fault::CrashRabbitMq => "kill mq",
            Fault::PauseRabbitMq => "stop mq",
            Fault::PartitionRabbitMq => "partition mq",
            Fault::CrashPostgres => "crash pg",
            Fault::CutDatabase => "cut pg",
            Fault::CutBroker => "cut mq",
            Fault::PauseOrders => "stop orders",
            Fault::PausePayments => "stop payments",
            Fault::FailoverPostgres => "pg failover",
        }
    }

    /// Whether the fault is a pause of a process (its length is the stop time, not a downtime).
    pub fn is_pause(self) -> bool {
        matches!(
            self,
            Fault::PauseOrders | Fault::PausePayments | Fault::PauseRabbitMq
        )
    }

    /// Whether the fault can be injected on a broker of `nodes` nodes: pauses and partitions of
    /// a node need a cluster; cutting the connections through the proxy needs the lone node
    /// behind it (in a cluster, the services reach the nodes directly, and a partition cuts).
    pub fn fits_broker(self, nodes: usize) -> bool {
        match self {
            Fault::PauseRabbitMq | Fault::PartitionRabbitMq => nodes > 1,
            Fault::CutBroker => nodes <= 1,
            _ => true,
        }
    }
}

/// Every enabled fault once, in a random order, then again in another: each kind is injected
/// about as often as the others, and the first `kinds.len()` faults are one of each.
pub struct Schedule {
    rng: fastrand::Rng,
    kinds: Vec<Fault>,
    round: Vec<Fault>,
}

impl Schedule {
    pub fn new(seed: u64, kinds: Vec<Fault>) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
            kinds,
            round: Vec::new(),
        }
    }

    pub fn next_fault(&mut self) -> Fault {
        if self.round.is_empty() {
            self.round = self.kinds.clone();
            self.rng.shuffle(&mut self.round);
        }
        self.round.pop().unwrap_or(Fault::KillOrders)
    }

    /// Which instance a kill hits.
    pub fn pick(&mut self) -> usize {
        self.rng.usize(..)
    }

    /// A pause between `min` and `max` milliseconds.
    pub fn pause_ms(&mut self, min: u64, max: u64) -> u64 {
        self.rng.u64(min..=max.max(min))
    }
}
