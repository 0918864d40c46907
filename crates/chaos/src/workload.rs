//! The load during a chaos run: clients that open accounts, deposit and place orders through the
//! gateway, as a careful client of a payment system would — every write carries an
//! `Idempotency-Key` and is retried with the same key until it gets an answer. So each write is
//! known to have happened exactly once, which is what the audit then checks against the ledger.
//! A share of the writes cancel an order — one just placed, racing its payment, or an earlier
//! one, most likely paid — and the audit checks that no accepted cancel ends `FINISHED`.

use crate::{
    history::{History, Operation, Outcome},
    process::say,
};
use gozon_loadgen::{audit::Placed, sessions::Sessions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio_util::sync::CancellationToken;

/// What the clients were told, and how hard it was to get told.
#[derive(Debug, Default)]
pub struct Acknowledged {
    pub orders: Vec<Placed>,
    /// Sum of the acknowledged deposits, per account.
    pub deposits: HashMap<String, i64>,
    pub deposit_count: u64,
    /// Valid requests refused with a 4xx: each one is a violation.
    pub refused: Vec<String>,
}

#[derive(Debug, Default)]
pub struct Counters {
    pub attempts: AtomicU64,
    pub retried: AtomicU64,
    pub server_errors: AtomicU64,
    pub cancels_accepted: AtomicU64,
    /// Writes still unanswered when the harness gave up on them.
    pub abandoned: AtomicU64,
}

pub struct Workload {
    http: reqwest::Client,
    gateway: String,
    pub users: Vec<String>,
    pub ghost: String,
    /// Every user's token (the ghost's too: signed in, but without an account).
    pub sessions: Sessions,
    give_up_after: Duration,
    cancel_share: f64,
    /// Where every operation is recorded as it is invoked and completed.
    history: Arc<History>,
    pub acknowledged: Mutex<Acknowledged>,
    pub counters: Counters,
}

/// An answer, or none within the give-up time.
enum Answer {
    Got(StatusCode, Value),
    Abandoned,
}

impl Workload {
    /// Signs the run's users up (before any fault).
    pub async fn sign_up(
        gateway: &str,
        users: usize,
        give_up_after: Duration,
        cancel_share: f64,
        history: Arc<History>,
    ) -> anyhow::Result<Self> {
        let run = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(15))
            .build()?;
        let gateway = gateway.trim_end_matches('/').to_owned();
        let users: Vec<String> = (0..users).map(|n| format!("chaos-{run}-{n}")).collect();
        let ghost = format!("chaos-{run}-ghost");
        let everyone = users.iter().cloned().chain([ghost.clone()]);
        let sessions = Sessions::sign_up(&http, &gateway, everyone).await?;
        Ok(Self {
            http,
            gateway,
            users,
            ghost,
            sessions,
            give_up_after,
            cancel_share: cancel_share.clamp(0.0, 1.0),
            history,
            acknowledged: Mutex::default(),
            counters: Counters::default(),
        })
    }

    /// Opens every account and gives it a first deposit.
    pub async fn open_accounts(&self, deposit: i64) -> anyhow::Result<()> {
        for user_id in &self.users {
            match self
                .send(
                    user_id,
                    "/payments/accounts",
                    None,
                    json!({ "user_id": user_id }),
                )
                .await
            {
                // 409: an earlier attempt whose answer was lost did open it.
                Answer::Got(status, _)
                    if status == StatusCode::CREATED || status == StatusCode::CONFLICT => {}
                Answer::Got(status, body) => anyhow::bail!("opening {user_id}: {status} {body}"),
                Answer::Abandoned => anyhow::bail!("opening {user_id}: no answer"),
            }
            self.deposit(user_id, deposit).await;
        }
        Ok(())
    }

    /// One client: deposits now and then, orders otherwise, until `stop` — one write every
    /// `pace` at most (a write still retrying delays the next), or back to back without one.
    pub async fn client(
        self: Arc<Self>,
        seed: u64,
        pace: Option<Duration>,
        stop: CancellationToken,
    ) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut ticks = pace.map(|pace| {
            let mut ticks = tokio::time::interval(pace);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks
        });
        while !stop.is_cancelled() {
            if let Some(ticks) = &mut ticks {
                tokio::select! {
                    _ = ticks.tick() => {}
                    _ = stop.cancelled() => break,
                }
            }
            let user_id = if rng.u8(..50) == 0 {
                self.ghost.clone()
            } else {
                self.users[rng.usize(..self.users.len())].clone()
            };
            let cancelling = rng.f64() < self.cancel_share;
            if rng.u8(..8) == 0 && user_id != self.ghost {
                self.deposit(&user_id, rng.i64(100..=3000)).await;
            } else if cancelling && rng.bool() {
                self.cancel_earlier(&mut rng).await;
            } else if let Some(id) = self.order(&user_id, rng.i64(1..=600)).await
                && cancelling
            {
                self.cancel(&user_id, &id).await;
            }
        }
    }

    async fn deposit(&self, user_id: &str, amount: i64) {
        let body = json!({ "user_id": user_id, "amount": amount });
        let op = self
            .history
            .invoke(Operation::Deposit, user_id, Some(amount), None);
        let answer = self
            .send(user_id, "/payments/accounts/deposit", Some(key()), body)
            .await;
        self.completed(op, &answer, None);
        match answer {
            Answer::Got(StatusCode::OK, _) => {
                if let Ok(mut acknowledged) = self.acknowledged.lock() {
                    *acknowledged.deposits.entry(user_id.to_owned()).or_default() += amount;
                    acknowledged.deposit_count += 1;
                }
            }
            Answer::Got(status, body) => {
                self.refused(format!("deposit {amount} to {user_id}: {status} {body}"))
            }
            Answer::Abandoned => {}
        }
    }

    /// Places an order; its id once acknowledged.
    async fn order(&self, user_id: &str, amount: i64) -> Option<String> {
        let body = json!({ "user_id": user_id, "amount": amount, "description": "chaos" });
        let op = self
            .history
            .invoke(Operation::Order, user_id, Some(amount), None);
        let answer = self.send(user_id, "/orders", Some(key()), body).await;
        let created = match &answer {
            Answer::Got(StatusCode::CREATED, order) => order["id"].as_str(),
            _ => None,
        };
        self.completed(op, &answer, created);
        match answer {
            Answer::Got(StatusCode::CREATED, order) => match order["id"].as_str() {
                Some(id) => {
                    if let Ok(mut acknowledged) = self.acknowledged.lock() {
                        acknowledged.orders.push(Placed {
                            id: id.to_owned(),
                            user_id: user_id.to_owned(),
                            amount,
                            cancel_accepted: false,
                        });
                    }
                    Some(id.to_owned())
                }
                None => {
                    self.refused(format!("order answered 201 without an id: {order}"));
                    None
                }
            },
            Answer::Got(status, body) => {
                self.refused(format!("order {amount} by {user_id}: {status} {body}"));
                None
            }
            Answer::Abandoned => None,
        }
    }

    /// Cancels a random earlier order of any user.
    async fn cancel_earlier(&self, rng: &mut fastrand::Rng) {
        let earlier = self.acknowledged.lock().ok().and_then(|acknowledged| {
            let orders = &acknowledged.orders;
            (!orders.is_empty()).then(|| {
                let order = &orders[rng.usize(..orders.len())];
                (order.user_id.clone(), order.id.clone())
            })
        });
        if let Some((user_id, id)) = earlier {
            self.cancel(&user_id, &id).await;
        }
    }

    /// Cancels `user_id`'s order `id` (retrying with one key until answered): 202 is recorded
    /// on the order, 409 (final already) is fine, anything else is a refused valid request.
    async fn cancel(&self, user_id: &str, id: &str) {
        let path = format!("/orders/{id}/cancel");
        let op = self
            .history
            .invoke(Operation::Cancel, user_id, None, Some(id));
        let answer = self.send(user_id, &path, Some(key()), json!({})).await;
        self.completed(op, &answer, None);
        match answer {
            Answer::Got(StatusCode::ACCEPTED, _) => {
                self.counters
                    .cancels_accepted
                    .fetch_add(1, Ordering::Relaxed);
                if let Ok(mut acknowledged) = self.acknowledged.lock()
                    && let Some(order) = acknowledged.orders.iter_mut().find(|o| o.id == id)
                {
                    order.cancel_accepted = true;
                }
            }
            Answer::Got(StatusCode::CONFLICT, _) | Answer::Abandoned => {}
            Answer::Got(status, body) => {
                self.refused(format!("cancel of {id} by {user_id}: {status} {body}"))
            }
        }
    }

    /// Records how operation `op` ended: acknowledged (2xx), refused, or unanswered.
    fn completed(&self, op: u64, answer: &Answer, order_id: Option<&str>) {
        let (outcome, status) = match answer {
            Answer::Got(status, _) if status.is_success() => (Outcome::Ok, Some(status.as_u16())),
            Answer::Got(status, _) => (Outcome::Failed, Some(status.as_u16())),
            Answer::Abandoned => (Outcome::Unknown, None),
        };
        self.history.complete(op, outcome, status, order_id);
    }

    fn refused(&self, what: String) {
        say(&format!("valid request refused: {what}"));
        if let Ok(mut acknowledged) = self.acknowledged.lock() {
            acknowledged.refused.push(what);
        }
    }

    /// POSTs `body` as `user_id` (with `key` as its `Idempotency-Key`) until the answer is not a
    /// 5xx or a broken connection, backing off from 50 ms to 1 s between attempts.
    async fn send(&self, user_id: &str, path: &str, key: Option<String>, body: Value) -> Answer {
        let started = Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            self.counters.attempts.fetch_add(1, Ordering::Relaxed);
            let mut request = self
                .sessions
                .as_user(user_id, self.http.post(format!("{}{path}", self.gateway)))
                .json(&body);
            if let Some(key) = &key {
                request = request.header("Idempotency-Key", key);
            }
            match request.send().await {
                Ok(response) if !response.status().is_server_error() => {
                    let status = response.status();
                    // A body cut off on the way is no answer: ask again with the same key.
                    if let Ok(body) = response.json().await {
                        return Answer::Got(status, body);
                    }
                }
                Ok(_) => {
                    self.counters.server_errors.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {}
            }
            if started.elapsed() > self.give_up_after {
                self.counters.abandoned.fetch_add(1, Ordering::Relaxed);
                say(&format!(
                    "gave up on POST {path} {body} after {:?}",
                    started.elapsed()
                ));
                return Answer::Abandoned;
            }
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}
