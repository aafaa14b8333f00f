//! The iptables rules that send packets to the queues: every packet of a
//! chain, or only the first N packets of each connection in each direction.
//!
//! Queueing only the start of a connection is the largest saving NFQUEUE
//! allows: the kernel keeps the rest of the connection on its fast path. It
//! uses conntrack's packet counts (`-m connbytes`, which turns on conntrack
//! accounting), one rule per direction (`-m conntrack --ctdir`), so that a
//! client that talks first cannot use up the server's share:
//!
//! ```text
//! iptables -A FORWARD -m conntrack --ctdir ORIGINAL -m connbytes --connbytes 0:3 \
//!   --connbytes-dir original --connbytes-mode packets -j NFQUEUE --queue-num 0
//! iptables -A FORWARD -m conntrack --ctdir REPLY -m connbytes --connbytes 0:3 \
//!   --connbytes-dir reply --connbytes-mode packets -j NFQUEUE --queue-num 0
//! ```
//!
//! Conntrack counts a packet before the filter table sees it, so `0:3`
//! matches the first 3 packets of each direction. The trade-off: the packets
//! after them are never inspected, and a sender who knows N can pad the start
//! of a connection and send what it wants from packet N+1 on. Use it where the
//! decision is made at the start (a handshake, the first request), not to
//! filter content. Packets conntrack does not track (the raw table, `NOTRACK`)
//! never match, so they are not queued.

use crate::cli::QueueRange;
use nfqueue_testkit::cmd::try_run;

/// A rule set for one chain, for iptables and ip6tables alike.
#[derive(Debug, Clone)]
pub struct QueueRules {
    chain: String,
    /// The arguments after `-A CHAIN` of each rule.
    rules: Vec<Vec<String>>,
}

/// The programs the rules are given to.
const TOOLS: [&str; 2] = ["iptables", "ip6tables"];

impl QueueRules {
    /// Rules that queue every packet of `chain` to `queues`, or with `first`
    /// only the first N packets of each connection in each direction. Each
    /// rule carries a comment (`firewall:all`, `firewall:first-N:original`,
    /// `firewall:first-N:reply`) that names it in listings.
    pub fn new(chain: &str, queues: QueueRange, first: Option<u64>) -> Self {
        let target = |comment: String| {
            let mut rule: Vec<String> = ["-m", "comment", "--comment"].map(String::from).into();
            rule.push(comment);
            rule.extend(["-j", "NFQUEUE"].map(String::from));
            rule.extend(queues.target_args());
            rule
        };
        let rules = match first {
            None => vec![target("firewall:all".into())],
            Some(n) => [("ORIGINAL", "original"), ("REPLY", "reply")]
                .into_iter()
                .map(|(ctdir, dir)| {
                    let mut rule: Vec<String> = ["-m", "conntrack", "--ctdir", ctdir]
                        .into_iter()
                        .chain(["-m", "connbytes", "--connbytes"])
                        .map(String::from)
                        .collect();
                    rule.push(format!("0:{n}"));
                    rule.extend(
                        ["--connbytes-dir", dir, "--connbytes-mode", "packets"].map(String::from),
                    );
                    rule.extend(target(format!("firewall:first-{n}:{dir}")));
                    rule
                })
                .collect(),
        };
        QueueRules {
            chain: chain.into(),
            rules,
        }
    }

    /// The rules as shell commands that append them.
    pub fn commands(&self) -> Vec<String> {
        TOOLS
            .iter()
            .flat_map(|tool| {
                self.rules
                    .iter()
                    .map(move |rule| format!("{tool} -A {} {}", self.chain, rule.join(" ")))
            })
            .collect()
    }

    /// Appends the rules to the chain in this network namespace; they are
    /// deleted again when the returned guard is dropped. Install them after
    /// binding the queues: a queue nobody has bound drops what it is sent.
    ///
    /// # Errors
    /// The message of the first command that failed (the rules installed
    /// before it are deleted again).
    pub fn install(&self) -> Result<InstalledRules, String> {
        let mut installed = InstalledRules {
            chain: self.chain.clone(),
            rules: Vec::new(),
        };
        for tool in TOOLS {
            for rule in &self.rules {
                try_run(
                    tool,
                    ["-A", &self.chain]
                        .into_iter()
                        .chain(rule.iter().map(String::as_str)),
                )?;
                installed.rules.push((tool, rule.clone()));
            }
        }
        Ok(installed)
    }
}

/// Rules installed by [`QueueRules::install`], deleted when dropped.
#[derive(Debug)]
pub struct InstalledRules {
    chain: String,
    rules: Vec<(&'static str, Vec<String>)>,
}

impl Drop for InstalledRules {
    fn drop(&mut self) {
        for (tool, rule) in self.rules.drain(..).rev() {
            let args = ["-D", &self.chain]
                .into_iter()
                .chain(rule.iter().map(String::as_str));
            if let Err(err) = try_run(tool, args) {
                eprintln!("could not delete a rule: {err}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queues_everything_or_the_first_packets_per_direction() {
        let queue: QueueRange = "0".parse().unwrap();
        assert_eq!(
            QueueRules::new("INPUT", queue, None).commands(),
            [
                "iptables -A INPUT -m comment --comment firewall:all -j NFQUEUE --queue-num 0",
                "ip6tables -A INPUT -m comment --comment firewall:all -j NFQUEUE --queue-num 0",
            ]
        );
        let first = QueueRules::new("FORWARD", "2:3".parse().unwrap(), Some(3)).commands();
        assert_eq!(first.len(), 4);
        assert_eq!(
            first[1],
            "iptables -A FORWARD -m conntrack --ctdir REPLY -m connbytes --connbytes 0:3 \
             --connbytes-dir reply --connbytes-mode packets \
             -m comment --comment firewall:first-3:reply -j NFQUEUE --queue-balance 2:3"
        );
        assert!(first[2].starts_with("ip6tables -A FORWARD -m conntrack --ctdir ORIGINAL "));
    }

    #[test]
    fn installs_and_removes_its_rules() {
        let _netns = nfqueue_testkit::enter_new_netns();
        let rules = QueueRules::new("OUTPUT", "5".parse().unwrap(), Some(2));
        let listing = || nfqueue_testkit::iptables(["-S", "OUTPUT"]);
        let installed = rules.install().unwrap();
        let with_rules = listing();
        assert_eq!(
            with_rules.matches("firewall:first-2:").count(),
            2,
            "{with_rules}"
        );
        assert!(
            with_rules
                .contains("--connbytes 0:2 --connbytes-mode packets --connbytes-dir original"),
            "{with_rules}"
        );
        drop(installed);
        assert!(!listing().contains("firewall:"), "{}", listing());
    }
}
