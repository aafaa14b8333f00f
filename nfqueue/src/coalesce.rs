//! Verdict coalescing: turns the verdicts that workers send back, in any order,
//! into as few netlink messages as the kernel's rules allow.
//!
//! A batch verdict (`NFQNL_MSG_VERDICT_BATCH`) applies to every packet of the
//! queue still waiting with an id up to the one it names, so it is only correct
//! for a run at the front of the waiting packets: every packet before it must
//! have had its verdict sent. The kernel hands out ids in increasing order, and
//! this queue dispatches every packet it reads, so the packets dispatched and
//! not yet sent, in dispatch order, are exactly the ones a batch verdict can
//! touch. A packet this thread could not read whole is the exception: see
//! [`Coalescer::stop_batching`].

use nfqueue_core::{Binding, Verdict, VerdictBatch};
use std::collections::VecDeque;
use std::time::Instant;

/// Verdicts held behind a packet still being handled before they are sent one
/// by one anyway, so a slow packet does not hold up the others for long.
pub(crate) const MAX_HELD: usize = 256;

#[derive(Debug, Clone)]
enum Slot {
    /// Dispatched at the instant given; no verdict yet.
    Waiting(Instant),
    /// Verdict known, not sent.
    Done(Verdict<'static>),
}

/// What a flush put into the batch, for the statistics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Flushed {
    /// Batch verdict messages.
    pub(crate) batch_messages: u64,
    /// Single verdict messages.
    pub(crate) single_messages: u64,
}

/// The packets of one queue binding between dispatch and the sending of
/// their verdict, in dispatch order. It holds only packets whose verdict was
/// not sent: at most the packets in flight plus [`MAX_HELD`] and a round's
/// worth, however long one packet is held up.
#[derive(Debug)]
pub(crate) struct Coalescer {
    binding: Binding,
    window: VecDeque<(u32, Slot)>,
    /// Slots of the window still `Waiting`.
    waiting: usize,
    /// Whether batch verdicts may be used.
    batches: bool,
}

impl Coalescer {
    /// A coalescer for the packets of `binding`, with room for `room` packets
    /// before its window grows.
    pub(crate) fn new(binding: Binding, room: usize) -> Self {
        Coalescer {
            binding,
            window: VecDeque::with_capacity(room),
            waiting: 0,
            batches: true,
        }
    }

    /// Records that packet `id` was handed to a worker `at` that instant. Ids
    /// arrive in increasing order (modulo 2^32), and so do the instants.
    pub(crate) fn dispatched(&mut self, id: u32, at: Instant) {
        self.window.push_back((id, Slot::Waiting(at)));
        self.waiting += 1;
    }

    /// When the packet waiting longest was dispatched, if one waits.
    pub(crate) fn oldest_waiting(&self) -> Option<Instant> {
        self.window.iter().find_map(|(_, slot)| match slot {
            Slot::Waiting(at) => Some(*at),
            Slot::Done(_) => None,
        })
    }

    /// Gives every packet dispatched before `cutoff` and still waiting the
    /// verdict `verdict`, as if its handler had; returns how many. A handler's
    /// verdict for one of them that comes later is not waited for any more
    /// ([`complete`](Self::complete) says false).
    pub(crate) fn expire(&mut self, cutoff: Instant, verdict: &Verdict<'static>) -> usize {
        let mut expired = 0;
        for (_, slot) in self.window.iter_mut() {
            match slot {
                Slot::Waiting(at) if *at < cutoff => {
                    *slot = Slot::Done(verdict.clone());
                    expired += 1;
                }
                // Dispatched in order: the ones after are younger.
                Slot::Waiting(_) => break,
                Slot::Done(_) => {}
            }
        }
        self.waiting -= expired;
        expired
    }

