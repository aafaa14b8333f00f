//! The rules that send packets to the queues, for nftables and for iptables:
//! every packet of a chain, or only the first N packets of each connection in
//! each direction.
//!
//! nftables first: one table of the `inet` family covers IPv4 and IPv6. Its
//! `queue` statement needs `CONFIG_NFT_QUEUE` (the `nft_queue` module); where
//! the kernel lacks it, `nft` fails with "Could not process rule: No such
//! file or directory", and the iptables `NFQUEUE` target (which iptables-nft
//! provides too) does the same job. `nfq-doctor` tells which works.
//!
//! | iptables (`-j NFQUEUE ...`) | nftables |
//! |---|---|
//! | `--queue-num 3` | `queue num 3` |
//! | `--queue-balance 0:3` (by flow hash) | `queue num 0-3` |
//! | `--queue-balance 0:3 --queue-cpu-fanout` (by CPU) | `queue num 0-3 fanout` |
//! | `--queue-bypass` (accept while no one listens) | `queue num 3 bypass` |
//!
//! Queueing only the start of a connection is the largest saving NFQUEUE
//! allows: the kernel keeps the rest of the connection on its fast path. It
//! uses conntrack's packet counts, one rule per direction, so that a client
//! that talks first cannot use up the server's share:
//!
//! ```text
//! nft add table inet filter
//! nft 'add chain inet filter forward { type filter hook forward priority 0; }'
//! nft add rule inet filter forward ct direction original ct original packets '<=' 3 queue num 0
//! nft add rule inet filter forward ct direction reply ct reply packets '<=' 3 queue num 0
//!
//! iptables -A FORWARD -m conntrack --ctdir ORIGINAL -m connbytes --connbytes 0:3 \
//!   --connbytes-dir original --connbytes-mode packets -j NFQUEUE --queue-num 0
//! iptables -A FORWARD -m conntrack --ctdir REPLY -m connbytes --connbytes 0:3 \
//!   --connbytes-dir reply --connbytes-mode packets -j NFQUEUE --queue-num 0
//! ```
//!
//! Conntrack counts a packet before the filter hooks see it, so `<= 3` (and
//! `0:3`) matches the first 3 packets of each direction; both forms turn on
//! conntrack accounting. The trade-off: the packets after them are never
//! inspected, and a sender who knows N can pad the start of a connection and
//! send what it wants from packet N+1 on. Use it where the decision is made
//! at the start (a handshake, the first request), not to filter content.
//! Packets conntrack does not track (`notrack`, the raw table) never match,
//! so they are not queued.

use crate::cli::QueueRange;
use nfqueue_testkit::cmd::try_run;
use std::fmt;
use std::io::Write;
use std::process::{Command, Stdio};
use std::str::FromStr;

/// Which rules to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ruleset {
    /// nftables' `queue` statement, in a table of its own.
    Nft,
    /// iptables' and ip6tables' `NFQUEUE` target.
    Iptables,
}

impl FromStr for Ruleset {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "nft" => Ok(Ruleset::Nft),
            "iptables" => Ok(Ruleset::Iptables),
            other => Err(format!("{other:?} is not a ruleset: nft or iptables")),
        }
    }
}

impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ruleset::Nft => "nft",
            Ruleset::Iptables => "iptables",
        })
    }
}

/// The nftables table the rules go in, deleted whole when they are removed.
pub const NFT_TABLE: &str = "nfqueue_firewall";

/// A rule set for one chain, in either form.
#[derive(Debug, Clone)]
pub struct QueueRules {
    chain: String,
    queues: QueueRange,
    first: Option<u64>,
    bypass: bool,
}

/// The programs the iptables rules are given to.
const TOOLS: [&str; 2] = ["iptables", "ip6tables"];

impl QueueRules {
    /// Rules that queue every packet of `chain` to `queues`, or with `first`
    /// only the first N packets of each connection in each direction. Each
    /// rule carries a comment (`firewall:all`, `firewall:first-N:original`,
    /// `firewall:first-N:reply`) that names it in listings.
    pub fn new(chain: &str, queues: QueueRange, first: Option<u64>) -> Self {
        QueueRules {
            chain: chain.into(),
            queues,
            first,
            bypass: false,
        }
    }

