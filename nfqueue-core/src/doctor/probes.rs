//! The probes that try the kernel, each in a child process inside a
//! throwaway network namespace ([`sandbox`]).

use super::host::{self, Host};
use super::sandbox::{self, Isolation};
use super::{Check, Feature, Status};
use crate::{net, Error, Packet, Queue, QueueConfig, QueueFlags, Verdict};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a probe waits for a packet, at the queue or at a receiver.
const WAIT: Duration = Duration::from_secs(2);

/// The connection mark the conntrack probe's verdict sets.
const CONNMARK: u32 = 0x2a;

/// What to do when the kernel lacks the conntrack glue.
pub(super) const GLUE_CT_FIX: &str = "use a kernel with CONFIG_NETFILTER_NETLINK_GLUE_CT and \
     nf_conntrack_netlink loaded (modprobe nf_conntrack_netlink); meanwhile set a packet mark in \
     the verdict (Verdict::with_mark) and copy it to the connection in a later hook: iptables -t \
     mangle -A POSTROUTING -m mark --mark 0x2a -j CONNMARK --save-mark (nft: meta mark 0x2a ct \
     mark set meta mark)";

/// What to do when nft's queue statement is missing.
pub(super) const NFT_QUEUE_FIX: &str = "load nft_queue (modprobe nft_queue; CONFIG_NFT_QUEUE); \
     until then queue with iptables -j NFQUEUE, which works through iptables-nft too";

/// Tries every kernel feature (only `features` are reported) and says how.
pub(super) fn kernel(host: &Host, features: &[Feature], timeout: Duration) -> (String, Vec<Check>) {
    let (iptables, nft) = (host.iptables.clone(), host.nft.clone());
    let probe = || Ok(encode(&kernel_here(iptables.as_deref(), nft.as_deref())));
    let mut isolation = host.isolation();
    let mut answer = sandbox::run(isolation, timeout, probe);
    if answer.is_err() && isolation == Isolation::Net {
        // CAP_SYS_ADMIN said yes, the kernel said no (a seccomp filter, a
        // LSM): a user namespace may still do.
        isolation = Isolation::UserNet;
        answer = sandbox::run(isolation, timeout, probe);
    }
    let method = match isolation {
        Isolation::Net => "probes ran in a throwaway network namespace of a child process",
        _ => "probes ran in a throwaway user and network namespace of a child process",
    };
    let checks: Vec<Check> = match answer {
        Ok(text) => text.lines().filter_map(Check::decode).collect(),
        Err(why) => features
            .iter()
            .map(|&feature| {
                Check::with(
                    feature,
                    Status::Unchecked,
                    format!("no throwaway network namespace to try it in: {why}"),
                    "run nfq-doctor as root, or allow unprivileged user namespaces (see \
                     'unprivileged user namespaces' below)",
                )
            })
            .collect(),
    };
    let checks = checks
        .into_iter()
        .filter(|c: &Check| features.contains(&c.feature))
        .collect();
    (method.to_string(), checks)
}

fn encode(checks: &[Check]) -> String {
    checks.iter().map(Check::encode).collect()
}

/// The kernel features that need a working queue, unchecked for `why`.
fn all_unchecked(why: &str) -> Vec<Check> {
    [
        Feature::IptablesTarget,
        Feature::NftQueue,
        Feature::ConntrackPackets,
        Feature::ConntrackVerdicts,
        Feature::GsoFlag,
        Feature::UidGidFlag,
    ]
    .into_iter()
    .map(|feature| {
        Check::with(
            feature,
            Status::Unchecked,
            why,
            "make nfnetlink_queue work first",
        )
    })
    .collect()
}

/// A UDP socket on 127.0.0.1 with a read timeout.
fn udp() -> Result<UdpSocket, String> {
    let sock = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| format!("udp socket: {e}"))?;
    sock.set_read_timeout(Some(WAIT))
        .map_err(|e| format!("udp socket: {e}"))?;
    Ok(sock)
}

/// Waits for the next packet of queue `on` (accepting any other) and hands
/// it to `f`.
fn with_packet<T>(queue: &mut Queue, on: u16, f: impl FnOnce(Packet<'_>) -> T) -> Option<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        match queue.recv_timeout(left) {
            Ok(Some(packet)) if packet.queue() == on => return Some(f(packet)),
            Ok(Some(packet)) => {
                let _ = packet.accept();
            }
            Ok(None) => return None,
            Err(err) if err.is_recoverable() => {}
            Err(_) => return None,
        }
    }
}

