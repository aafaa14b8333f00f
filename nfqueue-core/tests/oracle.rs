//! The single-queue handle under the verdict oracle, against the real kernel:
//! packets kept and answered later in a shuffled order (`OwnedPacket`,
//! `PendingVerdict`, from another thread), verdicts by id in reverse order,
//! and verdict batches; each packet's fate decided from its content, checked
//! at the far end. Then a rebind with packets still deferred: a verdict that
//! outlives its binding must not settle the new packet that has its id.

mod common;

use common::{bound_queue, enter_new_netns, next_packet, oracle_verdict};
use nfqueue_core::PacketKey as Key;
use nfqueue_core::{OwnedPacket, PendingVerdict, Queue, QueueConfig, Verdict, VerdictBatch};
use nfqueue_testkit::oracle::{
    self, Expectation, FarEnd, Fate, Judge, Mix, Outcome, Pacer, Plan, Planned, Rng, Rules, Sender,
};
use nfqueue_testkit::{counters, traffic, Netns};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

/// The queue requeued packets go to, bound on the same socket.
const SECOND: u16 = 9;

/// How the consumer gives its verdicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Keeps packets as `OwnedPacket` or `PendingVerdict` and hands them to
    /// another thread, which answers them in a shuffled order.
    Deferred,
    /// Detaches packets and answers them by id, last received first.
    ReverseById,
    /// Detaches packets and answers them with a `VerdictBatch`: batch verdicts
    /// for in-order runs of equal verdicts, single ones (some out of order)
    /// for the rest.
    Batch,
}

/// A packet kept for a later verdict.
enum Held {
    Owned(OwnedPacket),
    Pending(PendingVerdict),
}

