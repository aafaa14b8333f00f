//! `VerdictBatch` against testkit's model of the kernel's queue: the bytes of
//! `to_bytes()` (what `send_all` writes) are decoded as the kernel decodes
//! them, message for message, and the model itself catches a writer that
//! lets a batch verdict settle a packet still being handled. The dispatcher's
//! coalescer runs against the same model in its own tests
//! (`nfqueue/src/coalesce.rs`).

use nfqueue_core::{Binding, Verdict, VerdictBatch, VerdictKind};
use nfqueue_testkit::kernel_model::{
    decode, run_scenario, verdict, Fate, Message, Scenario, ScenarioPacket, VerdictWriter,
};
use proptest::prelude::*;

/// The verdict a handler gives for a model fate.
fn verdict_of(fate: &Fate) -> Verdict<'static> {
    let kind = VerdictKind::from_code(fate.verdict).expect("a code the kernel takes");
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

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

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
                batch.push_up_to(Binding::detached(queue).packet(id), kind, fate.mark).unwrap();
                expected.push(Message::Batch {
                    queue,
                    max_id: id,
                    verdict: fate.verdict,
                    mark: fate.mark,
                });
            } else {
                batch.push(Binding::detached(queue).packet(id), verdict_of(&fate)).unwrap();
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

/// The model is not a rubber stamp: a writer that settles everything up to
/// each packet as it finishes, with that packet's verdict, is caught as soon
/// as packets finish out of order.
#[test]
fn a_batch_over_a_packet_still_waiting_is_caught() {
    #[derive(Default)]
    struct Greedy(VerdictBatch);
    impl VerdictWriter for Greedy {
        fn dispatched(&mut self, _: u16, _: u32) {}
        fn completed(&mut self, queue: u16, id: u32, fate: &Fate) {
            let v = verdict_of(fate);
            self.0
                .push_up_to(Binding::detached(queue).packet(id), v.kind(), v.mark())
                .unwrap();
        }
        fn flush(&mut self, _: bool) -> Vec<u8> {
            let bytes = self.0.to_bytes();
            self.0.clear();
            bytes
        }
    }
    let packets: Vec<ScenarioPacket> = (1..=3)
        .map(|id| ScenarioPacket {
            queue: 0,
            id,
            fate: Fate::new(
                if id == 1 {
                    verdict::DROP
                } else {
                    verdict::ACCEPT
                },
                None,
            ),
        })
        .collect();
    let scenario = Scenario::new(packets, &[2, 0, 1], &[]);
    let diff = run_scenario(&scenario, &mut Greedy::default()).unwrap_err();
    assert!(
        diff.contains("queue 0 id 1: handler gave drop, kernel applied accept"),
        "{diff}"
    );
}