    /// Packets dispatched that have no verdict yet: those a worker still has.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiting
    }

    /// Packets dispatched whose verdict was not sent yet.
    #[cfg(test)]
    pub(crate) fn outstanding(&self) -> usize {
        self.window.len()
    }

    /// True when nothing waits for a verdict or for being sent.
    pub(crate) fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// From now on, every verdict goes out on its own: the kernel holds a
    /// packet of this queue that this thread could not read or drop, which a
    /// batch verdict for a later id would settle with its own verdict.
    pub(crate) fn stop_batching(&mut self) {
        self.batches = false;
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
            slot @ Slot::Waiting(_) => {
                *slot = Slot::Done(verdict);
                self.waiting -= 1;
                true
            }
            Slot::Done(_) => false,
        }
    }

    /// Puts what can be sent into `batch`: the front of the window while its
    /// verdicts are known, as runs of equal verdicts (one batch message each),
    /// and, when `idle` or when [`MAX_HELD`] are held behind a packet still
    /// waiting, every other known verdict as a message of its own. Verdicts
    /// go into `batch` in id order, so a flow's packets (which get their
    /// verdicts in order) leave in order.
    pub(crate) fn flush(&mut self, batch: &mut VerdictBatch, idle: bool) -> Flushed {
        let mut flushed = Flushed::default();
        while let Some((id, Slot::Done(_))) = self.window.front() {
            let first = *id;
            let Some((_, Slot::Done(verdict))) = self.window.pop_front() else {
                unreachable!("the front is done")
            };
            // A batch verdict carries neither a payload nor conntrack changes
            // (nfqa_verdict_batch_policy: NFQA_VERDICT_HDR and NFQA_MARK only).
            let batchable = self.batches && fits_batch(&verdict);
            let key = (verdict.kind(), verdict.mark());
            let mut last = first;
            while let Some((id, Slot::Done(next))) = self.window.front() {
                if !batchable || !fits_batch(next) || (next.kind(), next.mark()) != key {
                    break;
                }
                last = *id;
                self.window.pop_front();
            }
            if last == first {
                self.push_single(batch, first, verdict);
                flushed.single_messages += 1;
            } else {
                // Only a payload can make a verdict fail to encode.
                let _ = batch.push_up_to(self.binding.packet(last), key.0, key.1);
                flushed.batch_messages += 1;
            }
        }
        // The front now waits for a verdict (or nothing is left): every known
        // verdict is held behind it.
        let held = self.window.len() - self.waiting;
        if held > 0 && (idle || held >= MAX_HELD) {
            let binding = self.binding;
            // What a slot sent and let go holds meanwhile.
            let gone = Slot::Waiting(Instant::now());
            self.window.retain_mut(|(id, slot)| match slot {
                Slot::Waiting(_) => true,
                Slot::Done(_) => {
                    let Slot::Done(verdict) = std::mem::replace(slot, gone.clone()) else {
                        unreachable!("matched above")
                    };
                    push_single(batch, binding, *id, verdict);
                    flushed.single_messages += 1;
                    false
                }
            });
        }
        flushed
    }

    fn push_single(&self, batch: &mut VerdictBatch, id: u32, verdict: Verdict<'static>) {
        push_single(batch, self.binding, id, verdict);
    }
}

/// Whether a batch verdict can say what `verdict` says.
fn fits_batch(verdict: &Verdict<'_>) -> bool {
    verdict.payload().is_none() && verdict.conntrack().is_none()
}

