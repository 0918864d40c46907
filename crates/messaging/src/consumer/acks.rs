//! Which of a channel's deliveries to acknowledge, and with how few frames.
//!
//! A consumer commits its batches in any order, and each delivery may be acknowledged only once
//! the batch that applied it has committed. A `basic.ack` with `multiple` set acknowledges every
//! unacknowledged delivery of the channel up to its tag: one frame — and, for a quorum queue, one
//! settle command in its Raft log — instead of one per message. It is safe only when every
//! delivery up to that tag is applied or already rejected. [`Window`] keeps track of that:
//! deliveries still being worked on hold back the acknowledgement of later ones, which wait —
//! but not for long: an applied delivery held back longer than the window's `most_wait`, or
//! beyond its `most_held`, is acknowledged on its own. So a key whose batch is slow never keeps
//! other keys' deliveries unacknowledged (taking up the prefetch) for more than a moment.
//!
//! The consumer sends what a [`Window`] answers in the order it answers, and not concurrently
//! with another answer of the same window: a multiple acknowledgement overtaken by a later one
//! would name a tag the broker no longer knows, which closes the channel.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};
use tokio::time::Instant;

/// A delivery tag: the channel's number for a delivery, increasing in delivery order.
pub type Tag = u64;

/// An acknowledgement to send: of the delivery `handle` belongs to, and with `multiple`, of
/// every unacknowledged delivery of the channel before it too.
#[derive(Debug, PartialEq, Eq)]
pub struct Ack<H> {
    pub handle: H,
    pub multiple: bool,
}

/// The deliveries of one channel that are not yet acknowledged; `H` is what sends an
/// acknowledgement for one of them (lapin's `Acker`).
#[derive(Debug)]
pub struct Window<H> {
    /// Delivered and neither applied nor rejected yet: they hold back the acknowledgement of
    /// every later delivery.
    pending: BTreeSet<Tag>,
    /// Applied, their acknowledgement not sent yet, with when they were applied.
    applied: BTreeMap<Tag, (H, Instant)>,
    most_held: usize,
    most_wait: Duration,
}

impl<H> Window<H> {
    /// An empty window that holds back at most `most_held` applied deliveries, none of them
    /// longer than `most_wait`.
    pub fn new(most_held: usize, most_wait: Duration) -> Self {
        Self {
            pending: BTreeSet::new(),
            applied: BTreeMap::new(),
            most_held: most_held.max(1),
            most_wait,
        }
    }

    /// A delivery arrived: until it is applied or rejected, no acknowledgement may cover it.
    pub fn delivered(&mut self, tag: Tag) {
        self.pending.insert(tag);
    }

    /// A delivery was rejected on its own (to its dead-letter queue): call once its frame is
    /// sent. Returns the acknowledgements it no longer holds back.
    pub fn rejected(&mut self, tag: Tag, now: Instant) -> Vec<Ack<H>> {
        self.pending.remove(&tag);
        self.acks(now)
    }

    /// Deliveries whose batch committed at `now`. Returns the acknowledgements to send: one
    /// multiple acknowledgement of all applied deliveries that nothing pending precedes, and one
    /// for each of the rest that waited too long — or all of them, when more than `most_held`
    /// are held back.
    pub fn applied(
        &mut self,
        deliveries: impl IntoIterator<Item = (Tag, H)>,
        now: Instant,
    ) -> Vec<Ack<H>> {
        for (tag, handle) in deliveries {
            self.pending.remove(&tag);
            self.applied.insert(tag, (handle, now));
        }
        self.acks(now)
    }

    /// When the oldest held-back delivery will have waited too long, if one is held back: call
    /// [`overdue`](Self::overdue) then.
    pub fn due(&self) -> Option<Instant> {
        self.applied
            .values()
            .map(|&(_, since)| since + self.most_wait)
            .min()
    }

    /// The acknowledgements of held-back deliveries that have waited too long by `now`.
    pub fn overdue(&mut self, now: Instant) -> Vec<Ack<H>> {
        self.acks(now)
    }

    /// Every applied delivery not yet acknowledged, one acknowledgement each: what to send
    /// before the channel closes on purpose, whatever is still pending.
    pub fn drain(&mut self) -> Vec<Ack<H>> {
        std::mem::take(&mut self.applied)
            .into_values()
            .map(|(handle, _)| Ack {
                handle,
                multiple: false,
            })
            .collect()
    }

