//! A model of how the kernel applies verdict messages to a queue, to check the
//! bytes a verdict writer produces without a kernel.
//!
//! The model follows `net/netfilter/nfnetlink_queue.c`:
//!
//! - `nfqnl_recv_verdict` (`NFQNL_MSG_VERDICT`): the queue is looked up by the
//!   `res_id` of the `nfgenmsg` (big-endian), else `-ENODEV`
//!   (`verdict_instance_lookup`); `verdicthdr_get` needs an `NFQA_VERDICT_HDR`
//!   (`struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }`) whose verdict,
//!   masked with `NF_VERDICT_MASK`, is at most `NF_MAX_VERDICT` and not `NF_STOLEN`,
//!   else `-EINVAL`; `find_dequeue_entry` takes the waiting packet with that id
//!   out of the queue, else `-ENOENT`; an `NFQA_PAYLOAD` replaces the packet, an
//!   `NFQA_MARK` (`__be32`) sets its mark, and `nf_reinject` applies the verdict.
//! - `nfqnl_recv_verdict_batch` (`NFQNL_MSG_VERDICT_BATCH`): the same lookups,
//!   then it walks `queue_list` from the front, in the order the packets were
//!   queued, and takes every entry until the first whose id is after the one
//!   named (`nfq_id_after(id, max)`: `(int)(id - max) > 0`, so ids wrap); if it
//!   took none, `-ENOENT`; otherwise each one gets the verdict and the mark, if
//!   any (its policy has no `NFQA_PAYLOAD`: a payload is ignored).
//! - `netlink_rcv_skb` (net/netlink/af_netlink.c) handles the messages of one
//!   datagram in turn; a message that fails is answered with an error and the
//!   next one is still handled; a message without `NLM_F_REQUEST` is skipped;
//!   a header that claims more bytes than are left ends the datagram.
//!
//! A failed message is recorded as [`Rejected`] (the kernel reports it later on
//! the socket) and changes nothing, as in the kernel.
//!
//! ```
//! use nfqueue_testkit::kernel_model::{verdict, Fate, KernelQueues};
//!
//! let mut kernel = KernelQueues::new();
//! kernel.enqueue(0, 1..=3);
//! // A batch verdict: accept with mark 7 every waiting id up to 2.
//! let mut bytes = nfqueue_testkit::kernel_model::encode_batch(0, 2, verdict::ACCEPT, Some(7));
//! bytes.extend(nfqueue_testkit::kernel_model::encode_verdict(0, 3, verdict::DROP, None, None));
//! kernel.apply(&bytes).unwrap();
//! assert_eq!(kernel.fate(0, 1), Some(&Fate::new(verdict::ACCEPT, Some(7))));
//! assert_eq!(kernel.fate(0, 3), Some(&Fate::new(verdict::DROP, None)));
//! assert!(kernel.waiting(0).is_empty() && kernel.rejected().is_empty());
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

/// Verdict codes and flags, from `include/uapi/linux/netfilter.h`.
pub mod verdict {
    /// `NF_DROP`.
    pub const DROP: u32 = 0;
    /// `NF_ACCEPT`.
    pub const ACCEPT: u32 = 1;
    /// `NF_STOLEN`: refused in a verdict message.
    pub const STOLEN: u32 = 2;
    /// `NF_QUEUE`: to the queue in the upper 16 bits.
    pub const QUEUE: u32 = 3;
    /// `NF_REPEAT`.
    pub const REPEAT: u32 = 4;
    /// `NF_STOP` (accept, skipping the rest of the hook).
    pub const STOP: u32 = 5;
    /// `NF_MAX_VERDICT`.
    pub const MAX: u32 = STOP;
    /// `NF_VERDICT_MASK`.
    pub const MASK: u32 = 0x0000_00ff;
    /// `NF_VERDICT_FLAG_QUEUE_BYPASS`.
    pub const QUEUE_BYPASS: u32 = 0x0000_8000;
    /// `NF_VERDICT_QBITS`: where the queue number starts.
    pub const QUEUE_SHIFT: u32 = 16;

