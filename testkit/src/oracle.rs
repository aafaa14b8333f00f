//! A verdict oracle: traffic whose every datagram says what should happen to it,
//! a handler that decides from that content, and a far end that checks what
//! really happened.
//!
//! A [`Plan`] is N UDP flows of numbered datagrams (IPv4, from 127.0.0.2,
//! 127.0.0.3, ... so that `--queue-balance` spreads them). Each datagram carries
//! its flow, its sequence number, its [`Fate`] (accept, drop, accept with a mark,
//! repeat with a mark the queueing rule skips, queue to another queue, replace
//! the payload) and an optional [`Fault`] for its handler (panic, sleep, block
//! until released). A [`Judge`] turns a queued packet into the [`Decision`] its
//! content asks for and records it; the test crates map a decision to their
//! `Verdict`. The far end is a receiving socket ([`FarEnd`]) and one counting
//! rule per mark value ([`Rules`]); [`check`] compares what arrived (each once,
//! each flow in order where asked, each mark counted) with what the plan says,
//! and returns a readable diff.
//!
//! ```no_run
//! use nfqueue_testkit::oracle::{self, Expectation, FarEnd, Judge, Mix, Pacer, Plan, Rules, Sender};
//! use nfqueue_testkit::{traffic, Netns};
//!
//! let ns = Netns::new();
//! ns.enter();
//! let plan = Plan::new(7, 4, 50, &Mix::standard());
//! let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
//! let dest = receiver.local_addr().unwrap();
//! let rules = Rules::install(dest, &["--queue-num", "0"]);
//! let judge = Judge::new();
//! // ... a consumer of queue 0 answers each packet with
//! // judge.decide(queue, id, ip_packet), mapped to its Verdict ...
//! let far = FarEnd::start(receiver);
//! let expect = Expectation::default();
//! let mut pacer = Pacer::new(&far, Some(&judge), expect);
//! let report = Sender::new(plan.flows(), dest).send(plan.packets(), &mut pacer);
//! let sent = &plan.packets()[..report.sent];
//! let due = oracle::due(sent, |p| p.outcome(&expect));
//! let observed = oracle::observe(far, &rules, &[0], sent.len(), due);
//! oracle::check(sent, |p| p.outcome(&expect), expect, &observed)
//!     .unwrap_or_else(|diff| panic!("{diff}"));
//! ```

use crate::counters;
use crate::kernel_model::verdict;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt::{self, Write as _};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The first bytes of every oracle datagram.
pub const MAGIC: [u8; 4] = *b"NFQO";
/// Bytes of an oracle datagram (header and a pattern).
pub const DATAGRAM_LEN: usize = 32;
/// Where the "replaced" flag lies in a datagram: 0 as sent, [`REPLACED`] once a
/// payload verdict rewrote it.
pub const REPLACED_AT: usize = 22;
/// The value of the replaced flag after a payload verdict.
pub const REPLACED: u8 = b'R';
/// The mark bit the queueing rule skips (`-m mark ! --mark 0x10000/0x10000`):
/// repeated packets carry it, or they would come back to the queue.
pub const SKIP_BIT: u32 = 0x1_0000;
/// Marks of accepted packets: `MARKS[(flow * 7 + seq) % 4]`.
pub const MARKS: [u32; 4] = [0x11, 0x12, 0x13, 0x14];
/// Marks of repeated packets: `REPEAT_MARKS[(flow + seq) % 2]`.
pub const REPEAT_MARKS: [u32; 2] = [SKIP_BIT | 1, SKIP_BIT | 2];
/// The mark the second queue sets on requeued packets it accepts with a mark.
pub const REQUEUE_MARK: u32 = 0x21;
/// How far the sender runs ahead of what is settled (see [`Pacer`]): well inside
/// the receiving socket's buffer and the kernel's queue length.
pub const WINDOW: u64 = 128;
/// Environment variable that overrides the seed of every plan.
pub const SEED_ENV: &str = "NFQUEUE_ORACLE_SEED";

/// SplitMix64: a small, seedable generator for plans and shuffles.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }

    /// Shuffles `items` (Fisher-Yates).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

/// What the handler of a requeued packet does with it on the second queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then {
    /// Accept.
    Accept,
    /// Drop.
    Drop,
    /// Accept with [`REQUEUE_MARK`].
    Mark,
}

/// What should happen to a packet: the handler's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Accept.
    Accept,
    /// Drop.
    Drop,
    /// Accept with this mark.
    Mark(u32),
    /// Repeat the hook with this mark (which has [`SKIP_BIT`]): it passes.
    Repeat(u32),
    /// Queue to `queue`, whose handler then does `then`.
    Requeue {
        /// The second queue (bound by a consumer).
        queue: u16,
        /// What happens there.
        then: Then,
    },
    /// Queue to `queue`, which nobody binds, with bypass: it is accepted.
    Bypass {
        /// The unbound queue.
        queue: u16,
    },
    /// Accept with a new payload: the same datagram with its replaced flag set.
    Replace,
}

/// A fault of the handler for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// None.
    #[default]
    None,
    /// The handler panics (with [`PlannedPanic`]).
    Panic,
    /// The handler sleeps this many milliseconds first.
    Sleep(u8),
    /// The handler blocks until [`Judge::release`] (at most 30 s).
    Stuck,
}

/// One datagram of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Planned {
    /// Flow number (its source address is 127.0.0.(2 + flow)).
    pub flow: u16,
    /// Sequence number within the flow.
    pub seq: u32,
    /// What should happen to it.
    pub fate: Fate,
    /// What its handler does wrong.
    pub fault: Fault,
}

/// What a packet should meet at the far end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It arrives, once, with this mark (0: none), replaced or not.
    Pass {
        /// Its mark at the counting rules.
        mark: u32,
        /// Whether a payload verdict rewrote it.
        replaced: bool,
    },
    /// It may arrive (once, with this mark) or not: its verdict may have been
    /// lost with its socket.
    MayPass {
        /// Its mark if it arrives.
        mark: u32,
        /// Whether rewritten, if it arrives.
        replaced: bool,
    },
    /// It never arrives.
    Blocked,
}

/// What the configuration under test promises beyond each packet's fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Expectation {
    /// A panicking handler's packet is accepted (`on_panic(Accept)`) rather than
    /// dropped.
    pub panic_accepts: bool,
    /// Each flow arrives in order (flow affinity, or one reader answering in
    /// order).
    pub ordered: bool,
}

