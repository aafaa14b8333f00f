//! Conntrack in verdicts, and nftables' `queue` statement, against the
//! kernel. Each test runs where the doctor says the kernel supports what it
//! needs, and otherwise reports SKIPPED with the doctor's reason: a kernel
//! without `CONFIG_NETFILTER_NETLINK_GLUE_CT` ignores the `NFQA_CT` of a
//! verdict, and one without `CONFIG_NFT_QUEUE` refuses the `queue`
//! statement.

mod common;

use common::{bound_queue, enter_new_netns, kernel_has, next_packet, recv_datagram};
use nfqueue_core::doctor::Feature;
use nfqueue_core::{Verdict, VerdictBatch};
use nfqueue_testkit::{cmd, counters, iptables, rules, traffic};

/// Accepts UDP to `port` whose connection carries `mark`, before the queue
/// rule, counted under the comment "connmarked".
fn accept_connmarked(port: &str, mark: &str) {
    iptables([
        "-A",
        "OUTPUT",
        "-p",
        "udp",
        "--dport",
        port,
        "-m",
        "connmark",
        "--mark",
        mark,
        "-m",
        "comment",
        "--comment",
        "connmarked",
        "-j",
        "ACCEPT",
    ]);
}

/// A connection mark set by a verdict is on the connection: the flow's next
/// packet matches `-m connmark --mark` in a rule before the queue rule, is
/// accepted there, and never reaches the queue.
#[test]
fn a_connmark_set_by_a_verdict_is_matched_on_the_flows_next_packet() {
    if !kernel_has(Feature::ConntrackVerdicts) {
        return;
    }
    let _netns = enter_new_netns();
    let udp = traffic::udp_pair_v4();
    let port = udp.dest().port().to_string();
    accept_connmarked(&port, "0x2a");
    rules::queue_udp(false, "OUTPUT", udp.dest().port(), 0);
    let mut queue = bound_queue(0);

    udp.sender.send_to(b"first", udp.dest()).unwrap();
    let packet = next_packet(&mut queue);
    assert_eq!(packet.mark(), 0, "the packet mark is untouched");
    packet
        .verdict(&Verdict::accept().with_connmark(0x2a))
        .unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"first");

    udp.sender.send_to(b"second", udp.dest()).unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"second");
    common::assert_no_packet(&mut queue);
    assert_eq!(
        counters::rule_packets("iptables", "filter", "OUTPUT", "connmarked"),
        1
    );
    counters::assert_queue_drained(0);
}

/// The same through a `VerdictBatch`, with a masked connection mark: bits
/// 0xff00 set by an earlier rule stay, bits 0x00ff come from the verdict,
/// and the next packet matches the whole mark.
#[test]
fn a_masked_connmark_from_a_verdict_batch_keeps_the_other_bits() {
    if !kernel_has(Feature::ConntrackVerdicts) {
        return;
    }
    let _netns = enter_new_netns();
    let udp = traffic::udp_pair_v4();
    let port = udp.dest().port().to_string();
    iptables([
        "-t",
        "mangle",
        "-A",
        "OUTPUT",
        "-p",
        "udp",
        "--dport",
        &port,
        "-m",
        "connmark",
        "--mark",
        "0",
        "-j",
        "CONNMARK",
        "--set-mark",
        "0x1100",
    ]);
    accept_connmarked(&port, "0x112a");
    rules::queue_udp(false, "OUTPUT", udp.dest().port(), 0);
    let mut queue = bound_queue(0);
    let handle = queue.verdict_handle();

    udp.sender.send_to(b"first", udp.dest()).unwrap();
    let key = next_packet(&mut queue).detach().key();
    let mut batch = VerdictBatch::new();
    batch
        .push(key, Verdict::accept().with_connmark_masked(0xff2a, 0x00ff))
        .unwrap();
    handle.send_all(&mut batch).unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"first");

    udp.sender.send_to(b"second", udp.dest()).unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"second");
    common::assert_no_packet(&mut queue);
    assert_eq!(
        counters::rule_packets("iptables", "filter", "OUTPUT", "connmarked"),
        1
    );
}

/// With the CONNTRACK flag, a queued packet carries its entry: the tuple of
/// its flow, its state, and the mark a verdict set on its first packet.
#[test]
fn queued_packets_carry_their_conntrack_entry() {
    if !kernel_has(Feature::ConntrackPackets) {
        return;
    }
    let _netns = enter_new_netns();
    let udp = common::udp_through_queue(false, 0);
    let config = nfqueue_core::QueueConfig::default().flags(nfqueue_core::QueueFlags::CONNTRACK);
    let mut queue = common::bound_queue_with(0, &config);
    udp.sender.send_to(b"first", udp.dest()).unwrap();
    let packet = next_packet(&mut queue);
    let ct = packet.conntrack_view().unwrap().expect("an entry");
    let original = ct.original().unwrap();
    assert_eq!(
        original.src_port(),
        Some(udp.sender.local_addr().unwrap().port())
    );
    assert_eq!(original.dst_port(), Some(udp.dest().port()));
    assert_eq!(original.protocol(), Some(17));
    assert_eq!(ct.state(), Some(nfqueue_core::CtState::New));
    packet.verdict(&Verdict::accept().with_connmark(7)).unwrap();
    recv_datagram(&udp.receiver);
    udp.sender.send_to(b"second", udp.dest()).unwrap();
    let packet = next_packet(&mut queue);
    let mark = packet.conntrack_view().unwrap().and_then(|ct| ct.mark());
    packet.accept().unwrap();
    if common::doctor_report()
        .why_not(Feature::ConntrackVerdicts)
        .is_none()
    {
        assert_eq!(mark, Some(7));
    }
}

/// An nftables rule with the `queue` statement sends packets to the bound
/// queue; `bypass` accepts them while no one listens.
#[test]
fn an_nft_queue_rule_queues_to_the_bound_queue() {
    if !kernel_has(Feature::NftQueue) {
        return;
    }
    let _netns = enter_new_netns();
    let udp = traffic::udp_pair_v4();
    let port = udp.dest().port();
    cmd::run("nft", ["add table inet nfq_test"]);
    cmd::run(
        "nft",
        ["add chain inet nfq_test output { type filter hook output priority 0; policy accept; }"],
    );
    cmd::run(
        "nft",
        [format!(
            "add rule inet nfq_test output udp dport {port} queue num 3 bypass"
        )],
    );
    udp.sender.send_to(b"bypassed", udp.dest()).unwrap();
    assert_eq!(
        recv_datagram(&udp.receiver),
        b"bypassed",
        "nobody listens yet"
    );

    let mut queue = bound_queue(3);
    udp.sender.send_to(b"queued", udp.dest()).unwrap();
    let packet = next_packet(&mut queue);
    assert_eq!(packet.queue(), 3);
    assert_eq!(common::udp_data(packet.payload()), b"queued");
    packet.accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"queued");
    counters::assert_queue_drained(3);
}