/// An iptables rule that queues UDP to `port` on `lo` to `queue`.
fn iptables_rule(iptables: &Path, port: u16, queue: u16) -> Result<(), String> {
    let (port, queue) = (port.to_string(), queue.to_string());
    host::run(
        iptables,
        &[
            "-A",
            "OUTPUT",
            "-o",
            "lo",
            "-p",
            "udp",
            "--dport",
            &port,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ],
        None,
    )
    .map(drop)
}

/// Every kernel probe, in the child.
fn kernel_here(iptables: Option<&Path>, nft: Option<&Path>) -> Vec<Check> {
    let mut checks = Vec::new();
    let mut queue = match Queue::open() {
        Ok(queue) => queue,
        Err(err) => {
            checks.push(Check::with(
                Feature::NfnetlinkQueue,
                Status::Missing,
                format!("a netfilter netlink socket could not be opened: {err}"),
                "use a kernel with CONFIG_NETFILTER_NETLINK (nfnetlink)",
            ));
            checks.extend(all_unchecked("no netfilter netlink socket"));
            checks.push(br_netfilter());
            return checks;
        }
    };
    if let Err(err) = queue.bind(0, &QueueConfig::default()) {
        checks.push(Check::with(
            Feature::NfnetlinkQueue,
            Status::Missing,
            format!("binding queue 0 failed: {err}"),
            crate::error::NFNETLINK_QUEUE_FIX,
        ));
        checks.extend(all_unchecked("no queue can be bound"));
        checks.push(br_netfilter());
        return checks;
    }
    checks.push(Check::ok(
        Feature::NfnetlinkQueue,
        "queue 0 bound in a throwaway network namespace",
    ));
    let flag = |queue: &mut Queue, feature: Feature, flags: QueueFlags, fix: &str| match queue
        .configure(0, &QueueConfig::default().flags(flags))
    {
        Ok(()) => Check::ok(feature, "the kernel accepts the flag"),
        Err(err) => Check::with(
            feature,
            Status::Missing,
            format!("configuring a queue with it failed: {err}"),
            fix,
        ),
    };
    checks.push(flag(
        &mut queue,
        Feature::GsoFlag,
        QueueFlags::GSO,
        "none needed: without it the kernel segments GSO packets before queueing them",
    ));
    let mut uid_gid = flag(
        &mut queue,
        Feature::UidGidFlag,
        QueueFlags::UID_GID,
        "none: a kernel without it cannot tell the sending socket's uid",
    );
    if uid_gid.status != Status::Ok {
        let _ = queue.configure(0, &QueueConfig::default());
    }

    // Packets: one receiver per probe, so that each rule sees only its own.
    let sockets = (udp(), udp(), udp(), udp());
    let (Ok(receiver_ipt), Ok(receiver_nft), Ok(receiver_ct), Ok(sender)) = sockets else {
        let why = "no UDP socket on 127.0.0.1 in the namespace";
        for feature in [
            Feature::IptablesTarget,
            Feature::NftQueue,
            Feature::ConntrackVerdicts,
        ] {
            checks.push(Check::with(feature, Status::Unchecked, why, "-"));
        }
        checks.push(uid_gid);
        checks.push(br_netfilter());
        return checks;
    };
    let port = |s: &UdpSocket| s.local_addr().map(|a| a.port()).unwrap_or(0);

    // iptables -j NFQUEUE, and the uid of the sender on its packet.
    let iptables_works = match iptables {
        None => {
            checks.push(Check::with(
                Feature::IptablesTarget,
                Status::Unchecked,
                "iptables is not installed",
                "apt-get install iptables",
            ));
            false
        }
        Some(iptables) => {
            match iptables_rule(iptables, port(&receiver_ipt), 0) {
                Err(err) => {
                    checks.push(Check::with(
                    Feature::IptablesTarget,
                    Status::Missing,
                    format!("iptables -A OUTPUT ... -j NFQUEUE failed: {err}"),
                    "load xt_NFQUEUE (modprobe xt_NFQUEUE; CONFIG_NETFILTER_XT_TARGET_NFQUEUE), \
                     or queue with nft's queue statement",
                ));
                    false
                }
                Ok(()) => {
                    let dest = SocketAddr::from((Ipv4Addr::LOCALHOST, port(&receiver_ipt)));
                    let _ = sender.send_to(b"nfq-doctor iptables", dest);
                    let uid = with_packet(&mut queue, 0, |packet| {
                        let uid = packet.uid();
                        let _ = packet.accept();
                        uid
                    });
                    match uid {
                        Some(uid) => {
                            checks.push(Check::ok(
                                Feature::IptablesTarget,
                                "a packet queued by iptables -j NFQUEUE reached the queue",
                            ));
                            if uid_gid.status == Status::Ok {
                                uid_gid = match uid {
                                Some(uid) => Check::ok(
                                    Feature::UidGidFlag,
                                    format!("the sending socket's uid ({uid}) came with the packet"),
                                ),
                                None => Check::with(
                                    Feature::UidGidFlag,
                                    Status::Warning,
                                    "the kernel accepts the flag, but a local packet came without \
                                     a uid",
                                    "none known",
                                ),
                            };
                            }
                            true
                        }
                        None => {
                            checks.push(Check::with(
                            Feature::IptablesTarget,
                            Status::Missing,
                            format!("the rule was installed, but no packet reached the queue within {WAIT:?}"),
                            "check that nothing before the rule accepts or drops the packets",
                        ));
                            false
                        }
                    }
                }
            }
        }
    };
    checks.push(uid_gid);

    checks.push(nft_queue(&mut queue, nft, &sender, port(&receiver_nft)));

    let (packets, verdicts) = conntrack(
        &mut queue,
        iptables.filter(|_| iptables_works),
        port(&receiver_ct),
    );
    checks.push(packets);
    checks.push(verdicts);
    checks.push(br_netfilter());
    checks
}

