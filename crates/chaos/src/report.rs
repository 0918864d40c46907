//! What a chaos run did and found, as a table and as JSON.

use crate::faults::Fault;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_s: u64,
    /// Instances of each service.
    pub instances: usize,
    /// Writes per second offered (0: closed loop).
    pub rate: u64,
    pub faults: BTreeMap<Fault, u32>,
    pub accounts: usize,
    pub deposits_acknowledged: u64,
    pub orders_acknowledged: u64,
    /// The checker's verdict on the recorded history (its violations are in `violations` too).
    pub history: crate::checker::Verdict,
    pub finished: u64,
    pub cancelled: u64,
    pub refunded: u64,
    /// CANCELLED orders paid after they were cancelled (a late debit), and refunded.
    pub cancelled_and_refunded: u64,
    /// Cancels answered 202 (each then checked: the order must not end FINISHED).
    pub cancels_accepted: u64,
    /// HTTP requests the clients sent, retries included.
    pub requests_sent: u64,
    pub requests_retried: u64,
    /// 5xx answers among them (each retried with the same key).
    pub server_errors: u64,
    /// From the last fault's end until every order was final and audited.
    pub recovered_in_s: f64,
    /// By kind, for each fault: seconds from its beginning until orders settled about as fast as
    /// without faults again, for good (see [`crate::timeline::Timeline::recovery`]).
    pub recovery: crate::timeline::Recovery,
    pub dead_letters: u32,
    pub unsent_outbox_rows: i64,
    pub ledger_audited: bool,
    /// Every broken guarantee; empty when all hold.
    pub violations: Vec<String>,
}

impl Report {
    pub fn faults_injected(&self) -> u32 {
        self.faults.values().sum()
    }

    pub fn print(&self) {
        let load = match self.rate {
            0 => "closed loop".to_owned(),
            rate => format!("{rate} writes/s offered"),
        };
        println!(
            "GoZon chaos run: {} s of load ({load}) with faults, {} instance(s) of each service, seed {}",
            self.duration_s, self.instances, self.seed
        );
        println!(
            "  {:<40} {:>8} {:>18}",
            "fault", "injected", "recovered in, s"
        );
        for (fault, count) in &self.faults {
            let recovered = self.recovery.get(fault).map_or_else(String::new, |times| {
                let mut times = times.clone();
                times.sort_by(f64::total_cmp);
                format!(
                    "{:.0} median, {:.0} max",
                    gozon_loadgen::plot::quantile(&times, 0.5),
                    times.last().copied().unwrap_or(0.0)
                )
            });
            println!("  {:<40} {:>8} {recovered:>18}", fault.describe(), count);
        }
        println!("  {:<40} {:>8}", "all faults", self.faults_injected());
        println!("  {:<40} {:>8}", "checked", "");
        let rows: [(&str, String); 12] = [
            ("accounts", self.accounts.to_string()),
            (
                "deposits acknowledged",
                self.deposits_acknowledged.to_string(),
            ),
            ("orders acknowledged", self.orders_acknowledged.to_string()),
            ("  of which FINISHED", self.finished.to_string()),
            ("  of which CANCELLED", self.cancelled.to_string()),
            ("  of which REFUNDED", self.refunded.to_string()),
            (
                "  CANCELLED, debited late, refunded",
                self.cancelled_and_refunded.to_string(),
            ),
            ("cancels accepted", self.cancels_accepted.to_string()),
            (
                "requests sent (retries included)",
                self.requests_sent.to_string(),
            ),
            (
                "5xx answers (retried with the same key)",
                self.server_errors.to_string(),
            ),
            (
                "recovery after the last fault, s",
                format!("{:.1}", self.recovered_in_s),
            ),
            (
                "dead letters / unsent outbox rows",
                format!("{} / {}", self.dead_letters, self.unsent_outbox_rows),
            ),
        ];
        for (name, value) in rows {
            println!("  {name:<40} {value:>8}");
        }
        println!(
            "  {:<40} {:>8}",
            "history: operations (ok/failed/unknown)",
            format!(
                "{} ({}/{}/{})",
                self.history.operations, self.history.ok, self.history.failed, self.history.unknown
            )
        );
        println!(
            "  {:<40} {:>8}",
            "history checker violations",
            self.history.violations.len()
        );
        println!("  {:<40} {:>8}", "violations", self.violations.len());
        for violation in &self.violations {
            println!("    - {violation}");
        }
        if !self.ledger_audited {
            println!("  (the ledger could not be read: API-only audit)");
        }
    }
}
