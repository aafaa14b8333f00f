//! A verdict belongs to the binding its packet came through: after an unbind
//! and a bind of the same queue number, packet ids start again at 1, and a
//! late verdict for an old packet must not settle the new packet of the same
//! id. Each test checks the far end: what a receiving socket gets.

mod common;

use common::*;
use nfqueue_core::{Error, Queue, QueueConfig, Verdict, VerdictBatch, VerdictKind};
use nfqueue_testkit::counters;
use std::time::Duration;

/// Queue 0 with a deferred packet "old" (id 1) from before an unbind and a
/// bind, and the new binding's first packet "new" (id 1 too), received.
struct Rebound {
    queue: Queue,
    udp: nfqueue_testkit::traffic::UdpPair,
}

fn rebound() -> Rebound {
    let udp = udp_through_queue(false, 0);
    let queue = bound_queue(0);
    Rebound { queue, udp }
}

impl Rebound {
    /// Unbinds and binds queue 0 again, then sends "new".
    fn rebind_and_send_new(&mut self) {
        self.queue.unbind(0).unwrap();
        self.queue.bind(0, &QueueConfig::default()).unwrap();
        self.udp.sender.send_to(b"new", self.udp.dest()).unwrap();
    }
}

#[test]
fn a_late_verdict_after_a_rebind_does_not_settle_the_new_packet_of_the_same_id() {
    let _ns = enter_new_netns();
    let mut r = rebound();
    r.udp.sender.send_to(b"old", r.udp.dest()).unwrap();
    let old = next_packet(&mut r.queue).defer();
    assert_eq!(old.id(), 1);
    r.rebind_and_send_new();
    let new = next_packet(&mut r.queue).defer();
    assert_eq!(new.id(), 1, "ids start again at 1");

    match old.accept() {
        Err(Error::StaleBinding {
            queue: 0,
            packet_id: 1,
        }) => {}
        other => panic!("expected StaleBinding, got {other:?}"),
    }
    // The new packet's own verdict is the one that counts.
    new.drop().unwrap();
    assert_no_datagram(&r.udp.receiver);
    let stats = r.queue.stats();
    assert_eq!(stats.stale_verdicts, 1);
    assert_eq!(
        stats.rejected_verdicts, 0,
        "nothing was sent for the old one"
    );
    assert_no_packet(&mut r.queue);
    counters::assert_queue_drained(0);
}

#[test]
fn an_old_packet_dropped_without_a_verdict_after_a_rebind_sends_nothing() {
    let _ns = enter_new_netns();
    let mut r = rebound();
    r.udp.sender.send_to(b"old", r.udp.dest()).unwrap();
    // Bound to accept forgotten packets: a dropped holder would send accept.
    r.queue
        .configure(0, &QueueConfig::default().unanswered(VerdictKind::Accept))
        .unwrap();
    let old = next_packet(&mut r.queue).into_owned();
    r.rebind_and_send_new();
    let new = next_packet(&mut r.queue).defer();
    assert_eq!((old.id(), new.id()), (1, 1));
    drop(old);
    // "new" still waits for its own verdict: give it a drop.
    assert_eq!(counters::queue_line(0).map(|line| line.waiting), Some(1));
    new.drop().unwrap();
    assert_no_datagram(&r.udp.receiver);
    assert_eq!(r.queue.stats().stale_verdicts, 1);
    counters::assert_queue_drained(0);
}

#[test]
fn verdicts_by_key_and_in_batches_are_refused_for_an_old_binding() {
    let _ns = enter_new_netns();
    let mut r = rebound();
    r.udp.sender.send_to(b"old", r.udp.dest()).unwrap();
    let old = next_packet(&mut r.queue).detach().key();
    r.rebind_and_send_new();
    let new = next_packet(&mut r.queue).detach().key();
    assert_eq!((old.id(), new.id()), (1, 1));
    assert_ne!(old, new);
    let handle = r.queue.verdict_handle();
    assert!(matches!(
        handle.verdict(old, &Verdict::accept()),
        Err(Error::StaleBinding { .. })
    ));
    assert!(matches!(
        handle.batch_verdict(old, VerdictKind::Accept, None),
        Err(Error::StaleBinding { .. })
    ));
    // In a batch, the old binding's message is refused and the rest goes.
    let mut batch = VerdictBatch::new();
    batch.push(old, Verdict::accept()).unwrap();
    batch.push(new, Verdict::drop()).unwrap();
    assert!(matches!(
        handle.send_all(&mut batch),
        Err(Error::StaleBinding { .. })
    ));
    assert!(batch.is_empty());
    assert_no_datagram(&r.udp.receiver);
    assert_eq!(r.queue.stats().stale_verdicts, 3);
    counters::assert_queue_drained(0);
}