impl Planned {
    /// The datagram: magic, flow, seq, fate, fault, a pattern; [`DATAGRAM_LEN`]
    /// bytes, or `len` if larger.
    pub fn datagram(&self, len: usize) -> Vec<u8> {
        let mut d: Vec<u8> = (0..len.max(DATAGRAM_LEN))
            .map(|i| (i % 251) as u8)
            .collect();
        d[..4].copy_from_slice(&MAGIC);
        d[4..6].copy_from_slice(&self.flow.to_be_bytes());
        d[6..10].copy_from_slice(&self.seq.to_be_bytes());
        let (code, a, then) = match self.fate {
            Fate::Accept => (0, 0, 0),
            Fate::Drop => (1, 0, 0),
            Fate::Mark(m) => (2, m, 0),
            Fate::Repeat(m) => (3, m, 0),
            Fate::Requeue { queue, then } => (
                4,
                u32::from(queue),
                match then {
                    Then::Accept => 0,
                    Then::Drop => 1,
                    Then::Mark => 2,
                },
            ),
            Fate::Bypass { queue } => (5, u32::from(queue), 0),
            Fate::Replace => (6, 0, 0),
        };
        d[10] = code;
        let (fault, arg) = match self.fault {
            Fault::None => (0, 0),
            Fault::Panic => (1, 0),
            Fault::Sleep(ms) => (2, ms),
            Fault::Stuck => (3, 0),
        };
        d[11] = fault;
        d[12..16].copy_from_slice(&a.to_be_bytes());
        d[16..20].copy_from_slice(&[0; 4]);
        d[20] = then;
        d[21] = arg;
        d[REPLACED_AT] = 0;
        d[23] = 0;
        d
    }

    /// Reads a datagram made by [`datagram`](Self::datagram); also returns
    /// whether it was replaced. `None` for anything else.
    pub fn parse(data: &[u8]) -> Option<(Planned, bool)> {
        if data.len() < DATAGRAM_LEN || data[..4] != MAGIC {
            return None;
        }
        let flow = u16::from_be_bytes([data[4], data[5]]);
        let seq = u32::from_be_bytes(data[6..10].try_into().ok()?);
        let a = u32::from_be_bytes(data[12..16].try_into().ok()?);
        let fate = match data[10] {
            0 => Fate::Accept,
            1 => Fate::Drop,
            2 => Fate::Mark(a),
            3 => Fate::Repeat(a),
            4 => Fate::Requeue {
                queue: a as u16,
                then: match data[20] {
                    0 => Then::Accept,
                    1 => Then::Drop,
                    2 => Then::Mark,
                    _ => return None,
                },
            },
            5 => Fate::Bypass { queue: a as u16 },
            6 => Fate::Replace,
            _ => return None,
        };
        let fault = match data[11] {
            0 => Fault::None,
            1 => Fault::Panic,
            2 => Fault::Sleep(data[21]),
            3 => Fault::Stuck,
            _ => return None,
        };
        let replaced = match data[REPLACED_AT] {
            0 => false,
            REPLACED => true,
            _ => return None,
        };
        Some((
            Planned {
                flow,
                seq,
                fate,
                fault,
            },
            replaced,
        ))
    }

    /// What the far end should see of this packet under `expect`.
    pub fn outcome(&self, expect: &Expectation) -> Outcome {
        if self.fault == Fault::Panic {
            return if expect.panic_accepts {
                Outcome::Pass {
                    mark: 0,
                    replaced: false,
                }
            } else {
                Outcome::Blocked
            };
        }
        self.fate_outcome()
    }

    /// What the far end should see if the handler's choice is carried out.
    pub fn fate_outcome(&self) -> Outcome {
        let pass = |mark| Outcome::Pass {
            mark,
            replaced: false,
        };
        match self.fate {
            Fate::Accept | Fate::Bypass { .. } => pass(0),
            Fate::Drop => Outcome::Blocked,
            Fate::Mark(m) | Fate::Repeat(m) => pass(m),
            Fate::Requeue { then, .. } => match then {
                Then::Accept => pass(0),
                Then::Drop => Outcome::Blocked,
                Then::Mark => pass(REQUEUE_MARK),
            },
            Fate::Replace => Outcome::Pass {
                mark: 0,
                replaced: true,
            },
        }
    }

    /// Whether the flow's order applies to this packet: a requeued one goes
    /// through a second consumer and may overtake or fall behind.
    pub fn keeps_order(&self) -> bool {
        !matches!(self.fate, Fate::Requeue { .. })
    }

    /// The decision its handler makes on queue `queue` for `ip_packet` (the
    /// queued packet, IPv4 header first).
    pub fn decision(&self, queue: u16, ip_packet: &[u8]) -> Decision {
        match self.fate {
            Fate::Accept => Decision::Accept { mark: None },
            Fate::Drop => Decision::Drop,
            Fate::Mark(m) => Decision::Accept { mark: Some(m) },
            Fate::Repeat(m) => Decision::Repeat { mark: m },
            Fate::Requeue { queue: to, then } if queue == to => match then {
                Then::Accept => Decision::Accept { mark: None },
                Then::Drop => Decision::Drop,
                Then::Mark => Decision::Accept {
                    mark: Some(REQUEUE_MARK),
                },
            },
            Fate::Requeue { queue: to, .. } => Decision::Queue {
                num: to,
                bypass: false,
            },
            Fate::Bypass { queue: to } => Decision::Queue {
                num: to,
                bypass: true,
            },
            Fate::Replace => match replaced_packet(ip_packet) {
                Some(packet) => Decision::Replace { packet },
                None => Decision::Drop,
            },
        }
    }

    /// Whether queue `queue` is this packet's first (not the requeue target).
    pub fn first_pass(&self, queue: u16) -> bool {
        !matches!(self.fate, Fate::Requeue { queue: to, .. } if to == queue)
    }
}

impl fmt::Display for Planned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "flow {} seq {} ({:?}", self.flow, self.seq, self.fate)?;
        if self.fault != Fault::None {
            write!(f, ", {:?}", self.fault)?;
        }
        f.write_str(")")
    }
}

/// What a handler gives a packet, independent of the crate under test (which
/// maps it to its `Verdict`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Accept, with a mark or not.
    Accept {
        /// The mark to set.
        mark: Option<u32>,
    },
    /// Drop.
    Drop,
    /// Repeat the hook with a mark.
    Repeat {
        /// The mark to set.
        mark: u32,
    },
    /// Queue to `num`.
    Queue {
        /// The queue.
        num: u16,
        /// Accept when nobody listens on `num`.
        bypass: bool,
    },
    /// Accept with this packet instead.
    Replace {
        /// The new packet, IP header first.
        packet: Vec<u8>,
    },
}