    /// The code of `NF_QUEUE` to queue `num`, accepted when nobody listens there
    /// if `bypass`.
    pub const fn queue(num: u16, bypass: bool) -> u32 {
        QUEUE | ((num as u32) << QUEUE_SHIFT) | if bypass { QUEUE_BYPASS } else { 0 }
    }

    /// A short name for a verdict code, for failure messages.
    pub fn name(code: u32) -> String {
        match code & MASK {
            DROP => "drop".into(),
            ACCEPT => "accept".into(),
            STOLEN => "stolen".into(),
            REPEAT => "repeat".into(),
            STOP => "accept-final".into(),
            QUEUE => format!(
                "queue-to {}{}",
                code >> QUEUE_SHIFT,
                if code & QUEUE_BYPASS != 0 {
                    " (bypass)"
                } else {
                    ""
                }
            ),
            other => format!("verdict {other}"),
        }
    }
}

/// `NFNL_SUBSYS_QUEUE`, the high byte of the message types here.
pub const SUBSYS_QUEUE: u16 = 3;
/// `nlmsg_type` of `NFQNL_MSG_VERDICT`.
pub const MSG_VERDICT: u16 = (SUBSYS_QUEUE << 8) | 1;
/// `nlmsg_type` of `NFQNL_MSG_VERDICT_BATCH`.
pub const MSG_VERDICT_BATCH: u16 = (SUBSYS_QUEUE << 8) | 3;
/// `NLM_F_REQUEST`: without it, the kernel skips the message.
pub const NLM_F_REQUEST: u16 = 1;
/// `NFQA_VERDICT_HDR`.
pub const NFQA_VERDICT_HDR: u16 = 2;
/// `NFQA_MARK`.
pub const NFQA_MARK: u16 = 3;
/// `NFQA_PAYLOAD`.
pub const NFQA_PAYLOAD: u16 = 10;
/// `NLA_TYPE_MASK`: the attribute type without the nested and byte-order flags.
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;
/// `errno` values the kernel answers with.
const ENOENT: i32 = 2;
const ENODEV: i32 = 19;
const EINVAL: i32 = 22;
const EOPNOTSUPP: i32 = 95;

const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One verdict message, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `NFQNL_MSG_VERDICT`: one packet.
    Verdict {
        /// Queue number (`nfgenmsg.res_id`).
        queue: u16,
        /// Packet id.
        id: u32,
        /// Verdict code, as sent.
        verdict: u32,
        /// `NFQA_MARK`, if present.
        mark: Option<u32>,
        /// `NFQA_PAYLOAD`, if present.
        payload: Option<Vec<u8>>,
    },
    /// `NFQNL_MSG_VERDICT_BATCH`: every waiting packet up to `max_id`.
    Batch {
        /// Queue number.
        queue: u16,
        /// The last id settled.
        max_id: u32,
        /// Verdict code, as sent.
        verdict: u32,
        /// `NFQA_MARK`, if present.
        mark: Option<u32>,
    },
    /// A message the kernel handles otherwise (not a verdict), or skips
    /// (no `NLM_F_REQUEST`).
    Other {
        /// `nlmsg_type`.
        msg_type: u16,
        /// `nlmsg_flags`.
        flags: u16,
    },
    /// A verdict message the kernel refuses before looking at any packet
    /// (`-EINVAL`: no or a short verdict header, a short mark).
    Invalid {
        /// Why.
        why: String,
    },
}

/// Bytes that are not a sequence of netlink messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Where in the bytes.
    pub offset: usize,
    /// What is wrong.
    pub why: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "at byte {}: {}", self.offset, self.why)
    }
}

impl std::error::Error for DecodeError {}

fn u16_ne(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_ne(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u32_be(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

/// Decodes the netlink messages of `bytes` (one datagram, or several written
/// one after another), as the kernel reads them.
///
/// # Errors
///
/// A message header that is short or claims more bytes than there are (the
/// kernel would stop reading the datagram there).
pub fn decode(bytes: &[u8]) -> Result<Vec<Message>, DecodeError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let rest = &bytes[at..];
        if rest.len() < NLMSG_HDRLEN {
            return Err(DecodeError {
                offset: at,
                why: format!("{} bytes left, a header needs {NLMSG_HDRLEN}", rest.len()),
            });
        }
        let len = u32_ne(rest, 0) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            return Err(DecodeError {
                offset: at,
                why: format!("nlmsg_len {len} with {} bytes left", rest.len()),
            });
        }
        out.push(decode_one(&rest[..len]));
        at += align4(len).max(len);
    }
    Ok(out)
}

