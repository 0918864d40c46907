//! Which delivered messages make the next batch.
//!
//! Messages wait per key ([`Handler::key`](super::Handler::key)), in the order they arrived. A
//! batch takes the messages of keys that have none in flight — the oldest ready key first, all
//! its waiting messages, then the next key — and until it is done those keys are busy: their
//! later messages wait, nobody else's do. So the messages of one key are applied one batch at a
//! time and in arrival order, and a key whose batch is slow (a lock held elsewhere, a stalled
//! statement) delays only the keys of that batch.
//!
//! A schedule holds only what the broker delivered and nobody acknowledged yet: the channel's
//! prefetch bounds it.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    hash::Hash,
};

/// Messages `T` waiting by key `K`, and the keys with a batch in flight.
#[derive(Debug)]
pub struct Schedule<K, T> {
    /// Per key, the messages not yet in a batch, oldest first.
    waiting: HashMap<K, VecDeque<T>>,
    /// Keys with waiting messages and no batch in flight, in the order they became so.
    ready: VecDeque<K>,
    /// Keys whose batch is in flight.
    busy: HashSet<K>,
}

impl<K: Hash + Eq + Clone, T> Default for Schedule<K, T> {
    fn default() -> Self {
        Self {
            waiting: HashMap::new(),
            ready: VecDeque::new(),
            busy: HashSet::new(),
        }
    }
}

impl<K: Hash + Eq + Clone, T> Schedule<K, T> {
    /// A message of `key` arrived.
    pub fn push(&mut self, key: K, message: T) {
        let queue = self.waiting.entry(key.clone()).or_default();
        if queue.is_empty() && !self.busy.contains(&key) {
            self.ready.push_back(key);
        }
        queue.push_back(message);
    }

    /// Up to `most` waiting messages of keys with nothing in flight, oldest ready key first and
    /// each key's in arrival order; those keys are busy until [`done`](Self::done). Empty when no
    /// key is ready.
    pub fn next_batch(&mut self, most: usize) -> Batch<K, T> {
        let mut batch = Batch {
            keys: Vec::new(),
            messages: Vec::new(),
        };
        while batch.messages.len() < most {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            let Some(queue) = self.waiting.get_mut(&key) else {
                continue;
            };
            let room = most - batch.messages.len();
            let taken = queue.len().min(room);
            batch.messages.extend(queue.drain(..taken));
            if queue.is_empty() {
                self.waiting.remove(&key);
            }
            self.busy.insert(key.clone());
            batch.keys.push(key);
        }
        batch
    }

    /// The batch of `keys` is done (applied, dead-lettered or abandoned): their messages that
    /// arrived meanwhile are ready.
    pub fn done(&mut self, keys: impl IntoIterator<Item = K>) {
        for key in keys {
            self.busy.remove(&key);
            if self.waiting.contains_key(&key) {
                self.ready.push_back(key);
            }
        }
    }

    /// Whether any message waits (ready or behind a busy key).
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

/// Messages of one batch, and the keys they made busy.
#[derive(Debug)]
pub struct Batch<K, T> {
    pub keys: Vec<K>,
    pub messages: Vec<T>,
}

impl<K, T> Batch<K, T> {
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(messages: &[(&'static str, u32)]) -> Schedule<&'static str, u32> {
        let mut schedule = Schedule::default();
        for &(key, message) in messages {
            schedule.push(key, message);
        }
        schedule
    }

    #[test]
    fn a_batch_takes_every_ready_key_in_the_order_it_became_ready_each_in_arrival_order() {
        let mut schedule = schedule(&[("a", 1), ("b", 2), ("a", 3), ("c", 4)]);
        let batch = schedule.next_batch(10);
        assert_eq!(batch.keys, ["a", "b", "c"]);
        assert_eq!(batch.messages, [1, 3, 2, 4]);
        assert!(schedule.is_empty());
    }

    #[test]
    fn a_busy_keys_later_messages_wait_while_other_keys_go_on() {
        let mut schedule = schedule(&[("slow", 1)]);
        let held = schedule.next_batch(10);
        assert_eq!(held.messages, [1]);
        schedule.push("slow", 2);
        schedule.push("other", 3);
        schedule.push("slow", 4);
        schedule.push("another", 5);
        let batch = schedule.next_batch(10);
        assert_eq!(batch.messages, [3, 5], "only the keys not in flight");
        schedule.done(batch.keys);
        assert!(schedule.next_batch(10).is_empty(), "slow is still busy");
        schedule.done(held.keys);
        assert_eq!(schedule.next_batch(10).messages, [2, 4]);
    }

    #[test]
    fn a_batch_holds_at_most_its_size_and_a_key_cut_off_finishes_in_a_later_batch() {
        let mut schedule = schedule(&[("a", 1), ("a", 2), ("a", 3), ("b", 4)]);
        let first = schedule.next_batch(2);
        assert_eq!(first.messages, [1, 2]);
        assert!(
            schedule.next_batch(2).messages == [4],
            "a's third waits for its first batch; b goes"
        );
        schedule.done(first.keys);
        assert_eq!(schedule.next_batch(2).messages, [3]);
    }

    #[test]
    fn keys_become_ready_again_in_the_order_their_batches_finish() {
        let mut schedule = schedule(&[("a", 1), ("b", 2)]);
        let a = schedule.next_batch(1);
        let b = schedule.next_batch(1);
        schedule.push("a", 3);
        schedule.push("b", 4);
        schedule.done(b.keys);
        schedule.done(a.keys);
        assert_eq!(schedule.next_batch(1).messages, [4]);
    }
}
