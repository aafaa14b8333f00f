//! What this machine lets a queue do, found by trying: the library function
//! behind the `nfq-doctor` example.
//!
//! [`diagnose`] tries each piece in a throwaway network namespace of a child
//! process (so nothing it sets up reaches the caller's network): it binds
//! queues, installs an `iptables -j NFQUEUE` rule and an nft `queue` rule,
//! sends packets through them, binds with the `CONNTRACK`, `GSO` and
//! `UID_GID` flags, gives a verdict that sets a connection mark and looks for
//! it on the next packet, and gives a verdict with a payload from a new user
//! namespace. It reads what it cannot try (the capabilities, the sysctls of
//! user namespaces, `iptables -V`, `net.core.rmem_max`), and the kernel's
//! config where the system has one, for the reasons of what is missing.
//! Every missing piece comes with one line saying what to do.
//!
//! It needs no privilege: without `CAP_SYS_ADMIN` it makes its namespace
//! inside a new user namespace, and where that is refused too it says which
//! pieces it could not check, and why.
//!
//! ```no_run
//! use nfqueue_core::doctor::{self, Feature, Status};
//!
//! let report = doctor::diagnose();
//! print!("{report}");
//! if report.get(Feature::NftQueue).map(|c| c.status) != Some(Status::Ok) {
//!     println!("queueing with iptables -j NFQUEUE");
//! }
//! ```

mod host;
mod probes;
mod sandbox;

use std::fmt;
use std::time::Duration;

/// A piece of what NFQUEUE needs, or of what a program may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Feature {
    /// The queue subsystem itself (`nfnetlink_queue`): a queue can be bound.
    NfnetlinkQueue,
    /// iptables' `-j NFQUEUE` target (`xt_NFQUEUE`) queues packets.
    IptablesTarget,
    /// nftables' `queue` statement (`nft_queue`, `CONFIG_NFT_QUEUE`) queues
    /// packets.
    NftQueue,
    /// `br_netfilter`: bridged packets pass the iptables hooks (needed only
    /// to queue bridged traffic).
    BrNetfilter,
    /// Packets of a queue bound with
    /// [`QueueFlags::CONNTRACK`](crate::QueueFlags::CONNTRACK) carry their
    /// conntrack entry (the conntrack glue,
    /// `CONFIG_NETFILTER_NETLINK_GLUE_CT`).
    ConntrackPackets,
    /// A verdict's conntrack changes are applied
    /// ([`Verdict::with_connmark`](crate::Verdict::with_connmark)).
    ConntrackVerdicts,
    /// The [`QueueFlags::GSO`](crate::QueueFlags::GSO) flag.
    GsoFlag,
    /// The [`QueueFlags::UID_GID`](crate::QueueFlags::UID_GID) flag: packets
    /// of local sockets carry the sender's uid and gid.
    UidGidFlag,
    /// The caller has `CAP_NET_ADMIN`, which binding a queue needs.
    NetAdmin,
    /// An unprivileged user may create user namespaces (to bind queues
    /// without root: `unshare --user --map-root-user --net`).
    UserNamespaces,
    /// A verdict with a payload, from a non-initial user namespace, lets the
    /// packet through (some kernels drop it silently).
    PayloadInUserNamespace,
    /// Which iptables is installed: iptables-nft or iptables-legacy.
    IptablesBackend,
    /// `net.core.rmem_max` against the receive buffer asked for.
    ReceiveBuffer,
}

impl Feature {
    /// Every feature, in the order of a report.
    pub const ALL: [Feature; 13] = [
        Feature::NfnetlinkQueue,
        Feature::IptablesTarget,
        Feature::NftQueue,
        Feature::BrNetfilter,
        Feature::ConntrackPackets,
        Feature::ConntrackVerdicts,
        Feature::GsoFlag,
        Feature::UidGidFlag,
        Feature::NetAdmin,
        Feature::UserNamespaces,
        Feature::PayloadInUserNamespace,
        Feature::IptablesBackend,
        Feature::ReceiveBuffer,
    ];