/// Adds one packet's verdict to `batch`. Verdicts come here validated; should
/// one still not encode, the packet is dropped rather than left waiting.
fn push_single(batch: &mut VerdictBatch, binding: Binding, id: u32, verdict: Verdict<'static>) {
    let key = binding.packet(id);
    if batch.push(key, verdict).is_err() {
        let _ = batch.push(key, Verdict::drop());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding() -> Binding {
        Binding::detached(3)
    }

    fn coalescer(ids: impl IntoIterator<Item = u32>) -> Coalescer {
        let mut c = Coalescer::new(binding(), 0);
        for id in ids {
            c.dispatched(id, Instant::now());
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

    /// A batch verdict cannot carry the `NFQA_CT` nest: a verdict with
    /// conntrack changes goes out on its own, like one with a payload, and
    /// the runs around it stay batched.
    #[test]
    fn verdicts_with_conntrack_changes_go_out_on_their_own() {
        let mut c = coalescer(1..=6);
        for (id, v) in [
            (1, Verdict::accept()),
            (2, Verdict::accept()),
            (3, Verdict::accept().with_connmark(7)),
            (4, Verdict::accept().with_connmark(7)),
            (5, Verdict::accept()),
            (6, Verdict::accept()),
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
        // The nest is in the two single messages: NFQA_CT (11) with
        // NLA_F_NESTED, after each message's verdict header.
        let bytes = batch.to_bytes();
        let nests = bytes
            .windows(4)
            .filter(|w| w[2..] == (11u16 | 0x8000).to_ne_bytes())
            .count();
        assert_eq!(nests, 2);
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
        assert_eq!(c.outstanding(), 2, "the sent ones are gone");
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
    fn the_window_stays_bounded_behind_a_packet_held_for_ever() {
        let mut c = coalescer([0]);
        let mut batch = VerdictBatch::new();
        for id in 1..=100_000u32 {
            c.dispatched(id, Instant::now());
            c.complete(id, Verdict::accept());
            c.flush(&mut batch, false);
            batch.clear();
            assert!(c.outstanding() <= MAX_HELD + 1, "at {id}");
        }
        assert_eq!(c.waiting(), 1);
    }

    #[test]
    fn packets_waiting_past_a_cutoff_get_the_deadline_verdict_once() {
        let start = Instant::now();
        let later = start + std::time::Duration::from_millis(10);
        let mut c = Coalescer::new(binding(), 0);
        c.dispatched(1, start);
        c.dispatched(2, start);
        c.dispatched(3, later);
        assert!(c.complete(2, Verdict::accept()));
        assert_eq!(c.oldest_waiting(), Some(start));
        assert_eq!(c.expire(later, &Verdict::drop()), 1, "only 1 is due");
        assert_eq!(c.waiting(), 1);
        assert_eq!(c.oldest_waiting(), Some(later));
        assert!(!c.complete(1, Verdict::accept()), "too late");
        let mut batch = VerdictBatch::new();
        let flushed = c.flush(&mut batch, false);
        assert_eq!(flushed.single_messages, 2, "1 dropped, 2 accepted");
        assert_eq!(c.waiting(), 1);
    }

    #[test]
    fn without_batching_every_verdict_is_a_message_of_its_own() {
        let mut c = coalescer(1..=4);
        c.stop_batching();
        for id in 1..=4 {
            c.complete(id, Verdict::accept());
        }
        let mut batch = VerdictBatch::new();
        let flushed = c.flush(&mut batch, false);
        assert_eq!(flushed.single_messages, 4);
        assert_eq!(flushed.batch_messages, 0);
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

    /// The coalescer's bytes against a model of the kernel's queue (testkit's
    /// `kernel_model`): random verdicts, random completion orders, ids that
    /// wrap, flushes at random points; decoded and applied as
    /// `nfqnl_recv_verdict` and `nfqnl_recv_verdict_batch` apply them, every
    /// packet must end with the verdict its handler gave, once.
    mod against_the_kernel_model {
        use super::*;
        use nfqueue_core::VerdictKind;
        use nfqueue_testkit::kernel_model::{run_scenario, Fate, Scenario, VerdictWriter};
        use std::collections::BTreeMap;

        /// One coalescer per queue, as each receive thread has.
        #[derive(Default)]
        struct Writer {
            queues: BTreeMap<u16, Coalescer>,
            batches: bool,
        }

        impl VerdictWriter for Writer {
            fn dispatched(&mut self, queue: u16, id: u32) {
                let batches = self.batches;
                self.queues
                    .entry(queue)
                    .or_insert_with(|| {
                        let mut c = Coalescer::new(Binding::detached(queue), 0);
                        if !batches {
                            c.stop_batching();
                        }
                        c
                    })
                    .dispatched(id, Instant::now());
            }

            fn completed(&mut self, queue: u16, id: u32, fate: &Fate) {
                let kind = VerdictKind::from_code(fate.verdict).expect("a valid code");
                let mut verdict = Verdict::new(kind);
                if let Some(mark) = fate.mark {
                    verdict = verdict.with_mark(mark);
                }
                if let Some(payload) = &fate.payload {
                    verdict = verdict.with_payload(payload.clone());
                }
                let coalescer = self.queues.get_mut(&queue).expect("dispatched first");
                assert!(coalescer.complete(id, verdict), "{id} waited");
            }

            fn flush(&mut self, idle: bool) -> Vec<u8> {
                let mut batch = VerdictBatch::new();
                for coalescer in self.queues.values_mut() {
                    coalescer.flush(&mut batch, idle);
                }
                batch.to_bytes()
            }
        }

        #[test]
        fn every_packet_gets_its_handlers_verdict_once() {
            for batches in [true, false] {
                for seed in 0..500 {
                    let scenario = Scenario::random(seed, 120);
                    let mut writer = Writer {
                        batches,
                        ..Writer::default()
                    };
                    run_scenario(&scenario, &mut writer)
                        .unwrap_or_else(|diff| panic!("seed {seed}, batches {batches}: {diff}"));
                }
            }
        }
    }
}
