//! Driving load: accounts and deposits first, then orders in a closed or an open loop, then the
//! wait until every order is final.

use crate::Options;
use crate::cpu::CpuTimes;
use crate::sessions::Sessions;
use crate::{
    audit::{self, Placed},
    report::{Latency, Report},
};
use anyhow::{Context, bail};
use futures::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

struct Shared {
    http: reqwest::Client,
    sessions: Sessions,
    gateway: String,
    run_id: String,
    users: usize,
    max_amount: i64,
    ghost_every: u64,
    cancel_share: f64,
    sent: AtomicU64,
    cancels_accepted: AtomicU64,
    cancels_refused: AtomicU64,
    acknowledged: AtomicU64,
    rejected: AtomicU64,
    /// Orders to cancel once the load is over (user, id).
    cancel_later: Mutex<Vec<(String, String)>>,
    placed: Mutex<Vec<Placed>>,
    post_latency: Mutex<Histogram<u64>>,
}

impl Shared {
    fn user(&self, n: usize) -> String {
        user_of(&self.run_id, n)
    }

    /// Whether and when order number `n` is cancelled: a fixed, evenly spread share.
    fn cancel_of(&self, n: u64) -> Option<Cancel> {
        let spread = n.wrapping_mul(2_654_435_761) % 10_000;
        ((spread as f64) < self.cancel_share * 10_000.0).then_some(if n.is_multiple_of(2) {
            Cancel::AtOnce
        } else {
            Cancel::AfterLoad
        })
    }

    /// Cancels `user_id`'s order `id`; whether the cancel was accepted (202). A 409 (declined
    /// by payments first, say) is counted as refused; anything else as neither.
    async fn cancel(&self, user_id: &str, id: &str) -> bool {
        let response = self
            .sessions
            .as_user(
                user_id,
                self.http
                    .post(format!("{}/orders/{id}/cancel", self.gateway)),
            )
            .header("Idempotency-Key", uuid::Uuid::new_v4().to_string())
            .send()
            .await;
        match response.map(|response| response.status().as_u16()) {
            Ok(202) => {
                self.cancels_accepted.fetch_add(1, Ordering::Relaxed);
                true
            }
            Ok(409) => {
                self.cancels_refused.fetch_add(1, Ordering::Relaxed);
                false
            }
            _ => false,
        }
    }

    /// Places order number `n`; `since` is when it should have been sent (open loop) or was.
    async fn place(&self, n: u64, since: Instant) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        let user_id = if self.ghost_every > 0 && n % self.ghost_every == self.ghost_every - 1 {
            ghost_of(&self.run_id)
        } else {
            self.user(n as usize % self.users)
        };
        let amount = 1 + (n as i64 % self.max_amount);
        let response = self
            .sessions
            .as_user(&user_id, self.http.post(format!("{}/orders", self.gateway)))
            .json(&json!({ "user_id": user_id, "amount": amount, "description": format!("bench order {n}") }))
            .send()
            .await;
        let elapsed = since.elapsed();
        let order = match response {
            Ok(response) if response.status() == 201 => response.json::<Value>().await.ok(),
            _ => None,
        };
        match order.and_then(|order| order["id"].as_str().map(str::to_owned)) {
            Some(id) => {
                self.acknowledged.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut histogram) = self.post_latency.lock() {
                    let _ = histogram.record(elapsed.as_micros() as u64);
                }
                let cancel_accepted = match self.cancel_of(n) {
                    Some(Cancel::AtOnce) => self.cancel(&user_id, &id).await,
                    Some(Cancel::AfterLoad) => {
                        if let Ok(mut later) = self.cancel_later.lock() {
                            later.push((user_id.clone(), id.clone()));
                        }
                        false
                    }
                    None => false,
                };
                if let Ok(mut placed) = self.placed.lock() {
                    placed.push(Placed {
                        id,
                        user_id,
                        amount,
                        cancel_accepted,
                    });
                }
            }
            None => {
                self.rejected.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Runs the load, waits for every order to settle, audits, and reports.
pub async fn run(options: &Options) -> anyhow::Result<Report> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency.max(64))
        .timeout(Duration::from_secs(30))
        .build()?;
    let gateway = options.gateway.trim_end_matches('/').to_owned();
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let users = options.users.max(1);
    let everyone = (0..users)
        .map(|n| user_of(&run_id, n))
        .chain([ghost_of(&run_id)]);
    if !options.quiet {
        eprintln!("signing up {} users", users + 1);
    }
    let sessions = Sessions::sign_up(&http, &gateway, everyone).await?;
    let shared = Arc::new(Shared {
        http,
        sessions,
        gateway,
        run_id,
        users,
        max_amount: options.max_amount.max(1),
        ghost_every: options.ghost_every,
        cancel_share: options.cancel_share.clamp(0.0, 1.0),
        sent: AtomicU64::new(0),
        cancels_accepted: AtomicU64::new(0),
        cancels_refused: AtomicU64::new(0),
        cancel_later: Mutex::new(Vec::new()),
        acknowledged: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        placed: Mutex::new(Vec::new()),
        post_latency: Mutex::new(Histogram::new(3)?),
    });
    open_accounts(&shared, options.deposit).await?;