    /// Accept the packets while no program has bound the queues
    /// (`--queue-bypass`, nft's `bypass`), instead of dropping them.
    pub fn bypass(mut self, bypass: bool) -> Self {
        self.bypass = bypass;
        self
    }

    /// The comment and the match of each rule, by direction.
    fn directions(&self) -> Vec<(String, Option<(&'static str, &'static str)>)> {
        match self.first {
            None => vec![("firewall:all".into(), None)],
            Some(n) => [("ORIGINAL", "original"), ("REPLY", "reply")]
                .into_iter()
                .map(|dirs| (format!("firewall:first-{n}:{}", dirs.1), Some(dirs)))
                .collect(),
        }
    }

    /// The arguments after `-A CHAIN` of each iptables rule.
    fn iptables_rules(&self) -> Vec<Vec<String>> {
        self.directions()
            .into_iter()
            .map(|(comment, direction)| {
                let mut rule: Vec<String> = Vec::new();
                if let (Some((ctdir, dir)), Some(n)) = (direction, self.first) {
                    rule.extend(["-m", "conntrack", "--ctdir", ctdir].map(String::from));
                    rule.extend(["-m", "connbytes", "--connbytes"].map(String::from));
                    rule.push(format!("0:{n}"));
                    rule.extend(
                        ["--connbytes-dir", dir, "--connbytes-mode", "packets"].map(String::from),
                    );
                }
                rule.extend(["-m", "comment", "--comment"].map(String::from));
                rule.push(comment);
                rule.extend(["-j", "NFQUEUE"].map(String::from));
                rule.extend(self.queues.target_args());
                if self.bypass {
                    rule.push("--queue-bypass".into());
                }
                rule
            })
            .collect()
    }

    /// The iptables rules as shell commands that append them.
    pub fn commands(&self) -> Vec<String> {
        let rules = self.iptables_rules();
        TOOLS
            .iter()
            .flat_map(|tool| {
                rules
                    .iter()
                    .map(move |rule| format!("{tool} -A {} {}", self.chain, rule.join(" ")))
            })
            .collect()
    }

    /// The nft hook of the chain (INPUT, OUTPUT, FORWARD, PREROUTING,
    /// POSTROUTING: nft needs a base chain).
    fn nft_hook(&self) -> Result<String, String> {
        let hook = self.chain.to_ascii_lowercase();
        match hook.as_str() {
            "input" | "output" | "forward" | "prerouting" | "postrouting" => Ok(hook),
            _ => Err(format!(
                "nft rules need a base chain, and {} is none: use INPUT, OUTPUT, FORWARD, \
                 PREROUTING or POSTROUTING, or --ruleset iptables",
                self.chain
            )),
        }
    }

    /// The rules as a file for `nft -f`: a table of the `inet` family (IPv4
    /// and IPv6 alike) with one base chain.
    ///
    /// # Errors
    /// When the chain is not one of the netfilter hooks.
    pub fn nft_ruleset(&self) -> Result<String, String> {
        let hook = self.nft_hook()?;
        let mut out = format!(
            "table inet {NFT_TABLE} {{\n\tchain {hook} {{\n\t\t\
             type filter hook {hook} priority 0; policy accept;\n"
        );
        for (comment, direction) in self.directions() {
            out.push_str("\t\t");
            if let (Some((_, dir)), Some(n)) = (direction, self.first) {
                out.push_str(&format!("ct direction {dir} ct {dir} packets <= {n} "));
            }
            out.push_str(&format!(
                "{} comment \"{comment}\"\n",
                self.queues.nft_statement(self.bypass)
            ));
        }
        out.push_str("\t}\n}\n");
        Ok(out)
    }

