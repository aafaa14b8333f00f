//! Kernel counters of the current thread's namespace: NFQUEUE queues, iptables
//! rules, SNMP statistics.
//!
//! Everything is read through `/proc/thread-self/net/...`: `/proc/net` and
//! `/proc/self/net` show the namespace of the process's main thread, not of a
//! test thread that entered a namespace.

use std::time::{Duration, Instant};

/// Where the kernel lists the bound NFQUEUE queues of the current thread's
/// namespace.
pub const QUEUE_PROC: &str = "/proc/thread-self/net/netfilter/nfnetlink_queue";

/// One line of [`QUEUE_PROC`]: the state of one bound queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLine {
    /// Queue number.
    pub queue_num: u16,
    /// Netlink port id of the socket bound to the queue.
    pub peer_portid: u32,
    /// Packets waiting in the queue for a verdict (`queue_total`).
    pub waiting: u32,
    /// Copy mode: 0 none, 1 meta, 2 packet.
    pub copy_mode: u8,
    /// Bytes of payload copied to user space.
    pub copy_range: u32,
    /// Packets dropped because the queue was full.
    pub queue_dropped: u32,
    /// Packets dropped because the netlink socket could not take them (receive
    /// buffer full).
    pub user_dropped: u32,
    /// The last packet id handed out.
    pub id_sequence: u32,
}

impl QueueLine {
    /// Parses one line such as `    3  12345     0 2 65531     0     0        7  1`.
    ///
    /// Returns `None` when the line does not have that shape.
    pub fn parse(line: &str) -> Option<QueueLine> {
        let mut f = line.split_whitespace();
        let mut next = || f.next();
        Some(QueueLine {
            queue_num: next()?.parse().ok()?,
            peer_portid: next()?.parse().ok()?,
            waiting: next()?.parse().ok()?,
            copy_mode: next()?.parse().ok()?,
            copy_range: next()?.parse().ok()?,
            queue_dropped: next()?.parse().ok()?,
            user_dropped: next()?.parse().ok()?,
            id_sequence: next()?.parse().ok()?,
        })
    }
}

/// All bound queues of the current thread's namespace (empty when the
/// nfnetlink_queue module is not loaded).
///
/// # Panics
///
/// Panics when [`QUEUE_PROC`] exists but cannot be read, or has a line that does
/// not parse.
pub fn queue_lines() -> Vec<QueueLine> {
    let text = match std::fs::read_to_string(QUEUE_PROC) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("reading {QUEUE_PROC}: {e}"),
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| QueueLine::parse(l).unwrap_or_else(|| panic!("{QUEUE_PROC}: bad line {l:?}")))
        .collect()
}

/// The state of queue `n` in the current thread's namespace, or `None` when no
/// socket is bound to it.
///
/// # Panics
///
/// As [`queue_lines`].
pub fn queue_line(n: u16) -> Option<QueueLine> {
    queue_lines().into_iter().find(|q| q.queue_num == n)
}

