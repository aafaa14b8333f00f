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

/// Marks UDP leaving this host with `mark` before any queue sees it (mangle
/// OUTPUT, which comes before filter OUTPUT): the mark a packet arrives with.
pub fn mark_udp_output(mark: &str) {
    cmd::run(
        "iptables",
        [
            "-t",
            "mangle",
            "-I",
            "OUTPUT",
            "-p",
            "udp",
            "-j",
            "MARK",
            "--set-mark",
            mark,
        ],
    );
}

/// Counts UDP that leaves with mark `mark` (mangle POSTROUTING, after every
/// queue of OUTPUT), under `comment`: read it with [`marked`].
pub fn count_marked(mark: &str, comment: &str) {
    cmd::run(
        "iptables",
        [
            "-t",
            "mangle",
            "-A",
            "POSTROUTING",
            "-p",
            "udp",
            "-m",
            "mark",
            "--mark",
            mark,
            "-m",
            "comment",
            "--comment",
            comment,
        ],
    );
}

/// Packets counted by the rule of [`count_marked`] under `comment`.
pub fn marked(comment: &str) -> u64 {
    crate::counters::rule_packets("iptables", "mangle", "POSTROUTING", comment)
}