    /// The rules in the form of `ruleset`, as `nft -f` text or iptables
    /// commands.
    ///
    /// # Errors
    /// As [`nft_ruleset`](Self::nft_ruleset).
    pub fn text(&self, ruleset: Ruleset) -> Result<String, String> {
        match ruleset {
            Ruleset::Nft => Ok(format!("nft -f - <<'EOF'\n{}EOF\n", self.nft_ruleset()?)),
            Ruleset::Iptables => Ok(self.commands().join("\n") + "\n"),
        }
    }

    /// Installs the rules in the form of `ruleset` in this network
    /// namespace; they are deleted again when the returned guard is dropped.
    /// Install them after binding the queues: a queue nobody has bound drops
    /// what it is sent (unless `bypass`).
    ///
    /// # Errors
    /// The message of the first command that failed; what was installed
    /// before it is deleted again (an nft rule set is installed whole or not
    /// at all).
    pub fn install(&self, ruleset: Ruleset) -> Result<InstalledRules, String> {
        match ruleset {
            Ruleset::Nft => self.install_nft(),
            Ruleset::Iptables => self.install_iptables(),
        }
    }

    fn install_iptables(&self) -> Result<InstalledRules, String> {
        let mut done = Vec::new();
        for tool in TOOLS {
            for rule in self.iptables_rules() {
                let args = ["-A", self.chain.as_str()]
                    .into_iter()
                    .chain(rule.iter().map(String::as_str));
                if let Err(err) = try_run(tool, args) {
                    // Dropping the guard deletes what went in before.
                    drop(InstalledRules(Installed::Iptables {
                        chain: self.chain.clone(),
                        rules: done,
                    }));
                    return Err(err);
                }
                done.push((tool, rule));
            }
        }
        Ok(InstalledRules(Installed::Iptables {
            chain: self.chain.clone(),
            rules: done,
        }))
    }

    fn install_nft(&self) -> Result<InstalledRules, String> {
        let ruleset = self.nft_ruleset()?;
        if try_run("nft", ["list", "table", "inet", NFT_TABLE]).is_ok() {
            return Err(format!(
                "the nft table inet {NFT_TABLE} exists already (another firewall running?): \
                 delete it with nft delete table inet {NFT_TABLE}"
            ));
        }
        nft_file(&ruleset).map_err(|err| {
            format!(
                "nft refused the queue rules: {err} (nft's queue statement needs \
                 CONFIG_NFT_QUEUE, the nft_queue module: nfq-doctor tells whether this kernel \
                 has it; --ruleset iptables queues with the NFQUEUE target instead)"
            )
        })?;
        Ok(InstalledRules(Installed::Nft))
    }
}

impl QueueRange {
    /// nft's `queue` statement for these queues: `queue num N`, or `queue
    /// num FIRST-LAST` (spread by flow hash, as `--queue-balance`), with
    /// `bypass`.
    pub fn nft_statement(self, bypass: bool) -> String {
        let mut out = if self.first == self.last {
            format!("queue num {}", self.first)
        } else {
            format!("queue num {}-{}", self.first, self.last)
        };
        if bypass {
            out.push_str(" bypass");
        }
        out
    }
}