impl Decision {
    /// The kernel's verdict code.
    pub fn code(&self) -> u32 {
        match self {
            Decision::Accept { .. } | Decision::Replace { .. } => verdict::ACCEPT,
            Decision::Drop => verdict::DROP,
            Decision::Repeat { .. } => verdict::REPEAT,
            Decision::Queue { num, bypass } => verdict::queue(*num, *bypass),
        }
    }

    /// The mark sent with it.
    pub fn mark(&self) -> Option<u32> {
        match self {
            Decision::Accept { mark } => *mark,
            Decision::Repeat { mark } => Some(*mark),
            _ => None,
        }
    }

    /// The fate the kernel model should record for it.
    pub fn model_fate(&self) -> crate::kernel_model::Fate {
        let fate = crate::kernel_model::Fate::new(self.code(), self.mark());
        match self {
            Decision::Replace { packet } => fate.with_payload(packet.clone()),
            _ => fate,
        }
    }
}

/// The UDP data of an IPv4 or IPv6 packet (`None` when it is not UDP or is cut
/// short).
pub fn udp_data(ip_packet: &[u8]) -> Option<&[u8]> {
    let (header, proto) = match ip_packet.first()? >> 4 {
        4 => (usize::from(ip_packet[0] & 0x0f) * 4, *ip_packet.get(9)?),
        6 => (40, *ip_packet.get(6)?),
        _ => return None,
    };
    if proto != 17 {
        return None;
    }
    ip_packet.get(header + 8..)
}

/// `ip_packet` (IPv4, UDP) with its datagram's replaced flag set and the UDP
/// checksum cleared (0 means none over IPv4), for [`Fate::Replace`].
pub fn replaced_packet(ip_packet: &[u8]) -> Option<Vec<u8>> {
    if ip_packet.first()? >> 4 != 4 {
        return None;
    }
    let header = usize::from(ip_packet[0] & 0x0f) * 4;
    let mut out = ip_packet.to_vec();
    *out.get_mut(header + 8 + REPLACED_AT)? = REPLACED;
    out[header + 6..header + 8].copy_from_slice(&[0, 0]);
    Some(out)
}

/// How often each fate is chosen (weights, out of their sum).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mix {
    /// [`Fate::Accept`].
    pub accept: u32,
    /// [`Fate::Drop`].
    pub drop: u32,
    /// [`Fate::Mark`].
    pub mark: u32,
    /// [`Fate::Repeat`].
    pub repeat: u32,
    /// [`Fate::Requeue`] to `requeue_queue`.
    pub requeue: u32,
    /// [`Fate::Bypass`] to `bypass_queue`.
    pub bypass: u32,
    /// [`Fate::Replace`].
    pub replace: u32,
    /// The second queue of [`Fate::Requeue`].
    pub requeue_queue: u16,
    /// The unbound queue of [`Fate::Bypass`].
    pub bypass_queue: u16,
}

impl Mix {
    /// 36% drop, 21% accept, 21% accept with a mark, 11% repeat, 11% queue-to an
    /// unbound queue 10 with bypass; no requeue to a consumer, no payloads.
    pub fn standard() -> Mix {
        Mix {
            accept: 21,
            drop: 36,
            mark: 21,
            repeat: 11,
            requeue: 0,
            bypass: 11,
            replace: 0,
            requeue_queue: 9,
            bypass_queue: 10,
        }
    }

    /// This mix with `weight` for requeueing to `queue` (bound by a consumer
    /// that decides again from the content).
    pub fn requeue_to(mut self, queue: u16, weight: u32) -> Mix {
        self.requeue = weight;
        self.requeue_queue = queue;
        self
    }

    /// This mix with `weight` for payload verdicts.
    pub fn replace(mut self, weight: u32) -> Mix {
        self.replace = weight;
        self
    }

    /// Only accept and drop, half each.
    pub fn accept_drop() -> Mix {
        Mix {
            accept: 1,
            drop: 1,
            mark: 0,
            repeat: 0,
            requeue: 0,
            bypass: 0,
            replace: 0,
            requeue_queue: 9,
            bypass_queue: 10,
        }
    }

    fn pick(&self, rng: &mut Rng, flow: u16, seq: u32) -> Fate {
        let weights = [
            self.accept,
            self.drop,
            self.mark,
            self.repeat,
            self.requeue,
            self.bypass,
            self.replace,
        ];
        let total: u32 = weights.iter().sum();
        assert!(total > 0, "a mix needs some weight");
        let mut r = rng.below(u64::from(total)) as u32;
        let mut choice = 0;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                choice = i;
                break;
            }
            r -= w;
        }
        let (f, s) = (u32::from(flow), seq);
        match choice {
            0 => Fate::Accept,
            1 => Fate::Drop,
            2 => Fate::Mark(MARKS[((f * 7 + s) % 4) as usize]),
            3 => Fate::Repeat(REPEAT_MARKS[((f + s) % 2) as usize]),
            4 => Fate::Requeue {
                queue: self.requeue_queue,
                then: [Then::Accept, Then::Drop, Then::Mark][rng.below(3) as usize],
            },
            5 => Fate::Bypass {
                queue: self.bypass_queue,
            },
            _ => Fate::Replace,
        }
    }
}

/// Flows of numbered datagrams, each with its fate: the traffic of one test.
#[derive(Debug, Clone)]
pub struct Plan {
    seed: u64,
    flows: u16,
    packets: Vec<Planned>,
}

impl Plan {
    /// `flows` flows of `per_flow` datagrams each, fates drawn from `mix` with
    /// `seed` (or the seed in [`SEED_ENV`], when set). In sending order: seq 0
    /// of every flow, then seq 1, ...
    ///
    /// # Panics
    ///
    /// With more than 250 flows (the source addresses run out).
    pub fn new(seed: u64, flows: u16, per_flow: u32, mix: &Mix) -> Plan {
        assert!((1..=250).contains(&flows), "1 to 250 flows");
        let seed = std::env::var(SEED_ENV)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(seed);
        let mut rng = Rng::new(seed);
        let mut packets = Vec::with_capacity(usize::from(flows) * per_flow as usize);
        for seq in 0..per_flow {
            for flow in 0..flows {
                packets.push(Planned {
                    flow,
                    seq,
                    fate: mix.pick(&mut rng, flow, seq),
                    fault: Fault::None,
                });
            }
        }
        Plan {
            seed,
            flows,
            packets,
        }
    }