/// Receives and answers until `stop` is set and nothing is left; returns the
/// number of packets handled.
fn consume(mut queue: Queue, judge: &Judge, mode: Mode, stop: &AtomicBool, seed: u64) -> u64 {
    let mut rng = Rng::new(seed);
    let handle = queue.verdict_handle();
    let (to_answer, answers) = mpsc::channel::<Vec<(Held, Verdict<'static>)>>();
    let answerer = thread::spawn(move || {
        let mut rng = Rng::new(seed ^ 0x5eed);
        for mut held in answers {
            rng.shuffle(&mut held);
            for (packet, verdict) in held {
                let result = match packet {
                    Held::Owned(p) => p.verdict(&verdict),
                    Held::Pending(p) => p.verdict(&verdict),
                };
                result.expect("a deferred verdict failed");
            }
        }
    });
    let mut held: Vec<(Held, Verdict<'static>)> = Vec::new();
    let mut by_key: Vec<(Key, Verdict<'static>)> = Vec::new();
    let mut handled = 0;
    let mut want = 1 + rng.below(24) as usize;
    loop {
        let idle = match queue.recv_timeout(Duration::from_millis(5)) {
            Ok(Some(packet)) => {
                handled += 1;
                let decision = judge.decide(packet.queue(), packet.id(), packet.payload());
                let verdict = oracle_verdict(decision);
                match mode {
                    Mode::Deferred if rng.below(2) == 0 => {
                        held.push((Held::Owned(packet.into_owned()), verdict))
                    }
                    Mode::Deferred => held.push((Held::Pending(packet.defer()), verdict)),
                    Mode::ReverseById | Mode::Batch => {
                        let view = packet.detach();
                        by_key.push((view.key(), verdict));
                    }
                }
                false
            }
            Ok(None) => true,
            Err(e) if e.is_recoverable() => panic!("the kernel reported: {e}"),
            Err(e) => panic!("receiving: {e}"),
        };
        if idle || held.len() + by_key.len() >= want {
            want = 1 + rng.below(24) as usize;
            if !held.is_empty() {
                to_answer.send(std::mem::take(&mut held)).unwrap();
            }
            match mode {
                Mode::Deferred => {}
                Mode::ReverseById => {
                    for (key, verdict) in by_key.drain(..).rev() {
                        handle.verdict(key, &verdict).unwrap();
                    }
                }
                Mode::Batch if !by_key.is_empty() => {
                    let mut batch = coalesced(std::mem::take(&mut by_key), &mut rng);
                    handle.send_all(&mut batch).unwrap();
                    assert!(batch.is_empty());
                }
                Mode::Batch => {}
            }
        }
        if idle && stop.load(Ordering::Acquire) {
            break;
        }
    }
    drop(to_answer);
    answerer.join().unwrap();
    handled
}

/// The verdicts of `held` (every packet received and not yet answered) as a
/// batch: first some lone verdicts in random order, then per queue, in id
/// order, a batch verdict for each run of two or more equal verdicts without
/// payload and a single verdict for the rest. A batch verdict settles every
/// waiting packet up to its id, so it comes only after every lower one of
/// its queue was answered.
fn coalesced(mut held: Vec<(Key, Verdict<'static>)>, rng: &mut Rng) -> VerdictBatch {
    held.sort_by_key(|(k, _)| (k.queue(), k.id()));
    let same = |a: &Verdict<'_>, b: &Verdict<'_>| {
        a.payload().is_none()
            && b.payload().is_none()
            && (a.kind(), a.mark()) == (b.kind(), b.mark())
    };
    let mut runs: Vec<Vec<(Key, Verdict<'static>)>> = Vec::new();
    for (key, verdict) in held {
        match runs.last_mut() {
            Some(run) if run[0].0.queue() == key.queue() && same(&run[0].1, &verdict) => {
                run.push((key, verdict))
            }
            _ => runs.push(vec![(key, verdict)]),
        }
    }
    let mut batch = VerdictBatch::new();
    let (mut early, mut in_order): (Vec<_>, Vec<_>) = runs
        .into_iter()
        .partition(|run| run.len() == 1 && rng.below(3) == 0);
    rng.shuffle(&mut early);
    for mut run in early {
        let (key, verdict) = run.pop().unwrap();
        batch.push(key, verdict).unwrap();
    }
    for run in in_order.drain(..) {
        if run.len() == 1 {
            let (key, verdict) = run.into_iter().next().unwrap();
            batch.push(key, verdict).unwrap();
        } else {
            let (key, verdict) = run.last().unwrap();
            batch
                .push_up_to(*key, verdict.kind(), verdict.mark())
                .unwrap();
        }
    }
    batch
}

/// The oracle over one consumer `mode`, on queue 0 and the requeue target 9.
fn core_oracle(mode: Mode, seed: u64) {
    let ns = Netns::new();
    ns.run(|| {
        let plan = Plan::new(seed, 6, 80, &Mix::standard().requeue_to(SECOND, 8));
        let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
        let dest = receiver.local_addr().unwrap();
        let rules = Rules::install(dest, &["--queue-num", "0"]);
        let mut queue = bound_queue(0);
        queue.bind(SECOND, &QueueConfig::default()).unwrap();
        let judge = Judge::new();
        let stop = AtomicBool::new(false);
        let far = FarEnd::start(receiver);
        let expect = Expectation::default();
        let (sent, handled) = thread::scope(|s| {
            let consumer = s.spawn(|| consume(queue, &judge, mode, &stop, seed));
            let mut pacer = Pacer::new(&far, Some(&judge), expect);
            let report = Sender::new(plan.flows(), dest).send(plan.packets(), &mut pacer);
            assert!(
                !report.stalled,
                "{mode:?}: the sender stalled at {}",
                report.sent
            );
            let sent = &plan.packets()[..report.sent];
            far.wait_for(
                oracle::due(sent, |p| p.outcome(&expect)),
                Duration::from_secs(1),
            );
            stop.store(true, Ordering::Release);
            (sent.len(), consumer.join().unwrap())
        });
        let sent = &plan.packets()[..sent];
        let due = oracle::due(sent, |p| p.outcome(&expect));
        let observed = oracle::observe(far, &rules, &[0, SECOND], sent.len(), due);
        let summary = oracle::check(sent, |p| p.outcome(&expect), expect, &observed)
            .unwrap_or_else(|diff| panic!("{mode:?}, {}:\n{diff}", plan.summary()));
        eprintln!(
            "{mode:?}: {}; {handled} handled, {} arrived, {} blocked",
            plan.summary(),
            summary.arrived,
            summary.blocked
        );
    });
}

#[test]
fn oracle_deferred_verdicts_in_a_shuffled_order() {
    core_oracle(Mode::Deferred, 1000);
}

#[test]
fn oracle_verdicts_by_id_in_reverse_order() {
    core_oracle(Mode::ReverseById, 1001);
}

#[test]
fn oracle_verdict_batches() {
    core_oracle(Mode::Batch, 1002);
}

/// One rebind scenario: packet A received and kept, the queue unbound and
/// bound again, packet B received with the same id; then `late` acts on A,
/// and B gets its handler's verdict. B's fate must be B's handler's choice,
/// whatever happened to A (which the kernel dropped at the unbind).
fn rebind(a_fate: Fate, b_fate: Fate, late: impl FnOnce(Kept, &Queue)) {
    let _ns = enter_new_netns();
    let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    let dest = receiver.local_addr().unwrap();
    let rules = Rules::install(dest, &["--queue-num", "0"]);
    let far = FarEnd::start(receiver);
    let sender = Sender::new(1, dest);
    let judge = Judge::new();
    let a = Planned {
        flow: 0,
        seq: 0,
        fate: a_fate,
        fault: oracle::Fault::None,
    };
    let b = Planned {
        seq: 1,
        fate: b_fate,
        ..a
    };
    let mut queue = bound_queue(0);

    sender.send_one(&a);
    let packet = next_packet(&mut queue);
    let a_id = packet.id();
    let a_decision = judge.decide(packet.queue(), packet.id(), packet.payload());
    let kept = Kept {
        key: packet.key(),
        owned: Some(packet.into_owned()),
        verdict: oracle_verdict(a_decision),
    };
    queue.unbind(0).unwrap();
    queue.bind(0, &QueueConfig::default()).unwrap();
    sender.send_one(&b);
    let packet = next_packet(&mut queue);
    assert_eq!(
        packet.id(),
        a_id,
        "precondition: ids restart when the queue is bound again"
    );
    let b_decision = judge.decide(packet.queue(), packet.id(), packet.payload());
    let b_packet = packet.into_owned();

    late(kept, &queue);
    // B's own verdict, as its handler chose.
    let b_result = b_packet.verdict(&oracle_verdict(b_decision));
    // A verdict the kernel refused shows in the receive stream.
    let reported = format!("{:?}", queue.recv_timeout(Duration::from_millis(100)));

    let expect = Expectation::default();
    // A was dropped by the kernel at the unbind; B gets what its handler chose.
    let outcome = |p: &Planned| {
        if p.seq == 0 {
            Outcome::Blocked
        } else {
            p.outcome(&expect)
        }
    };
    let sent = [a, b];
    let observed = oracle::observe(far, &rules, &[0], 2, oracle::due(&sent, outcome));
    let mut problems = Vec::new();
    if let Err(diff) = oracle::check(&sent, outcome, expect, &observed) {
        problems.push(diff);
    }
    if let Err(e) = b_result {
        problems.push(format!("B's own verdict failed: {e}"));
    }
    if reported != "Ok(None)" {
        problems.push(format!(
            "after B's verdict the socket reported {reported} (B's verdict found no packet: \
             A's settled it)"
        ));
    }
    let stats = queue.stats();
    if stats.rejected_verdicts != 0 {
        problems.push(format!(
            "{} verdicts rejected: {stats:?}",
            stats.rejected_verdicts
        ));
    }
    counters::assert_queue_drained(0);
    assert!(
        problems.is_empty(),
        "A ({a}) kept across unbind/bind, B ({b}) received with its id {a_id}:\n{}",
        problems.join("\n")
    );
}

/// Packet A as kept across the rebind: its holder, its key for a verdict by
/// id, and the verdict its handler chose.
struct Kept {
    owned: Option<OwnedPacket>,
    key: Key,
    verdict: Verdict<'static>,
}

/// Issue 18, item 1: an `OwnedPacket` from before the unbind, answered late
/// (accept), must not settle B, whose handler drops it. Fails today: B
/// arrives, and B's own drop is rejected (ENOENT).
#[test]
fn rebind_a_late_owned_packet_verdict_does_not_settle_the_new_packet() {
    rebind(Fate::Accept, Fate::Drop, |kept, _| {
        // Refused or ignored: either way it must not reach B.
        let _ = kept.owned.unwrap().verdict(&kept.verdict);
    });
}

/// Issue 18, item 1: a `PendingVerdict` from before the unbind, dropped
/// without a verdict (so given the unanswered verdict, drop), must not settle
/// B, whose handler accepts it with a mark. Fails today: B is dropped.
#[test]
fn rebind_a_dropped_pending_verdict_does_not_settle_the_new_packet() {
    rebind(Fate::Accept, Fate::Mark(oracle::MARKS[2]), |kept, _| {
        let pending: PendingVerdict = kept.owned.unwrap().into_pending();
        drop(pending);
    });
}

/// Issue 18, item 1: a verdict by id (through a `VerdictHandle`) for a packet
/// of the earlier binding must not settle B. Fails today.
#[test]
fn rebind_a_late_verdict_by_id_does_not_settle_the_new_packet() {
    rebind(Fate::Accept, Fate::Drop, |kept, queue| {
        // The holder gives up its right; the verdict goes by id, late.
        kept.owned.unwrap().into_pending().forget();
        let _ = queue.verdict_handle().verdict(kept.key, &kept.verdict);
    });
}

/// A rebind with many packets deferred: the first 20 of every flow are kept
/// (owned or pending), the queue is unbound and bound again, the rest arrive
/// (their ids start again at 1) and are kept too; then all are answered in a
/// shuffled order, old and new mixed. The old ones were dropped by the kernel
/// at the unbind; each new one must meet exactly its own handler's choice.
/// Fails today (issue 18, item 1): the late verdicts land on new packets.
#[test]
fn oracle_rebind_with_deferred_packets_outstanding() {
    let _ns = enter_new_netns();
    let plan = Plan::new(1003, 4, 60, &Mix::standard());
    let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    let dest = receiver.local_addr().unwrap();
    let rules = Rules::install(dest, &["--queue-num", "0"]);
    let far = FarEnd::start(receiver);
    let sender = Sender::new(plan.flows(), dest);
    let judge = Judge::new();
    let mut queue = bound_queue(0);
    let mut rng = Rng::new(1003);
    let mut kept: Vec<(Held, Verdict<'static>)> = Vec::new();
    let (old, new): (Vec<Planned>, Vec<Planned>) = plan.packets().iter().partition(|p| p.seq < 20);
    let mut take = |queue: &mut Queue, packets: &[Planned], kept: &mut Vec<_>| {
        for p in packets {
            sender.send_one(p);
            let packet = next_packet(queue);
            let decision = judge.decide(packet.queue(), packet.id(), packet.payload());
            let held = if rng.below(2) == 0 {
                Held::Owned(packet.into_owned())
            } else {
                Held::Pending(packet.defer())
            };
            kept.push((held, oracle_verdict(decision)));
        }
    };
    take(&mut queue, &old, &mut kept);
    queue.unbind(0).unwrap();
    queue.bind(0, &QueueConfig::default()).unwrap();
    take(&mut queue, &new, &mut kept);
    rng.shuffle(&mut kept);
    for (held, verdict) in kept {
        // A late verdict may be refused; a new packet's must go through.
        let _ = match held {
            Held::Owned(p) => p.verdict(&verdict),
            Held::Pending(p) => p.verdict(&verdict),
        };
    }
    let expect = Expectation::default();
    let outcome = |p: &Planned| {
        if p.seq < 20 {
            Outcome::Blocked
        } else {
            p.outcome(&expect)
        }
    };
    let sent = plan.packets();
    let observed = oracle::observe(far, &rules, &[0], sent.len(), oracle::due(sent, outcome));
    if let Err(diff) = oracle::check(sent, outcome, expect, &observed) {
        panic!(
            "{} packets kept across unbind/bind, then {} more; all answered late:\n{diff}",
            old.len(),
            new.len()
        );
    }
}