fn decode_one(msg: &[u8]) -> Message {
    let msg_type = u16_ne(msg, 4);
    let flags = u16_ne(msg, 6);
    let batch = match msg_type {
        MSG_VERDICT if flags & NLM_F_REQUEST != 0 => false,
        MSG_VERDICT_BATCH if flags & NLM_F_REQUEST != 0 => true,
        _ => return Message::Other { msg_type, flags },
    };
    if msg.len() < NLMSG_HDRLEN + NFGENMSG_LEN {
        return Message::Invalid {
            why: "no nfgenmsg".into(),
        };
    }
    let queue = u16::from_be_bytes([msg[NLMSG_HDRLEN + 2], msg[NLMSG_HDRLEN + 3]]);
    let (mut hdr, mut mark, mut payload) = (None, None, None);
    let mut at = NLMSG_HDRLEN + NFGENMSG_LEN;
    while at + 4 <= msg.len() {
        let nla_len = usize::from(u16_ne(msg, at));
        let nla_type = u16_ne(msg, at + 2) & NLA_TYPE_MASK;
        if nla_len < 4 || at + nla_len > msg.len() {
            return Message::Invalid {
                why: format!("attribute {nla_type} of length {nla_len} at {at}"),
            };
        }
        let data = &msg[at + 4..at + nla_len];
        match nla_type {
            NFQA_VERDICT_HDR if data.len() >= 8 => hdr = Some((u32_be(data, 0), u32_be(data, 4))),
            NFQA_VERDICT_HDR => {
                return Message::Invalid {
                    why: format!("verdict header of {} bytes", data.len()),
                }
            }
            NFQA_MARK if data.len() >= 4 => mark = Some(u32_be(data, 0)),
            NFQA_MARK => {
                return Message::Invalid {
                    why: format!("mark of {} bytes", data.len()),
                }
            }
            NFQA_PAYLOAD => payload = Some(data.to_vec()),
            _ => {}
        }
        at += align4(nla_len);
    }
    let Some((verdict, id)) = hdr else {
        return Message::Invalid {
            why: "no verdict header".into(),
        };
    };
    if batch {
        Message::Batch {
            queue,
            max_id: id,
            verdict,
            mark,
        }
    } else {
        Message::Verdict {
            queue,
            id,
            verdict,
            mark,
            payload,
        }
    }
}

/// What happened to one packet: the verdict it got, the mark set with it (or
/// `None`: unchanged), and the payload that replaced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fate {
    /// Verdict code.
    pub verdict: u32,
    /// Mark set with the verdict.
    pub mark: Option<u32>,
    /// Replacement payload.
    pub payload: Option<Vec<u8>>,
}

impl Fate {
    /// A fate without payload.
    pub fn new(verdict: u32, mark: Option<u32>) -> Fate {
        Fate {
            verdict,
            mark,
            payload: None,
        }
    }

    /// This fate with a replacement payload.
    pub fn with_payload(mut self, payload: Vec<u8>) -> Fate {
        self.payload = Some(payload);
        self
    }
}

impl fmt::Display for Fate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&verdict::name(self.verdict))?;
        if let Some(mark) = self.mark {
            write!(f, " mark {mark:#x}")?;
        }
        if let Some(p) = &self.payload {
            write!(f, " payload of {} bytes", p.len())?;
        }
        Ok(())
    }
}

/// A message the kernel refused: it reports `errno` on the socket later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The message.
    pub message: Message,
    /// Why (`ENOENT`, `ENODEV`, `EINVAL`, `EOPNOTSUPP`).
    pub errno: i32,
}

/// Packets waiting in queues, as the kernel keeps them: one list per queue
/// number, in the order they were queued.
#[derive(Debug, Clone, Default)]
pub struct KernelQueues {
    waiting: BTreeMap<u16, VecDeque<u32>>,
    settled: BTreeMap<(u16, u32), Fate>,
    rejected: Vec<Rejected>,
    order: Vec<(u16, u32)>,
}