#[test]
fn packets_read_but_not_handed_out_at_an_unbind_are_not_handed_out_after_a_bind() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 0);
    let other = udp_through_queue(false, 1);
    let mut queue = bound_queue(0);
    // Three packets wait in the socket; binding queue 1 reads them while it
    // waits for the kernel's answer, and keeps them for later receives.
    for data in [&b"a"[..], b"b", b"c"] {
        udp.sender.send_to(data, udp.dest()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    queue.bind(1, &QueueConfig::default()).unwrap();
    assert!(queue.has_buffered());
    queue.unbind(0).unwrap();
    assert!(
        !queue.has_buffered(),
        "the kept packets of queue 0 are gone"
    );
    queue.bind(0, &QueueConfig::default()).unwrap();
    udp.sender.send_to(b"new", udp.dest()).unwrap();
    other.sender.send_to(b"other", other.dest()).unwrap();
    let mut got = Vec::new();
    for _ in 0..2 {
        let packet = next_packet(&mut queue);
        got.push((packet.queue(), udp_data(packet.payload()).to_vec()));
        packet.accept().unwrap();
    }
    got.sort();
    assert_eq!(got, [(0, b"new".to_vec()), (1, b"other".to_vec())]);
    assert_eq!(recv_datagram(&udp.receiver), b"new");
    assert_eq!(queue.stats().stale_packets, 3);
    counters::assert_queue_drained(0);
    counters::assert_queue_drained(1);
}

#[test]
fn a_failed_configure_changes_nothing_not_even_the_unanswered_verdict() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 0);
    let mut queue = bound_queue_with(0, &QueueConfig::default().max_len(8));
    let bad = QueueConfig::default()
        .unanswered(VerdictKind::Accept)
        .copy_mode(nfqueue_core::CopyMode::Packet(70_000));
    assert!(matches!(
        queue.configure(0, &bad),
        Err(Error::OutOfRange { .. })
    ));
    assert_eq!(queue.unanswered_verdict(0), Some(VerdictKind::Drop));
    udp.sender.send_to(b"forgotten", udp.dest()).unwrap();
    drop(next_packet(&mut queue));
    assert_no_datagram(&udp.receiver);
    counters::assert_queue_drained(0);
}

#[test]
fn configure_applies_every_field_defaults_included() {
    let _ns = enter_new_netns();
    let _udp = udp_through_queue(false, 0);
    let mut queue = bound_queue_with(
        0,
        &QueueConfig::default()
            .max_len(8)
            .copy_mode(nfqueue_core::CopyMode::Packet(100)),
    );
    assert_eq!(
        counters::queue_line(0).map(|l| (l.copy_mode, l.copy_range)),
        Some((2, 100))
    );
    queue.configure(0, &QueueConfig::default()).unwrap();
    assert_eq!(
        counters::queue_line(0).map(|l| (l.copy_mode, l.copy_range)),
        Some((2, nfqueue_core::MAX_COPY_RANGE))
    );
    // The length is not in the /proc line: 9 packets fit a queue of 1024, not 8.
    let udp = _udp;
    for n in 0..9u8 {
        udp.sender.send_to(&[n], udp.dest()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        counters::queue_line(0).map(|l| (l.waiting, l.queue_dropped)),
        Some((9, 0))
    );
    let mut delivered = 0;
    queue
        .recv_burst(100, |packet| {
            delivered += 1;
            packet.accept().unwrap();
        })
        .unwrap();
    assert_eq!(delivered, 9);
    counters::assert_queue_drained(0);
}

#[test]
fn settings_that_would_lose_every_packet_are_refused_before_binding() {
    let _ns = enter_new_netns();
    let mut queue = Queue::open().unwrap();
    let none = QueueConfig::default().copy_mode(nfqueue_core::CopyMode::None);
    assert!(matches!(
        queue.bind(0, &none),
        Err(Error::InvalidArgument(why)) if why.contains("CopyMode::Meta")
    ));
    match queue.bind(0, &QueueConfig::default().max_len(0)) {
        Err(
            err @ Error::OutOfRange {
                name: "max_len", ..
            },
        ) => assert!(err.to_string().contains("from 1 to"), "{err}"),
        other => panic!("expected OutOfRange, got {other:?}"),
    }
    assert!(queue.bound_queues().is_empty());
    assert_eq!(counters::queue_line(0), None);
    assert!(matches!(
        queue.recv_burst(0, |_| {}),
        Err(Error::OutOfRange {
            name: "recv_burst max",
            ..
        })
    ));
}
