//! Packet messages the library cannot parse, against the real kernel: a shim
//! damages chosen packet messages as they are received (testkit's
//! `fault::corrupt_packets`), as a parser bug or a new kernel attribute would
//! make them unreadable. A packet whose id can still be read is dropped at
//! once; one whose id cannot is counted and never settled by a batch verdict
//! meant for others. Either way the far end sees exactly the packets that
//! were read and accepted.

mod common;

use common::{balance_udp, wait_for_verdicts};
use nfqueue::{Dispatcher, PacketView, Verdict};
use nfqueue_testkit::fault::{self, FaultPlan};
use nfqueue_testkit::{counters, traffic, Netns};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const PACKETS: u64 = 200;
const EVERY: u64 = 5;

/// Sends `PACKETS` numbered datagrams through queue 0 of a dispatcher that
/// accepts everything (verdicts coalesced into batch verdicts); returns the
/// sequence numbers that arrived, the packets still waiting in the kernel
/// once every readable one had its verdict, and the dispatcher's counters.
fn accept_all_through_damage() -> (BTreeSet<u64>, u32, nfqueue::DispatchStats) {
    let ns = Netns::new();
    ns.enter();
    let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    let dest = receiver.local_addr().unwrap();
    balance_udp(dest, 0, 0);
    let dispatcher = Dispatcher::builder()
        .queue(0)
        .workers(1)
        .build(|_: &PacketView<'_>| Verdict::accept())
        .unwrap();
    let sender = traffic::udp_sender("127.0.0.1".parse().unwrap());
    traffic::send_numbered_udp(&sender, dest, PACKETS, 32);
    wait_for_verdicts(&dispatcher, PACKETS - PACKETS / EVERY);
    let mut arrived = BTreeSet::new();
    for datagram in traffic::recv_all_until_idle(&receiver, Duration::from_millis(300), 1000) {
        arrived.insert(traffic::seq_of(&datagram).unwrap());
    }
    let waiting = counters::queue_line(0).map_or(0, |l| l.waiting);
    let stats = dispatcher.stop_and_join().unwrap();
    // The queue is gone, and with it whatever waited in it.
    counters::assert_queue_unbound(0);
    (arrived, waiting, stats)
}

/// The sequence numbers of the packets that were not damaged.
fn undamaged() -> BTreeSet<u64> {
    (0..PACKETS).filter(|n| (n + 1) % EVERY != 0).collect()
}

#[test]
fn a_packet_that_cannot_be_parsed_is_dropped_by_its_id() {
    fault::isolated(
        "a_packet_that_cannot_be_parsed_is_dropped_by_its_id",
        &FaultPlan::none().corrupt_packets(EVERY),
        || {
            let (arrived, waiting, stats) = accept_all_through_damage();
            assert_eq!(fault::corrupted(), PACKETS / EVERY);
            assert_eq!(arrived, undamaged(), "exactly the readable ones: {stats:?}");
            assert_eq!(
                waiting, 0,
                "the unreadable ones were dropped, not left waiting"
            );
            assert_eq!(stats.receive_errors, PACKETS / EVERY, "{stats:?}");
            assert!(
                stats.batch_messages > 0,
                "batch verdicts went on: {stats:?}"
            );
        },
    );
}

#[test]
fn a_packet_whose_id_cannot_be_read_is_never_settled_by_a_batch_verdict() {
    fault::isolated(
        "a_packet_whose_id_cannot_be_read_is_never_settled_by_a_batch_verdict",
        &FaultPlan::none().corrupt_packets(EVERY).without_ids(),
        || {
            let start = Instant::now();
            let (arrived, waiting, stats) = accept_all_through_damage();
            assert_eq!(fault::corrupted(), PACKETS / EVERY);
            assert_eq!(
                arrived,
                undamaged(),
                "none of the unreadable ones: {stats:?}"
            );
            assert_eq!(
                u64::from(waiting),
                PACKETS / EVERY,
                "they waited in the kernel until the queue was unbound: {stats:?}"
            );
            assert!(start.elapsed() < Duration::from_secs(30));
        },
    );
}
