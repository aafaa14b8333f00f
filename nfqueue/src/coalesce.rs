//! Verdict coalescing: turns the verdicts that workers send back, in any order,
//! into as few netlink messages as the kernel's rules allow.
//!
//! A batch verdict (`NFQNL_MSG_VERDICT_BATCH`) applies to every packet of the
//! queue with an id up to the one it names, so it is only correct for an
//! in-order run: every packet before the run must already have its verdict.
//! The kernel hands out ids in increasing order and delivers packets in that
//! order, so the packets this queue dispatched, in dispatch order, are exactly
//! the ones a batch verdict can touch.

use nfqueue_core::{Verdict, VerdictBatch};
use std::collections::VecDeque;

/// Verdicts held behind a packet still being handled before they are sent one
/// by one anyway, so a slow packet does not hold up the others for long.
pub(crate) const MAX_HELD: usize = 256;

#[derive(Debug)]
enum Slot {
    /// Dispatched; no verdict yet.
    Waiting,
    /// Verdict known, not sent.
    Done(Verdict<'static>),
    /// Verdict sent on its own, out of order.
    Sent,
}

/// What a flush put into the batch, for the statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Batch verdict messages.
    pub(crate) batch_messages: u64,
    /// Single verdict messages.
    pub(crate) single_messages: u64,
}

/// The packets of one queue between dispatch and verdict, in dispatch order.
#[derive(Debug, Default)]
pub(crate) struct Coalescer {
    queue: u16,
    window: VecDeque<(u32, Slot)>,
    /// Packets dispatched and still without a verdict.
    waiting: usize,
}

impl Coalescer {
    /// A coalescer with room for `room` packets before its window grows.
    pub(crate) fn new(queue: u16, room: usize) -> Self {
        Coalescer {
            queue,
            window: VecDeque::with_capacity(room),
            waiting: 0,
        }
    }

    /// Records that packet `id` was handed to a worker. Ids arrive in increasing
    /// order (modulo 2^32).
    pub(crate) fn dispatched(&mut self, id: u32) {
        self.window.push_back((id, Slot::Waiting));
        self.waiting += 1;
    }

    /// Packets dispatched that have no verdict yet: those a worker still has.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Packets dispatched and not yet sent a verdict.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> usize {
        self.window
            .iter()
            .filter(|(_, slot)| !matches!(slot, Slot::Sent))
            .count()
    }

    /// True when nothing waits for a verdict or for being sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// Records the verdict for packet `id`. Returns false for an id that is not
    /// waiting (which cannot happen unless a worker answers twice).
    pub(crate) fn complete(&mut self, id: u32, verdict: Verdict<'static>) -> bool {
        let Some(front) = self.window.front().map(|(id, _)| *id) else {
            return false;
        };
        // Ids increase along the window; compare by distance from the front so
        // that a wrap of the 32-bit counter keeps the order.
        let offset = id.wrapping_sub(front);
        let Ok(at) = self
            .window
            .binary_search_by_key(&offset, |(slot_id, _)| slot_id.wrapping_sub(front))
        else {
            return false;
        };
        match &mut self.window[at].1 {
            slot @ Slot::Waiting => {
                *slot = Slot::Done(verdict);
                self.waiting -= 1;
                true
            }
            _ => false,
        }
    }

    /// Puts what can be sent into `batch`: the in-order prefix as runs of equal
    /// verdicts (one batch message each), and, when `idle` or when too many are
    /// held, every other finished verdict as a message of its own.
    pub(crate) fn flush(&mut self, batch: &mut VerdictBatch, idle: bool) -> Flushed {
        let mut flushed = Flushed::default();
        // The in-order prefix, run by run.
        while let Some((_, Slot::Done(_) | Slot::Sent)) = self.window.front() {
            let (id, slot) = self.window.pop_front().expect("front exists");
            let Slot::Done(verdict) = slot else { continue };
            if verdict.payload().is_some() {
                push_single(batch, self.queue, id, verdict);
                flushed.single_messages += 1;
                continue;
            }
            let key = (verdict.kind(), verdict.mark());
            let mut last = id;
            let mut run = 1;
            while let Some((next_id, next)) = self.window.front() {
                match next {
                    Slot::Done(v) if v.payload().is_none() && (v.kind(), v.mark()) == key => {}
                    Slot::Sent => {}
                    _ => break,
                }
                if matches!(next, Slot::Done(_)) {
                    last = *next_id;
                    run += 1;
                }
                self.window.pop_front();
            }
            if run == 1 {
                push_single(batch, self.queue, last, verdict);
                flushed.single_messages += 1;
            } else {
                // Only a payload can make a verdict fail to encode.
                let _ = batch.push_up_to(self.queue, last, key.0, key.1);
                flushed.batch_messages += 1;
            }
        }
        // The front now waits for a verdict: every finished one is held behind it.
        let held = self
            .window
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Done(_)))
            .count();
        if held > 0 && (idle || held >= MAX_HELD) {
            for (id, slot) in self.window.iter_mut() {
                if let Slot::Done(_) = slot {
                    let Slot::Done(verdict) = std::mem::replace(slot, Slot::Sent) else {
                        unreachable!()
                    };
                    push_single(batch, self.queue, *id, verdict);
                    flushed.single_messages += 1;
                }
            }
        }
        flushed
    }
}

