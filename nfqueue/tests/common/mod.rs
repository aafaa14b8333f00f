//! Set-up shared by the dispatcher's kernel tests.
#![allow(dead_code)]

use nfqueue::PacketView;
use nfqueue_testkit::{counters, iptables, traffic};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Queues UDP to `dest` from OUTPUT with the NFQUEUE target options given
/// (e.g. `["--queue-num", "3"]`), and counts what leaves after the queue in
/// mangle POSTROUTING (comment `delivered`, read by [`delivered`]).
pub fn queue_udp_counted(dest: SocketAddr, target: &[&str]) {
    queue_udp_counted_as(dest, target, "delivered");
}

/// [`queue_udp_counted`], with the counting rule under `comment` (read it
/// with [`passed`]): for tests that count several ports apart.
pub fn queue_udp_counted_as(dest: SocketAddr, target: &[&str], comment: &str) {
    let port = dest.port().to_string();
    let mut rule = vec![
        "-A", "OUTPUT", "-p", "udp", "--dport", &port, "-j", "NFQUEUE",
    ];
    rule.extend_from_slice(target);
    iptables(rule);
    iptables([
        "-t",
        "mangle",
        "-A",
        "POSTROUTING",
        "-p",
        "udp",
        "--dport",
        &port,
        "-m",
        "comment",
        "--comment",
        comment,
    ]);
}

/// Packets that passed the queue and left, by the kernel's count.
pub fn delivered() -> u64 {
    passed("delivered")
}

/// Packets counted by the rule of [`queue_udp_counted_as`] under `comment`.
pub fn passed(comment: &str) -> u64 {
    counters::rule_packets("iptables", "mangle", "POSTROUTING", comment)
}

/// The UDP payload of a queued packet (empty when it has none).
pub fn udp_data<'a>(packet: &PacketView<'a>) -> &'a [u8] {
    nfqueue::net::parse(packet.payload())
        .ok()
        .and_then(|ip| ip.payload())
        .unwrap_or_default()
}

/// Packets in flight (sent, not yet received) allowed in all: keeps every
/// buffer on the way from overflowing, so a loss is a bug, not congestion. The
/// smallest buffer is the receiving UDP socket's, which holds about 270 small
/// datagrams at the default `rmem_max` (all a user namespace may ask for).
pub const WINDOW: u64 = 192;

/// Collects datagrams (flow = source address, sequence number) until `expected`
/// arrived or nothing came for a second.
pub struct Collector {
    pub received: Arc<AtomicU64>,
    thread: thread::JoinHandle<Vec<(SocketAddr, u64)>>,
}

impl Collector {
    pub fn start(receiver: UdpSocket, expected: u64) -> Self {
        let received = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&received);
        receiver
            .set_read_timeout(Some(Duration::from_secs(1)))
            .unwrap();
        let thread = thread::spawn(move || {
            let mut got = Vec::new();
            let mut buf = [0u8; 2048];
            while (got.len() as u64) < expected {
                match receiver.recv_from(&mut buf) {
                    Ok((len, from)) => {
                        got.push((from, traffic::seq_of(&buf[..len]).unwrap()));
                        count.fetch_add(1, Ordering::Release);
                    }
                    Err(_) => break,
                }
            }
            got
        });
        Collector { received, thread }
    }

    pub fn finish(self) -> Vec<(SocketAddr, u64)> {
        self.thread.join().unwrap()
    }
}

/// Sends `per_flow` numbered packets from each of `flows` sockets, round
/// robin, never more than [`WINDOW`] ahead of the collector.
pub fn send_flows(dest: SocketAddr, flows: usize, per_flow: u64, received: &AtomicU64) {
    // --queue-balance spreads by addresses: each flow has a source address of
    // its own (127.0.0.2, 127.0.0.3, ...).
    let senders: Vec<UdpSocket> = (0..flows)
        .map(|n| traffic::udp_sender(std::net::Ipv4Addr::new(127, 0, 0, 2 + n as u8).into()))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    for seq in 0..per_flow {
        while (seq + 1) * flows as u64 > received.load(Ordering::Acquire) + WINDOW {
            assert!(
                Instant::now() < deadline,
                "the collector stalled at {}",
                received.load(Ordering::Acquire)
            );
            thread::sleep(Duration::from_micros(50));
        }
        for sender in &senders {
            let mut datagram = [0u8; 32];
            datagram[..8].copy_from_slice(&seq.to_be_bytes());
            sender.send_to(&datagram, dest).unwrap();
        }
    }
}

/// Queues UDP to `dest` from OUTPUT over queues `first..=last`, counting what
/// leaves after the queue.
pub fn balance_udp(dest: SocketAddr, first: u16, last: u16) {
    let (option, value) = if first == last {
        ("--queue-num", first.to_string())
    } else {
        ("--queue-balance", format!("{first}:{last}"))
    };
    queue_udp_counted(dest, &[option, &value]);
}

/// After a dispatcher is joined, its sockets are closed and the kernel lists
/// none of its queues, so no packet can wait in them.
#[track_caller]
pub fn assert_no_queue_left(queues: &[u16]) {
    for &queue in queues {
        counters::assert_queue_unbound(queue);
    }
}

/// Waits (at most 10 s) until the dispatcher has given `total` verdicts, so
/// that a test stops it only after the last packets sent were handled: a
/// packet still unread at the stop gets the default verdict instead, and
/// counts of what the handler did would race with the stop.
pub fn wait_for_verdicts(dispatcher: &nfqueue::Dispatcher, total: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = dispatcher.stats();
        let given = s.accepted + s.dropped + s.repeated + s.requeued + s.accepted_final;
        if given >= total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{given} of {total} verdicts given: {s:?}"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// The dispatcher's verdict for an oracle decision: the one place that maps
/// the oracle's crate-neutral decisions to this crate's verdicts.
pub fn oracle_verdict(decision: nfqueue_testkit::oracle::Decision) -> nfqueue::Verdict<'static> {
    use nfqueue::Verdict;
    use nfqueue_testkit::oracle::Decision;
    match decision {
        Decision::Accept { mark: None } => Verdict::accept(),
        Decision::Accept { mark: Some(m) } => Verdict::accept().with_mark(m),
        Decision::Drop => Verdict::drop(),
        Decision::Repeat { mark } => Verdict::repeat().with_mark(mark),
        Decision::Queue { num, bypass } => Verdict::queue(num, bypass),
        Decision::Replace { packet } => Verdict::accept().with_payload(packet),
    }
}

/// A dispatcher handler that gives each packet what its content asks for,
/// through `judge` (which records it and plays its fault).
pub fn oracle_handler(
    judge: nfqueue_testkit::oracle::Judge,
) -> impl Fn(&PacketView<'_>) -> nfqueue::Verdict<'static> + Send + Sync + 'static {
    move |packet: &PacketView<'_>| {
        oracle_verdict(judge.decide(packet.queue(), packet.id(), packet.payload()))
    }
}

pub mod oracle_run;
