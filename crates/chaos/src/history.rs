//! The recorded history of a run, as Jepsen keeps one: every client operation written when it is
//! invoked and again when it completes — `ok`, `failed` (a definite refusal) or `unknown` (no
//! answer: it may or may not have happened) — with the faults interleaved where they began and
//! ended, and at the end what was observed of the broker. One JSON object per line, written as
//! it happens, so a run that dies leaves its history behind. [`crate::checker`] judges a run from
//! this file and the final database state alone.

use crate::faults::Fault;
use serde::{Deserialize, Serialize};
use std::{
    fs::File,
    io::{BufRead, BufReader, BufWriter, Write},
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Instant,
};

/// What a client asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    Deposit,
    Order,
    Cancel,
}

/// How an operation ended, as far as its client knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Acknowledged (2xx): it happened, and must not be lost.
    Ok,
    /// Refused (4xx): it did not happen.
    Failed,
    /// Never answered: it may or may not have happened.
    Unknown,
}

/// One line of the history. `at_ms`: milliseconds since the run began.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Entry {
    /// The first line: when the run began, in milliseconds since 1970.
    Began {
        at_ms: f64,
        unix_ms: f64,
    },
    Invoke {
        op: u64,
        at_ms: f64,
        operation: Operation,
        user_id: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        amount: Option<i64>,
        /// The order a cancel is for.
        #[serde(skip_serializing_if = "Option::is_none")]
        order_id: Option<String>,
    },
    Complete {
        op: u64,
        at_ms: f64,
        outcome: Outcome,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// The order an acknowledged order operation created.
        #[serde(skip_serializing_if = "Option::is_none")]
        order_id: Option<String>,
    },
    FaultBegan {
        at_ms: f64,
        fault: Fault,
        target: String,
    },
    FaultEnded {
        at_ms: f64,
        fault: Fault,
    },
    /// What was seen of the broker once everything had settled.
    Observed {
        at_ms: f64,
        dead_letters: u32,
        unsent_outbox_rows: i64,
    },
}

/// The history being written.
pub struct History {
    started: Instant,
    next_op: AtomicU64,
    file: Mutex<BufWriter<File>>,
}

impl History {
    pub fn create(path: &Path) -> anyhow::Result<Self> {
        Ok(Self {
            started: Instant::now(),
            next_op: AtomicU64::new(1),
            file: Mutex::new(BufWriter::new(File::create(path)?)),
        })
    }

    pub fn now_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1e3
    }

    /// Records an operation's invocation; its number, for [`History::complete`].
    pub fn invoke(
        &self,
        operation: Operation,
        user_id: &str,
        amount: Option<i64>,
        order_id: Option<&str>,
    ) -> u64 {
        let op = self.next_op.fetch_add(1, Ordering::Relaxed);
        self.write(&Entry::Invoke {
            op,
            at_ms: self.now_ms(),
            operation,
            user_id: user_id.to_owned(),
            amount,
            order_id: order_id.map(str::to_owned),
        });
        op
    }

    pub fn complete(&self, op: u64, outcome: Outcome, status: Option<u16>, order_id: Option<&str>) {
        self.write(&Entry::Complete {
            op,
            at_ms: self.now_ms(),
            outcome,
            status,
            order_id: order_id.map(str::to_owned),
        });
    }

    pub fn record(&self, entry: &Entry) {
        self.write(entry);
    }

    fn write(&self, entry: &Entry) {
        if let Ok(mut file) = self.file.lock() {
            // A line that cannot be written is a harness failure the checker then reports as a
            // missing completion; it must not stop the run.
            let _ = serde_json::to_writer(&mut *file, entry);
            let _ = file.write_all(b"\n");
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) -> std::io::Result<()> {
        match self.file.lock() {
            Ok(mut file) => file.flush(),
            Err(_) => Err(std::io::Error::other("history writer poisoned")),
        }
    }
}

/// Reads a history file back.
pub fn read(path: &Path) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for (number, line) in BufReader::new(File::open(path)?).lines().enumerate() {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        entries.push(
            serde_json::from_str(&line)
                .map_err(|error| anyhow::anyhow!("history line {}: {error}", number + 1))?,
        );
    }
    Ok(entries)
}
