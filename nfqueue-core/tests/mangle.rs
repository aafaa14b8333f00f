//! Mangled packets against the real kernel: a payload rewritten with the
//! helpers of `net::mangle` arrives intact at a socket in another namespace,
//! and the same rewrite without checksum repair is counted as a checksum error
//! there, which shows that these tests can fail.
//!
//! Where the checksums are verified: A sends to B over veth. A locally sent
//! packet is `CHECKSUM_PARTIAL` (veth offers checksum offload), and veth hands it
//! to B as it is, where a partial checksum counts as verified: an unmangled
//! packet from A is never checked by B. Queued without `QueueFlags::GSO`, the
//! kernel completes the checksum before copying the packet to us (so what we see
//! is right), and a payload given back with a verdict replaces the packet with
//! `CHECKSUM_NONE`: B's UDP (at `recvmsg`) and TCP (in `tcp_v4_rcv` and
//! `tcp_v6_rcv`) receive paths then verify it and count a bad one in
//! `Udp: InCsumErrors`, `Udp6InCsumErrors` or `Tcp: InCsumErrors` (one TCP
//! counter for both IP versions). So the queue sits in A's OUTPUT, and the
//! counters are read in B.
//!
//! Every test here that gives a verdict with a payload reports SKIPPED (and
//! returns) in a user namespace where the kernel drops such packets
//! (`nfqueue_testkit::skip::payload_verdicts_dropped`); as root it runs.

mod common;

use common::*;
use nfqueue_core::net::{self, mangle, ChecksumState, MangleError, TransportView};
use nfqueue_core::{PacketView, Verdict};
use nfqueue_testkit::{cmd, counters, skip, traffic, TwoHosts};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// Receiving port on B.
const PORT: u16 = 6001;

fn tables(v6: bool) -> &'static str {
    if v6 {
        "ip6tables"
    } else {
        "iptables"
    }
}

fn b_addr(h: &TwoHosts, v6: bool, port: u16) -> SocketAddr {
    if v6 {
        h.b.iface.v6(port)
    } else {
        h.b.iface.v4(port)
    }
}

fn a_ip(h: &TwoHosts, v6: bool) -> IpAddr {
    if v6 {
        h.a.iface.ipv6.into()
    } else {
        h.a.iface.ipv4.into()
    }
}

/// Queues `proto` packets to `dst_port` from A's OUTPUT (the calling thread is in
/// A) to `queue`.
fn queue_output(v6: bool, proto: &str, dst_port: u16, queue: u16) {
    cmd::run(
        tables(v6),
        [
            "-A",
            "OUTPUT",
            "-p",
            proto,
            "--dport",
            &dst_port.to_string(),
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue.to_string(),
        ],
    );
}

/// B's counter of UDP datagrams with a bad checksum.
fn udp_csum_errors(h: &TwoHosts, v6: bool) -> u64 {
    h.b.ns.run(|| {
        if v6 {
            counters::snmp6_counter("Udp6InCsumErrors")
        } else {
            counters::snmp_counter("Udp", "InCsumErrors")
        }
    })
}

/// B's counter of TCP segments with a bad checksum (IPv4 and IPv6 alike).
fn tcp_csum_errors(h: &TwoHosts) -> u64 {
    h.b.ns.run(|| counters::snmp_counter("Tcp", "InCsumErrors"))
}

/// Offset of the transport checksum field of a TCP or UDP packet.
fn l4_checksum_at(packet: &[u8]) -> usize {
    let view = net::parse(packet).unwrap();
    let field = match view.transport() {
        Some(TransportView::Tcp(_)) => 16,
        Some(TransportView::Udp(_)) => 6,
        other => panic!("not TCP or UDP: {other:?}"),
    };
    view.header_len() + field
}

/// Puts back the transport checksum `packet` had in `original`: the rewrite
/// without checksum repair (lengths and the IPv4 header stay right).
fn keep_old_checksum(packet: &mut [u8], original: &[u8]) {
    let at = l4_checksum_at(original);
    packet[at..at + 2].copy_from_slice(&original[at..at + 2]);
    assert!(
        matches!(
            mangle::verify_checksums(packet).unwrap().transport,
            ChecksumState::Invalid { .. }
        ),
        "the old checksum happens to fit the new payload"
    );
}

/// Asserts that the kernel gave us a packet whose checksums are right.
#[track_caller]
fn assert_checksums_valid(packet: &[u8]) {
    let sums = mangle::verify_checksums(packet).unwrap();
    assert_eq!(sums.transport, ChecksumState::Valid, "{sums:?}");
    assert!(sums.is_ok(), "{sums:?}");
}

