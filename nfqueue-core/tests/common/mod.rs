//! Shared set-up of the kernel tests: a namespace per test, rules, queues.
#![allow(dead_code)]

use nfqueue_core::doctor::{self, Feature, Group, Options, Report};
use nfqueue_core::{Packet, Queue, QueueConfig};
use nfqueue_testkit::{rules, skip, traffic};
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::Duration;

/// How long a test waits for a packet that should come.
pub const PACKET_TIMEOUT: Duration = Duration::from_secs(3);

// Not every test binary uses it, as with the rest of this module.
#[allow(unused_imports)]
pub use nfqueue_testkit::enter_new_netns;

/// A queue socket with `queue` bound with default settings.
pub fn bound_queue(queue: u16) -> Queue {
    bound_queue_with(queue, &QueueConfig::default())
}

/// A queue socket with `queue` bound with `config`.
pub fn bound_queue_with(queue: u16, config: &QueueConfig) -> Queue {
    let mut q = Queue::open().expect("opening a queue socket");
    q.bind(queue, config)
        .unwrap_or_else(|e| panic!("binding queue {queue}: {e}"));
    q
}

/// The next packet, or a panic after [`PACKET_TIMEOUT`].
pub fn next_packet(queue: &mut Queue) -> Packet<'_> {
    match queue.recv_timeout(PACKET_TIMEOUT) {
        Ok(Some(packet)) => packet,
        Ok(None) => panic!("no packet within {PACKET_TIMEOUT:?}"),
        Err(err) => panic!("receiving: {err}"),
    }
}

/// Asserts that no packet comes within a short while.
pub fn assert_no_packet(queue: &mut Queue) {
    if let Some(packet) = queue
        .recv_timeout(Duration::from_millis(200))
        .expect("receiving")
    {
        panic!("unexpected packet: {packet:?}");
    }
}

/// The UDP payload of an IP packet as the kernel queued it.
pub fn udp_data(ip_packet: &[u8]) -> &[u8] {
    let header_len = match ip_packet[0] >> 4 {
        4 => usize::from(ip_packet[0] & 0x0f) * 4,
        6 => 40,
        v => panic!("not IP: version {v}"),
    };
    &ip_packet[header_len + 8..]
}

/// A UDP receiver and sender on loopback of `family`, with the receiver's port
/// queued to `queue` from OUTPUT.
pub fn udp_through_queue(v6: bool, queue: u16) -> traffic::UdpPair {
    let udp = if v6 {
        traffic::udp_pair_v6()
    } else {
        traffic::udp_pair_v4()
    };
    rules::queue_udp(v6, "OUTPUT", udp.dest().port(), queue);
    udp
}

/// Receives one datagram (panics after the testkit's receive timeout).
pub fn recv_datagram(sock: &std::net::UdpSocket) -> Vec<u8> {
    let mut buf = vec![0; 70_000];
    let len = sock.recv(&mut buf).expect("no datagram arrived");
    buf.truncate(len);
    buf
}

/// Asserts that no datagram arrives within a short while.
pub fn assert_no_datagram(sock: &std::net::UdpSocket) {
    let got = traffic::recv_all_until_idle(sock, Duration::from_millis(200), 10);
    assert!(
        got.is_empty(),
        "{} datagrams arrived that should not have",
        got.len()
    );
}

/// The loopback address of a family.
pub fn loopback(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(std::net::Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)
    }
}

/// The handle's verdict for an oracle decision: the one place that maps the
/// oracle's crate-neutral decisions to this crate's verdicts.
pub fn oracle_verdict(
    decision: nfqueue_testkit::oracle::Decision,
) -> nfqueue_core::Verdict<'static> {
    use nfqueue_core::Verdict;
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

/// What the doctor finds of the kernel here, found once per test binary (in
/// throwaway namespaces of its own).
pub fn doctor_report() -> &'static Report {
    static REPORT: OnceLock<Report> = OnceLock::new();
    REPORT.get_or_init(|| {
        let kernel = Feature::ALL
            .into_iter()
            .filter(|f| f.group() == Group::Kernel);
        doctor::diagnose_with(&Options::default().only(kernel))
    })
}

/// Whether the doctor says the kernel here has `feature`. When it does not
/// (or could not tell), the calling test is reported `SKIPPED` with the
/// doctor's reason, and must return: it is never counted as passed.
pub fn kernel_has(feature: Feature) -> bool {
    let report = doctor_report();
    if report.why_not(feature).is_none() {
        return true;
    }
    let detail = report.get(feature).map_or("not checked", |c| &c.detail);
    skip::report(&format!("nfq-doctor: {feature}: {detail}"));
    false
}
