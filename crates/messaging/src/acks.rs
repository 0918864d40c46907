//! Which of a channel's deliveries to acknowledge, and with how few frames.
//!
//! A consumer's workers commit their batches in any order, and each delivery may be acknowledged
//! only once the batch that applied it has committed. A `basic.ack` with `multiple` set
//! acknowledges every unacknowledged delivery of the channel up to its tag: one frame — and, for
//! a quorum queue, one settle command in its Raft log — instead of one per message. It is safe
//! only when every delivery up to that tag is applied or already settled otherwise. [`Window`]
//! keeps track of that: deliveries still being worked on hold back the acknowledgement of later
//! ones, which wait (bounded: past [`Window::new`]'s `most_held` they are acknowledged one by one,
//! so a batch that keeps retrying never starves the channel's prefetch).
//!
//! The consumer sends what a [`Window`] answers in the order it answers, and not concurrently
//! with another answer of the same window: a multiple acknowledgement overtaken by a later one
//! would name a tag the broker no longer knows, which closes the channel.

use std::collections::{BTreeMap, BTreeSet};

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
    /// Delivered and not applied yet (or being settled on their own): they hold back the
    /// acknowledgement of every later delivery.
    unsettled: BTreeSet<Tag>,
    /// Applied, their acknowledgement not sent yet.
    applied: BTreeMap<Tag, H>,
    most_held: usize,
}

impl<H> Window<H> {
    /// An empty window that holds back at most `most_held` applied deliveries.
    pub fn new(most_held: usize) -> Self {
        Self {
            unsettled: BTreeSet::new(),
            applied: BTreeMap::new(),
            most_held: most_held.max(1),
        }
    }

    /// A delivery arrived: until it is applied or settled on its own, no acknowledgement may
    /// cover it.
    pub fn delivered(&mut self, tag: Tag) {
        self.unsettled.insert(tag);
    }

    /// A delivery was settled on its own (rejected to its dead-letter queue): call once its
    /// frame is sent. Returns the acknowledgements it no longer holds back.
    pub fn settled(&mut self, tag: Tag) -> Vec<Ack<H>> {
        self.unsettled.remove(&tag);
        self.acks()
    }

    /// Deliveries whose batch committed. Returns the acknowledgements to send now: one multiple
    /// acknowledgement of all applied deliveries that nothing unsettled precedes, and — only when
    /// more than `most_held` are held back — one for each of the rest.
    pub fn applied(&mut self, deliveries: impl IntoIterator<Item = (Tag, H)>) -> Vec<Ack<H>> {
        for (tag, handle) in deliveries {
            self.unsettled.remove(&tag);
            self.applied.insert(tag, handle);
        }
        self.acks()
    }

    /// Every applied delivery not yet acknowledged, one acknowledgement each: what to send
    /// before the channel closes on purpose, whatever is still unsettled.
    pub fn drain(&mut self) -> Vec<Ack<H>> {
        std::mem::take(&mut self.applied)
            .into_values()
            .map(|handle| Ack {
                handle,
                multiple: false,
            })
            .collect()
    }

    fn acks(&mut self) -> Vec<Ack<H>> {
        let mut acks = Vec::new();
        let free = match self.unsettled.first() {
            // Everything applied before the first unsettled delivery.
            Some(&first) => {
                let held = self.applied.split_off(&first);
                std::mem::replace(&mut self.applied, held)
            }
            None => std::mem::take(&mut self.applied),
        };
        // The last of them acknowledges them all.
        if let Some((_, handle)) = free.into_iter().next_back() {
            acks.push(Ack {
                handle,
                multiple: true,
            });
        }
        if self.applied.len() > self.most_held {
            acks.extend(self.drain());
        }
        acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn applied(window: &mut Window<Tag>, tags: &[Tag]) -> Vec<Ack<Tag>> {
        window.applied(tags.iter().map(|&tag| (tag, tag)))
    }

    fn delivered(tags: impl IntoIterator<Item = Tag>, most_held: usize) -> Window<Tag> {
        let mut window = Window::new(most_held);
        tags.into_iter().for_each(|tag| window.delivered(tag));
        window
    }

    #[test]
    fn no_acknowledgement_covers_a_delivery_whose_batch_has_not_committed() {
        let mut window = delivered(1..=6, 64);
        assert_eq!(applied(&mut window, &[2, 3]), []);
        assert_eq!(applied(&mut window, &[5]), []);
        // 1 applied: 1–3 go in one frame; 4 is still unsettled, so 5 waits.
        assert_eq!(applied(&mut window, &[1]), [multiple(3)]);
        assert_eq!(applied(&mut window, &[4, 6]), [multiple(6)]);
        assert_eq!(window.drain(), []);
    }

    #[test]
    fn a_delivery_settled_on_its_own_holds_back_others_only_until_its_frame_is_sent() {
        let mut window = delivered(1..=3, 64);
        assert_eq!(applied(&mut window, &[2, 3]), []);
        assert_eq!(window.settled(1), [multiple(3)]);
    }

    #[test]
    fn held_back_deliveries_past_the_bound_are_acknowledged_one_by_one() {
        let mut window = delivered(1..=5, 2);
        assert_eq!(applied(&mut window, &[2, 3]), []);
        assert_eq!(
            applied(&mut window, &[4]),
            [single(2), single(3), single(4)]
        );
        // 1 is still unsettled: 5 waits again, and nothing is acknowledged twice.
        assert_eq!(applied(&mut window, &[5]), []);
        assert_eq!(applied(&mut window, &[1]), [multiple(5)]);
    }

    #[test]
    fn draining_acknowledges_each_applied_delivery_and_none_unsettled() {
        let mut window = delivered(1..=4, 64);
        assert_eq!(applied(&mut window, &[2, 4]), []);
        assert_eq!(window.drain(), [single(2), single(4)]);
        assert_eq!(applied(&mut window, &[3]), []);
    }
}