fn udp_payload_of_another_length(v6: bool, repair: bool) {
    let h = TwoHosts::new();
    let receiver =
        h.b.ns
            .run(|| traffic::udp_receiver(b_addr(&h, v6, PORT).ip()));
    let dest = receiver.local_addr().unwrap();
    h.a.ns.enter();
    let queue_num = 20;
    queue_output(v6, "udp", dest.port(), queue_num);
    let mut queue = bound_queue(queue_num);
    let sender = traffic::udp_sender(a_ip(&h, v6));
    let errors_before = udp_csum_errors(&h, v6);
    assert_eq!(errors_before, 0);

    sender.send_to(b"short", dest).unwrap();
    let packet = next_packet(&mut queue);
    assert_checksums_valid(packet.payload());
    let new = b"a rewritten payload, longer than the one sent";
    let mut rewritten = packet.payload().to_vec();
    mangle::set_l4_payload(&mut rewritten, new).unwrap();
    if repair {
        assert_checksums_valid(&rewritten);
    } else {
        keep_old_checksum(&mut rewritten, packet.payload());
    }
    packet
        .verdict(&Verdict::accept().with_payload(&rewritten[..]))
        .unwrap();

    if repair {
        let mut buf = [0; 1500];
        let (len, from) = receiver.recv_from(&mut buf).expect("nothing arrived");
        assert_eq!(&buf[..len], new, "the new bytes, the new length");
        assert_eq!(from, sender.local_addr().unwrap());
        assert_eq!(udp_csum_errors(&h, v6), 0);
    } else {
        // B checks the checksum when the datagram is read, and drops it.
        assert_no_datagram(&receiver);
        assert_eq!(udp_csum_errors(&h, v6), errors_before + 1);
    }
    counters::assert_queue_drained(queue_num);
}

#[test]
fn a_udp_payload_of_another_length_arrives_intact_v4() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    udp_payload_of_another_length(false, true);
}

#[test]
fn a_udp_payload_of_another_length_arrives_intact_v6() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    udp_payload_of_another_length(true, true);
}

#[test]
fn a_udp_rewrite_without_checksum_repair_is_counted_v4() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    udp_payload_of_another_length(false, false);
}

#[test]
fn a_udp_rewrite_without_checksum_repair_is_counted_v6() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    udp_payload_of_another_length(true, false);
}

/// Every byte of a TCP payload flipped by the rewrite.
const FLIP: u8 = 0x5a;

/// Sends `len` bytes over TCP from A to B with every data segment queued in A's
/// OUTPUT and rewritten to the same length (every byte xor [`FLIP`]); without
/// `repair` only the first data segment is rewritten, in place and with its old
/// checksum, and its retransmission passes unchanged. Returns what B received.
fn tcp_same_length_rewrite(h: &TwoHosts, v6: bool, repair: bool, len: usize) -> Vec<u8> {
    let sink =
        h.b.ns
            .run(|| traffic::TcpSink::bind(b_addr(h, v6, 0).ip(), len));
    let dest = sink.addr();
    h.a.ns.enter();
    let queue_num = 21;
    queue_output(v6, "tcp", dest.port(), queue_num);
    let mut queue = bound_queue(queue_num);
    let data = traffic::pattern(len);
    let sender = std::thread::spawn(move || traffic::tcp_send(dest, &data));

    let deadline = Instant::now() + Duration::from_secs(20);
    let mut rewritten_segments = 0;
    while !sender.is_finished() && Instant::now() < deadline {
        let Some(packet) = queue.recv_timeout(Duration::from_millis(50)).unwrap() else {
            continue;
        };
        let original = packet.payload();
        let view = net::parse(original).unwrap();
        let segment = match view.payload() {
            Some(p) if !p.is_empty() => p,
            _ => {
                packet.accept().unwrap();
                continue;
            }
        };
        if !repair && rewritten_segments > 0 {
            packet.accept().unwrap();
            continue;
        }
        assert_checksums_valid(original);
        let flipped: Vec<u8> = segment.iter().map(|b| b ^ FLIP).collect();
        let mut rewritten = original.to_vec();
        if repair {
            mangle::set_l4_payload(&mut rewritten, &flipped).unwrap();
            assert_checksums_valid(&rewritten);
        } else {
            let at = view.header_len() + (original.len() - view.header_len() - segment.len());
            rewritten[at..].copy_from_slice(&flipped);
            keep_old_checksum(&mut rewritten, original);
        }
        rewritten_segments += 1;
        packet
            .verdict(&Verdict::accept().with_payload(rewritten))
            .unwrap();
    }
    sender
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("sending to {dest}: {e}"));
    accept_until_idle(&mut queue);
    assert!(rewritten_segments > 0);
    counters::assert_queue_drained(queue_num);
    sink.finish().unwrap()
}