impl KernelQueues {
    /// No queue bound.
    pub fn new() -> KernelQueues {
        KernelQueues::default()
    }

    /// Binds `queue` (empty): verdicts for an unbound queue fail with `ENODEV`.
    pub fn bind(&mut self, queue: u16) {
        self.waiting.entry(queue).or_default();
    }

    /// Queues packets `ids` on `queue` (binding it if needed), after those
    /// already waiting.
    pub fn enqueue(&mut self, queue: u16, ids: impl IntoIterator<Item = u32>) {
        self.waiting.entry(queue).or_default().extend(ids);
    }

    /// Applies every message of `bytes`, in order.
    ///
    /// # Errors
    ///
    /// As [`decode`]; then nothing was applied.
    pub fn apply(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        for message in decode(bytes)? {
            self.apply_message(message);
        }
        Ok(())
    }

    /// Applies one decoded message.
    pub fn apply_message(&mut self, message: Message) {
        let reject = |this: &mut Self, message: Message, errno: i32| {
            this.rejected.push(Rejected { message, errno });
        };
        match &message {
            Message::Other { msg_type, flags } => {
                // Skipped without NLM_F_REQUEST; anything else is no verdict.
                if flags & NLM_F_REQUEST != 0 && *msg_type >> 8 == SUBSYS_QUEUE {
                    reject(self, message, EOPNOTSUPP);
                }
            }
            Message::Invalid { .. } => reject(self, message, EINVAL),
            Message::Verdict {
                queue,
                id,
                verdict: code,
                mark,
                payload,
            } => {
                let Some(list) = self.waiting.get_mut(queue) else {
                    return reject(self, message, ENODEV);
                };
                if !valid_verdict(*code) {
                    return reject(self, message, EINVAL);
                }
                let Some(at) = list.iter().position(|w| w == id) else {
                    return reject(self, message, ENOENT);
                };
                list.remove(at);
                let fate = Fate {
                    verdict: *code,
                    mark: *mark,
                    payload: payload.clone(),
                };
                self.settle(*queue, *id, fate);
            }
            Message::Batch {
                queue,
                max_id,
                verdict: code,
                mark,
            } => {
                let Some(list) = self.waiting.get_mut(queue) else {
                    return reject(self, message, ENODEV);
                };
                if !valid_verdict(*code) {
                    return reject(self, message, EINVAL);
                }
                let mut taken = Vec::new();
                while let Some(&front) = list.front() {
                    if id_after(front, *max_id) {
                        break;
                    }
                    list.pop_front();
                    taken.push(front);
                }
                if taken.is_empty() {
                    return reject(self, message, ENOENT);
                }
                let (queue, code, mark) = (*queue, *code, *mark);
                for id in taken {
                    self.settle(queue, id, Fate::new(code, mark));
                }
            }
        }
    }

    fn settle(&mut self, queue: u16, id: u32, fate: Fate) {
        // A waiting packet leaves the list when settled, so this is its only fate.
        self.settled.insert((queue, id), fate);
        self.order.push((queue, id));
    }

    /// The fate of packet `id` of `queue`, once settled.
    pub fn fate(&self, queue: u16, id: u32) -> Option<&Fate> {
        self.settled.get(&(queue, id))
    }

