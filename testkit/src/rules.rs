//! The iptables rule most kernel tests start with: UDP to one port, to one
//! queue.

use crate::cmd;

/// Appends to `chain` of the filter table a rule that sends UDP to `port` to
/// queue `queue`: with `ip6tables` when `v6`, else `iptables`.
pub fn queue_udp(v6: bool, chain: &str, port: u16, queue: u16) {
    let port = port.to_string();
    let queue = queue.to_string();
    cmd::run(
        if v6 { "ip6tables" } else { "iptables" },
        [
            "-A",
            chain,
            "-p",
            "udp",
            "--dport",
            &port,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ],
    );
}