/// Accepts what is still queued (the last ACKs of a closed connection) until
/// nothing came for 300 ms.
fn accept_until_idle(queue: &mut nfqueue_core::Queue) {
    for _ in 0..1000 {
        match queue.recv_timeout(Duration::from_millis(300)).unwrap() {
            Some(packet) => packet.accept().unwrap(),
            None => return,
        }
    }
}

fn tcp_same_length(v6: bool) {
    let h = TwoHosts::new();
    let len = 20_000;
    let got = tcp_same_length_rewrite(&h, v6, true, len);
    let want: Vec<u8> = traffic::pattern(len).iter().map(|b| b ^ FLIP).collect();
    assert!(
        got == want,
        "B received {} bytes, not the rewritten stream",
        got.len()
    );
    assert_eq!(tcp_csum_errors(&h), 0);
}

#[test]
fn a_same_length_tcp_rewrite_arrives_intact_v4() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    tcp_same_length(false);
}

#[test]
fn a_same_length_tcp_rewrite_arrives_intact_v6() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    tcp_same_length(true);
}

fn tcp_without_repair(v6: bool) {
    let h = TwoHosts::new();
    let len = 2_000;
    let got = tcp_same_length_rewrite(&h, v6, false, len);
    // B dropped the bad segment; its retransmission, untouched, got through.
    assert!(
        got == traffic::pattern(len),
        "B received {} bytes",
        got.len()
    );
    assert_eq!(tcp_csum_errors(&h), 1);
}

#[test]
fn a_tcp_rewrite_without_checksum_repair_is_counted_v4() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    tcp_without_repair(false);
}

#[test]
fn a_tcp_rewrite_without_checksum_repair_is_counted_v6() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    tcp_without_repair(true);
}

/// A one-way NAT in A's OUTPUT: A sends to a decoy address and port, routed to
/// the loopback interface (where it comes back to A, which does not forward it);
/// the handler rewrites the destination to B's real address and port.
///
/// After an `NF_ACCEPT` verdict in OUTPUT the kernel routes a packet again when
/// its addresses (or mark, or IPv4 TOS) changed (`nf_reroute`, which calls
/// `ip_route_me_harder` / `ip6_route_me_harder`), so the rewritten packet leaves
/// on veth towards B instead of on the dummy interface.
fn one_way_nat(v6: bool) {
    let h = TwoHosts::new();
    let receiver =
        h.b.ns
            .run(|| traffic::udp_receiver(b_addr(&h, v6, PORT).ip()));
    let real = receiver.local_addr().unwrap();
    h.a.ns.enter();
    let (decoy_net, decoy): (&str, SocketAddr) = if v6 {
        ("2001:db8:99::/64", "[2001:db8:99::7]:7777".parse().unwrap())
    } else {
        ("198.51.100.0/24", "198.51.100.7:7777".parse().unwrap())
    };
    let family = if v6 { "-6" } else { "-4" };
    cmd::ip([family, "route", "add", decoy_net, "dev", "lo"]);
    let queue_num = 22;
    queue_output(v6, "udp", decoy.port(), queue_num);
    let mut queue = bound_queue(queue_num);
    let sender = traffic::udp_sender(a_ip(&h, v6));
    let errors_before = udp_csum_errors(&h, v6);

    // Unchanged, the packet goes where the decoy route sends it: not to B.
    sender.send_to(b"to the decoy", decoy).unwrap();
    let packet = next_packet(&mut queue);
    let decoy_dev = packet.outdev_name().expect("an output interface");
    assert_eq!(decoy_dev.as_str(), "lo");
    packet.accept().unwrap();
    assert_no_datagram(&receiver);

    // Rewritten, it is routed again, to B.
    sender.send_to(b"natted", decoy).unwrap();
    let packet = next_packet(&mut queue);
    let mut rewritten = packet.payload().to_vec();
    mangle::set_dst_addr(&mut rewritten, real.ip()).unwrap();
    mangle::set_dst_port(&mut rewritten, real.port()).unwrap();
    assert_checksums_valid(&rewritten);
    let view = net::parse(&rewritten).unwrap();
    assert_eq!((view.dst(), view.flow().dst_port), (real.ip(), real.port()));
    packet
        .verdict(&Verdict::accept().with_payload(rewritten))
        .unwrap();

    let mut buf = [0; 1500];
    let (len, from) = receiver.recv_from(&mut buf).expect("nothing arrived");
    assert_eq!(&buf[..len], b"natted");
    assert_eq!(from, sender.local_addr().unwrap());
    assert_eq!(udp_csum_errors(&h, v6), errors_before);
    counters::assert_queue_drained(queue_num);
}

#[test]
fn a_destination_rewrite_in_output_is_routed_again_v4() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    one_way_nat(false);
}