    /// Sets each packet's fault to `fault(packet)`.
    pub fn with_faults(mut self, fault: impl Fn(&Planned) -> Fault) -> Plan {
        for p in &mut self.packets {
            p.fault = fault(p);
        }
        self
    }

    /// Changes packets in place (for a test that needs a particular one).
    pub fn packets_mut(&mut self) -> &mut [Planned] {
        &mut self.packets
    }

    /// The packets, in sending order.
    pub fn packets(&self) -> &[Planned] {
        &self.packets
    }

    /// The number of flows.
    pub fn flows(&self) -> u16 {
        self.flows
    }

    /// The seed the fates were drawn with.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The share of packets whose fate is a drop.
    pub fn drop_share(&self) -> f64 {
        let drops = self
            .packets
            .iter()
            .filter(|p| p.fate_outcome() == Outcome::Blocked)
            .count();
        drops as f64 / self.packets.len().max(1) as f64
    }

    /// How many packets have each fate, for messages.
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for p in &self.packets {
            let name = match p.fate {
                Fate::Accept => "accept",
                Fate::Drop => "drop",
                Fate::Mark(_) => "mark",
                Fate::Repeat(_) => "repeat",
                Fate::Requeue { .. } => "requeue",
                Fate::Bypass { .. } => "bypass",
                Fate::Replace => "replace",
            };
            *counts.entry(name.into()).or_default() += 1;
            if p.fault != Fault::None {
                *counts.entry(format!("fault {:?}", p.fault)).or_default() += 1;
            }
        }
        format!(
            "seed {} ({SEED_ENV} to rerun), {} flows, {} packets: {counts:?}",
            self.seed,
            self.flows,
            self.packets.len()
        )
    }
}

/// The counting rules of a test and the rule that queues its traffic.
#[derive(Debug)]
pub struct Rules {
    marks: BTreeSet<u32>,
}

/// Comment of the rule that counts every packet that passed the queue.
const ALL_COMMENT: &str = "oracle-all";

impl Rules {
    /// Installs, in the current thread's namespace: in filter OUTPUT, UDP to
    /// `dest` without [`SKIP_BIT`] goes to `NFQUEUE` with the `target` options
    /// (e.g. `["--queue-balance", "0:2"]`); in mangle POSTROUTING (after the
    /// queue) a rule counts every such packet and one counts each mark value
    /// the oracle uses (0, [`MARKS`], [`REPEAT_MARKS`], [`REQUEUE_MARK`]).
    ///
    /// # Panics
    ///
    /// When iptables fails.
    pub fn install(dest: SocketAddr, target: &[&str]) -> Rules {
        let port = dest.port().to_string();
        let mut queue = vec![
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "--dport",
            &port,
            "-m",
            "mark",
            "!",
            "--mark",
            "0x10000/0x10000",
            "-j",
            "NFQUEUE",
        ];
        queue.extend_from_slice(target);
        crate::iptables(queue);
        let mut marks: BTreeSet<u32> = MARKS.into_iter().chain(REPEAT_MARKS).collect();
        marks.insert(0);
        marks.insert(REQUEUE_MARK);
        let count = |extra: &[&str], comment: &str| {
            let mut rule = vec!["-t", "mangle", "-A", "POSTROUTING", "-p", "udp", "--dport"];
            rule.push(&port);
            rule.extend_from_slice(extra);
            rule.extend_from_slice(&["-m", "comment", "--comment", comment]);
            crate::iptables(rule);
        };
        count(&[], ALL_COMMENT);
        for m in &marks {
            let value = format!("{m:#x}");
            count(&["-m", "mark", "--mark", &value], &mark_comment(*m));
        }
        Rules { marks }
    }

    /// Packets counted per mark value; packets with any other mark are under
    /// `u32::MAX`.
    pub fn mark_counts(&self) -> BTreeMap<u32, u64> {
        let listing = crate::cmd::run(
            "iptables",
            ["-t", "mangle", "-L", "POSTROUTING", "-v", "-x", "-n"],
        );
        let count = |comment: &str| -> u64 {
            let tag = format!("/* {comment} */");
            listing
                .lines()
                .find(|l| l.contains(&tag))
                .and_then(|l| l.split_whitespace().next()?.parse().ok())
                .unwrap_or_else(|| panic!("no counter {comment:?} in\n{listing}"))
        };
        let mut out = BTreeMap::new();
        let mut known = 0;
        for m in &self.marks {
            let n = count(&mark_comment(*m));
            known += n;
            out.insert(*m, n);
        }
        out.insert(u32::MAX, count(ALL_COMMENT) - known);
        out
    }
}

fn mark_comment(mark: u32) -> String {
    format!("oracle-mark-{mark:#x}")
}

/// What a handler recorded about one packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The queue it came from.
    pub queue: u16,
    /// Its packet id there.
    pub id: u32,
    /// The planned packet.
    pub packet: Planned,
    /// Whether this was its first queue (not the requeue target).
    pub first_pass: bool,
    /// The decision (`None` when the handler panicked).
    pub decision: Option<Decision>,
    /// The thread that decided.
    pub thread: String,
}

#[derive(Debug, Default)]
struct JudgeState {
    decided: Arc<AtomicU64>,
    panics: AtomicU64,
    foreign: AtomicU64,
    stuck: AtomicU64,
    released: Mutex<bool>,
    wake: Condvar,
    records: Mutex<Vec<Record>>,
}

/// The payload of a planned handler panic; [`quiet_planned_panics`] keeps them
/// off stderr.
#[derive(Debug, Clone, Copy)]
pub struct PlannedPanic(pub Planned);

/// The handler side of the oracle: decides each packet from its content, plays
/// its fault, and records what it did. Cheap to clone, shared by all handlers.
#[derive(Debug, Clone, Default)]
pub struct Judge {
    state: Arc<JudgeState>,
}

/// Longest a stuck handler waits for [`Judge::release`].
const STUCK_MAX: Duration = Duration::from_secs(30);

impl Judge {
    /// A judge with nothing recorded.
    pub fn new() -> Judge {
        Judge::default()
    }

