//! The dispatcher never stalls a queue and `join` always returns, against the
//! real kernel: a flood on one queue beside a trickle on another with room
//! for 8 packets in flight, many queues with room for one each, and a queue
//! whose socket dies.

mod common;

use common::{
    assert_no_queue_left, balance_udp, passed, queue_udp_counted_as, send_flows, Collector,
};
use nfqueue::net::FlowKey;
use nfqueue::{Dispatcher, Error, PacketView, Verdict};
use nfqueue_testkit::{counters, traffic, Netns};
use std::collections::HashMap;
use std::fs::{self, File};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest a trickle packet may take from send to arrival while another
/// queue is flooded. A worker picks at random among the queues with jobs, so
/// a trickle packet waits for a handful of 100 µs handler calls; the bound
/// leaves room for a loaded 2-core machine. Before each queue had channels of
/// its own, such packets never arrived.
const TRICKLE_BOUND: Duration = Duration::from_millis(250);

/// Queues UDP to `dest` from OUTPUT to queue `queue`, and counts what passes
/// the queue under `comment`.
fn queue_port(dest: SocketAddr, queue: u16, comment: &str) {
    queue_udp_counted_as(dest, &["--queue-num", &queue.to_string()], comment);
}

/// A thread that sends small datagrams to `dest` as fast as the socket takes
/// them, until stopped (at most 20 s or 20 million).
struct Flood {
    running: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl Flood {
    fn start(dest: SocketAddr) -> Flood {
        let running = Arc::new(AtomicBool::new(true));
        let flag = Arc::clone(&running);
        let thread = thread::spawn(move || {
            let socket = traffic::udp_sender(dest.ip());
            // Never blocked by a full send buffer, so a stop is seen at once.
            socket.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut sent = 0u64;
            while flag.load(Ordering::Relaxed) && Instant::now() < deadline && sent < 20_000_000 {
                match socket.send_to(&[0u8; 32], dest) {
                    Ok(_) => sent += 1,
                    Err(_) => thread::sleep(Duration::from_micros(50)),
                }
            }
            sent
        });
        Flood { running, thread }
    }

    /// Stops the flood; returns how many datagrams it sent.
    fn stop(self) -> u64 {
        self.running.store(false, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

/// Sends `count` numbered datagrams (from `first` on) to the receiver of
/// `udp`, one every 5 ms, and returns how long each took to arrive (`None`
/// for those that did not arrive within a second after the last was sent).
fn trickle(udp: &traffic::UdpPair, first: u64, count: u64) -> Vec<Option<Duration>> {
    let receiver = udp.receiver.try_clone().unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let collector = thread::spawn(move || {
        let mut arrived = HashMap::new();
        let mut buf = [0u8; 64];
        let deadline = Instant::now() + Duration::from_millis(5 * count + 1000);
        while (arrived.len() as u64) < count && Instant::now() < deadline {
            if let Ok(len) = receiver.recv(&mut buf) {
                arrived.insert(traffic::seq_of(&buf[..len]).unwrap(), Instant::now());
            }
        }
        arrived
    });
    let mut sent = Vec::new();
    for seq in first..first + count {
        sent.push(Instant::now());
        udp.sender.send_to(&seq.to_be_bytes(), udp.dest()).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    let arrived = collector.join().unwrap();
    (first..first + count)
        .zip(sent)
        .map(|(seq, at)| arrived.get(&seq).map(|t| t.duration_since(at)))
        .collect()
}

/// Asserts that every trickle packet arrived within [`TRICKLE_BOUND`].
fn assert_within_bound(what: &str, latencies: &[Option<Duration>]) {
    let lost = latencies.iter().filter(|l| l.is_none()).count();
    assert_eq!(
        lost,
        0,
        "{what}: {lost} of {} never arrived",
        latencies.len()
    );
    let mut sorted: Vec<Duration> = latencies.iter().flatten().copied().collect();
    sorted.sort();
    let (median, max) = (sorted[sorted.len() / 2], sorted[sorted.len() - 1]);
    eprintln!(
        "{what}: {} packets, median {median:?}, max {max:?}",
        sorted.len()
    );
    assert!(max <= TRICKLE_BOUND, "{what}: one took {max:?}");
}

/// Two queues with room for 8 packets in flight each, a slow handler: a flood on queue 1 and a packet
/// every 5 ms on queue 0. Every queue-0 packet arrives within the bound, while
/// the flood lasts and after it; then the dispatcher stops under the flood
/// within 2 s, and no queue is left.
fn flood_beside_trickle(workers: usize, flow: Option<FlowKey>) {
    let ns = Netns::new();
    ns.enter();
    let calm = traffic::udp_pair_v4();
    let busy = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    let busy_dest = busy.local_addr().unwrap();
    queue_port(calm.dest(), 0, "calm");
    queue_port(busy_dest, 1, "busy");
    let mut builder = Dispatcher::builder()
        .queues(0..=1)
        .workers(workers)
        .max_in_flight(8);
    if let Some(key) = flow {
        builder = builder.flow_affinity(key);
    }
    let dispatcher = builder
        .build(|_: &PacketView<'_>| {
            thread::sleep(Duration::from_micros(100));
            Verdict::accept()
        })
        .unwrap();

    let flood = Flood::start(busy_dest);
    thread::sleep(Duration::from_millis(100));
    assert_within_bound("beside the flood", &trickle(&calm, 0, 100));
    let during = dispatcher.stats();
    assert!(
        during.backpressure_waits > 0,
        "the flood filled its room in flight: {during:?}"
    );
    let flooded = flood.stop();
    thread::sleep(Duration::from_millis(200));
    assert_within_bound("after the flood", &trickle(&calm, 100, 40));

    let flood = Flood::start(busy_dest);
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let stats = dispatcher.stop_and_join().unwrap();
    let took = started.elapsed();
    flood.stop();
    eprintln!("stopped in {took:?} after {flooded} flood datagrams: {stats:?}");
    assert!(took < Duration::from_secs(2), "join took {took:?}");
    assert_no_queue_left(&[0, 1]);
    assert_eq!(
        stats.accepted + stats.shutdown_unanswered,
        stats.packets,
        "every packet read got its verdict: {stats:?}"
    );
    assert_eq!(passed("calm"), 140);
}

#[test]
fn a_flooded_queue_does_not_stall_another_on_a_shared_worker() {
    flood_beside_trickle(1, None);
}

/// Hashed by addresses only, the flood and the trickle (both from 127.0.0.1 to
/// itself) count as one flow of each queue, each with one batch out at a
/// time: the worst case for the trickle.
#[test]
fn a_flooded_queue_does_not_stall_another_with_flow_affinity() {
    flood_beside_trickle(2, Some(FlowKey::Addresses));
}

/// Three queues, two workers and room for one packet in flight per queue:
/// reading waits all the time, and every packet still goes out.
fn one_in_flight(flow: Option<FlowKey>) {
    let ns = Netns::new();
    ns.enter();
    let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    let dest = receiver.local_addr().unwrap();
    balance_udp(dest, 0, 2);
    let mut builder = Dispatcher::builder()
        .queues(0..=2)
        .workers(2)
        .max_in_flight(1);
    if let Some(key) = flow {
        builder = builder.flow_affinity(key);
    }
    let dispatcher = builder
        .build(|_: &PacketView<'_>| Verdict::accept())
        .unwrap();
    let (flows, per_flow) = (12usize, 2_000u64);
    let total = flows as u64 * per_flow;
    let collector = Collector::start(receiver, total);
    send_flows(dest, flows, per_flow, &collector.received);
    let got = collector.finish();
    let stats = dispatcher.stop_and_join().unwrap();

    assert_eq!(got.len() as u64, total, "every packet arrived: {stats:?}");
    let mut seqs: HashMap<SocketAddr, Vec<u64>> = HashMap::new();
    for (from, seq) in got {
        seqs.entry(from).or_default().push(seq);
    }
    for (from, mut seqs) in seqs {
        if flow.is_none() {
            seqs.sort_unstable();
        }
        assert_eq!(seqs, (0..per_flow).collect::<Vec<_>>(), "flow {from}");
    }
    assert!(stats.backpressure_waits > 0, "reading waited: {stats:?}");
    assert_eq!((stats.packets, stats.accepted), (total, total));
    assert_no_queue_left(&[0, 1, 2]);
}

#[test]
fn every_packet_goes_out_with_one_in_flight() {
    one_in_flight(None);
}

#[test]
fn every_packet_goes_out_with_one_in_flight_and_flow_affinity() {
    one_in_flight(Some(FlowKey::FiveTuple));
}

/// The descriptor, in this process, of the socket that bound `queue`: found by
/// its netlink port id in /proc/thread-self/net/netlink.
fn socket_fd_of_queue(queue: u16) -> RawFd {
    let portid = counters::queue_line(queue)
        .expect("the queue is bound")
        .peer_portid
        .to_string();
    let table = fs::read_to_string("/proc/thread-self/net/netlink").unwrap();
    // sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode; NETLINK_NETFILTER is 12.
    let inode = table
        .lines()
        .skip(1)
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() >= 10 && f[1] == "12" && f[2] == portid)
        .map(|f| f[9].to_string())
        .expect("the socket is listed");
    let target = format!("socket:[{inode}]");
    fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let link = fs::read_link(entry.path()).ok()?;
            (link.to_str() == Some(&target)).then(|| entry.file_name().to_str()?.parse().ok())?
        })
        .next()
        .expect("the socket is one of ours")
}

/// Queue 1's socket dies under the dispatcher (its descriptor now names
/// /dev/null, while a copy keeps the socket and its packets in the kernel).
/// Its receive thread fails, and that stops the dispatcher: queue 0's thread,
/// joined first, ends too, its packets all given their verdicts, and `join`
/// returns the failure.
#[test]
fn a_queue_whose_socket_dies_stops_the_dispatcher_and_join_returns_its_error() {
    let ns = Netns::new();
    ns.enter();
    let healthy = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    let dying = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    let (healthy_dest, dying_dest) = (healthy.local_addr().unwrap(), dying.local_addr().unwrap());
    queue_port(healthy_dest, 0, "healthy");
    queue_port(dying_dest, 1, "dying");
    let handled = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let dispatcher = Dispatcher::builder()
        .queues(0..=1)
        .workers(2)
        .build({
            let handled = Arc::clone(&handled);
            move |packet: &PacketView<'_>| {
                handled[usize::from(packet.queue())].fetch_add(1, Ordering::Relaxed);
                thread::sleep(Duration::from_micros(20));
                Verdict::accept()
            }
        })
        .unwrap();
    let (floods, kept) = {
        let floods = [Flood::start(healthy_dest), Flood::start(dying_dest)];
        thread::sleep(Duration::from_millis(200));
        let fd = socket_fd_of_queue(1);
        // SAFETY: dup of a descriptor the dispatcher keeps open; the copy is
        // owned here.
        let kept = unsafe { OwnedFd::from_raw_fd(libc::dup(fd)) };
        let null = File::open("/dev/null").unwrap();
        // SAFETY: dup2 onto a descriptor the dispatcher owns: it stays open,
        // naming /dev/null, and the dispatcher closes it in the end.
        assert_eq!(unsafe { libc::dup2(null.as_raw_fd(), fd) }, fd);
        (floods, kept)
    };
    let (joined, join_result) = mpsc::channel();
    thread::spawn(move || {
        let _ = joined.send(dispatcher.join());
    });
    let result = join_result
        .recv_timeout(Duration::from_secs(5))
        .expect("join did not return");
    for flood in floods {
        flood.stop();
    }
    match result {
        Err(Error::Sys { op, source }) => {
            assert_eq!(op, "recvmmsg");
            assert_eq!(source.raw_os_error(), Some(libc::ENOTSOCK));
        }
        other => panic!("expected the dead socket's error, got {other:?}"),
    }
    // The healthy queue's socket is closed, and every packet it read passed.
    counters::assert_queue_unbound(0);
    let handled_healthy = handled[0].load(Ordering::Relaxed);
    assert!(handled_healthy > 0);
    let passed = passed("healthy");
    assert!(
        passed >= handled_healthy,
        "{passed} passed, {handled_healthy} handled"
    );
    // The dead one's packets wait in the kernel until its last copy closes.
    assert!(counters::queue_line(1).is_some());
    drop(kept);
    assert_no_queue_left(&[1]);
}

/// Marks the datagrams of the slow flow in [`a_stuck_flow_holds_back_only_itself`].
const SLOW: u8 = 0xff;

/// Flow affinity on 4 workers, and one flow whose first packet's handler
/// takes 3 s: the packets of 8 other flows, sent meanwhile at 800 a second
/// for 2 s, all pass while it is stuck, and the slow flow's packets then pass
/// in their order. (A fixed set of 2 x workers + 2 batches per queue used to
/// run out after a few bursts left a batch each in the stuck worker's
/// channel, and the whole queue stopped reading: 28 of 1,576 passed.)
#[test]
fn a_stuck_flow_holds_back_only_itself() {
    let ns = Netns::new();
    ns.enter();
    let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    let dest = receiver.local_addr().unwrap();
    balance_udp(dest, 0, 0);
    let dispatcher = Dispatcher::builder()
        .queue(0)
        .workers(4)
        .flow_affinity(FlowKey::FiveTuple)
        .build(|packet: &PacketView<'_>| {
            let data = common::udp_data(packet);
            if data.get(8) == Some(&SLOW) && traffic::seq_of(data) == Some(0) {
                thread::sleep(Duration::from_secs(3));
            }
            Verdict::accept()
        })
        .unwrap();