    fn acks(&mut self, now: Instant) -> Vec<Ack<H>> {
        let mut acks = Vec::new();
        let free = match self.pending.first() {
            // Everything applied before the first pending delivery.
            Some(&first) => {
                let held = self.applied.split_off(&first);
                std::mem::replace(&mut self.applied, held)
            }
            None => std::mem::take(&mut self.applied),
        };
        // The last of them acknowledges them all.
        if let Some((_, (handle, _))) = free.into_iter().next_back() {
            acks.push(Ack {
                handle,
                multiple: true,
            });
        }
        if self.applied.len() > self.most_held {
            acks.extend(self.drain());
        } else {
            let waited_too_long: Vec<Tag> = self
                .applied
                .iter()
                .filter(|(_, (_, since))| now.duration_since(*since) >= self.most_wait)
                .map(|(&tag, _)| tag)
                .collect();
            for tag in waited_too_long {
                if let Some((handle, _)) = self.applied.remove(&tag) {
                    acks.push(Ack {
                        handle,
                        multiple: false,
                    });
                }
            }
        }
        acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(500);

    fn multiple(tag: Tag) -> Ack<Tag> {
        Ack {
            handle: tag,
            multiple: true,
        }
    }

    fn single(tag: Tag) -> Ack<Tag> {
        Ack {
            handle: tag,
            multiple: false,
        }
    }

    fn applied(window: &mut Window<Tag>, tags: &[Tag], now: Instant) -> Vec<Ack<Tag>> {
        window.applied(tags.iter().map(|&tag| (tag, tag)), now)
    }

    fn delivered(tags: impl IntoIterator<Item = Tag>, most_held: usize) -> Window<Tag> {
        let mut window = Window::new(most_held, WAIT);
        tags.into_iter().for_each(|tag| window.delivered(tag));
        window
    }

    #[test]
    fn no_acknowledgement_covers_a_delivery_whose_batch_has_not_committed() {
        let now = Instant::now();
        let mut window = delivered(1..=6, 64);
        assert_eq!(applied(&mut window, &[2, 3], now), []);
        assert_eq!(applied(&mut window, &[5], now), []);
        // 1 applied: 1–3 go in one frame; 4 is still pending, so 5 waits.
        assert_eq!(applied(&mut window, &[1], now), [multiple(3)]);
        assert_eq!(applied(&mut window, &[4, 6], now), [multiple(6)]);
        assert_eq!(window.drain(), []);
    }

    #[test]
    fn a_rejected_delivery_holds_back_others_only_until_its_frame_is_sent() {
        let now = Instant::now();
        let mut window = delivered(1..=3, 64);
        assert_eq!(applied(&mut window, &[2, 3], now), []);
        assert_eq!(window.rejected(1, now), [multiple(3)]);
    }

    #[test]
    fn held_back_deliveries_past_the_bound_are_acknowledged_one_by_one() {
        let now = Instant::now();
        let mut window = delivered(1..=5, 2);
        assert_eq!(applied(&mut window, &[2, 3], now), []);
        assert_eq!(
            applied(&mut window, &[4], now),
            [single(2), single(3), single(4)]
        );
        // 1 is still pending: 5 waits again, and nothing is acknowledged twice.
        assert_eq!(applied(&mut window, &[5], now), []);
        assert_eq!(applied(&mut window, &[1], now), [multiple(5)]);
    }

    #[test]
    fn a_delivery_held_back_behind_a_slow_one_is_acknowledged_alone_once_it_waited_too_long() {
        let start = Instant::now();
        let mut window = delivered(1..=3, 64);
        assert_eq!(applied(&mut window, &[2], start), []);
        assert_eq!(window.due(), Some(start + WAIT));
        assert_eq!(window.overdue(start + WAIT / 2), []);
        assert_eq!(applied(&mut window, &[3], start + WAIT / 2), []);
        assert_eq!(window.overdue(start + WAIT), [single(2)]);
        assert_eq!(window.due(), Some(start + WAIT / 2 + WAIT));
        assert_eq!(window.overdue(start + 2 * WAIT), [single(3)]);
        assert_eq!(window.due(), None);
        // 1 is still pending; once applied, it is acknowledged alone: nothing before it is left.
        assert_eq!(applied(&mut window, &[1], start + 3 * WAIT), [multiple(1)]);
    }

    #[test]
    fn draining_acknowledges_each_applied_delivery_and_none_pending() {
        let now = Instant::now();
        let mut window = delivered(1..=4, 64);
        assert_eq!(applied(&mut window, &[2, 4], now), []);
        assert_eq!(window.drain(), [single(2), single(4)]);
        assert_eq!(applied(&mut window, &[3], now), []);
    }
}