    /// The ids still waiting in `queue`, in queue order.
    pub fn waiting(&self, queue: u16) -> Vec<u32> {
        self.waiting
            .get(&queue)
            .map(|l| l.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The packets in the order they were settled (reinjected).
    pub fn settle_order(&self) -> &[(u16, u32)] {
        &self.order
    }

    /// The messages refused so far.
    pub fn rejected(&self) -> &[Rejected] {
        &self.rejected
    }

    /// Compares every packet's fate with `expected` (queue, id, fate), and
    /// checks that nothing was refused and nothing is left waiting.
    ///
    /// # Errors
    ///
    /// A readable list of every difference.
    pub fn compare<'a>(
        &self,
        expected: impl IntoIterator<Item = (u16, u32, &'a Fate)>,
    ) -> Result<(), String> {
        let mut diff = Vec::new();
        for (queue, id, want) in expected {
            match self.fate(queue, id) {
                Some(got) if got == want => {}
                Some(got) => diff.push(format!(
                    "queue {queue} id {id}: handler gave {want}, kernel applied {got}"
                )),
                None => diff.push(format!(
                    "queue {queue} id {id}: handler gave {want}, no verdict reached it"
                )),
            }
        }
        for r in &self.rejected {
            diff.push(format!("refused with errno {}: {:?}", r.errno, r.message));
        }
        for (queue, list) in &self.waiting {
            if !list.is_empty() {
                diff.push(format!(
                    "queue {queue}: {} packet(s) still waiting: {:?}",
                    list.len(),
                    list.iter().take(20).collect::<Vec<_>>()
                ));
            }
        }
        if diff.is_empty() {
            return Ok(());
        }
        let shown = diff.len().min(40);
        let mut text = format!("{} difference(s) from the kernel model:\n", diff.len());
        for line in &diff[..shown] {
            text.push_str("  ");
            text.push_str(line);
            text.push('\n');
        }
        if shown < diff.len() {
            text.push_str(&format!("  ... and {} more\n", diff.len() - shown));
        }
        Err(text)
    }
}

/// `verdicthdr_get`: the verdict without its flags is a known one, not `NF_STOLEN`.
fn valid_verdict(code: u32) -> bool {
    let v = code & verdict::MASK;
    v <= verdict::MAX && v != verdict::STOLEN
}

/// `nfq_id_after`: `(int)(id - max) > 0`.
pub fn id_after(id: u32, max: u32) -> bool {
    (id.wrapping_sub(max) as i32) > 0
}

/// A verdict message as libnetfilter_queue's `nfq_nlmsg_verdict_put*` build it,
/// for tests of the model and of decoders.
pub fn encode_verdict(
    queue: u16,
    id: u32,
    code: u32,
    mark: Option<u32>,
    payload: Option<&[u8]>,
) -> Vec<u8> {
    encode(MSG_VERDICT, queue, id, code, mark, payload)
}

/// A batch verdict message; see [`encode_verdict`].
pub fn encode_batch(queue: u16, max_id: u32, code: u32, mark: Option<u32>) -> Vec<u8> {
    encode(MSG_VERDICT_BATCH, queue, max_id, code, mark, None)
}

fn encode(
    msg_type: u16,
    queue: u16,
    id: u32,
    code: u32,
    mark: Option<u32>,
    payload: Option<&[u8]>,
) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&msg_type.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&id.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&queue.to_be_bytes());
    let attr = |m: &mut Vec<u8>, kind: u16, data: &[u8]| {
        m.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(data);
        m.resize(align4(m.len()), 0);
    };
    let mut hdr = code.to_be_bytes().to_vec();
    hdr.extend_from_slice(&id.to_be_bytes());
    attr(&mut m, NFQA_VERDICT_HDR, &hdr);
    if let Some(mark) = mark {
        attr(&mut m, NFQA_MARK, &mark.to_be_bytes());
    }
    if let Some(p) = payload {
        attr(&mut m, NFQA_PAYLOAD, p);
    }
    let len = m.len() as u32;
    m[..4].copy_from_slice(&len.to_ne_bytes());
    m
}

/// One packet of a [`Scenario`]: where it waits and what its handler decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScenarioPacket {
    /// Queue number.
    pub queue: u16,
    /// Packet id.
    pub id: u32,
    /// The verdict its handler gives.
    pub fate: Fate,
}

/// One step of a [`Scenario`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Packet `n` (an index into the packets) is handed to its handler.
    Dispatch(usize),
    /// Packet `n`'s handler returns its verdict.
    Complete(usize),
    /// The writer sends what it may; `idle` when nothing else is to be read.
    Flush {
        /// Whether the reader has nothing more to read now.
        idle: bool,
    },
}

/// Packets read from the kernel, their verdicts, and the order in which the
/// handlers finish: input for a verdict writer such as a coalescer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenario {
    /// The packets, in the order they are read (ids increasing per queue).
    pub packets: Vec<ScenarioPacket>,
    /// What happens, in order; every packet is dispatched before it completes.
    pub events: Vec<Event>,
}