/// Waits up to 2 seconds until no packet waits in queue `n`, then asserts it.
/// A queue that is not bound counts as drained.
///
/// # Panics
///
/// Panics with the queue's line when packets still wait after 2 seconds.
#[track_caller]
pub fn assert_queue_drained(n: u16) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let line = queue_line(n);
        match line {
            None => return,
            Some(q) if q.waiting == 0 => return,
            Some(q) if Instant::now() >= deadline => panic!(
                "queue {n} not drained after 2 s: {} packet(s) still wait for a verdict \
                 (a verdict missing or sent on the wrong socket?): {q:?}",
                q.waiting
            ),
            Some(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// Waits (at most 2 seconds) until no socket binds queue `n`: after its last
/// socket is closed, the kernel releases it, and with it the queue and its
/// waiting packets.
///
/// The wait is needed in a test process whose other threads spawn commands
/// (iptables, ip): between fork and exec a child holds a copy of every
/// descriptor, and a socket closed meanwhile is released only at the child's
/// exec.
///
/// # Panics
///
/// Panics with the queue's line when it is still bound after 2 seconds.
#[track_caller]
pub fn assert_queue_unbound(n: u16) {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match queue_line(n) {
            None => return,
            Some(q) if Instant::now() >= deadline => {
                panic!("queue {n} still bound 2 s after its socket was closed: {q:?}")
            }
            Some(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The packet counter of the one rule tagged `-m comment --comment <comment>` in
/// `chain` of `table`, read with `<cmd> -t <table> -L <chain> -v -x -n`.
///
/// `cmd` is `"iptables"` or `"ip6tables"`.
///
/// # Panics
///
/// Panics when the command fails, or when not exactly one rule carries the
/// comment.
#[track_caller]
pub fn rule_packets(cmd: &str, table: &str, chain: &str, comment: &str) -> u64 {
    rule_counters(cmd, table, chain, comment).0
}

/// The byte counter of the one rule tagged `comment`; see [`rule_packets`].
///
/// # Panics
///
/// As [`rule_packets`].
#[track_caller]
pub fn rule_bytes(cmd: &str, table: &str, chain: &str, comment: &str) -> u64 {
    rule_counters(cmd, table, chain, comment).1
}

/// `(packets, bytes)` of the rule tagged `comment`.
#[track_caller]
fn rule_counters(cmd: &str, table: &str, chain: &str, comment: &str) -> (u64, u64) {
    let listing = crate::cmd::run(cmd, ["-t", table, "-L", chain, "-v", "-x", "-n"]);
    parse_rule_counters(&listing, comment).unwrap_or_else(|e| {
        panic!("{cmd} -t {table} -L {chain}: {e}\n{listing}");
    })
}

/// Finds `(packets, bytes)` of the rule whose line ends in `/* comment */`.
///
/// The listing looks like
/// ```text
/// Chain INPUT (policy ACCEPT 0 packets, 0 bytes)
///     pkts      bytes target     prot opt in     out     source               destination
///        1       29 ACCEPT     17   --  *      *       0.0.0.0/0            0.0.0.0/0            /* tk */
/// ```
fn parse_rule_counters(listing: &str, comment: &str) -> Result<(u64, u64), String> {
    let tag = format!("/* {comment} */");
    let mut found = listing.lines().filter(|l| l.contains(&tag));
    let line = found
        .next()
        .ok_or_else(|| format!("no rule with comment {comment:?}"))?;
    if found.next().is_some() {
        return Err(format!("more than one rule with comment {comment:?}"));
    }
    let mut f = line.split_whitespace();
    let mut num = |what: &str| -> Result<u64, String> {
        f.next()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no {what} counter in {line:?}"))
    };
    Ok((num("packet")?, num("byte")?))
}

/// A counter from `/proc/thread-self/net/snmp`, such as
/// `snmp_counter("Udp", "InCsumErrors")`.
///
/// # Panics
///
/// Panics when the file cannot be read or has no such counter.
#[track_caller]
pub fn snmp_counter(proto: &str, field: &str) -> u64 {
    let path = "/proc/thread-self/net/snmp";
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    parse_snmp(&text, proto, field)
        .unwrap_or_else(|| panic!("{path}: no counter {proto}: {field}\n{text}"))
}

/// A counter from `/proc/thread-self/net/snmp6`, such as
/// `snmp6_counter("Udp6InCsumErrors")`.
///
/// # Panics
///
/// Panics when the file cannot be read or has no such counter.
#[track_caller]
pub fn snmp6_counter(name: &str) -> u64 {
    let path = "/proc/thread-self/net/snmp6";
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    parse_snmp6(&text, name).unwrap_or_else(|| panic!("{path}: no counter {name}\n{text}"))
}

/// `snmp` comes in pairs of lines, `Udp: InDatagrams NoPorts ...` then
/// `Udp: 12 0 ...`.
fn parse_snmp(text: &str, proto: &str, field: &str) -> Option<u64> {
    let prefix = format!("{proto}:");
    let mut lines = text.lines();
    while let Some(names) = lines.next() {
        let values = lines.next()?;
        let mut n = names.split_whitespace();
        if n.next() != Some(&*prefix) {
            continue;
        }
        let i = n.position(|name| name == field)?;
        return values.split_whitespace().nth(i + 1)?.parse().ok();
    }
    None
}

/// `snmp6` has one `Name value` per line.
fn parse_snmp6(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut f = l.split_whitespace();
        (f.next() == Some(name)).then(|| f.next()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_queue_line() {
        let q = QueueLine::parse("    3 2147483 5 2 65531     1     2      107  1").unwrap();
        assert_eq!(
            q,
            QueueLine {
                queue_num: 3,
                peer_portid: 2147483,
                waiting: 5,
                copy_mode: 2,
                copy_range: 65531,
                queue_dropped: 1,
                user_dropped: 2,
                id_sequence: 107,
            }
        );
        assert_eq!(QueueLine::parse("3 4"), None);
    }

    const LISTING: &str = "\
Chain INPUT (policy ACCEPT 0 packets, 0 bytes)
    pkts      bytes target     prot opt in     out     source               destination         
       7      203 ACCEPT     17   --  *      *       0.0.0.0/0            0.0.0.0/0            /* tk */
      11      400 NFQUEUE    17   --  *      *       0.0.0.0/0            0.0.0.0/0            /* tk two */ NFQUEUE num 3
       1        2 ACCEPT     17   --  *      *       0.0.0.0/0            0.0.0.0/0            /* tk-x */
";

    #[test]
    fn finds_rule_counters_by_comment() {
        assert_eq!(parse_rule_counters(LISTING, "tk"), Ok((7, 203)));
        assert_eq!(parse_rule_counters(LISTING, "tk two"), Ok((11, 400)));
        assert_eq!(parse_rule_counters(LISTING, "tk-x"), Ok((1, 2)));
        assert!(parse_rule_counters(LISTING, "t").is_err());
        let twice = format!("{LISTING}{}", LISTING.lines().nth(2).unwrap());
        assert!(parse_rule_counters(&twice, "tk")
            .unwrap_err()
            .contains("more than one"));
    }

    #[test]
    fn parses_snmp() {
        let text = "Ip: Forwarding DefaultTTL\nIp: 1 64\n\
                    Udp: InDatagrams NoPorts InErrors InCsumErrors\nUdp: 5 1 0 3\n\
                    UdpLite: InDatagrams NoPorts InErrors InCsumErrors\nUdpLite: 0 0 0 9\n";
        assert_eq!(parse_snmp(text, "Udp", "InCsumErrors"), Some(3));
        assert_eq!(parse_snmp(text, "UdpLite", "InCsumErrors"), Some(9));
        assert_eq!(parse_snmp(text, "Ip", "DefaultTTL"), Some(64));
        assert_eq!(parse_snmp(text, "Udp", "Nope"), None);
        let text6 = "Udp6InDatagrams                 \t4\nUdp6InCsumErrors                \t2\n";
        assert_eq!(parse_snmp6(text6, "Udp6InCsumErrors"), Some(2));
        assert_eq!(parse_snmp6(text6, "Udp6In"), None);
    }
}
