//! `VerdictBatch` against testkit's model of the kernel's queue: the bytes of
//! `to_bytes()` (what `send_all` writes) decoded as the kernel decodes them,
//! and applied as `nfqnl_recv_verdict` and `nfqnl_recv_verdict_batch` apply
//! them. Random verdicts, random completion orders, ids that wrap past
//! `u32::MAX`; every packet must end with the verdict its handler gave.
//!
//! The writer here coalesces as a dispatcher would (batch verdicts for in-order
//! runs of equal verdicts, the rest one by one); the same harness
//! (`kernel_model::run_scenario` with a `VerdictWriter`) takes the dispatcher's
//! own coalescer.

use nfqueue_core::{Verdict, VerdictBatch, VerdictKind};
use nfqueue_testkit::kernel_model::{
    self, decode, run_scenario, verdict, Fate, Message, Scenario, ScenarioPacket, VerdictWriter,
};
use proptest::prelude::*;
use std::collections::{BTreeMap, VecDeque};

/// The verdict a handler gives for a model fate.
fn verdict_of(fate: &Fate) -> Verdict<'static> {
    let kind = match fate.verdict & verdict::MASK {
        verdict::ACCEPT => VerdictKind::Accept,
        verdict::DROP => VerdictKind::Drop,
        verdict::REPEAT => VerdictKind::Repeat,
        verdict::STOP => VerdictKind::AcceptFinal,
        verdict::QUEUE => VerdictKind::Queue {
            num: (fate.verdict >> verdict::QUEUE_SHIFT) as u16,
            bypass: fate.verdict & verdict::QUEUE_BYPASS != 0,
        },
        other => panic!("no verdict kind for code {other}"),
    };
    assert_eq!(
        kind.code(),
        fate.verdict,
        "the codes agree with the kernel's"
    );
    let mut v = Verdict::new(kind);
    if let Some(mark) = fate.mark {
        v = v.with_mark(mark);
    }
    if let Some(payload) = &fate.payload {
        v = v.with_payload(payload.clone());
    }
    v
}

#[derive(Debug)]
enum Slot {
    Waiting,
    Done(Verdict<'static>),
    Sent,
}

/// A coalescing writer over `VerdictBatch`: per queue, packets in the order
/// read; the in-order prefix of finished ones goes out as batch verdicts for
/// runs of two or more equal verdicts without payload and single ones for the
/// rest; when idle, every other finished verdict goes out on its own.
#[derive(Default)]
struct BatchWriter {
    queues: BTreeMap<u16, VecDeque<(u32, Slot)>>,
    batch: VerdictBatch,
}

impl VerdictWriter for BatchWriter {
    fn dispatched(&mut self, queue: u16, id: u32) {
        self.queues
            .entry(queue)
            .or_default()
            .push_back((id, Slot::Waiting));
    }

    fn completed(&mut self, queue: u16, id: u32, fate: &Fate) {
        let window = self.queues.get_mut(&queue).expect("dispatched first");
        let slot = window
            .iter_mut()
            .find(|(i, _)| *i == id)
            .expect("dispatched first");
        slot.1 = Slot::Done(verdict_of(fate));
    }