    /// The name a report gives it.
    pub fn name(self) -> &'static str {
        match self {
            Feature::NfnetlinkQueue => "nfnetlink_queue",
            Feature::IptablesTarget => "iptables NFQUEUE target",
            Feature::NftQueue => "nftables queue statement",
            Feature::BrNetfilter => "br_netfilter (bridged packets)",
            Feature::ConntrackPackets => "conntrack on queued packets (GLUE_CT)",
            Feature::ConntrackVerdicts => "conntrack changes in verdicts",
            Feature::GsoFlag => "GSO flag",
            Feature::UidGidFlag => "uid/gid flag",
            Feature::NetAdmin => "CAP_NET_ADMIN",
            Feature::UserNamespaces => "unprivileged user namespaces",
            Feature::PayloadInUserNamespace => "payload verdicts in a user namespace",
            Feature::IptablesBackend => "iptables backend",
            Feature::ReceiveBuffer => "receive buffer (rmem_max)",
        }
    }

    /// Which part of a report it belongs to.
    pub fn group(self) -> Group {
        match self {
            Feature::NfnetlinkQueue
            | Feature::IptablesTarget
            | Feature::NftQueue
            | Feature::BrNetfilter
            | Feature::ConntrackPackets
            | Feature::ConntrackVerdicts
            | Feature::GsoFlag
            | Feature::UidGidFlag => Group::Kernel,
            Feature::NetAdmin | Feature::UserNamespaces | Feature::PayloadInUserNamespace => {
                Group::Caller
            }
            Feature::IptablesBackend | Feature::ReceiveBuffer => Group::Setup,
        }
    }

    /// The kernel config option behind it, quoted when it is missing.
    fn config_option(self) -> Option<&'static str> {
        Some(match self {
            Feature::NfnetlinkQueue => "CONFIG_NETFILTER_NETLINK_QUEUE",
            Feature::IptablesTarget => "CONFIG_NETFILTER_XT_TARGET_NFQUEUE",
            Feature::NftQueue => "CONFIG_NFT_QUEUE",
            Feature::BrNetfilter => "CONFIG_BRIDGE_NETFILTER",
            Feature::ConntrackPackets | Feature::ConntrackVerdicts => {
                "CONFIG_NETFILTER_NETLINK_GLUE_CT"
            }
            _ => return None,
        })
    }

    fn index(self) -> usize {
        Feature::ALL
            .iter()
            .position(|&f| f == self)
            .unwrap_or_default()
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The parts of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// What the running kernel supports.
    Kernel,
    /// What the caller may do.
    Caller,
    /// How the system is set up.
    Setup,
}

impl Group {
    fn title(self) -> &'static str {
        match self {
            Group::Kernel => "kernel",
            Group::Caller => "caller",
            Group::Setup => "setup",
        }
    }
}

/// What a check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Status {
    /// It works.
    Ok,
    /// It works, with a limit worth knowing.
    Warning,
    /// It does not work here.
    Missing,
    /// It could not be checked (the detail says why).
    Unchecked,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warning => "warning",
            Status::Missing => "MISSING",
            Status::Unchecked => "unchecked",
        }
    }
}

/// The finding of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub feature: Feature,
    /// What it found.
    pub status: Status,
    /// How it found it, or why it could not.
    pub detail: String,
    /// What to do, for anything but [`Status::Ok`].
    pub fix: Option<String>,
}

impl Check {
    fn ok(feature: Feature, detail: impl Into<String>) -> Check {
        Check {
            feature,
            status: Status::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn with(
        feature: Feature,
        status: Status,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            feature,
            status,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    /// One line per check, for the child process's answer: fields separated
    /// by tabs (which the texts do not contain once flattened).
    fn encode(&self) -> String {
        let flat = |s: &str| s.replace(['\t', '\n'], " ");
        format!(
            "{}\t{}\t{}\t{}\n",
            self.feature.index(),
            match self.status {
                Status::Ok => 'o',
                Status::Warning => 'w',
                Status::Missing => 'm',
                Status::Unchecked => 'u',
            },
            flat(&self.detail),
            self.fix.as_deref().map(flat).unwrap_or_default(),
        )
    }

    fn decode(line: &str) -> Option<Check> {
        let mut fields = line.splitn(4, '\t');
        let feature = *Feature::ALL.get(fields.next()?.parse::<usize>().ok()?)?;
        let status = match fields.next()? {
            "o" => Status::Ok,
            "w" => Status::Warning,
            "m" => Status::Missing,
            "u" => Status::Unchecked,
            _ => return None,
        };
        let detail = fields.next()?.to_string();
        let fix = fields.next()?.to_string();
        Some(Check {
            feature,
            status,
            detail,
            fix: (!fix.is_empty()).then_some(fix),
        })
    }
}

/// What [`diagnose_with`] checks, and against what.
#[derive(Debug, Clone)]
pub struct Options {
    recv_buffer: usize,
    only: Option<Vec<Feature>>,
    timeout: Duration,
}

impl Default for Options {
    /// Every feature; the receive buffer of the `nfqueue` dispatcher's
    /// default (8 MiB).
    fn default() -> Self {
        Options {
            recv_buffer: 8 << 20,
            only: None,
            timeout: Duration::from_secs(30),
        }
    }
}

impl Options {
    /// The receive buffer the program will ask for, compared with
    /// `net.core.rmem_max`. Default 8 MiB, the dispatcher's
    /// `DEFAULT_RECV_BUFFER`.
    pub fn recv_buffer(mut self, bytes: usize) -> Self {
        self.recv_buffer = bytes;
        self
    }

    /// Checks only `features` (e.g. [`Feature::NftQueue`] alone, to pick
    /// the rules to install).
    pub fn only(mut self, features: impl IntoIterator<Item = Feature>) -> Self {
        self.only = Some(features.into_iter().collect());
        self
    }

    /// How long each child process may take (default 30 s; each wait in it
    /// is bounded by 2 s, so it takes well under a second when everything
    /// answers).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    fn wants(&self, feature: Feature) -> bool {
        self.only
            .as_ref()
            .map_or(true, |only| only.contains(&feature))
    }
}

/// What [`diagnose`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Where it ran: kernel release, uid, user namespace.
    pub context: String,
    /// How the kernel's pieces were tried.
    pub method: String,
    /// One check per feature, in the order of [`Feature::ALL`].
    pub checks: Vec<Check>,
}

impl Report {
    /// The check of `feature`, if it was made.
    pub fn get(&self, feature: Feature) -> Option<&Check> {
        self.checks.iter().find(|c| c.feature == feature)
    }