/// What a verdict writer under test does with a [`Scenario`]: for a coalescer,
/// implement this over it (one per queue, or one for all), and hand it to
/// [`run_scenario`].
pub trait VerdictWriter {
    /// Packet `id` of `queue` was read and handed to its handler.
    fn dispatched(&mut self, queue: u16, id: u32);
    /// Its handler decided `fate`.
    fn completed(&mut self, queue: u16, id: u32, fate: &Fate);
    /// The bytes to send now (netlink messages, as a datagram would carry them).
    fn flush(&mut self, idle: bool) -> Vec<u8>;
}

impl Scenario {
    /// A scenario of `packets`, completed in `completion` order (indexes into
    /// `packets`, each once), with a flush after the `k`-th completion when
    /// `flush_after[k]` (missing entries: no flush), and a final idle flush.
    /// Each packet is dispatched, in order, just before the first completion
    /// that needs it.
    ///
    /// # Panics
    ///
    /// When `completion` is not a permutation of the packet indexes.
    pub fn new(packets: Vec<ScenarioPacket>, completion: &[usize], flush_after: &[bool]) -> Self {
        let mut seen = vec![false; packets.len()];
        for &c in completion {
            assert!(!seen[c], "packet {c} completes twice");
            seen[c] = true;
        }
        assert!(seen.iter().all(|&s| s), "every packet completes");
        let mut events = Vec::new();
        let mut dispatched = 0;
        for (k, &c) in completion.iter().enumerate() {
            while dispatched <= c {
                events.push(Event::Dispatch(dispatched));
                dispatched += 1;
            }
            events.push(Event::Complete(c));
            if flush_after.get(k).copied().unwrap_or(false) {
                events.push(Event::Flush { idle: false });
            }
        }
        events.push(Event::Flush { idle: true });
        Scenario { packets, events }
    }

    /// A random scenario from `seed`: up to `max_packets` packets over one or two
    /// queues (ids may wrap past `u32::MAX`), verdicts of every kind with and
    /// without marks and payloads, runs of equal verdicts, and a random
    /// completion order.
    pub fn random(seed: u64, max_packets: usize) -> Scenario {
        let mut rng = crate::oracle::Rng::new(seed);
        let n = 1 + rng.below(max_packets.max(1) as u64) as usize;
        let queues: Vec<u16> = if rng.below(2) == 0 {
            vec![0]
        } else {
            vec![0, 5]
        };
        let mut next_id: BTreeMap<u16, u32> = queues
            .iter()
            .map(|&q| {
                let start = if rng.below(3) == 0 {
                    u32::MAX - rng.below(8) as u32
                } else {
                    1
                };
                (q, start)
            })
            .collect();
        let mut packets = Vec::with_capacity(n);
        let mut last = Fate::new(verdict::ACCEPT, None);
        for _ in 0..n {
            let queue = queues[rng.below(queues.len() as u64) as usize];
            let id = next_id[&queue];
            next_id.insert(queue, id.wrapping_add(1));
            // Runs of equal verdicts are what batches are made of.
            let fate = if rng.below(3) == 0 {
                last.clone()
            } else {
                random_fate(&mut rng)
            };
            last = fate.clone();
            packets.push(ScenarioPacket { queue, id, fate });
        }
        let mut completion: Vec<usize> = (0..n).collect();
        // Mostly in order, with some shuffled stretches, as workers finish.
        for i in 0..n {
            if rng.below(3) == 0 {
                let j = i + rng.below((n - i).min(12) as u64) as usize;
                completion.swap(i, j);
            }
        }
        let flush_after: Vec<bool> = (0..n).map(|_| rng.below(4) == 0).collect();
        Scenario::new(packets, &completion, &flush_after)
    }

    /// The kernel's state before any verdict: every packet waiting in its queue.
    pub fn kernel(&self) -> KernelQueues {
        let mut kernel = KernelQueues::new();
        for p in &self.packets {
            kernel.enqueue(p.queue, [p.id]);
        }
        kernel
    }
}