/// nft's queue statement: a table and chain first (so that a failure of the
/// statement is not mistaken for nft not working at all), then the rule,
/// then a packet through it to queue 1.
fn nft_queue(queue: &mut Queue, nft: Option<&Path>, sender: &UdpSocket, port: u16) -> Check {
    let Some(nft) = nft else {
        return Check::with(
            Feature::NftQueue,
            Status::Unchecked,
            "nft is not installed",
            "apt-get install nftables",
        );
    };
    if let Err(err) = queue.bind(1, &QueueConfig::default()) {
        return Check::with(
            Feature::NftQueue,
            Status::Unchecked,
            format!("binding queue 1 failed: {err}"),
            "-",
        );
    }
    let table = "table inet nfq_doctor {\n\
                 \tchain output { type filter hook output priority 0; policy accept; }\n\
                 }\n";
    if let Err(err) = host::run(nft, &["-f", "-"], Some(table)) {
        return Check::with(
            Feature::NftQueue,
            Status::Unchecked,
            format!("nft cannot make a table here: {err}"),
            "check that the kernel has nf_tables (CONFIG_NF_TABLES)",
        );
    }
    let rule = format!("oifname \"lo\" udp dport {port} queue num 1 bypass");
    let mut args = vec!["add", "rule", "inet", "nfq_doctor", "output"];
    args.extend(rule.split(' '));
    if let Err(err) = host::run(nft, &args, None) {
        return Check::with(
            Feature::NftQueue,
            Status::Missing,
            format!("nft add rule inet nfq_doctor output ... queue num 1 bypass failed: {err}"),
            NFT_QUEUE_FIX,
        );
    }
    let _ = sender.send_to(
        b"nfq-doctor nft",
        SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
    );
    match with_packet(queue, 1, |packet| packet.accept()) {
        Some(_) => Check::ok(
            Feature::NftQueue,
            "a packet queued by nft's queue statement reached the queue",
        ),
        None => Check::with(
            Feature::NftQueue,
            Status::Missing,
            format!("the rule was installed, but no packet reached the queue within {WAIT:?}"),
            NFT_QUEUE_FIX,
        ),
    }
}

