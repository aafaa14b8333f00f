//! Set-up shared by the dispatcher's kernel tests.
#![allow(dead_code)]

use nfqueue::PacketView;
use nfqueue_testkit::{counters, iptables};
use std::net::SocketAddr;

/// Queues UDP to `dest` from OUTPUT with the NFQUEUE target options given
/// (e.g. `["--queue-num", "3"]`), and counts what leaves after the queue in
/// mangle POSTROUTING (comment `delivered`, read by [`delivered`]).
pub fn queue_udp_counted(dest: SocketAddr, target: &[&str]) {
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
        "delivered",
    ]);
}

/// Packets that passed the queue and left, by the kernel's count.
pub fn delivered() -> u64 {
    counters::rule_packets("iptables", "mangle", "POSTROUTING", "delivered")
}

/// The UDP payload of a queued packet (empty when it has none).
pub fn udp_data<'a>(packet: &PacketView<'a>) -> &'a [u8] {
    nfqueue::net::parse(packet.payload())
        .ok()
        .and_then(|ip| ip.payload())
        .unwrap_or_default()
}
