//! CPU time of every process the system runs on this machine, by part: PostgreSQL (all its
//! processes), RabbitMQ (the Erlang VM), each GoZon role (`gozon orders`, …), and this load
//! generator. Two snapshots, one before the load and one after, give what each part spent on it.

use serde::Serialize;
use std::collections::BTreeMap;

/// CPU seconds (user + system) by part.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CpuTimes(pub BTreeMap<String, f64>);

impl CpuTimes {
    /// The CPU time each part's processes have used so far.
    pub fn now() -> Self {
        let mut times = BTreeMap::new();
        let ticks = procfs::ticks_per_second() as f64;
        let me = std::process::id() as i32;
        let Ok(processes) = procfs::process::all_processes() else {
            return Self(times);
        };
        for process in processes.flatten() {
            let Ok(stat) = process.stat() else { continue };
            let part = match stat.comm.as_str() {
                _ if stat.pid == me => "load generator".to_owned(),
                "postgres" => "PostgreSQL".to_owned(),
                "beam.smp" => "RabbitMQ".to_owned(),
                "gozon" => match process.cmdline().ok().and_then(|args| args.get(1).cloned()) {
                    Some(role) if role == "run" => "gozon run (supervisor)".to_owned(),
                    Some(role) => format!("gozon {role}"),
                    None => continue,
                },
                _ => continue,
            };
            *times.entry(part).or_insert(0.0) += (stat.utime + stat.stime) as f64 / ticks;
        }
        Self(times)
    }

    /// What each part spent since `earlier`.
    pub fn since(&self, earlier: &CpuTimes) -> CpuTimes {
        CpuTimes(
            self.0
                .iter()
                .map(|(part, &seconds)| {
                    let before = earlier.0.get(part).copied().unwrap_or(0.0);
                    (part.clone(), (seconds - before).max(0.0))
                })
                .collect(),
        )
    }

    /// Milliseconds of CPU per order, by part, for `orders` orders.
    pub fn per_order_ms(&self, orders: u64) -> BTreeMap<String, f64> {
        let orders = orders.max(1) as f64;
        self.0
            .iter()
            .map(|(part, seconds)| (part.clone(), seconds * 1e3 / orders))
            .collect()
    }
}