/// The conntrack glue: a bind with `CONNTRACK` (refused without it), an
/// entry on a queued packet, and a connection mark set by a verdict, seen on
/// the next packet of the flow.
fn conntrack(queue: &mut Queue, iptables: Option<&Path>, port: u16) -> (Check, Check) {
    let config = QueueConfig::default().flags(QueueFlags::CONNTRACK);
    if let Err(err) = queue.bind(2, &config) {
        let glue = err.raw_os_error() == Some(libc::EOPNOTSUPP);
        let verdicts = if glue {
            "no conntrack glue (a bind with QueueFlags::CONNTRACK fails with EOPNOTSUPP), so \
             nfqnl_recv_verdict finds no nfnl_ct_hook and leaves out the NFQA_CT of every \
             verdict, without an error"
                .to_string()
        } else {
            format!("binding a queue with QueueFlags::CONNTRACK failed: {err}")
        };
        return (
            Check::with(
                Feature::ConntrackPackets,
                Status::Missing,
                format!("binding a queue with QueueFlags::CONNTRACK failed: {err}"),
                GLUE_CT_FIX,
            ),
            Check::with(
                Feature::ConntrackVerdicts,
                Status::Missing,
                verdicts,
                GLUE_CT_FIX,
            ),
        );
    }
    let Some(iptables) = iptables else {
        return (
            Check::ok(
                Feature::ConntrackPackets,
                "the kernel accepts the CONNTRACK flag (no iptables rule to queue a packet with)",
            ),
            Check::with(
                Feature::ConntrackVerdicts,
                Status::Unchecked,
                "needs a working iptables NFQUEUE rule to send packets through",
                "see 'iptables NFQUEUE target'",
            ),
        );
    };
    let flow = || -> Result<UdpSocket, String> {
        iptables_rule(iptables, port, 2)?;
        let sender = udp()?;
        sender
            .connect((Ipv4Addr::LOCALHOST, port))
            .map_err(|e| format!("connect: {e}"))?;
        Ok(sender)
    };
    let sender = match flow() {
        Ok(sender) => sender,
        Err(why) => {
            let check = |feature| Check::with(feature, Status::Unchecked, why.clone(), "-");
            return (
                check(Feature::ConntrackPackets),
                check(Feature::ConntrackVerdicts),
            );
        }
    };
    let _ = sender.send(b"nfq-doctor conntrack 1");
    let first = with_packet(queue, 2, |packet| {
        let found = match packet.conntrack_view() {
            Ok(Some(ct)) => Ok(format!(
                "{} in state {:?}",
                ct.original().map(|t| t.to_string()).unwrap_or_default(),
                ct.state()
            )),
            Ok(None) => Err("bound with CONNTRACK, yet the packet came without NFQA_CT".into()),
            Err(err) => Err(format!("the packet's NFQA_CT did not parse: {err}")),
        };
        let _ = packet.verdict(&Verdict::accept().with_connmark(CONNMARK));
        found
    });
    let packets = match first {
        None => Check::with(
            Feature::ConntrackPackets,
            Status::Unchecked,
            format!("no packet reached the queue within {WAIT:?}"),
            "-",
        ),
        Some(Ok(entry)) => Check::ok(
            Feature::ConntrackPackets,
            format!("a queued packet carried its entry: {entry}"),
        ),
        Some(Err(why)) => Check::with(Feature::ConntrackPackets, Status::Missing, why, GLUE_CT_FIX),
    };
    let _ = sender.send(b"nfq-doctor conntrack 2");
    let second = with_packet(queue, 2, |packet| {
        let mark = packet
            .conntrack_view()
            .ok()
            .flatten()
            .and_then(|ct| ct.mark());
        let _ = packet.accept();
        mark
    });
    let verdicts = match second {
        Some(Some(CONNMARK)) => Check::ok(
            Feature::ConntrackVerdicts,
            format!("a verdict's connection mark ({CONNMARK:#x}) was on the flow's next packet"),
        ),
        Some(mark) => Check::with(
            Feature::ConntrackVerdicts,
            Status::Missing,
            format!(
                "a verdict set the connection mark {CONNMARK:#x}, but the flow's next packet \
                 had {mark:?}"
            ),
            GLUE_CT_FIX,
        ),
        None => Check::with(
            Feature::ConntrackVerdicts,
            Status::Unchecked,
            format!("the flow's second packet did not reach the queue within {WAIT:?}"),
            "-",
        ),
    };
    (packets, verdicts)
}

