//! The dispatcher's hot path allocates nothing per packet in steady state: a
//! counting global allocator watches every thread of the process while
//! packets go through two queues, their receive threads and a worker pool
//! (and, in a second dispatcher, handlers on the receive threads), after a
//! warm-up; and while one packet is held by its handler for the whole time,
//! with every other verdict coalesced around it, what it allocates does not
//! grow with the packets that pass meanwhile.

mod common;

use common::{balance_udp, delivered, wait_for_verdicts};
use nfqueue::net::FlowKey;
use nfqueue::{Dispatcher, PacketView, Verdict};
use nfqueue_testkit::{alloc, traffic, Netns};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// Packets per pass: each pass stays well under the kernel's queue length.
const PACKETS: u64 = 600;
/// Most passes of warm-up: buffers grow to their high-water marks.
const WARM_UP: u64 = 20;
/// Passes counted once warm.
const COUNTED: u64 = 3;

/// Sends `PACKETS` datagrams from eight source addresses (so that
/// `--queue-balance` uses both queues) and waits until the dispatcher has
/// answered them all. (What arrives is read from the rule counter at the
/// end: reading it runs iptables, which allocates.)
fn pass(senders: &[UdpSocket], dest: SocketAddr, dispatcher: &Dispatcher, total: &mut u64) {
    let datagram = [0x5a_u8; 48];
    for n in 0..PACKETS as usize {
        senders[n % senders.len()].send_to(&datagram, dest).unwrap();
        // Small steps, so that no socket buffer on the way overflows.
        if n % 100 == 99 {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    *total += PACKETS;
    wait_for_verdicts(dispatcher, *total);
}

/// Allocations in a pass after two passes of warm-up.
fn steady_state_allocations(workers: usize) -> u64 {
    let ns = Netns::new();
    ns.enter();
    let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    let dest = receiver.local_addr().unwrap();
    balance_udp(dest, 0, 1);
    let senders: Vec<UdpSocket> = (0..8u8)
        .map(|n| traffic::udp_sender(std::net::Ipv4Addr::new(127, 0, 0, 2 + n).into()))
        .collect();
    let dispatcher = Dispatcher::builder()
        .queues(0..=1)
        .workers(workers)
        .flow_affinity(FlowKey::Addresses)
        .build(|packet: &PacketView<'_>| {
            // A handler that reads the packet, as real ones do.
            if packet.payload().is_empty() {
                Verdict::drop()
            } else {
                Verdict::accept()
            }
        })
        .unwrap();
    let mut total = 0;
    let counted =
        |total: &mut u64| alloc::on_every_thread(|| pass(&senders, dest, &dispatcher, total));
    // Warm: once a pass allocates nothing, the buffers have grown to fit the
    // traffic. An allocation per packet would never get there.
    let mut warm_up = 0;
    while counted(&mut total) > 0 {
        warm_up += 1;
        assert!(warm_up < WARM_UP, "still allocating after {warm_up} passes");
    }
    let allocations: u64 = (0..COUNTED).map(|_| counted(&mut total)).sum();
    let passes = total / PACKETS;

    let stats = dispatcher.stop_and_join().unwrap();
    assert_eq!(stats.accepted, passes * PACKETS);
    assert_eq!(
        delivered(),
        passes * PACKETS,
        "every packet passed the queue"
    );
    drop(receiver);
    assert!(
        stats.batch_messages > 0,
        "verdicts were coalesced: {stats:?}"
    );
    allocations
}

/// Passes counted while a packet is held: 30,000 packets, far more than the
/// coalescer's window had room for, so a window that kept them would grow
/// to megabytes.
const COUNTED_HELD: u64 = 50;

/// Most bytes the passes behind a held packet may allocate: what buffers
/// that grow once to a backlog (at most a pass) take on a loaded machine
/// (about 600 KB seen), and far less than storage that grows with every
/// packet passing.
const HELD_BYTES_MAX: u64 = 1024 * 1024;

/// Bytes allocated in `COUNTED_HELD` passes while the first packet sent is
/// held by its handler, after a warm-up.
fn bytes_behind_a_held_packet() -> u64 {
    let ns = Netns::new();
    ns.enter();
    let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    let dest = receiver.local_addr().unwrap();
    balance_udp(dest, 0, 0);
    let senders: Vec<UdpSocket> = (0..8u8)
        .map(|n| traffic::udp_sender(std::net::Ipv4Addr::new(127, 0, 0, 2 + n).into()))
        .collect();
    let released = Arc::new(AtomicBool::new(false));
    let holding = Arc::new(AtomicBool::new(false));
    let (release, held) = (Arc::clone(&released), Arc::clone(&holding));
    let dispatcher = Dispatcher::builder()
        .queue(0)
        .workers(2)
        .build(move |packet: &PacketView<'_>| {
            if packet.payload().last() == Some(&0xff) {
                held.store(true, Ordering::Release);
                let deadline = Instant::now() + Duration::from_secs(60);
                while !release.load(Ordering::Acquire) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            Verdict::accept()
        })
        .unwrap();
    senders[0].send_to(&[0xff], dest).unwrap();
    // Alone in its batch: a packet handed to a worker with it would wait too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holding.load(Ordering::Acquire) {
        assert!(Instant::now() < deadline, "the packet to hold never came");
        std::thread::sleep(Duration::from_millis(1));
    }
    // `pass` waits for every verdict but the held one's.
    let mut total = 0;
    let counted =
        |total: &mut u64| alloc::on_every_thread(|| pass(&senders, dest, &dispatcher, total));
    let mut warm_up = 0;
    while counted(&mut total) > 0 {
        warm_up += 1;
        assert!(warm_up < WARM_UP, "still allocating after {warm_up} passes");
    }
    let bytes: u64 = (0..COUNTED_HELD)
        .map(|_| alloc::counted_on_every_thread(|| pass(&senders, dest, &dispatcher, &mut total)).1)
        .sum();
    released.store(true, Ordering::Release);
    total += 1;
    wait_for_verdicts(&dispatcher, total);
    let stats = dispatcher.stop_and_join().unwrap();
    assert_eq!(stats.accepted, total);
    assert_eq!(delivered(), total, "every packet passed the queue");
    bytes
}

/// One test, so that no other test thread allocates while counting is on.
#[test]
fn the_hot_path_allocates_nothing_per_packet() {
    let boxed = alloc::on_every_thread(|| drop(std::hint::black_box(Box::new(1u64))));
    assert_eq!(boxed, 1, "the counter counts");

    let pool = steady_state_allocations(2);
    assert_eq!(
        pool,
        0,
        "with 2 workers: {pool} allocations for {} packets",
        COUNTED * PACKETS
    );
    let inline = steady_state_allocations(0);
    assert_eq!(
        inline,
        0,
        "on the receive threads: {inline} allocations for {} packets",
        COUNTED * PACKETS
    );
    let held = bytes_behind_a_held_packet();
    assert!(
        held <= HELD_BYTES_MAX,
        "behind a held packet: {held} bytes allocated for {} packets",
        COUNTED_HELD * PACKETS
    );
}