/// Runs `nft -f -` with `ruleset` on its standard input (one transaction).
fn nft_file(ruleset: &str) -> Result<(), String> {
    let nft = ["/usr/sbin/nft", "/sbin/nft", "/usr/local/sbin/nft"]
        .into_iter()
        .find(|p| std::path::Path::new(p).is_file())
        .unwrap_or("nft");
    let mut child = Command::new(nft)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("nft could not be started: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    // The first line says why; nft then echoes the rule and underlines it.
    let stderr = String::from_utf8_lossy(&out.stderr);
    Err(stderr
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("nft failed")
        .to_string())
}

/// Rules installed by [`QueueRules::install`], deleted when dropped.
#[derive(Debug)]
pub struct InstalledRules(Installed);

#[derive(Debug)]
enum Installed {
    Iptables {
        chain: String,
        rules: Vec<(&'static str, Vec<String>)>,
    },
    Nft,
}

impl InstalledRules {
    /// Which form the rules took.
    pub fn ruleset(&self) -> Ruleset {
        match self.0 {
            Installed::Iptables { .. } => Ruleset::Iptables,
            Installed::Nft => Ruleset::Nft,
        }
    }
}

impl Drop for InstalledRules {
    fn drop(&mut self) {
        match &mut self.0 {
            Installed::Iptables { chain, rules } => {
                for (tool, rule) in rules.drain(..).rev() {
                    let args = ["-D", chain.as_str()]
                        .into_iter()
                        .chain(rule.iter().map(String::as_str));
                    if let Err(err) = try_run(tool, args) {
                        eprintln!("could not delete a rule: {err}");
                    }
                }
            }
            Installed::Nft => {
                if let Err(err) = try_run("nft", ["delete", "table", "inet", NFT_TABLE]) {
                    eprintln!("could not delete the nft table: {err}");
                }
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
    fn the_nft_form_says_the_same() {
        let all = QueueRules::new("INPUT", "0".parse().unwrap(), None).bypass(true);
        assert_eq!(
            all.nft_ruleset().unwrap(),
            "table inet nfqueue_firewall {\n\tchain input {\n\t\t\
             type filter hook input priority 0; policy accept;\n\t\t\
             queue num 0 bypass comment \"firewall:all\"\n\t}\n}\n"
        );
        assert!(all.commands()[0].ends_with("--queue-num 0 --queue-bypass"));
        let first = QueueRules::new("FORWARD", "0:3".parse().unwrap(), Some(3));
        let text = first.nft_ruleset().unwrap();
        assert!(text.contains(
            "\t\tct direction original ct original packets <= 3 queue num 0-3 \
             comment \"firewall:first-3:original\"\n"
        ));
        assert!(text.contains(
            "\t\tct direction reply ct reply packets <= 3 queue num 0-3 \
             comment \"firewall:first-3:reply\"\n"
        ));
        assert!(first
            .text(Ruleset::Nft)
            .unwrap()
            .starts_with("nft -f - <<'EOF'\n"));
        let err = QueueRules::new("mychain", "0".parse().unwrap(), None)
            .nft_ruleset()
            .unwrap_err();
        assert!(err.contains("base chain"), "{err}");
        assert_eq!("nft".parse(), Ok(Ruleset::Nft));
        assert!("pf".parse::<Ruleset>().is_err());
    }

    #[test]
    fn installs_and_removes_its_iptables_rules() {
        let _netns = nfqueue_testkit::enter_new_netns();
        let rules = QueueRules::new("OUTPUT", "5".parse().unwrap(), Some(2));
        let listing = || nfqueue_testkit::iptables(["-S", "OUTPUT"]);
        let installed = rules.install(Ruleset::Iptables).unwrap();
        assert_eq!(installed.ruleset(), Ruleset::Iptables);
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

    /// The matches of the nft form install on this kernel, whatever its
    /// queue statement: the same rule set with `counter accept` in place of
    /// `queue`, which `CONFIG_NFT_QUEUE` does not gate.
    #[test]
    fn the_nft_matches_install_here() {
        let _netns = nfqueue_testkit::enter_new_netns();
        let rules = QueueRules::new("OUTPUT", "0:1".parse().unwrap(), Some(3)).bypass(true);
        let ruleset = rules
            .nft_ruleset()
            .unwrap()
            .replace("queue num 0-1 bypass", "counter accept");
        nft_file(&ruleset).unwrap();
        let listing = nfqueue_testkit::cmd::run("nft", ["list", "table", "inet", NFT_TABLE]);
        assert!(
            listing.contains("ct direction reply ct reply packets <= 3"),
            "{listing}"
        );
        assert_eq!(listing.matches("comment \"firewall:first-3:").count(), 2);
        drop(InstalledRules(Installed::Nft));
        assert!(
            nfqueue_testkit::cmd::try_run("nft", ["list", "table", "inet", NFT_TABLE]).is_err()
        );
    }
}