    fn flush(&mut self, idle: bool) -> Vec<u8> {
        for (&queue, window) in &mut self.queues {
            while let Some((_, Slot::Done(_) | Slot::Sent)) = window.front() {
                let (id, slot) = window.pop_front().unwrap();
                let Slot::Done(first) = slot else { continue };
                if first.payload().is_some() {
                    self.batch.push(queue, id, first).unwrap();
                    continue;
                }
                let (mut last, mut run) = (id, 1);
                while let Some((next_id, next)) = window.front() {
                    match next {
                        Slot::Done(v)
                            if v.payload().is_none()
                                && (v.kind(), v.mark()) == (first.kind(), first.mark()) =>
                        {
                            last = *next_id;
                            run += 1;
                        }
                        Slot::Sent => {}
                        _ => break,
                    }
                    window.pop_front();
                }
                if run == 1 {
                    self.batch.push(queue, last, first).unwrap();
                } else {
                    self.batch
                        .push_up_to(queue, last, first.kind(), first.mark())
                        .unwrap();
                }
            }
            if idle {
                for (id, slot) in window.iter_mut() {
                    if matches!(slot, Slot::Done(_)) {
                        let Slot::Done(v) = std::mem::replace(slot, Slot::Sent) else {
                            unreachable!()
                        };
                        self.batch.push(queue, *id, v).unwrap();
                    }
                }
            }
        }
        let bytes = self.batch.to_bytes();
        self.batch.clear();
        bytes
    }
}

fn fate_strategy() -> impl Strategy<Value = Fate> {
    let code = prop_oneof![
        3 => Just(verdict::ACCEPT),
        2 => Just(verdict::DROP),
        1 => Just(verdict::REPEAT),
        1 => Just(verdict::STOP),
        1 => (0u16..4, any::<bool>()).prop_map(|(n, b)| verdict::queue(n + 7, b)),
    ];
    let payload = prop_oneof![
        6 => Just(None),
        1 => proptest::collection::vec(any::<u8>(), 1..48).prop_map(Some),
    ];
    (code, proptest::option::of(0u32..3), payload).prop_map(|(code, mark, payload)| Fate {
        verdict: code,
        mark,
        payload,
    })
}

/// Packets over one or two queues, in the order read, with ids from a start
/// that may be just below `u32::MAX`; a few verdicts repeat the one before, as
/// runs of equal verdicts are what batches are made of.
fn packets_strategy() -> impl Strategy<Value = Vec<ScenarioPacket>> {
    let start = prop_oneof![Just(1u32), (0u32..6).prop_map(|d| u32::MAX - d)];
    (
        start.clone(),
        start,
        proptest::collection::vec((any::<bool>(), fate_strategy(), any::<bool>()), 1..60),
    )
        .prop_map(|(start0, start5, items)| {
            let mut next = BTreeMap::from([(0u16, start0), (5u16, start5)]);
            let mut out: Vec<ScenarioPacket> = Vec::new();
            for (second, fate, repeat) in items {
                let queue = if second { 5 } else { 0 };
                let id = next[&queue];
                next.insert(queue, id.wrapping_add(1));
                let fate = match out.last() {
                    Some(prev) if repeat => prev.fate.clone(),
                    _ => fate,
                };
                out.push(ScenarioPacket { queue, id, fate });
            }
            out
        })
}

fn scenario_strategy() -> impl Strategy<Value = Scenario> {
    packets_strategy().prop_flat_map(|packets| {
        let n = packets.len();
        let order = Just((0..n).collect::<Vec<usize>>()).prop_shuffle();
        let flushes = proptest::collection::vec(any::<bool>(), n);
        (Just(packets), order, flushes)
            .prop_map(|(packets, order, flushes)| Scenario::new(packets, &order, &flushes))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whatever the completion order, the coalesced bytes settle every packet
    /// in the model with its handler's verdict: nothing twice, nothing
    /// refused, nothing left waiting.
    #[test]
    fn coalesced_batches_settle_every_packet_as_its_handler_said(scenario in scenario_strategy()) {
        let mut writer = BatchWriter::default();
        if let Err(diff) = run_scenario(&scenario, &mut writer) {
            return Err(TestCaseError::fail(diff));
        }
    }

    /// Each message pushed is decoded back, in order, as the kernel reads it.
    #[test]
    fn to_bytes_decodes_to_what_was_pushed(
        ops in proptest::collection::vec(
            (0u16..3, any::<u32>(), fate_strategy(), any::<bool>()), 0..40)
    ) {
        let mut batch = VerdictBatch::new();
        let mut expected = Vec::new();
        for (queue, id, fate, as_batch) in ops {
            if as_batch {
                let kind = verdict_of(&Fate::new(fate.verdict, None)).kind();
                batch.push_up_to(queue, id, kind, fate.mark).unwrap();
                expected.push(Message::Batch {
                    queue,
                    max_id: id,
                    verdict: fate.verdict,
                    mark: fate.mark,
                });
            } else {
                batch.push(queue, id, verdict_of(&fate)).unwrap();
                expected.push(Message::Verdict {
                    queue,
                    id,
                    verdict: fate.verdict,
                    mark: fate.mark,
                    payload: fate.payload.clone(),
                });
            }
        }
        prop_assert_eq!(batch.len(), expected.len());
        let decoded = decode(&batch.to_bytes()).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(decoded, expected);
    }
}

/// The same property over seeded scenarios, as the dispatcher's coalescer can
/// run it (`Scenario::random` needs no proptest).
#[test]
fn seeded_scenarios_settle_every_packet_as_its_handler_said() {
    for seed in 0..300 {
        let scenario = Scenario::random(seed, 80);
        run_scenario(&scenario, &mut BatchWriter::default())
            .unwrap_or_else(|diff| panic!("seed {seed}: {diff}"));
    }
}

/// The model is not a rubber stamp: a writer that lets a batch verdict run
/// over a packet still being handled is caught.
#[test]
fn a_batch_over_a_packet_still_waiting_is_caught() {
    struct Greedy(BatchWriter);
    impl VerdictWriter for Greedy {
        fn dispatched(&mut self, queue: u16, id: u32) {
            self.0.dispatched(queue, id)
        }
        fn completed(&mut self, queue: u16, id: u32, fate: &Fate) {
            self.0.completed(queue, id, fate);
            // Settles everything up to the packet that just finished.
            let v = verdict_of(fate);
            self.0
                .batch
                .push_up_to(queue, id, v.kind(), v.mark())
                .unwrap();
            for (_, slot) in self.0.queues.get_mut(&queue).unwrap().iter_mut() {
                *slot = Slot::Sent;
            }
        }
        fn flush(&mut self, idle: bool) -> Vec<u8> {
            self.0.flush(idle)
        }
    }
    let packets: Vec<ScenarioPacket> = (1..=3)
        .map(|id| ScenarioPacket {
            queue: 0,
            id,
            fate: Fate::new(
                if id == 1 {
                    kernel_model::verdict::DROP
                } else {
                    kernel_model::verdict::ACCEPT
                },
                None,
            ),
        })
        .collect();
    let scenario = Scenario::new(packets, &[2, 0, 1], &[]);
    let diff = run_scenario(&scenario, &mut Greedy(BatchWriter::default())).unwrap_err();
    assert!(
        diff.contains("queue 0 id 1: handler gave drop, kernel applied accept"),
        "{diff}"
    );
}