    let (fast_flows, per_flow, slow_packets) = (8usize, 200u64, 20u64);
    let total = fast_flows as u64 * per_flow + slow_packets;
    let collector = {
        let receiver = receiver.try_clone().unwrap();
        thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            let deadline = Instant::now() + Duration::from_secs(8);
            while (got.len() as u64) < total && Instant::now() < deadline {
                if let Ok((len, from)) = receiver.recv_from(&mut buf) {
                    let seq = traffic::seq_of(&buf[..len]).unwrap();
                    got.push((from, seq, buf[8] == SLOW, Instant::now()));
                }
            }
            got
        })
    };
    let slow = traffic::udp_sender("127.0.0.1".parse().unwrap());
    let fast: Vec<_> = (0..fast_flows)
        .map(|_| traffic::udp_sender("127.0.0.1".parse().unwrap()))
        .collect();
    let start = Instant::now();
    let datagram = |seq: u64, marker: u8| {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&seq.to_be_bytes());
        d[8] = marker;
        d
    };
    for seq in 0..per_flow {
        if seq % (per_flow / slow_packets) == 0 {
            slow.send_to(&datagram(seq / (per_flow / slow_packets), SLOW), dest)
                .unwrap();
        }
        for sender in &fast {
            sender.send_to(&datagram(seq, 0), dest).unwrap();
        }
        thread::sleep(Duration::from_millis(10));
    }
    let sent_in = start.elapsed();
    let got = collector.join().unwrap();
    let stats = dispatcher.stop_and_join().unwrap();

    let fast_in_time = got
        .iter()
        .filter(|(_, _, slow, at)| {
            !slow && at.duration_since(start) < sent_in + Duration::from_millis(300)
        })
        .count() as u64;
    eprintln!("{fast_in_time} fast packets passed while the slow flow was stuck: {stats:?}");
    assert_eq!(
        fast_in_time,
        fast_flows as u64 * per_flow,
        "every fast packet passed within 300 ms of the last send"
    );
    let slow_seqs: Vec<u64> = got.iter().filter(|g| g.2).map(|g| g.1).collect();
    assert_eq!(slow_seqs, (0..slow_packets).collect::<Vec<_>>(), "in order");
    let first_slow = got.iter().find(|g| g.2).unwrap().3.duration_since(start);
    assert!(first_slow >= Duration::from_secs(3), "held by its handler");
    let mut by_flow: HashMap<SocketAddr, Vec<u64>> = HashMap::new();
    for (from, seq, _, _) in &got {
        by_flow.entry(*from).or_default().push(*seq);
    }
    for (from, seqs) in by_flow {
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "flow {from} in order");
    }
    assert_eq!(stats.accepted, total);
    assert_no_queue_left(&[0]);
}

