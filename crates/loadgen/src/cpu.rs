//! What the system's processes on this machine use, by part: PostgreSQL (all its processes),
//! RabbitMQ (the Erlang VM), each GoZon role (`gozon orders`, …), and this load generator. CPU
//! time: two snapshots, one before the load and one after, give what each part spent on it.
//! Memory: the peak resident set of each GoZon process so far.

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
            let Some(part) = part_of(&process, &stat, me) else {
                continue;
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

/// Which part of the system `process` is, if any.
fn part_of(
    process: &procfs::process::Process,
    stat: &procfs::process::Stat,
    me: i32,
) -> Option<String> {
    Some(match stat.comm.as_str() {
        _ if stat.pid == me => "load generator".to_owned(),
        "postgres" => "PostgreSQL".to_owned(),
        "beam.smp" => "RabbitMQ".to_owned(),
        "gozon" => match process.cmdline().ok()?.get(1)?.as_str() {
            "run" => "gozon run (supervisor)".to_owned(),
            role => format!("gozon {role}"),
        },
        _ => return None,
    })
}

/// The largest peak resident set (MiB) of any one process of each GoZon role (`VmHWM`: since the
/// process started, so it includes the load just run).
pub fn peak_memory_mib() -> BTreeMap<String, f64> {
    let mut peaks = BTreeMap::new();
    let me = std::process::id() as i32;
    let Ok(processes) = procfs::process::all_processes() else {
        return peaks;
    };
    for process in processes.flatten() {
        let (Ok(stat), Ok(status)) = (process.stat(), process.status()) else {
            continue;
        };
        let Some(part) = part_of(&process, &stat, me).filter(|part| part.starts_with("gozon "))
        else {
            continue;
        };
        let mib = status.vmhwm.unwrap_or(0) as f64 / 1024.0;
        let peak = peaks.entry(part).or_insert(0.0_f64);
        *peak = peak.max(mib);
    }
    peaks
}