fn random_fate(rng: &mut crate::oracle::Rng) -> Fate {
    let code = match rng.below(6) {
        0 | 1 => verdict::ACCEPT,
        2 => verdict::DROP,
        3 => verdict::REPEAT,
        4 => verdict::queue(rng.below(3) as u16 + 7, rng.below(2) == 0),
        _ => verdict::STOP,
    };
    let mark = (rng.below(2) == 0).then(|| rng.below(3) as u32);
    let fate = Fate::new(code, mark);
    if rng.below(8) == 0 {
        let len = 1 + rng.below(40) as usize;
        fate.with_payload((0..len).map(|i| i as u8).collect())
    } else {
        fate
    }
}

/// Runs `scenario` through `writer`, applies every flushed byte to the kernel
/// model, and compares each packet's fate with its handler's verdict.
///
/// # Errors
///
/// The differences, with the scenario, when the writer's bytes do not decode, do
/// not settle a packet as its handler said, are refused, or leave packets
/// waiting.
pub fn run_scenario(scenario: &Scenario, writer: &mut dyn VerdictWriter) -> Result<(), String> {
    let mut kernel = scenario.kernel();
    let mut log = Vec::new();
    for event in &scenario.events {
        match *event {
            Event::Dispatch(n) => {
                let p = &scenario.packets[n];
                writer.dispatched(p.queue, p.id);
            }
            Event::Complete(n) => {
                let p = &scenario.packets[n];
                writer.completed(p.queue, p.id, &p.fate);
            }
            Event::Flush { idle } => {
                let bytes = writer.flush(idle);
                match decode(&bytes) {
                    Ok(messages) => {
                        for m in messages {
                            log.push(m.clone());
                            kernel.apply_message(m);
                        }
                    }
                    Err(e) => return Err(format!("flushed bytes do not decode: {e}")),
                }
            }
        }
    }
    kernel
        .compare(scenario.packets.iter().map(|p| (p.queue, p.id, &p.fate)))
        .map_err(|diff| {
            let mut text = diff;
            text.push_str("messages written:\n");
            for m in log.iter().take(60) {
                text.push_str(&format!("  {m:?}\n"));
            }
            text.push_str(&format!("scenario: {scenario:?}\n"));
            text
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_verdict_settles_one_packet_and_a_second_is_refused() {
        let mut k = KernelQueues::new();
        k.enqueue(1, [5, 6]);
        let m = encode_verdict(1, 6, verdict::ACCEPT, Some(9), Some(b"abc"));
        k.apply(&m).unwrap();
        k.apply(&m).unwrap();
        assert_eq!(
            k.fate(1, 6),
            Some(&Fate::new(verdict::ACCEPT, Some(9)).with_payload(b"abc".to_vec()))
        );
        assert_eq!(k.waiting(1), vec![5]);
        assert_eq!(k.rejected().len(), 1);
        assert_eq!(k.rejected()[0].errno, ENOENT);
    }

    #[test]
    fn a_batch_settles_the_front_up_to_its_id_across_a_wrap() {
        let mut k = KernelQueues::new();
        k.enqueue(0, [u32::MAX - 1, u32::MAX, 0, 1, 2]);
        k.apply(&encode_batch(0, 0, verdict::DROP, None)).unwrap();
        assert_eq!(k.waiting(0), vec![1, 2]);
        assert_eq!(k.fate(0, u32::MAX), Some(&Fate::new(verdict::DROP, None)));
        // Nothing waits at or below 0 any more.
        k.apply(&encode_batch(0, 0, verdict::ACCEPT, None)).unwrap();
        assert_eq!(k.rejected()[0].errno, ENOENT);
    }

    #[test]
    fn a_batch_stops_at_the_first_later_id_even_if_lower_ones_follow() {
        // The kernel walks the list in queue order and stops at the first id
        // after the one named.
        let mut k = KernelQueues::new();
        k.enqueue(0, [3, 9, 4]);
        k.apply(&encode_batch(0, 5, verdict::ACCEPT, None)).unwrap();
        assert_eq!(k.waiting(0), vec![9, 4]);
    }

    #[test]
    fn refusals_follow_the_kernel() {
        let mut k = KernelQueues::new();
        k.enqueue(0, [1]);
        k.apply(&encode_verdict(4, 1, verdict::ACCEPT, None, None))
            .unwrap();
        k.apply(&encode_verdict(0, 1, verdict::STOLEN, None, None))
            .unwrap();
        k.apply(&encode_verdict(0, 1, 6, None, None)).unwrap();
        let errnos: Vec<i32> = k.rejected().iter().map(|r| r.errno).collect();
        assert_eq!(errnos, vec![ENODEV, EINVAL, EINVAL]);
        // A queue verdict with the bypass flag is valid.
        k.apply(&encode_verdict(0, 1, verdict::queue(7, true), None, None))
            .unwrap();
        assert_eq!(k.waiting(0), Vec::<u32>::new());
    }

    #[test]
    fn a_message_without_request_flag_is_skipped() {
        let mut k = KernelQueues::new();
        k.enqueue(0, [1]);
        let mut m = encode_verdict(0, 1, verdict::ACCEPT, None, None);
        m[6..8].copy_from_slice(&0u16.to_ne_bytes());
        k.apply(&m).unwrap();
        assert_eq!(k.waiting(0), vec![1]);
        assert!(k.rejected().is_empty());
    }

    #[test]
    fn a_header_longer_than_the_bytes_does_not_decode() {
        let mut m = encode_verdict(0, 1, verdict::ACCEPT, None, None);
        m.truncate(m.len() - 1);
        assert!(decode(&m).is_err());
        assert!(decode(&m[..10]).is_err());
    }

    #[test]
    fn a_short_verdict_header_is_invalid() {
        let mut m = encode_verdict(0, 1, verdict::ACCEPT, None, None);
        // Shrink the verdict header attribute to 4 bytes of data.
        let at = NLMSG_HDRLEN + NFGENMSG_LEN;
        m[at..at + 2].copy_from_slice(&8u16.to_ne_bytes());
        assert!(matches!(decode(&m).unwrap()[0], Message::Invalid { .. }));
    }

    #[test]
    fn id_after_wraps() {
        assert!(id_after(2, 1));
        assert!(!id_after(1, 1));
        assert!(id_after(0, u32::MAX));
        assert!(!id_after(u32::MAX, 0));
    }

    /// A writer that sends each verdict as soon as it is known: always right.
    struct Eager(Vec<u8>);

    impl VerdictWriter for Eager {
        fn dispatched(&mut self, _: u16, _: u32) {}
        fn completed(&mut self, queue: u16, id: u32, fate: &Fate) {
            self.0.extend(encode_verdict(
                queue,
                id,
                fate.verdict,
                fate.mark,
                fate.payload.as_deref(),
            ));
        }
        fn flush(&mut self, _: bool) -> Vec<u8> {
            std::mem::take(&mut self.0)
        }
    }

    /// A writer that settles everything with one batch verdict at the end: the
    /// model catches it whenever verdicts differ.
    struct Lazy(Vec<(u16, u32, Fate)>);

    impl VerdictWriter for Lazy {
        fn dispatched(&mut self, _: u16, _: u32) {}
        fn completed(&mut self, queue: u16, id: u32, fate: &Fate) {
            self.0.push((queue, id, fate.clone()));
        }
        fn flush(&mut self, idle: bool) -> Vec<u8> {
            if !idle {
                return Vec::new();
            }
            let mut out = Vec::new();
            let mut queues: Vec<u16> = self.0.iter().map(|p| p.0).collect();
            queues.dedup();
            for q in queues {
                let (_, id, fate) = self.0.iter().rev().find(|p| p.0 == q).unwrap();
                out.extend(encode_batch(q, *id, fate.verdict, fate.mark));
            }
            out
        }
    }

    #[test]
    fn the_scenario_runner_accepts_a_right_writer_and_catches_a_wrong_one() {
        let mut caught = 0;
        for seed in 0..200 {
            let s = Scenario::random(seed, 30);
            run_scenario(&s, &mut Eager(Vec::new())).unwrap();
            if run_scenario(&s, &mut Lazy(Vec::new())).is_err() {
                caught += 1;
            }
        }
        assert!(caught > 150, "{caught}");
    }
}
