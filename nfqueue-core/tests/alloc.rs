//! The receive -> verdict path allocates nothing per packet: a counting global
//! allocator watches this thread while packets are received and accepted, one
//! verdict at a time and in batches, after a warm-up.

use nfqueue_core::{Queue, QueueConfig, VerdictBatch, VerdictKind};
use nfqueue_testkit::{alloc, rules, traffic, Netns};
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

const QUEUE: u16 = 7;
/// Packets per measured pass: fewer than the kernel's default queue length.
const PACKETS: usize = 500;
const TIMEOUT: Duration = Duration::from_secs(3);

#[test]
fn receive_and_verdict_allocate_nothing_per_packet() {
    assert_eq!(
        alloc::on_this_thread(|| drop(std::hint::black_box(Box::new(1u64)))),
        1,
        "the counter sees this thread's allocations"
    );
    let ns = Netns::new();
    ns.enter();
    let udp = traffic::udp_pair_v4();
    traffic::set_big_sndbuf(&udp.sender);
    rules::queue_udp(false, "OUTPUT", udp.dest().port(), QUEUE);
    let mut queue = Queue::open().unwrap();
    queue.bind(QUEUE, &QueueConfig::default()).unwrap();
    queue.set_recv_buffer_size(4 << 20).unwrap();
    let send = |n: usize| {
        for i in 0..n {
            udp.sender
                .send_to(&traffic::pattern(64 + i % 512), udp.dest())
                .unwrap();
        }
    };
    let mut failures = 0u32;

    // Warm-up: whatever is set up lazily is set up now.
    send(PACKETS);
    for _ in 0..PACKETS {
        let packet = queue.recv_timeout(TIMEOUT).unwrap().expect("a packet");
        packet.accept().unwrap();
    }

    send(PACKETS);
    let one_by_one = alloc::on_this_thread(|| {
        for _ in 0..PACKETS {
            match queue.recv_timeout(TIMEOUT) {
                Ok(Some(packet)) => failures += u32::from(packet.accept().is_err()),
                _ => failures += 1,
            }
        }
    });
    assert_eq!(failures, 0, "every packet came and was accepted");
    assert_eq!(
        one_by_one, 0,
        "recv + accept of {PACKETS} packets allocated {one_by_one} times"
    );

    // Batches: detach, then one VerdictBatch (reused) per 50 packets.
    let handle = queue.verdict_handle();
    let mut batch = VerdictBatch::new();
    let mut batched = |queue: &mut Queue, failures: &mut u32| {
        for _ in 0..PACKETS / 50 {
            let mut last = None;
            for _ in 0..50 {
                match queue.recv_timeout(TIMEOUT) {
                    Ok(Some(packet)) => last = Some(packet.detach().key()),
                    _ => *failures += 1,
                }
            }
            if let Some(key) = last {
                *failures += u32::from(batch.push_up_to(key, VerdictKind::Accept, None).is_err());
                *failures += u32::from(handle.send_all(&mut batch).is_err());
            }
        }
    };
    send(PACKETS);
    batched(&mut queue, &mut failures); // warm-up of the batch's storage
    send(PACKETS);
    let in_batches = alloc::on_this_thread(|| batched(&mut queue, &mut failures));
    assert_eq!(failures, 0, "every packet came and every batch was sent");
    assert_eq!(
        in_batches, 0,
        "recv + batch verdicts of {PACKETS} packets allocated {in_batches} times"
    );
}