/// `br_netfilter`: its sysctls exist in every network namespace once it is
/// loaded (or built in).
fn br_netfilter() -> Check {
    let path = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    match std::fs::read_to_string(path).map(|s| s.trim().to_string()) {
        Ok(on) if on == "1" => Check::ok(
            Feature::BrNetfilter,
            "loaded: bridged packets pass the iptables and nft ip hooks \
             (net.bridge.bridge-nf-call-iptables=1)",
        ),
        Ok(off) => Check::with(
            Feature::BrNetfilter,
            Status::Warning,
            format!(
                "loaded, but net.bridge.bridge-nf-call-iptables={off}: bridged packets skip \
                 the iptables hooks"
            ),
            "only to queue bridged traffic: sysctl -w net.bridge.bridge-nf-call-iptables=1 \
             (and bridge-nf-call-ip6tables)",
        ),
        Err(_) => Check::with(
            Feature::BrNetfilter,
            Status::Missing,
            format!("{path} does not exist: bridged packets never meet iptables rules"),
            "only to queue bridged traffic: modprobe br_netfilter (CONFIG_BRIDGE_NETFILTER), or \
             queue them with nft rules of the bridge family",
        ),
    }
}

/// A verdict with a payload from a non-initial user namespace: does its
/// packet arrive?
pub(super) fn payload_in_user_namespace(
    host: &Host,
    userns: Option<&Check>,
    timeout: Duration,
) -> Check {
    let Some(iptables) = host.iptables.clone() else {
        return Check::with(
            Feature::PayloadInUserNamespace,
            Status::Unchecked,
            "needs iptables to queue packets",
            "apt-get install iptables",
        );
    };
    let probe = || payload_here(&iptables);
    let mut answer = sandbox::run(Isolation::UserNet, timeout, probe);
    if answer.is_err() && !host.initial_userns && host.isolation() == Isolation::Net {
        // Already in a non-initial user namespace: a network namespace of it
        // answers the same question.
        answer = sandbox::run(Isolation::Net, timeout, probe);
    }
    match answer.as_deref() {
        Ok("arrived") => Check::ok(
            Feature::PayloadInUserNamespace,
            "a verdict with a payload, given from a new user namespace, let its packet through",
        ),
        Ok(_) => Check::with(
            Feature::PayloadInUserNamespace,
            Status::Missing,
            "the kernel dropped a packet whose verdict carried a payload from a non-initial user \
             namespace, and reported nothing (a plain accept arrived)",
            "give payload verdicts from the initial user namespace (root on the host, not a \
             rootless container), or rewrite with a rule (NAT) and give a plain verdict; \
             verdicts without a payload work",
        ),
        Err(why) => Check::with(
            Feature::PayloadInUserNamespace,
            Status::Unchecked,
            format!("could not try it in a new user namespace: {why}"),
            match userns {
                Some(check) if check.status == Status::Missing => check
                    .fix
                    .clone()
                    .unwrap_or_else(|| "allow user namespaces".into()),
                _ => "run nfq-doctor as root".into(),
            },
        ),
    }
}

/// In the child: a plain accept, then an accept with the packet's own bytes
/// (checksums completed) as its payload; says whether the second arrived.
fn payload_here(iptables: &Path) -> Result<String, String> {
    let (receiver, sender) = (udp()?, udp()?);
    let dest = receiver.local_addr().map_err(|e| e.to_string())?;
    iptables_rule(iptables, dest.port(), 0)?;
    let mut queue = Queue::open().map_err(|e: Error| e.to_string())?;
    queue
        .bind(0, &QueueConfig::default())
        .map_err(|e| e.to_string())?;
    let mut through = |datagram: &[u8], with_payload: bool| -> Result<bool, String> {
        sender
            .send_to(datagram, dest)
            .map_err(|e| format!("sending: {e}"))?;
        with_packet(&mut queue, 0, |packet| {
            if with_payload {
                let mut bytes = packet.payload().to_vec();
                let _ = net::mangle::fix_checksums(&mut bytes);
                packet.verdict(&Verdict::accept().with_payload(bytes))
            } else {
                packet.accept()
            }
        })
        .ok_or("no packet reached the queue")?
        .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 64];
        Ok(matches!(receiver.recv(&mut buf), Ok(n) if &buf[..n] == datagram))
    };
    if !through(b"nfq-doctor plain accept", false)? {
        return Err("a plain accept did not arrive either".into());
    }
    Ok(if through(b"nfq-doctor payload accept", true)? {
        "arrived"
    } else {
        "dropped"
    }
    .into())
}