    /// The checks that found something missing.
    pub fn missing(&self) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(|c| c.status == Status::Missing)
    }

    /// Why `feature` cannot be used here: its detail and what to do, or
    /// `None` when it works (for tests and programs that skip what the
    /// machine lacks).
    pub fn why_not(&self, feature: Feature) -> Option<String> {
        let check = self.get(feature)?;
        match check.status {
            Status::Ok | Status::Warning => None,
            _ => Some(match &check.fix {
                Some(fix) => format!("{}: {} ({})", check.feature, check.detail, fix),
                None => format!("{}: {}", check.feature, check.detail),
            }),
        }
    }
}

impl fmt::Display for Report {
    /// The report as `nfq-doctor` prints it: a line per check under its
    /// group, the fix under each check that is not ok, and a closing line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "nfq-doctor: {}", self.context)?;
        writeln!(f, "{}", self.method)?;
        let width = self
            .checks
            .iter()
            .map(|c| c.feature.name().len())
            .max()
            .unwrap_or(0);
        for group in [Group::Kernel, Group::Caller, Group::Setup] {
            let mut checks = self.checks.iter().filter(|c| c.feature.group() == group);
            let Some(first) = checks.next() else {
                continue;
            };
            writeln!(f, "\n{}", group.title())?;
            for check in std::iter::once(first).chain(checks) {
                writeln!(
                    f,
                    "  {:<9} {:<width$}  {}",
                    check.status.label(),
                    check.feature.name(),
                    check.detail
                )?;
                if let Some(fix) = &check.fix {
                    writeln!(f, "  {:<9} {:<width$}  -> {fix}", "", "")?;
                }
            }
        }
        let missing: Vec<&str> = self.missing().map(|c| c.feature.name()).collect();
        let unchecked = self
            .checks
            .iter()
            .filter(|c| c.status == Status::Unchecked)
            .count();
        writeln!(f)?;
        match missing.len() {
            0 => write!(f, "nothing missing")?,
            n => write!(f, "{n} missing: {}", missing.join(", "))?,
        }
        if unchecked > 0 {
            write!(f, "; {unchecked} could not be checked")?;
        }
        writeln!(f)
    }
}

/// Checks every feature, with the default [`Options`].
pub fn diagnose() -> Report {
    diagnose_with(&Options::default())
}

