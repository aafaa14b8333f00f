//! The dispatcher under the verdict oracle, against the real kernel: every
//! handler decides from the packet's content (accept, drop, a mark, repeat,
//! queue-to), and the far end checks that exactly the packets meant to pass
//! arrived, once each, each with its mark, each flow in order under flow
//! affinity, with nothing left waiting. Over workers 0, 1 and 3, flow affinity
//! on and off, 1 to 3 queues and 1, 8 or the default packets in flight; then
//! under faults: handlers that panic, sleep, or never return for one flow, and
//! a stop in the middle of a flood.

mod common;

use common::oracle_run::{brief, outcome_from_records, Setup};
use nfqueue_testkit::oracle::{self, Fault, Mix, Outcome, Plan, Planned};
use nfqueue_testkit::{skip, Netns};
use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

const FLOWS: u16 = 6;
const PER_FLOW: u32 = 80;

/// Runs each setup in a namespace of its own and fails with every mismatch.
fn run_matrix(seed: u64, setups: &[Setup]) {
    oracle::quiet_planned_panics();
    let mut failures = Vec::new();
    for (n, setup) in setups.iter().enumerate() {
        let plan = Plan::new(seed + n as u64, FLOWS, PER_FLOW, &setup.mix());
        let started = Instant::now();
        let result = Netns::new().run(|| setup.start(plan).finish_all());
        match result {
            Ok(line) => eprintln!("ok in {:?}: {line}", started.elapsed()),
            Err(diff) => failures.push(diff),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

#[test]
fn oracle_inline_handlers() {
    run_matrix(
        100,
        &[
            Setup::new(0, false, 1, None).requeue(),
            Setup::new(0, true, 3, Some(1)),
            Setup::new(0, false, 2, Some(8)).requeue(),
        ],
    );
}

#[test]
fn oracle_one_worker() {
    run_matrix(
        200,
        &[
            Setup::new(1, false, 2, Some(8)),
            Setup::new(1, true, 1, Some(1)).requeue(),
            Setup::new(1, true, 3, None),
        ],
    );
}

#[test]
fn oracle_three_workers() {
    run_matrix(
        300,
        &[
            Setup::new(3, false, 3, None).requeue(),
            Setup::new(3, true, 2, None),
            Setup::new(3, true, 1, Some(8)).requeue(),
            Setup::new(3, false, 1, Some(1)),
            Setup::new(3, true, 2, Some(1)),
        ],
    );
}

/// A content-chosen share of the handlers panic: exactly those packets get
/// the `on_panic` verdict (drop by default, accept when asked), every other
/// packet its handler's choice.
#[test]
fn oracle_handler_panics_get_the_on_panic_verdict() {
    oracle::quiet_planned_panics();
    let panics = |p: &Planned| {
        let requeued = matches!(p.fate, oracle::Fate::Requeue { .. });
        if !requeued && (u32::from(p.flow) * 13 + p.seq) % 7 == 3 {
            Fault::Panic
        } else {
            Fault::None
        }
    };
    let mut failures = Vec::new();
    let accepting = Setup {
        on_panic_accepts: true,
        ..Setup::new(0, false, 1, None)
    };
    for (n, setup) in [Setup::new(3, true, 2, None).requeue(), accepting]
        .into_iter()
        .enumerate()
    {
        let plan = Plan::new(400 + n as u64, FLOWS, PER_FLOW, &setup.mix()).with_faults(panics);
        match Netns::new().run(|| setup.start(plan).finish_all()) {
            Ok(line) => eprintln!("ok: {line}"),
            Err(diff) => failures.push(diff),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// Slow handlers (1 to 3 ms for two of the flows) change nothing at the far
/// end: every packet its handler's choice, in order under flow affinity.
#[test]
fn oracle_slow_handlers() {
    let slow = |p: &Planned| match p.flow {
        0 => Fault::Sleep(1 + (p.seq % 3) as u8),
        3 => Fault::Sleep(1),
        _ => Fault::None,
    };
    let mut failures = Vec::new();
    for (n, setup) in [
        Setup::new(3, true, 2, None).requeue(),
        Setup::new(1, false, 1, Some(8)),
    ]
    .into_iter()
    .enumerate()
    {
        let plan = Plan::new(500 + n as u64, FLOWS, 40, &setup.mix()).with_faults(slow);
        match Netns::new().run(|| setup.start(plan).finish_all()) {
            Ok(line) => eprintln!("ok: {line}"),
            Err(diff) => failures.push(diff),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// One handler never returns (for one packet of flow 0) until released. The
/// flows that do not share its worker keep passing, every packet of them, while
/// far fewer than `max_in_flight` packets wait; once released, everything
/// arrives as planned, in order under flow affinity.
///
/// Fails today under flow affinity (issue 18, item 5): each burst leaves a
/// batch in the stuck worker's channel, the queue's fixed pool of
/// `2 x workers + 2` batches runs dry, and the whole queue stops reading.
fn stuck_handler(affinity: bool, seed: u64) -> Result<String, String> {
    const STUCK_SEQ: u32 = 5;
    let setup = Setup::new(3, affinity, 1, None);
    let flows = 12u16;
    let mut plan = Plan::new(seed, flows, 30, &Mix::standard());
    let stuck_at = plan
        .packets()
        .iter()
        .position(|p| p.flow == 0 && p.seq == STUCK_SEQ)
        .unwrap();
    plan.packets_mut()[stuck_at].fault = Fault::Stuck;
    plan.packets_mut()[stuck_at].fate = oracle::Fate::Mark(oracle::MARKS[0]);
    let packets = plan.packets().to_vec();
    let mut run = setup.start(plan);
    let expect = run.expect;
    // The packets behind the stuck one wait for a decision: far fewer than
    // max_in_flight, more than the pacer's usual window.
    run.pacer = oracle::Pacer::new(&run.far, Some(&run.judge), expect).with_window(400);

    // Warm-up: every flow's first packets.
    let warm: Vec<Planned> = packets[..stuck_at]
        .iter()
        .copied()
        .filter(|p| p.seq < STUCK_SEQ)
        .collect();
    let report = run.send(&warm);
    let warm_due = oracle::due(&warm, |p| p.outcome(&expect));
    if report.stalled || !run.far.wait_for(warm_due, Duration::from_secs(2)) {
        return Err(format!("{setup:?}: the warm-up did not pass"));
    }
    // What the stuck handler may hold back: with flow affinity, its own flow
    // (whose later packets wait behind it); without, nothing else, as it was
    // handed out alone.
    let co_located: BTreeSet<u16> = if affinity {
        BTreeSet::from([0])
    } else {
        BTreeSet::new()
    };

    // The stuck packet, alone, so that nothing else shares its batch.
    run.sender.send_one(&packets[stuck_at]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while run.judge.stuck() == 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(2));
    }
    if run.judge.stuck() == 0 {
        return Err(format!(
            "{setup:?}: the stuck packet never reached a handler"
        ));
    }
    // The rest, while it is stuck, arriving over time as traffic does.
    run.pacer = oracle::Pacer::new(&run.far, Some(&run.judge), expect)
        .with_window(400)
        .with_gap(Duration::from_micros(300));
    let rest: Vec<Planned> = packets
        .iter()
        .copied()
        .filter(|p| p.seq >= STUCK_SEQ && !(p.flow == 0 && p.seq == STUCK_SEQ))
        .collect();
    let report = run.send(&rest);
    let rest_sent = &rest[..report.sent];
    let free = |p: &&Planned| !co_located.contains(&p.flow);
    let free_packets: Vec<Planned> = warm.iter().chain(rest_sent).filter(free).copied().collect();
    let free_due = oracle::due(&free_packets, |p| p.outcome(&expect));
    let held = rest_sent.len() - rest_sent.iter().filter(free).count();
    run.far
        .wait_for(warm_due + free_due, Duration::from_secs(1));
    let arrived: BTreeSet<(u16, u32)> =
        run.far.snapshot().iter().map(|a| (a.flow, a.seq)).collect();
    let missing: Vec<String> = free_packets
        .iter()
        .filter(|p| matches!(p.outcome(&expect), Outcome::Pass { .. }))
        .filter(|p| !arrived.contains(&(p.flow, p.seq)))
        .map(|p| p.to_string())
        .collect();
    let stats = run.dispatcher.stats();
    let mut problems = Vec::new();
    if report.stalled {
        problems.push(format!(
            "the sender stalled after {} of {} packets while flow 0 was stuck",
            report.sent,
            rest.len()
        ));
    }
    if !missing.is_empty() {
        problems.push(format!(
            "while one handler was stuck ({} packets behind it, max_in_flight {}), {} packets \
             of flows {:?} (not the stuck one) did not pass: {}{}",
            held,
            nfqueue::DEFAULT_MAX_IN_FLIGHT,
            missing.len(),
            (0..flows)
                .filter(|f| !co_located.contains(f))
                .collect::<Vec<_>>(),
            missing
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if missing.len() > 10 { ", ..." } else { "" }
        ));
        problems.push(format!("dispatcher while stuck: {}", brief(stats)));
    }

    // Released: everything arrives as planned.
    run.judge.release();
    // The plan's order differs from the sending order here; check all sent.
    let mut sent_packets: Vec<Planned> = warm.clone();
    sent_packets.push(packets[stuck_at]);
    sent_packets.extend_from_slice(rest_sent);
    let common::oracle_run::Run {
        dispatcher,
        rules,
        far,
        ..
    } = run;
    let due = oracle::due(&sent_packets, |p| p.outcome(&expect));
    let observed = oracle::observe(far, &rules, &setup.queue_nums(), sent_packets.len(), due);
    let joined = dispatcher.stop_and_join();
    if let Err(diff) = oracle::check(&sent_packets, |p| p.outcome(&expect), expect, &observed) {
        problems.push(format!("after the release: {diff}"));
    }
    if let Err(e) = &joined {
        problems.push(format!("join failed: {e}"));
    }
    let head = format!(
        "{setup:?} (flows sharing the stuck worker: {co_located:?}): {}",
        joined.map(brief).unwrap_or_default()
    );
    if problems.is_empty() {
        Ok(head)
    } else {
        Err(format!("{head}\n{}", problems.join("\n")))
    }
}

#[test]
fn oracle_stuck_handler_holds_back_only_its_own_flow() {
    let mut failures = Vec::new();
    for (affinity, seed) in [(false, 600), (true, 601)] {
        match Netns::new().run(|| stuck_handler(affinity, seed)) {
            Ok(line) => eprintln!("ok: {line}"),
            Err(diff) => failures.push(diff),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}

/// A stop in the middle of a flood: `join` returns within 2 s, every packet read
/// got a verdict and nothing waits; what arrived is exactly what the handlers
/// chose to let through (each with its mark), so a packet read but not handled
/// got the unanswered verdict (drop) and nothing else passed.
#[test]
fn oracle_stop_in_the_middle_of_a_flood() {
    let ns = Netns::new();
    ns.enter();
    let setup = Setup::new(3, false, 2, None);
    let plan = Plan::new(700, 8, 150, &Mix::standard());
    let packets = plan.packets().to_vec();
    let half = packets.len() / 2;
    let mut run = setup.start(plan);
    let report = run.send(&packets[..half]);
    assert!(!report.stalled, "the first half was not taken");
    let stop = run.dispatcher.stop_handle();
    let common::oracle_run::Run {
        dispatcher,
        judge,
        rules,
        far,
        sender,
        expect,
        ..
    } = run;
    let joiner = thread::spawn(move || {
        let started = Instant::now();
        let joined = dispatcher.join();
        (joined, started.elapsed())
    });
    // The flood goes on, unpaced, through the stop and after it.
    let flood_started = Instant::now();
    for (n, p) in packets[half..].iter().enumerate() {
        if n == 20 {
            stop.stop();
        }
        sender.send_one(p);
    }
    let (joined, took) = joiner.join().unwrap();
    let flood_took = flood_started.elapsed();
    let stats = joined.unwrap_or_else(|e| panic!("join failed after a stop: {e}"));
    assert!(
        took < Duration::from_secs(2) + flood_took,
        "join took {took:?}"
    );
    for q in setup.queue_nums() {
        nfqueue_testkit::counters::assert_queue_unbound(q);
    }
    let outcome = outcome_from_records(&judge, false);
    let due = oracle::due(&packets, &outcome);
    let observed = oracle::observe(far, &rules, &setup.queue_nums(), packets.len(), due);
    let handled = judge.records().len() as u64;
    eprintln!(
        "{handled} handled of {} sent; {}",
        packets.len(),
        brief(stats)
    );
    // Every arrival was a packet its handler chose to let through, and every
    // one of those arrived: read ones unanswered got the drop.
    if let Err(diff) = oracle::check(&packets, &outcome, expect, &observed) {
        panic!("{} packets sent\n{diff}", packets.len());
    }
    // And the handlers chose as the plan says.
    for r in judge.records() {
        assert_eq!(
            r.decision,
            Some(r.packet.decision(r.queue, &[])),
            "{}",
            r.packet
        );
    }
    assert_eq!(
        stats.packets,
        handled + stats.shutdown_unanswered,
        "every packet read was handled or got the unanswered verdict: {}",
        brief(stats)
    );
    assert!(handled < packets.len() as u64, "the stop came mid-flood");
}

/// Payload verdicts (a rewritten datagram) arrive rewritten, never as the
/// original, mixed with every other fate. The kernel of this machine drops a
/// packet whose verdict carries a payload when it comes from a user namespace.
#[test]
fn oracle_payload_verdicts_arrive_replaced() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    let mut failures = Vec::new();
    for (n, base) in [
        Setup::new(3, true, 2, None),
        Setup::new(0, false, 1, Some(8)),
    ]
    .into_iter()
    .enumerate()
    {
        let plan = Plan::new(800 + n as u64, FLOWS, 60, &base.mix().replace(15));
        match Netns::new().run(|| base.start(plan).finish_all()) {
            Ok(line) => eprintln!("ok: {line}"),
            Err(diff) => failures.push(diff),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n\n"));
}