    let progress = (!options.quiet).then(|| tokio::spawn(report_progress(shared.clone())));
    let cpu_before = CpuTimes::now();
    let load_started = Instant::now();
    let duration = Duration::from_secs(options.duration);
    let limit = options.orders.unwrap_or(u64::MAX);
    let mode = match options.rate {
        Some(rate) => {
            open_loop(&shared, rate.max(1), duration, limit).await;
            format!(
                "open loop, {rate} orders/s offered for {} s",
                options.duration
            )
        }
        None => {
            closed_loop(&shared, options.concurrency.max(1), duration, limit).await;
            format!("closed loop, concurrency {}", options.concurrency)
        }
    };
    let offered_for = load_started.elapsed();
    // What each process spent while the load ran, per order acknowledged in it. Orders still
    // unsettled at its end (a closed loop's backlog) have not cost their settling yet, so the
    // figure is a little low then; at a rate the system keeps up with, it is exact.
    let cpu = CpuTimes::now().since(&cpu_before);
    let acknowledged_under_load = shared.acknowledged.load(Ordering::Relaxed);
    if let Some(progress) = progress {
        progress.abort();
    }
    if !options.quiet {
        eprintln!(
            "load done in {:.1} s; waiting for every order to settle",
            offered_for.as_secs_f64()
        );
    }

