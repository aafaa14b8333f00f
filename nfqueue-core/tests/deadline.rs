//! Verdict deadlines against the kernel: a packet held past its queue's
//! deadline gets the deadline verdict within a bound, the far end sees it,
//! later packets keep flowing, and the verdict its holder gives later is
//! refused and never sent.

mod common;

use common::*;
use nfqueue_core::{Error, QueueConfig, VerdictKind};
use nfqueue_testkit::counters;
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_millis(200);
/// How late after its deadline a packet may get its deadline verdict on a
/// loaded 2-core machine (the watcher wakes at the deadline; a thread
/// wake-up and a send follow).
const SLACK: Duration = Duration::from_millis(100);

#[test]
fn a_held_packet_gets_the_deadline_verdict_and_a_late_verdict_is_refused() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 40);
    let config = QueueConfig::default()
        .deadline(DEADLINE)
        .deadline_verdict(VerdictKind::Accept);
    let mut queue = bound_queue_with(40, &config);
    let sent = Instant::now();
    udp.sender.send_to(b"held", udp.dest()).unwrap();
    let held = next_packet(&mut queue).into_owned();
    // Nobody answers it: the deadline accepts it.
    assert_eq!(recv_datagram(&udp.receiver), b"held");
    let took = sent.elapsed();
    assert!(
        took >= DEADLINE && took < DEADLINE + SLACK,
        "the deadline verdict came after {took:?}"
    );
    // Its holder answers late: refused, and nothing is sent.
    match held.drop() {
        Err(Error::DeadlinePassed {
            queue: 40,
            packet_id,
        }) => assert_eq!(packet_id, 1),
        other => panic!("expected DeadlinePassed, got {other:?}"),
    }
    // Later packets flow, answered in time.
    for data in [&b"one"[..], b"two"] {
        udp.sender.send_to(data, udp.dest()).unwrap();
        next_packet(&mut queue).accept().unwrap();
        assert_eq!(recv_datagram(&udp.receiver), data);
    }
    let stats = queue.stats();
    assert_eq!(
        (stats.deadline_verdicts, stats.late_verdicts),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!(
        stats.rejected_verdicts, 0,
        "nothing was refused by the kernel"
    );
    counters::assert_queue_drained(40);
}

#[test]
fn deadlines_drop_by_default_and_holders_dropped_late_send_nothing() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 41);
    let mut queue = bound_queue_with(
        41,
        &QueueConfig::default()
            .deadline(DEADLINE)
            .unanswered(VerdictKind::Accept),
    );
    nfqueue_testkit::traffic::send_numbered_udp(&udp.sender, udp.dest(), 3, 16);
    let first = next_packet(&mut queue).defer();
    let second = next_packet(&mut queue).into_owned();
    next_packet(&mut queue).accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver).len(), 16, "the third passes");
    std::thread::sleep(DEADLINE + SLACK);
    // Both got the deadline's drop; dropping their holders now (which
    // would send the unanswered accept) sends nothing.
    drop(first);
    drop(second);
    assert_no_datagram(&udp.receiver);
    let stats = queue.stats();
    assert_eq!(
        (stats.deadline_verdicts, stats.late_verdicts),
        (2, 2),
        "{stats:?}"
    );
    assert_eq!(stats.unanswered_verdicts, 0);
    counters::assert_queue_drained(41);
}

#[test]
fn a_deadline_changed_by_configure_applies_to_later_packets_and_can_be_removed() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 42);
    let mut queue = bound_queue_with(42, &QueueConfig::default().deadline(DEADLINE));
    queue.configure(42, &QueueConfig::default()).unwrap();
    udp.sender.send_to(b"no deadline", udp.dest()).unwrap();
    let held = next_packet(&mut queue).defer();
    std::thread::sleep(DEADLINE + SLACK);
    held.accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"no deadline");
    assert!(matches!(
        queue.configure(42, &QueueConfig::default().deadline(Duration::ZERO)),
        Err(Error::OutOfRange { .. })
    ));
    counters::assert_queue_drained(42);
}