    /// The decision for packet `id` of `queue`, whose bytes (IP header first)
    /// are `ip_packet`: the fault first (a panic, a sleep, a block until
    /// released), then the fate. A packet that is not the oracle's is dropped
    /// and counted ([`foreign`](Self::foreign)).
    pub fn decide(&self, queue: u16, id: u32, ip_packet: &[u8]) -> Decision {
        let Some((packet, _)) = udp_data(ip_packet).and_then(Planned::parse) else {
            self.state.foreign.fetch_add(1, Ordering::Relaxed);
            return Decision::Drop;
        };
        let first_pass = packet.first_pass(queue);
        let record = |decision: Option<Decision>| Record {
            queue,
            id,
            packet,
            first_pass,
            decision,
            thread: thread::current().name().unwrap_or("?").to_string(),
        };
        if first_pass {
            match packet.fault {
                Fault::None => {}
                Fault::Sleep(ms) => thread::sleep(Duration::from_millis(u64::from(ms))),
                Fault::Panic => {
                    self.state.records.lock().unwrap().push(record(None));
                    self.state.panics.fetch_add(1, Ordering::Relaxed);
                    self.state.decided.fetch_add(1, Ordering::Release);
                    std::panic::panic_any(PlannedPanic(packet));
                }
                Fault::Stuck => self.wait_for_release(),
            }
        }
        let decision = packet.decision(queue, ip_packet);
        self.state
            .records
            .lock()
            .unwrap()
            .push(record(Some(decision.clone())));
        if first_pass {
            self.state.decided.fetch_add(1, Ordering::Release);
        }
        decision
    }

    fn wait_for_release(&self) {
        self.state.stuck.fetch_add(1, Ordering::AcqRel);
        let deadline = Instant::now() + STUCK_MAX;
        let mut released = self.state.released.lock().unwrap();
        while !*released {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            released = self.state.wake.wait_timeout(released, left).unwrap().0;
        }
    }

    /// Lets every stuck handler go on (and any later one pass at once).
    pub fn release(&self) {
        *self.state.released.lock().unwrap() = true;
        self.state.wake.notify_all();
    }

    /// Handlers that blocked on a stuck packet so far.
    pub fn stuck(&self) -> u64 {
        self.state.stuck.load(Ordering::Acquire)
    }

    /// Planned panics so far.
    pub fn panics(&self) -> u64 {
        self.state.panics.load(Ordering::Relaxed)
    }

    /// Packets that were not the oracle's.
    pub fn foreign(&self) -> u64 {
        self.state.foreign.load(Ordering::Relaxed)
    }

    /// First-queue decisions made (panics included), for the [`Pacer`].
    pub fn decided(&self) -> u64 {
        self.state.decided.load(Ordering::Acquire)
    }

    /// Everything recorded so far.
    pub fn records(&self) -> Vec<Record> {
        self.state.records.lock().unwrap().clone()
    }

    /// Waits (at most `timeout`) until `n` first-queue decisions were made.
    pub fn wait_decided(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.decided() < n {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }
}

/// The payload of a panic a test makes on purpose outside the oracle's plan
/// (`std::panic::panic_any(QuietPanic)`); [`quiet_planned_panics`] keeps it
/// off stderr too: printing a backtrace takes seconds on a loaded machine.
#[derive(Debug, Clone, Copy)]
pub struct QuietPanic;

/// Installs (once per process) a panic hook that prints nothing for
/// [`PlannedPanic`]s and [`QuietPanic`]s and hands every other panic to the
/// hook before it.
pub fn quiet_planned_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            if !(payload.is::<PlannedPanic>() || payload.is::<QuietPanic>()) {
                previous(info);
            }
        }));
    });
}

/// One datagram at the far end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Its flow.
    pub flow: u16,
    /// Its sequence number.
    pub seq: u32,
    /// Whether a payload verdict rewrote it.
    pub replaced: bool,
}