/// Checks what `options` ask for. Never fails: what cannot be checked is
/// reported as [`Status::Unchecked`], with the reason.
pub fn diagnose_with(options: &Options) -> Report {
    let host = host::Host::read();
    let mut checks = Vec::new();
    let kernel: Vec<Feature> = Feature::ALL
        .into_iter()
        .filter(|f| f.group() == Group::Kernel && options.wants(*f))
        .collect();
    let method = if kernel.is_empty() {
        "no kernel probes asked for".to_string()
    } else {
        let (method, found) = probes::kernel(&host, &kernel, options.timeout);
        checks.extend(found);
        method
    };
    if options.wants(Feature::NetAdmin) {
        checks.push(host.net_admin());
    }
    let userns = (options.wants(Feature::UserNamespaces)
        || options.wants(Feature::PayloadInUserNamespace))
    .then(|| host.user_namespaces(options.timeout));
    if options.wants(Feature::UserNamespaces) {
        if let Some(check) = &userns {
            checks.push(check.clone());
        }
    }
    if options.wants(Feature::PayloadInUserNamespace) {
        checks.push(probes::payload_in_user_namespace(
            &host,
            userns.as_ref(),
            options.timeout,
        ));
    }
    if options.wants(Feature::IptablesBackend) {
        checks.push(host.iptables_backend());
    }
    if options.wants(Feature::ReceiveBuffer) {
        checks.push(host.receive_buffer(options.recv_buffer));
    }
    for check in &mut checks {
        host.add_config_evidence(check);
    }
    checks.sort_by_key(|c| c.feature.index());
    Report {
        context: host.context(),
        method,
        checks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            context: "Linux 6.1.0, uid 1000, initial user namespace".into(),
            method: "probes ran in a throwaway user and network namespace".into(),
            checks: vec![
                Check::ok(Feature::NfnetlinkQueue, "queue 0 bound"),
                Check::with(
                    Feature::NftQueue,
                    Status::Missing,
                    "nft: Error: Could not process rule: No such file or directory",
                    "modprobe nft_queue",
                ),
                Check::with(
                    Feature::NetAdmin,
                    Status::Missing,
                    "no CAP_NET_ADMIN",
                    "run as root",
                ),
                Check::with(
                    Feature::ReceiveBuffer,
                    Status::Warning,
                    "rmem_max is 212992",
                    "sysctl -w net.core.rmem_max=8388608",
                ),
                Check::with(
                    Feature::PayloadInUserNamespace,
                    Status::Unchecked,
                    "user namespaces are refused",
                    "run as root",
                ),
            ],
        }
    }

    #[test]
    fn a_report_groups_its_checks_and_gives_each_problem_a_fix() {
        let text = sample().to_string();
        let expected = "\
nfq-doctor: Linux 6.1.0, uid 1000, initial user namespace
probes ran in a throwaway user and network namespace

kernel
  ok        nfnetlink_queue                       queue 0 bound
  MISSING   nftables queue statement              nft: Error: Could not process rule: No such file or directory
                                                  -> modprobe nft_queue

caller
  MISSING   CAP_NET_ADMIN                         no CAP_NET_ADMIN
                                                  -> run as root
  unchecked payload verdicts in a user namespace  user namespaces are refused
                                                  -> run as root

setup
  warning   receive buffer (rmem_max)             rmem_max is 212992
                                                  -> sysctl -w net.core.rmem_max=8388608

2 missing: nftables queue statement, CAP_NET_ADMIN; 1 could not be checked
";
        assert_eq!(text, expected, "\n{text}");
    }

    #[test]
    fn a_clean_report_says_nothing_is_missing() {
        let report = Report {
            context: "c".into(),
            method: "m".into(),
            checks: vec![Check::ok(Feature::GsoFlag, "accepted")],
        };
        assert!(report.to_string().ends_with("\nnothing missing\n"));
        assert_eq!(report.why_not(Feature::GsoFlag), None);
        assert_eq!(report.why_not(Feature::NftQueue), None, "not checked");
        let sample = sample();
        assert_eq!(
            sample.why_not(Feature::NftQueue).unwrap(),
            "nftables queue statement: nft: Error: Could not process rule: No such file or \
             directory (modprobe nft_queue)"
        );
        assert_eq!(
            sample.why_not(Feature::ReceiveBuffer),
            None,
            "a warning works"
        );
    }

    #[test]
    fn checks_cross_the_pipe_whole() {
        for check in sample().checks {
            let mut multi = check.clone();
            multi.detail.push_str("\nsecond\tline");
            let back = Check::decode(multi.encode().trim_end_matches('\n')).unwrap();
            assert_eq!(back.feature, check.feature);
            assert_eq!(back.status, check.status);
            assert_eq!(back.detail, format!("{} second line", check.detail));
            assert_eq!(back.fix, check.fix);
        }
        assert_eq!(Check::decode("99\to\tx\t"), None);
        assert_eq!(Check::decode("0\tz\tx\t"), None);
        assert_eq!(Check::decode("garbage"), None);
    }

    #[test]
    fn every_feature_has_a_place() {
        for (at, feature) in Feature::ALL.into_iter().enumerate() {
            assert_eq!(feature.index(), at);
            assert!(!feature.name().is_empty());
        }
        assert!(Options::default()
            .only([Feature::NftQueue])
            .wants(Feature::NftQueue));
        assert!(!Options::default()
            .only([Feature::NftQueue])
            .wants(Feature::GsoFlag));
    }
}