/// Adds one packet's verdict to `batch`. Verdicts come here validated; should
/// one still not encode, the packet is dropped rather than left waiting.
fn push_single(batch: &mut VerdictBatch, queue: u16, id: u32, verdict: Verdict<'static>) {
    if batch.push(queue, id, verdict).is_err() {
        let _ = batch.push(queue, id, Verdict::drop());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn coalescer(ids: impl IntoIterator<Item = u32>) -> Coalescer {
        let mut c = Coalescer::new(3, 0);
        for id in ids {
            c.dispatched(id);
        }
        c
    }

    #[test]
    fn an_in_order_run_of_equal_verdicts_is_one_batch_message() {
        let mut c = coalescer(1..=5);
        for id in 1..=5 {
            assert!(c.complete(id, Verdict::accept()));
        }
        let mut batch = VerdictBatch::new();
        let flushed = c.flush(&mut batch, false);
        assert_eq!(
            flushed,
            Flushed {
                batch_messages: 1,
                single_messages: 0
            }
        );
        assert_eq!(batch.len(), 1);
        assert!(c.is_empty());
    }

    #[test]
    fn runs_break_at_a_different_verdict_or_mark() {
        let mut c = coalescer(1..=6);
        for (id, v) in [
            (1, Verdict::accept()),
            (2, Verdict::accept()),
            (3, Verdict::drop()),
            (4, Verdict::accept().with_mark(1)),
            (5, Verdict::accept().with_mark(1)),
            (6, Verdict::accept().with_payload(vec![1, 2, 3])),
        ] {
            c.complete(id, v);
        }
        let mut batch = VerdictBatch::new();
        let flushed = c.flush(&mut batch, false);
        assert_eq!(
            flushed,
            Flushed {
                batch_messages: 2,
                single_messages: 2
            }
        );
    }

    #[test]
    fn verdicts_behind_a_waiting_packet_are_held_until_idle() {
        let mut c = coalescer([10, 11, 12, 13]);
        c.complete(11, Verdict::accept());
        c.complete(12, Verdict::accept());
        let mut batch = VerdictBatch::new();
        assert_eq!(
            c.flush(&mut batch, false),
            Flushed::default(),
            "10 still waits"
        );
        assert_eq!(c.outstanding(), 4);
        let flushed = c.flush(&mut batch, true);
        assert_eq!(flushed.single_messages, 2, "idle: sent one by one");
        assert_eq!(c.outstanding(), 2);
        // 10 and 13 finish: 11 and 12 are gone already, so the run spans them.
        c.complete(13, Verdict::accept());
        c.complete(10, Verdict::accept());
        batch.clear();
        let flushed = c.flush(&mut batch, false);
        assert_eq!(
            flushed,
            Flushed {
                batch_messages: 1,
                single_messages: 0
            }
        );
        assert!(c.is_empty());
    }

    #[test]
    fn too_many_held_verdicts_go_out_without_waiting_for_idle() {
        let mut c = coalescer(0..=(MAX_HELD as u32 + 1));
        for id in 1..=(MAX_HELD as u32) {
            c.complete(id, Verdict::drop());
        }
        let mut batch = VerdictBatch::new();
        let flushed = c.flush(&mut batch, false);
        assert_eq!(flushed.single_messages, MAX_HELD as u64);
    }

    #[test]
    fn ids_wrapping_around_keep_their_order() {
        let mut c = coalescer([u32::MAX - 1, u32::MAX, 0, 1]);
        assert!(c.complete(0, Verdict::accept()));
        assert!(c.complete(u32::MAX - 1, Verdict::accept()));
        assert!(!c.complete(7, Verdict::accept()), "never dispatched");
        assert!(!c.complete(0, Verdict::accept()), "already done");
        let mut batch = VerdictBatch::new();
        c.flush(&mut batch, false);
        assert_eq!(
            c.outstanding(),
            3,
            "u32::MAX still waits; 0 is held behind it"
        );
    }
}