/// The receiving end: a thread that reads the receiver socket and notes each
/// oracle datagram.
#[derive(Debug)]
pub struct FarEnd {
    arrived: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<Arrival>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl FarEnd {
    /// Starts reading `receiver` (its receive buffer made as large as allowed).
    pub fn start(receiver: UdpSocket) -> FarEnd {
        set_big_rcvbuf(&receiver);
        receiver
            .set_read_timeout(Some(Duration::from_millis(20)))
            .expect("setting a read timeout failed");
        let arrived = Arc::new(AtomicU64::new(0));
        let arrivals = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (count, got, stopping) = (
            Arc::clone(&arrived),
            Arc::clone(&arrivals),
            Arc::clone(&stop),
        );
        let thread = thread::Builder::new()
            .name("oracle-far-end".into())
            .spawn(move || {
                let mut foreign = 0u64;
                let mut buf = vec![0u8; 65536];
                let hard = Instant::now() + Duration::from_secs(120);
                let mut last = Instant::now();
                loop {
                    match receiver.recv(&mut buf) {
                        Ok(n) => {
                            last = Instant::now();
                            match Planned::parse(&buf[..n]) {
                                Some((p, replaced)) => got.lock().unwrap().push(Arrival {
                                    flow: p.flow,
                                    seq: p.seq,
                                    replaced,
                                }),
                                None => foreign += 1,
                            }
                            count.fetch_add(1, Ordering::Release);
                        }
                        Err(_) => {
                            let idle = last.elapsed() >= Duration::from_millis(150);
                            if (stopping.load(Ordering::Acquire) && idle) || Instant::now() > hard {
                                break;
                            }
                        }
                    }
                }
                foreign
            })
            .expect("spawning a thread failed");
        FarEnd {
            arrived,
            arrivals,
            stop,
            thread,
        }
    }

    /// Datagrams received so far.
    pub fn arrived(&self) -> u64 {
        self.arrived.load(Ordering::Acquire)
    }

    /// The oracle datagrams received so far, in arrival order.
    pub fn snapshot(&self) -> Vec<Arrival> {
        self.arrivals.lock().unwrap().clone()
    }

    /// Waits until `n` datagrams arrived, or none came for `quiet`, or 30 s
    /// passed. True if `n` arrived.
    pub fn wait_for(&self, n: u64, quiet: Duration) -> bool {
        let hard = Instant::now() + Duration::from_secs(30);
        let (mut seen, mut since) = (self.arrived(), Instant::now());
        loop {
            let now = self.arrived();
            if now >= n {
                return true;
            }
            if now != seen {
                (seen, since) = (now, Instant::now());
            }
            if since.elapsed() >= quiet || Instant::now() >= hard {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
    }

    /// Stops once nothing came for 150 ms, and returns what arrived and the
    /// number of datagrams that were not the oracle's.
    pub fn finish(self) -> (Vec<Arrival>, u64) {
        self.stop.store(true, Ordering::Release);
        let foreign = self
            .thread
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let arrivals = std::mem::take(&mut *self.arrivals.lock().unwrap());
        (arrivals, foreign)
    }
}

fn set_big_rcvbuf(sock: &UdpSocket) {
    let value: libc::c_int = 8 << 20;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: the option value points to a live c_int and the length says
        // so; the kernel only reads it; the socket is borrowed, so open.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Keeps the sender at most [`WINDOW`] packets ahead of what is settled: of the
/// handler's decisions (when a [`Judge`] is given) and of the arrivals the plan
/// expects, so that no buffer on the way overflows and a loss is a bug.
#[derive(Debug)]
pub struct Pacer {
    arrived: Arc<AtomicU64>,
    judge: Option<Judge>,
    expect: Expectation,
    /// Expected arrivals among the packets sent, after each send.
    expected_after: VecDeque<u64>,
    expected_total: u64,
    sent: u64,
    window: u64,
    undecided: u64,
    gap: Duration,
}

/// How long the sender waits without any progress before it gives up.
const STALL: Duration = Duration::from_secs(3);

impl Pacer {
    /// A pacer that watches `far` and, if given, `judge`'s decisions.
    pub fn new(far: &FarEnd, judge: Option<&Judge>, expect: Expectation) -> Pacer {
        Pacer {
            arrived: Arc::clone(&far.arrived),
            judge: judge.cloned(),
            expect,
            expected_after: VecDeque::new(),
            expected_total: 0,
            sent: 0,
            window: WINDOW,
            undecided: WINDOW,
            gap: Duration::ZERO,
        }
    }

    /// Leaves at least `gap` between two sends, so that a reader finds the
    /// packets one by one rather than in bursts.
    pub fn with_gap(mut self, gap: Duration) -> Pacer {
        self.gap = gap;
        self
    }

    /// Lets the sender run up to `n` packets ahead (default [`WINDOW`]): for a
    /// test in which a handler holds many back on purpose.
    pub fn with_window(mut self, n: u64) -> Pacer {
        self.window = n;
        self.undecided = n;
        self
    }

    /// Waits until `next` may be sent. False when nothing moved for 3 s (or 60
    /// s passed): the sender stops there.
    fn wait(&mut self, next: &Planned) -> bool {
        if !self.gap.is_zero() {
            thread::sleep(self.gap);
        }
        let hard = Instant::now() + Duration::from_secs(60);
        let mut progress = (u64::MAX, u64::MAX);
        let mut since = Instant::now();
        loop {
            let arrived = self.arrived.load(Ordering::Acquire);
            let decided = self.judge.as_ref().map_or(u64::MAX, Judge::decided);
            let owed = if self.expected_after.len() as u64 >= self.window {
                self.expected_after[0]
            } else {
                0
            };
            let decisions_ok = self.judge.is_none() || self.sent < decided + self.undecided;
            if arrived >= owed && decisions_ok {
                break;
            }
            if (arrived, decided) != progress {
                progress = (arrived, decided);
                since = Instant::now();
            }
            if since.elapsed() >= STALL || Instant::now() >= hard {
                return false;
            }
            thread::sleep(Duration::from_micros(50));
        }
        if matches!(
            next.outcome(&self.expect),
            Outcome::Pass { .. } | Outcome::MayPass { .. }
        ) {
            self.expected_total += 1;
        }
        self.expected_after.push_back(self.expected_total);
        if self.expected_after.len() as u64 > self.window {
            self.expected_after.pop_front();
        }
        self.sent += 1;
        true
    }
}

/// How a send went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendReport {
    /// Datagrams sent (the first ones of the slice given).
    pub sent: usize,
    /// Set when the pacer gave up: nothing moved for 3 s.
    pub stalled: bool,
}

/// One UDP socket per flow, each on its own source address.
#[derive(Debug)]
pub struct Sender {
    sockets: Vec<UdpSocket>,
    dest: SocketAddr,
    len: usize,
}

impl Sender {
    /// Sockets for `flows` flows (127.0.0.2, 127.0.0.3, ...) sending to `dest`.
    ///
    /// # Panics
    ///
    /// When a socket cannot be bound.
    pub fn new(flows: u16, dest: SocketAddr) -> Sender {
        let sockets = (0..flows)
            .map(|f| crate::traffic::udp_sender(Ipv4Addr::new(127, 0, 0, 2 + f as u8).into()))
            .collect();
        Sender {
            sockets,
            dest,
            len: DATAGRAM_LEN,
        }
    }

    /// Makes every datagram `len` bytes long (at least [`DATAGRAM_LEN`]).
    pub fn with_len(mut self, len: usize) -> Sender {
        self.len = len.max(DATAGRAM_LEN);
        self
    }

    /// Sends `packets` in order, each when `pacer` allows.
    ///
    /// # Panics
    ///
    /// When a send fails.
    pub fn send(&self, packets: &[Planned], pacer: &mut Pacer) -> SendReport {
        self.send_while(packets, pacer, || true)
    }

    /// Sends `packets` in order, each when `pacer` allows, while `keep_going`
    /// says so.
    ///
    /// # Panics
    ///
    /// When a send fails.
    pub fn send_while(
        &self,
        packets: &[Planned],
        pacer: &mut Pacer,
        keep_going: impl Fn() -> bool,
    ) -> SendReport {
        for (n, p) in packets.iter().enumerate() {
            if !keep_going() {
                return SendReport {
                    sent: n,
                    stalled: false,
                };
            }
            if !pacer.wait(p) {
                return SendReport {
                    sent: n,
                    stalled: true,
                };
            }
            self.send_one(p);
        }
        SendReport {
            sent: packets.len(),
            stalled: false,
        }
    }

    /// Sends one packet now.
    ///
    /// # Panics
    ///
    /// When the send fails.
    pub fn send_one(&self, p: &Planned) {
        self.sockets[usize::from(p.flow)]
            .send_to(&p.datagram(self.len), self.dest)
            .unwrap_or_else(|e| panic!("sending {p}: {e}"));
    }
}

/// What the far end saw.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Oracle datagrams, in arrival order.
    pub arrivals: Vec<Arrival>,
    /// Datagrams that were not the oracle's.
    pub foreign: u64,
    /// Packets counted per mark (`u32::MAX`: any other mark).
    pub marks: BTreeMap<u32, u64>,
    /// Queues with packets still waiting for a verdict: (queue, waiting).
    pub waiting: Vec<(u16, u32)>,
    /// Datagrams the receiving socket dropped (`Udp: RcvbufErrors`).
    pub rcvbuf_errors: u64,
    /// How many packets were sent.
    pub sent: usize,
}

/// How many of `sent` must arrive, by `outcome`.
pub fn due(sent: &[Planned], outcome: impl Fn(&Planned) -> Outcome) -> u64 {
    sent.iter()
        .filter(|p| matches!(outcome(p), Outcome::Pass { .. }))
        .count() as u64
}

/// Stops `far` once `due` datagrams arrived (or none came for a second), then
/// reads the mark counters of `rules`, the kernel's waiting count of `queues`
/// (after giving them 2 s to drain) and the receiving socket's drops, all in the
/// current thread's namespace. `sent` is how many packets were sent.
pub fn observe(far: FarEnd, rules: &Rules, queues: &[u16], sent: usize, due: u64) -> Observed {
    far.wait_for(due, Duration::from_secs(1));
    let waiting = wait_drained(queues);
    let (arrivals, foreign) = far.finish();
    Observed {
        arrivals,
        foreign,
        marks: rules.mark_counts(),
        waiting,
        rcvbuf_errors: counters::snmp_counter("Udp", "RcvbufErrors"),
        sent,
    }
}

/// Waits (at most 2 s) until no packet waits in `queues`; returns those that
/// still have some.
pub fn wait_drained(queues: &[u16]) -> Vec<(u16, u32)> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let waiting: Vec<(u16, u32)> = queues
            .iter()
            .filter_map(|&q| counters::queue_line(q).map(|l| (q, l.waiting)))
            .filter(|&(_, w)| w > 0)
            .collect();
        if waiting.is_empty() || Instant::now() >= deadline {
            return waiting;
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// What a passing [`check`] counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    /// Packets that arrived.
    pub arrived: usize,
    /// Packets that did not, as planned.
    pub blocked: usize,
    /// Packets that might have arrived and did not.
    pub lost_allowed: usize,
}

/// Compares what `observed` saw of `sent` with each packet's `outcome`: every
/// packet meant to pass arrived once (with the replaced flag it should have),
/// no other did, each flow in order when `expect.ordered` (requeued packets
/// aside), each mark counted as often as the arrivals carry it, nothing left
/// waiting.
///
/// # Errors
///
/// A readable diff: which flow/seq arrived wrongly, twice, out of order or not
/// at all (with its fate), which marks' counts differ, which queues still hold
/// packets.
pub fn check(
    sent: &[Planned],
    outcome: impl Fn(&Planned) -> Outcome,
    expect: Expectation,
    observed: &Observed,
) -> Result<Summary, String> {
    let by_key: HashMap<(u16, u32), &Planned> = sent.iter().map(|p| ((p.flow, p.seq), p)).collect();
    let mut seen: HashMap<(u16, u32), usize> = HashMap::new();
    let mut problems: Vec<String> = Vec::new();
    let mut wrong = Vec::new();
    let mut marks_expected: BTreeMap<u32, u64> = BTreeMap::new();
    let mut last_seq: HashMap<u16, u32> = HashMap::new();
    let mut reordered = Vec::new();
    for a in &observed.arrivals {
        let key = (a.flow, a.seq);
        *seen.entry(key).or_default() += 1;
        let Some(p) = by_key.get(&key) else {
            wrong.push(format!(
                "flow {} seq {}: arrived but was never sent",
                a.flow, a.seq
            ));
            continue;
        };
        match outcome(p) {
            Outcome::Blocked => wrong.push(format!("{p}: arrived, should not have")),
            Outcome::Pass { mark, replaced } | Outcome::MayPass { mark, replaced } => {
                *marks_expected.entry(mark).or_default() += 1;
                if replaced != a.replaced {
                    wrong.push(format!(
                        "{p}: arrived {}, should be {}",
                        if a.replaced { "replaced" } else { "original" },
                        if replaced { "replaced" } else { "original" },
                    ));
                }
            }
        }
        if expect.ordered && p.keeps_order() {
            if let Some(&before) = last_seq.get(&a.flow) {
                if a.seq < before {
                    reordered.push(format!(
                        "flow {}: seq {} arrived after seq {before}",
                        a.flow, a.seq
                    ));
                }
            }
            last_seq.insert(a.flow, a.seq);
        }
    }
    let mut missing = Vec::new();
    let mut summary = Summary::default();
    for p in sent {
        let n = seen.get(&(p.flow, p.seq)).copied().unwrap_or(0);
        if n > 1 {
            problems.push(format!("{p}: arrived {n} times"));
        }
        match (outcome(p), n) {
            (Outcome::Pass { .. }, 0) => missing.push(format!("{p}: never arrived")),
            (Outcome::MayPass { .. }, 0) => summary.lost_allowed += 1,
            (Outcome::Blocked, 0) => summary.blocked += 1,
            _ => summary.arrived += 1,
        }
    }
    let mut section = |title: &str, lines: &[String]| {
        if lines.is_empty() {
            return;
        }
        problems.push(format!("{} {title}:", lines.len()));
        problems.extend(lines.iter().take(25).map(|l| format!("    {l}")));
        if lines.len() > 25 {
            problems.push(format!("    ... and {} more", lines.len() - 25));
        }
    };
    section("missing", &missing);
    section("arrived wrongly", &wrong);
    section("out of order", &reordered);
    // Marks: the counters must see exactly the marks the arrivals carry.
    let mut mark_lines = Vec::new();
    let keys: BTreeSet<u32> = marks_expected
        .keys()
        .chain(observed.marks.keys())
        .copied()
        .collect();
    for m in keys {
        let want = marks_expected.get(&m).copied().unwrap_or(0);
        let got = observed.marks.get(&m).copied().unwrap_or(0);
        if want != got {
            let name = if m == u32::MAX {
                "other marks".to_string()
            } else {
                format!("mark {m:#x}")
            };
            mark_lines.push(format!("{name}: counted {got}, the arrivals carry {want}"));
        }
    }
    let unaccounted = observed
        .arrivals
        .iter()
        .filter(|a| {
            by_key
                .get(&(a.flow, a.seq))
                .map_or(true, |p| outcome(p) == Outcome::Blocked)
        })
        .count();
    let title = if unaccounted > 0 && !mark_lines.is_empty() {
        format!(
            "mark counts differ (the {unaccounted} arrivals that should not have arrived count \
             under the marks they had)"
        )
    } else {
        "mark counts differ".to_string()
    };
    section(&title, &mark_lines);
    if !observed.waiting.is_empty() {
        problems.push(format!(
            "packets still waiting for a verdict (queue, count): {:?}",
            observed.waiting
        ));
    }
    if observed.foreign > 0 {
        problems.push(format!(
            "{} datagrams at the far end were not the oracle's",
            observed.foreign
        ));
    }
    if problems.is_empty() {
        return Ok(summary);
    }
    let mut text = String::new();
    let _ = writeln!(
        text,
        "the far end does not match the plan ({} sent, {} arrived{}):",
        observed.sent,
        observed.arrivals.len(),
        if observed.rcvbuf_errors > 0 {
            format!(
                "; the receiving socket dropped {} datagrams: a test bug, not the library's",
                observed.rcvbuf_errors
            )
        } else {
            String::new()
        }
    );
    for p in problems {
        let _ = writeln!(text, "  {p}");
    }
    Err(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_says_what_it_is() {
        for fate in [
            Fate::Accept,
            Fate::Drop,
            Fate::Mark(0x12),
            Fate::Repeat(REPEAT_MARKS[1]),
            Fate::Requeue {
                queue: 9,
                then: Then::Mark,
            },
            Fate::Bypass { queue: 10 },
            Fate::Replace,
        ] {
            for fault in [Fault::None, Fault::Panic, Fault::Sleep(3), Fault::Stuck] {
                let p = Planned {
                    flow: 7,
                    seq: 70_000,
                    fate,
                    fault,
                };
                assert_eq!(Planned::parse(&p.datagram(0)), Some((p, false)));
                assert_eq!(Planned::parse(&p.datagram(1000)), Some((p, false)));
            }
        }
        assert_eq!(Planned::parse(b"short"), None);
        assert_eq!(Planned::parse(&[0u8; 64]), None);
    }

    fn ipv4_udp(data: &[u8]) -> Vec<u8> {
        let mut p = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 127, 0, 0, 2, 127, 0, 0, 1,
        ];
        p.extend_from_slice(&[0x30, 0x39, 0x30, 0x3a, 0, 0, 0xab, 0xcd]);
        p.extend_from_slice(data);
        p
    }

    #[test]
    fn a_replaced_packet_reads_as_replaced() {
        let p = Planned {
            flow: 1,
            seq: 2,
            fate: Fate::Replace,
            fault: Fault::None,
        };
        let ip = ipv4_udp(&p.datagram(0));
        let Decision::Replace { packet } = p.decision(0, &ip) else {
            panic!()
        };
        assert_eq!(&packet[26..28], &[0, 0], "checksum cleared");
        assert_eq!(Planned::parse(udp_data(&packet).unwrap()), Some((p, true)));
    }

    #[test]
    fn the_standard_mix_drops_at_least_a_third() {
        let plan = Plan::new(1, 8, 200, &Mix::standard().requeue_to(9, 8));
        assert!(plan.drop_share() >= 1.0 / 3.0, "{}", plan.summary());
        let kinds: BTreeSet<u8> = plan.packets().iter().map(|p| p.datagram(0)[10]).collect();
        assert_eq!(kinds.len(), 6, "every fate but replace: {}", plan.summary());
    }

    #[test]
    fn decisions_follow_the_fate_and_the_queue() {
        let p = Planned {
            flow: 0,
            seq: 0,
            fate: Fate::Requeue {
                queue: 9,
                then: Then::Drop,
            },
            fault: Fault::None,
        };
        assert_eq!(
            p.decision(0, &[]),
            Decision::Queue {
                num: 9,
                bypass: false
            }
        );
        assert_eq!(p.decision(9, &[]), Decision::Drop);
        assert!(!p.first_pass(9) && p.first_pass(0));
        assert_eq!(
            Decision::Queue {
                num: 10,
                bypass: true
            }
            .code(),
            0x000a_8003
        );
    }

    fn planned(flow: u16, seq: u32, fate: Fate) -> Planned {
        Planned {
            flow,
            seq,
            fate,
            fault: Fault::None,
        }
    }

    #[test]
    fn check_names_every_kind_of_difference() {
        let sent = vec![
            planned(0, 0, Fate::Accept),
            planned(0, 1, Fate::Drop),
            planned(0, 2, Fate::Mark(0x11)),
            planned(1, 0, Fate::Accept),
            planned(1, 1, Fate::Accept),
        ];
        let arrive = |flow, seq| Arrival {
            flow,
            seq,
            replaced: false,
        };
        let expect = Expectation {
            ordered: true,
            ..Expectation::default()
        };
        let mut observed = Observed {
            arrivals: vec![
                arrive(0, 0),
                arrive(0, 2),
                arrive(1, 1),
                arrive(1, 0),
                arrive(1, 0),
            ],
            marks: [(0, 4), (0x11, 1), (u32::MAX, 0)].into_iter().collect(),
            sent: 5,
            ..Observed::default()
        };
        let diff = check(&sent, |p| p.outcome(&expect), expect, &observed).unwrap_err();
        assert!(
            diff.contains("flow 1 seq 0 (Accept): arrived 2 times"),
            "{diff}"
        );
        assert!(diff.contains("flow 1: seq 0 arrived after seq 1"), "{diff}");
        assert!(!diff.contains("missing"), "{diff}");

        observed.arrivals = vec![arrive(0, 0), arrive(0, 1), arrive(1, 0), arrive(1, 1)];
        observed.marks = [(0, 4), (u32::MAX, 0)].into_iter().collect();
        let diff = check(&sent, |p| p.outcome(&expect), expect, &observed).unwrap_err();
        assert!(
            diff.contains("flow 0 seq 2 (Mark(17)): never arrived"),
            "{diff}"
        );
        assert!(
            diff.contains("flow 0 seq 1 (Drop): arrived, should not have"),
            "{diff}"
        );

        observed.arrivals = vec![arrive(0, 0), arrive(0, 2), arrive(1, 0), arrive(1, 1)];
        observed.marks = [(0, 4), (0x11, 0)].into_iter().collect();
        let diff = check(&sent, |p| p.outcome(&expect), expect, &observed).unwrap_err();
        assert!(
            diff.contains("mark 0x0: counted 4, the arrivals carry 3"),
            "{diff}"
        );
        assert!(
            diff.contains("mark 0x11: counted 0, the arrivals carry 1"),
            "{diff}"
        );

        observed.marks = [(0, 3), (0x11, 1)].into_iter().collect();
        let summary = check(&sent, |p| p.outcome(&expect), expect, &observed).unwrap();
        assert_eq!((summary.arrived, summary.blocked), (4, 1));
    }

    #[test]
    fn rng_shuffles_every_way() {
        let mut rng = Rng::new(3);
        let mut seen = BTreeSet::new();
        for _ in 0..200 {
            let mut v = [0, 1, 2];
            rng.shuffle(&mut v);
            seen.insert(v);
        }
        assert_eq!(seen.len(), 6);
    }
}