#[test]
fn a_destination_rewrite_in_output_is_routed_again_v6() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    one_way_nat(true);
}

/// A captured message's packet.
fn captured(message: &[u8]) -> Vec<u8> {
    PacketView::from_message(message)
        .unwrap()
        .payload()
        .to_vec()
}

/// A TCP payload of another length would break the stream (the kernel does not
/// shift the sequence numbers of what follows), so the helper refuses it; the
/// same length is fine. On real captured segments.
#[test]
fn a_tcp_payload_of_another_length_is_refused() {
    for message in [
        &include_bytes!("data/tcp4_data.bin")[..],
        include_bytes!("data/tcp6_data.bin"),
    ] {
        let mut packet = captured(message);
        let before = packet.clone();
        let old = net::parse(&packet).unwrap().payload().unwrap().len();
        for new in [old + 1, old - 1, 0] {
            assert_eq!(
                mangle::set_l4_payload(&mut packet, &vec![b'x'; new]),
                Err(MangleError::TcpLengthChange { old, new })
            );
            assert_eq!(packet, before, "a refusal leaves the packet as it was");
        }
        mangle::set_l4_payload(&mut packet, &vec![b'x'; old]).unwrap();
        assert_checksums_valid(&packet);
        assert_eq!(packet.len(), before.len());
    }
}

/// On captured packets: UDP and ICMP payloads change length, fragments and
/// truncated copies are refused, and every edit leaves right checksums.
#[test]
fn captured_packets_are_mangled_or_refused() {
    let grown = b"a longer payload than any of the captured ones had, by far";
    for (message, result) in [
        (&include_bytes!("data/udp4_output.bin")[..], Ok(())),
        (include_bytes!("data/udp6_ext.bin"), Ok(())),
        (include_bytes!("data/icmp4_echo.bin"), Ok(())),
        (include_bytes!("data/icmp6_echo.bin"), Ok(())),
        (
            include_bytes!("data/udp4_frag_first.bin"),
            Err(MangleError::Fragment),
        ),
        (
            include_bytes!("data/udp6_frag_last.bin"),
            Err(MangleError::Fragment),
        ),
    ] {
        let mut packet = captured(message);
        assert_eq!(mangle::set_l4_payload(&mut packet, grown), result);
        if result.is_ok() {
            assert_eq!(net::parse(&packet).unwrap().payload(), Some(&grown[..]));
            assert_checksums_valid(&packet);
        }
    }
    for message in [
        &include_bytes!("data/udp4_truncated.bin")[..],
        include_bytes!("data/udp6_truncated.bin"),
    ] {
        let mut packet = captured(message);
        assert!(matches!(
            mangle::set_l4_payload(&mut packet, grown),
            Err(MangleError::Truncated { got: 64, .. })
        ));
    }
}

/// The longest packet the helpers build (`MAX_PACKET_LEN`) is taken by a
/// verdict and arrives whole at the socket; one byte more is refused before
/// any verdict. Over loopback, whose MTU of 65536 leaves it unfragmented.
fn the_longest_rewrite_a_verdict_carries(v6: bool) {
    let _ns = enter_new_netns();
    let queue_num = 22;
    let udp = udp_through_queue(v6, queue_num);
    let mut queue = bound_queue(queue_num);
    udp.sender.send_to(b"short", udp.dest()).unwrap();
    let packet = next_packet(&mut queue);
    let mut rewritten = packet.payload().to_vec();
    let headers = rewritten.len() - b"short".len();

    let before = rewritten.clone();
    let too_long = traffic::pattern(mangle::MAX_PACKET_LEN + 1 - headers);
    assert_eq!(
        mangle::set_l4_payload(&mut rewritten, &too_long),
        Err(MangleError::TooLarge {
            len: nfqueue_core::MAX_PAYLOAD + 1,
            max: nfqueue_core::MAX_PAYLOAD
        })
    );
    assert_eq!(rewritten, before, "a refusal leaves the packet as it was");

    let longest = traffic::pattern(mangle::MAX_PACKET_LEN - headers);
    mangle::set_l4_payload(&mut rewritten, &longest).unwrap();
    assert_eq!(rewritten.len(), nfqueue_core::MAX_PAYLOAD);
    packet
        .verdict(&Verdict::accept().with_payload(&rewritten[..]))
        .unwrap();
    assert_eq!(recv_datagram(&udp.receiver), longest);
    counters::assert_queue_drained(queue_num);
}

#[test]
fn the_longest_rewrite_a_verdict_carries_v4() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    the_longest_rewrite_a_verdict_carries(false);
}

#[test]
fn the_longest_rewrite_a_verdict_carries_v6() {
    if skip::payload_verdicts_dropped() {
        return;
    }
    the_longest_rewrite_a_verdict_carries(true);
}