    let mut placed = std::mem::take(
        &mut *shared
            .placed
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    // The other half of the cancels, now that most of their orders are paid: refunds.
    let later = std::mem::take(
        &mut *shared
            .cancel_later
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    let accepted: std::collections::HashSet<String> = stream::iter(later)
        .map(|(user_id, id)| {
            let shared = &shared;
            async move { shared.cancel(&user_id, &id).await.then_some(id) }
        })
        .buffer_unordered(16)
        .filter_map(std::future::ready)
        .collect()
        .await;
    for order in &mut placed {
        order.cancel_accepted |= accepted.contains(&order.id);
    }
    let deposits = (0..shared.users)
        .map(|n| (shared.user(n), options.deposit))
        .collect();
    let outcome = audit::settle_and_audit(
        &shared.http,
        &shared.gateway,
        &shared.sessions,
        &deposits,
        &placed,
        Duration::from_secs(options.settle_timeout),
        &options.payments_database_url,
    )
    .await?;

    let post_latency = Latency::of(
        &*shared
            .post_latency
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?,
    );
    let settled_per_s = (outcome.finished + outcome.cancelled + outcome.refunded) as f64
        / outcome.span.as_secs_f64().max(1e-9);
    let report = Report {
        mode,
        users: shared.users,
        orders_acknowledged: shared.acknowledged.load(Ordering::Relaxed),
        orders_rejected: shared.rejected.load(Ordering::Relaxed),
        finished: outcome.finished,
        cancelled: outcome.cancelled,
        refunded: outcome.refunded,
        cancels_accepted: shared.cancels_accepted.load(Ordering::Relaxed),
        cancels_refused: shared.cancels_refused.load(Ordering::Relaxed),
        elapsed_s: outcome.span.as_secs_f64(),
        settled_per_s,
        pgbench_tps: options.pgbench_tps,
        settled_per_1000_pgbench_tps: options
            .pgbench_tps
            .filter(|&tps| tps > 0.0)
            .map(|tps| settled_per_s / tps * 1000.0),
        cpu_ms_per_order: cpu.per_order_ms(acknowledged_under_load),
        peak_memory_mib: crate::cpu::peak_memory_mib(),
        post_latency,
        settle_latency: Latency::of(&outcome.settle_us),
        ledger_audited: outcome.ledger_audited,
        orders_unacknowledged: outcome.unacknowledged.len(),
        violations: outcome.violations,
    };
    if let Some(path) = &options.plot {
        crate::plot::settle_latency(path, &report.mode, &outcome.timeline)
            .with_context(|| format!("drawing {}", path.display()))?;
    }
    if let Some(path) = &options.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

/// When an order is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cancel {
    /// Right after it is placed, while its payment is in flight.
    AtOnce,
    /// After the load, once it is most likely paid.
    AfterLoad,
}

fn user_of(run_id: &str, n: usize) -> String {
    format!("bench-{run_id}-{n}")
}

/// The user without an account: their orders are cancelled (`account_not_found`).
fn ghost_of(run_id: &str) -> String {
    format!("bench-{run_id}-ghost")
}

async fn open_accounts(shared: &Shared, deposit: i64) -> anyhow::Result<()> {
    let results: Vec<anyhow::Result<()>> = stream::iter(0..shared.users)
        .map(|n| async move {
            let user_id = shared.user(n);
            let open = shared
                .sessions
                .as_user(
                    &user_id,
                    shared
                        .http
                        .post(format!("{}/payments/accounts", shared.gateway)),
                )
                .json(&json!({ "user_id": user_id }))
                .send()
                .await?;
            if open.status() != 201 {
                bail!("opening {user_id}: {}", open.status());
            }
            let deposited = shared
                .sessions
                .as_user(
                    &user_id,
                    shared
                        .http
                        .post(format!("{}/payments/accounts/deposit", shared.gateway)),
                )
                .json(&json!({ "user_id": user_id, "amount": deposit }))
                .send()
                .await?;
            if deposited.status() != 200 {
                bail!("depositing to {user_id}: {}", deposited.status());
            }
            Ok(())
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

async fn closed_loop(shared: &Arc<Shared>, concurrency: usize, duration: Duration, limit: u64) {
    let deadline = Instant::now() + duration;
    let next = Arc::new(AtomicU64::new(0));
    let workers = (0..concurrency).map(|_| {
        let shared = shared.clone();
        let next = next.clone();
        tokio::spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                shared.place(n, Instant::now()).await;
            }
        })
    });
    futures::future::join_all(workers).await;
}

async fn open_loop(shared: &Arc<Shared>, rate: u64, duration: Duration, limit: u64) {
    let total = (rate * duration.as_secs()).min(limit);
    let period = Duration::from_secs_f64(1.0 / rate as f64);
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for n in 0..total {
        let scheduled = start + period * n as u32;
        tokio::time::sleep_until(scheduled).await;
        let shared = shared.clone();
        // Latency counts from the scheduled moment, so a stalled system cannot hide its backlog.
        let since = scheduled.into_std();
        tasks.push(tokio::spawn(async move { shared.place(n, since).await }));
    }
    futures::future::join_all(tasks).await;
}

async fn report_progress(shared: Arc<Shared>) {
    let started = Instant::now();
    let mut last = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let acknowledged = shared.acknowledged.load(Ordering::Relaxed);
        eprintln!(
            "[{:>4.0} s] sent {:>7}  acknowledged {:>7} ({:>5}/s)  rejected {}",
            started.elapsed().as_secs_f64(),
            shared.sent.load(Ordering::Relaxed),
            acknowledged,
            acknowledged - last,
            shared.rejected.load(Ordering::Relaxed),
        );
        last = acknowledged;
    }
}