/// A handler that never returns for one flow, under a deadline: that flow's
/// packets get the deadline verdict (accept here) within the bound, the far
/// end sees them, the other flows keep flowing, and the handler's verdict,
/// when it finally comes, is not sent.
#[test]
fn a_deadline_answers_for_a_handler_that_does_not_return() {
    let ns = Netns::new();
    ns.enter();
    let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    let dest = receiver.local_addr().unwrap();
    balance_udp(dest, 0, 0);
    let deadline = Duration::from_millis(200);
    let released = Arc::new(AtomicBool::new(false));
    let release = Arc::clone(&released);
    let dispatcher = Dispatcher::builder()
        .queue(0)
        .workers(2)
        .flow_affinity(FlowKey::FiveTuple)
        .queue_config(
            nfqueue::QueueConfig::default()
                .deadline(deadline)
                .deadline_verdict(nfqueue::VerdictKind::Accept),
        )
        .build(move |packet: &PacketView<'_>| {
            if common::udp_data(packet).get(8) == Some(&SLOW) {
                let until = Instant::now() + Duration::from_secs(10);
                while !release.load(Ordering::Acquire) && Instant::now() < until {
                    thread::sleep(Duration::from_millis(5));
                }
                // Too late: this drop is not sent.
                return Verdict::drop();
            }
            Verdict::accept()
        })
        .unwrap();
    let stuck = traffic::udp_sender("127.0.0.1".parse().unwrap());
    let other = traffic::udp_sender("127.0.0.1".parse().unwrap());
    let datagram = |seq: u64, marker: u8| {
        let mut d = [0u8; 16];
        d[..8].copy_from_slice(&seq.to_be_bytes());
        d[8] = marker;
        d
    };
    let start = Instant::now();
    stuck.send_to(&datagram(0, SLOW), dest).unwrap();
    for seq in 0..20 {
        other.send_to(&datagram(seq, 0), dest).unwrap();
        thread::sleep(Duration::from_millis(5));
    }
    let mut arrived = Vec::new();
    let mut buf = [0u8; 64];
    while arrived.len() < 21 && start.elapsed() < Duration::from_secs(3) {
        if let Ok((len, from)) = receiver.recv_from(&mut buf) {
            arrived.push((from, buf[8] == SLOW, start.elapsed(), len));
        }
    }
    released.store(true, Ordering::Release);
    // The handler's own verdict comes back, and is not sent.
    let until = Instant::now() + Duration::from_secs(5);
    while dispatcher.stats().late_verdicts == 0 && Instant::now() < until {
        thread::sleep(Duration::from_millis(5));
    }
    let stats = dispatcher.stop_and_join().unwrap();
    let slow: Vec<_> = arrived.iter().filter(|a| a.1).collect();
    assert_eq!(slow.len(), 1, "the stuck packet got the deadline's accept");
    let at = slow[0].2;
    assert!(
        at >= deadline && at < deadline + Duration::from_millis(150),
        "its deadline verdict came after {at:?}"
    );
    assert_eq!(arrived.len(), 21, "the other flow kept flowing: {stats:?}");
    assert_eq!(
        (stats.deadline_verdicts, stats.late_verdicts),
        (1, 1),
        "{stats:?}"
    );
    assert_eq!((stats.accepted, stats.dropped), (21, 0), "{stats:?}");
    assert_no_queue_left(&[0]);
}
