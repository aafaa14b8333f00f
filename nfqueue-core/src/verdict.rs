//! Verdicts and their encoding as netlink messages.

use crate::attr::{align4, NLA_HDRLEN};
use crate::conntrack::CtLabels;
use crate::ct_update::CtUpdate;
use crate::error::{Error, Result};
use crate::message::{MSG_VERDICT, MSG_VERDICT_BATCH, NFGENMSG_LEN, NLMSG_HDRLEN};
use nfqueue_sys as sys;
use std::borrow::Cow;

/// The largest replacement payload: a netlink attribute's 16-bit length field
/// includes its 4-byte header, so 65531 bytes is all it can carry. The mangling
/// helpers build nothing longer ([`net::mangle::MAX_PACKET_LEN`](crate::net::mangle::MAX_PACKET_LEN)).
pub const MAX_PAYLOAD: usize = 0xffff - NLA_HDRLEN;

// nfqueue-net cannot depend on this crate, so it states the same limit itself:
// whatever its helpers build, a verdict must be able to carry.
const _: () = assert!(MAX_PAYLOAD == crate::net::mangle::MAX_PACKET_LEN);

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VerdictKind {
    /// Let it go on (`NF_ACCEPT`).
    Accept,
    /// Drop it (`NF_DROP`).
    Drop,
    /// Send it through the current hook again from the start (`NF_REPEAT`);
    /// give it a mark that the rule skips, or it comes back to the queue.
    Repeat,
    /// Hand it to another queue (`NF_QUEUE`).
    Queue {
        /// The queue number.
        num: u16,
        /// Accept the packet when no program has bound `num`
        /// (`NF_VERDICT_FLAG_QUEUE_BYPASS`); else it is dropped.
        bypass: bool,
    },
    /// Accept it, and let no later function of this hook see it (`NF_STOP`;
    /// called `Stop` by the kernel, renamed so that it reads as an accept).
    AcceptFinal,
}

impl VerdictKind {
    /// The 32-bit verdict code the kernel expects.
    pub fn code(self) -> u32 {
        match self {
            VerdictKind::Accept => sys::NF_ACCEPT,
            VerdictKind::Drop => sys::NF_DROP,
            VerdictKind::Repeat => sys::NF_REPEAT,
            VerdictKind::AcceptFinal => sys::NF_STOP,
            VerdictKind::Queue { num, bypass } => {
                let flag = if bypass {
                    sys::NF_VERDICT_FLAG_QUEUE_BYPASS
                } else {
                    0
                };
                sys::NF_QUEUE | (u32::from(num) << sys::NF_VERDICT_QBITS) | flag
            }
        }
    }

    /// The verdict a 32-bit code names, as [`code`](Self::code) writes it
    /// (for decoding captured verdict messages); `None` for a code the kernel
    /// would refuse.
    ///
    /// ```
    /// use nfqueue_core::VerdictKind;
    ///
    /// let kind = VerdictKind::Queue { num: 7, bypass: true };
    /// assert_eq!(VerdictKind::from_code(kind.code()), Some(kind));
    /// assert_eq!(VerdictKind::from_code(99), None);
    /// ```
    pub fn from_code(code: u32) -> Option<Self> {
        let queue_flags = sys::NF_VERDICT_FLAG_QUEUE_BYPASS;
        let number_mask = 0xffff << sys::NF_VERDICT_QBITS;
        Some(match code & !(queue_flags | number_mask) {
            sys::NF_ACCEPT if code == sys::NF_ACCEPT => VerdictKind::Accept,
            sys::NF_DROP if code == sys::NF_DROP => VerdictKind::Drop,
            sys::NF_REPEAT if code == sys::NF_REPEAT => VerdictKind::Repeat,
            sys::NF_STOP if code == sys::NF_STOP => VerdictKind::AcceptFinal,
            sys::NF_QUEUE => VerdictKind::Queue {
                num: (code >> sys::NF_VERDICT_QBITS) as u16,
                bypass: code & queue_flags != 0,
            },
            _ => return None,
        })
    }
}

/// A verdict: what happens to the packet, and optionally a new mark, a new
/// payload (which replaces the whole packet from its IP header on; the kernel
/// does not fix checksums) and changes to the packet's conntrack entry (its
/// connection mark and labels).
///
/// ```
/// use nfqueue_core::{Verdict, VerdictKind};
///
/// let verdict = Verdict::accept().with_mark(7);
/// assert_eq!(verdict.kind(), VerdictKind::Accept);
/// assert_eq!(verdict.mark(), Some(7));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'p> {
    kind: VerdictKind,
    mark: Option<u32>,
    /// The bits of the packet's mark that `mark` sets; the others keep the
    /// packet's own (see [`with_mark_bits`](Self::with_mark_bits)). `None`
    /// once resolved, or for a whole mark.
    mark_mask: Option<u32>,
    payload: Option<Cow<'p, [u8]>>,
    /// Boxed: rare, and a verdict without it stays as small as before.
    conntrack: Option<Box<CtUpdate>>,
}

impl<'p> Verdict<'p> {
    /// A verdict of `kind`, with no mark and no payload.
    pub const fn new(kind: VerdictKind) -> Self {
        Verdict {
            kind,
            mark: None,
            mark_mask: None,
            payload: None,
            conntrack: None,
        }
    }

    /// Accept.
    pub const fn accept() -> Self {
        Self::new(VerdictKind::Accept)
    }

    /// Drop.
    pub const fn drop() -> Self {
        Self::new(VerdictKind::Drop)
    }

    /// Repeat the hook.
    pub const fn repeat() -> Self {
        Self::new(VerdictKind::Repeat)
    }

    /// Accept, and let no later function of this hook see the packet
    /// (`NF_STOP`).
    pub const fn accept_final() -> Self {
        Self::new(VerdictKind::AcceptFinal)
    }

    /// Move to queue `num`; with `bypass`, accept when nobody listens there.
    pub const fn queue(num: u16, bypass: bool) -> Self {
        Self::new(VerdictKind::Queue { num, bypass })
    }

    /// Sets the packet's mark (`skb->mark`) along with the verdict.
    pub fn with_mark(mut self, mark: u32) -> Self {
        self.mark = Some(mark);
        self.mark_mask = None;
        self
    }

    /// Sets only the bits of the packet's mark that `mask` selects, to those
    /// of `value`, and keeps the others as the packet came with them, so that
    /// marks of other tools (policy routing, a firewall's zones) survive:
    /// the mark sent is `(packet mark & !mask) | (value & mask)`.
    ///
    /// The kernel takes only a whole mark, so the holder of the packet works
    /// it out from the mark the packet came with: [`Packet`](crate::Packet),
    /// [`PendingVerdict`](crate::PendingVerdict),
    /// [`OwnedPacket`](crate::OwnedPacket) and a dispatcher's handler do. A
    /// verdict by key ([`VerdictHandle`](crate::VerdictHandle),
    /// [`VerdictBatch`](crate::VerdictBatch)) needs it worked out first, with
    /// [`resolve_mark`](Self::resolve_mark).
    ///
    /// ```
    /// use nfqueue_core::Verdict;
    ///
    /// let verdict = Verdict::accept().with_mark_bits(0x2a, 0x00ff);
    /// assert_eq!(verdict.mark_bits(), Some((0x2a, 0x00ff)));
    /// assert_eq!(verdict.resolve_mark(0xff00).mark(), Some(0xff2a));
    /// ```
    pub fn with_mark_bits(mut self, value: u32, mask: u32) -> Self {
        self.mark = Some(value & mask);
        self.mark_mask = Some(mask);
        self
    }

    /// Replaces the packet with `payload` (at most [`MAX_PAYLOAD`] bytes; a
    /// longer one makes the verdict fail with [`Error::PayloadTooLarge`], an
    /// empty one with [`Error::EmptyPayload`]).
    ///
    /// The kernel checks little: a payload too short for the packet's own
    /// headers is taken without complaint, and the packet vanishes (dropped, and
    /// counted nowhere). [`net::mangle`](crate::net::mangle) keeps rewrites whole.
    ///
    /// In a user namespace, some kernels drop the packet: seen with a 6.18
    /// build, a verdict that carries a payload, sent from a non-initial user
    /// namespace (a rootless container, `unshare --user --map-root-user
    /// --net`), is taken without error, the queue empties, and the packet
    /// never leaves. Verdicts without a payload are not affected, nor is root
    /// in the initial user namespace (also in a network namespace of its own).
    /// Nothing reports it, so try it once on the kernel you deploy on. A
    /// program can tell where it runs: in the initial user namespace, and only
    /// there, `/proc/self/uid_map` reads `0 0 4294967295`.
    pub fn with_payload(mut self, payload: impl Into<Cow<'p, [u8]>>) -> Self {
        self.payload = Some(payload.into());
        self
    }

    /// Sets the connection mark (`ct->mark`, what `-m connmark --mark` and
    /// nft's `ct mark` match) of the packet's conntrack entry along with the
    /// verdict, so that later packets of the connection can be told apart,
    /// or kept out of the queue, by a rule before the queue rule:
    /// `iptables -A INPUT -m connmark --mark 0x10 -j ACCEPT` (nft: `ct mark
    /// 0x10 accept`).
    ///
    /// ```
    /// use nfqueue_core::Verdict;
    ///
    /// let verdict = Verdict::accept().with_connmark(0x10);
    /// assert_eq!(verdict.conntrack().unwrap().mark(), Some((0x10, u32::MAX)));
    /// ```
    ///
    /// It goes as the verdict's `NFQA_CT` nest (`CTA_MARK`), which the kernel
    /// applies (`nfqnl_recv_verdict` in net/netfilter/nfnetlink_queue.c, then
    /// `ctnetlink_glue_parse` in net/netfilter/nf_conntrack_netlink.c) only
    /// when all of these hold; otherwise the verdict itself is carried out
    /// and the conntrack change is left out without an error:
    /// - the kernel has the conntrack glue, `CONFIG_NETFILTER_NETLINK_GLUE_CT`
    ///   (the `nfnl_ct_hook` that `nf_conntrack_netlink` registers), and
    ///   `CONFIG_NF_CONNTRACK_MARK`. The queue need not be bound with
    ///   [`QueueFlags::CONNTRACK`](crate::QueueFlags::CONNTRACK), but a bind
    ///   with that flag fails with `EOPNOTSUPP` exactly when the glue is
    ///   missing: `nfq-doctor` tells;
    /// - the packet has a conntrack entry (not one `NOTRACK` exempted);
    /// - every other part of the nest applies: the kernel applies labels
    ///   before the mark and stops at the first failure, so a label change
    ///   that fails (see [`with_ct_labels`](Self::with_ct_labels)) takes the
    ///   mark with it.
    ///
    /// A batch verdict cannot carry it (`nfqa_verdict_batch_policy` knows
    /// only `NFQA_VERDICT_HDR` and `NFQA_MARK`): such a verdict goes out as
    /// a verdict of its own, from [`VerdictBatch::push`](crate::VerdictBatch::push)
    /// and the dispatcher alike.
    pub fn with_connmark(self, mark: u32) -> Self {
        self.with_connmark_masked(mark, u32::MAX)
    }

    /// Sets only the bits of `mask` of the connection mark, to those of
    /// `value`, and keeps the others (`CTA_MARK` with `CTA_MARK_MASK`: the
    /// kernel computes `(ct->mark & ~mask) ^ mark`, and the value is masked
    /// here first). As [`with_connmark`](Self::with_connmark) otherwise.
    ///
    /// ```
    /// use nfqueue_core::Verdict;
    ///
    /// let verdict = Verdict::accept().with_connmark_masked(0x1234, 0xff00);
    /// assert_eq!(verdict.conntrack().unwrap().mark(), Some((0x1200, 0xff00)));
    /// ```
    pub fn with_connmark_masked(mut self, value: u32, mask: u32) -> Self {
        self.conntrack
            .get_or_insert_with(Box::default)
            .set_mark(value, mask);
        self
    }

    /// Sets the connection labels of `mask` (`-m connlabel --label N`, nft's
    /// `ct label`) to those of `labels`, and keeps the others
    /// ([`CtLabels::ALL`] as the mask replaces them all). Sent as
    /// `CTA_LABELS` and `CTA_LABELS_MASK` in the verdict's `NFQA_CT` nest,
    /// and applied when [`with_connmark`](Self::with_connmark) says, and
    /// only if the entry has room for labels: the kernel gives an entry
    /// labels only while some rule of its network namespace uses them (an
    /// `-m connlabel` or nft `ct label` rule when the connection began);
    /// otherwise `nf_connlabels_replace` fails with `ENOSPC`, and a connection
    /// mark of the same verdict is not set either.
    ///
    /// ```
    /// use nfqueue_core::{CtLabels, Verdict};
    ///
    /// let label = CtLabels::EMPTY.with_bit(5);
    /// let verdict = Verdict::accept().with_ct_labels(label, label);
    /// assert_eq!(verdict.conntrack().unwrap().labels(), Some((label, label)));
    /// ```
    pub fn with_ct_labels(
        mut self,
        labels: impl Into<CtLabels>,
        mask: impl Into<CtLabels>,
    ) -> Self {
        self.conntrack
            .get_or_insert_with(Box::default)
            .set_labels(labels.into(), mask.into());
        self
    }

    /// The changes to the packet's conntrack entry set with the verdict, if
    /// any.
    pub fn conntrack(&self) -> Option<&CtUpdate> {
        self.conntrack.as_deref()
    }

    /// What happens to the packet.
    pub fn kind(&self) -> VerdictKind {
        self.kind
    }

    /// The mark set with the verdict, if any: the whole mark the kernel
    /// gets. `None` too while only some bits are set and not yet resolved
    /// against the packet's mark (see [`mark_bits`](Self::mark_bits)).
    pub fn mark(&self) -> Option<u32> {
        match self.mark_mask {
            None => self.mark,
            Some(_) => None,
        }
    }

    /// The value and mask of [`with_mark_bits`](Self::with_mark_bits), while
    /// not yet resolved against the packet's mark.
    pub fn mark_bits(&self) -> Option<(u32, u32)> {
        Some((self.mark?, self.mark_mask?))
    }

    /// This verdict with its mark bits (if any) worked out against
    /// `packet_mark`, the mark the packet came with: a whole mark, as the
    /// kernel takes it. A verdict with a whole mark, or none, is unchanged.
    pub fn resolve_mark(mut self, packet_mark: u32) -> Self {
        if let (Some(value), Some(mask)) = (self.mark, self.mark_mask.take()) {
            self.mark = Some((packet_mark & !mask) | (value & mask));
        }
        self
    }

    /// The replacement payload, if any.
    pub fn payload(&self) -> Option<&[u8]> {
        self.payload.as_deref()
    }

    /// Checks that the kernel can carry out this verdict as given, as sending it
    /// would.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`] for a payload over [`MAX_PAYLOAD`] bytes,
    /// [`Error::EmptyPayload`] for an empty one, [`Error::InvalidArgument`]
    /// for mark bits not yet resolved against the packet's mark.
    pub fn validate(&self) -> Result<()> {
        if self.mark_mask.is_some() {
            return Err(Error::InvalidArgument(
                "a verdict that sets some bits of the mark needs the packet's mark: give it \
                 through the packet, or resolve it with Verdict::resolve_mark",
            ));
        }
        match self.payload().map(<[u8]>::len) {
            Some(len) if len > MAX_PAYLOAD => Err(Error::PayloadTooLarge {
                len,
                max: MAX_PAYLOAD,
            }),
            Some(0) => Err(Error::EmptyPayload),
            _ => Ok(()),
        }
    }

    /// Takes the payload out, as an owned buffer.
    pub(crate) fn take_payload(self) -> Option<Vec<u8>> {
        self.payload.map(Cow::into_owned)
    }

    /// This verdict with an owned payload, so it can outlive the borrowed one.
    pub fn into_owned(self) -> Verdict<'static> {
        Verdict {
            kind: self.kind,
            mark: self.mark,
            mark_mask: self.mark_mask,
            payload: self.payload.map(|p| Cow::Owned(p.into_owned())),
            conntrack: self.conntrack,
        }
    }
}

impl From<VerdictKind> for Verdict<'_> {
    fn from(kind: VerdictKind) -> Self {
        Verdict::new(kind)
    }
}

/// Bytes of a verdict message before its payload: netlink header, nfgenmsg,
/// verdict header, mark, and the payload attribute's header. The conntrack
/// nest, which few verdicts carry, follows the payload, in a buffer of its
/// own, so that the header every verdict builds and moves stays small.
pub(crate) const HEADER_CAPACITY: usize =
    NLMSG_HDRLEN + NFGENMSG_LEN + (NLA_HDRLEN + 8) + (NLA_HDRLEN + 4) + NLA_HDRLEN;

/// Zero bytes that pad a payload to the netlink alignment.
pub(crate) const PADDING: [u8; 3] = [0; 3];

/// A verdict message but its payload: the part that precedes the payload,
/// then (the payload and `padding` bytes of [`PADDING`] follow it in the same
/// datagram, so a payload is sent without being copied) the conntrack nest,
/// if any (the kernel reads attributes in any order).
#[derive(Debug, Clone)]
pub(crate) struct EncodedHeader {
    bytes: [u8; HEADER_CAPACITY],
    len: usize,
    /// Bytes of padding after the payload.
    pub(crate) padding: usize,
    /// The `NFQA_CT` nest, after the payload.
    tail: Option<Box<[u8]>>,
}

impl EncodedHeader {
    /// The encoded bytes before the payload.
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The pieces of the whole message, in order, with `payload` (the
    /// verdict's, if any): up to four.
    pub(crate) fn parts<'a>(&'a self, payload: Option<&'a [u8]>) -> ([&'a [u8]; 4], usize) {
        let mut parts: [&[u8]; 4] = [&[]; 4];
        parts[0] = self.as_bytes();
        let mut used = 1;
        if let Some(payload) = payload {
            parts[1] = payload;
            parts[2] = &PADDING[..self.padding];
            used = 3;
        }
        if let Some(tail) = &self.tail {
            parts[used] = tail;
            used += 1;
        }
        (parts, used)
    }
}

/// Encodes a batch verdict: `kind` and, optionally, `mark` for every packet of
/// `queue` up to `id`.
pub(crate) fn encode_batch(
    queue: u16,
    id: u32,
    kind: VerdictKind,
    mark: Option<u32>,
) -> Result<EncodedHeader> {
    let verdict = Verdict {
        kind,
        mark,
        mark_mask: None,
        payload: None,
        conntrack: None,
    };
    encode(queue, id, &verdict, true)
}

/// Encodes a verdict (or, with `batch`, a batch verdict for every id up to
/// `id`) for packet `id` of queue `queue`. The message's sequence number is the
/// packet id, so an error the kernel reports later names the packet.
pub(crate) fn encode(
    queue: u16,
    id: u32,
    verdict: &Verdict<'_>,
    batch: bool,
) -> Result<EncodedHeader> {
    verdict.validate()?;
    let payload_len = verdict.payload().map_or(0, <[u8]>::len);
    if batch && verdict.payload().is_some() {
        return Err(Error::InvalidArgument(
            "a batch verdict cannot carry a payload",
        ));
    }
    // nfqa_verdict_batch_policy has no NFQA_CT: the kernel would ignore it.
    if batch && verdict.conntrack().is_some() {
        return Err(Error::InvalidArgument(
            "a batch verdict cannot carry conntrack changes",
        ));
    }
    let mut out = EncodedHeader {
        bytes: [0; HEADER_CAPACITY],
        len: 0,
        padding: 0,
        tail: None,
    };
    let put = |out: &mut EncodedHeader, bytes: &[u8]| {
        out.bytes[out.len..out.len + bytes.len()].copy_from_slice(bytes);
        out.len += bytes.len();
    };
    // nlmsghdr; its length is filled in last.
    put(&mut out, &0u32.to_ne_bytes());
    put(
        &mut out,
        &(if batch {
            MSG_VERDICT_BATCH
        } else {
            MSG_VERDICT
        })
        .to_ne_bytes(),
    );
    put(&mut out, &(sys::NLM_F_REQUEST as u16).to_ne_bytes());
    put(&mut out, &id.to_ne_bytes());
    put(&mut out, &0u32.to_ne_bytes());
    // nfgenmsg
    put(&mut out, &[libc::AF_UNSPEC as u8, sys::NFNETLINK_V0 as u8]);
    put(&mut out, &queue.to_be_bytes());
    // NFQA_VERDICT_HDR: struct nfqnl_msg_verdict_hdr { __be32 verdict; __be32 id; }
    put(&mut out, &((NLA_HDRLEN + 8) as u16).to_ne_bytes());
    put(
        &mut out,
        &(sys::nfqnl_attr_type::NFQA_VERDICT_HDR as u16).to_ne_bytes(),
    );
    put(&mut out, &verdict.kind().code().to_be_bytes());
    put(&mut out, &id.to_be_bytes());
    if let Some(mark) = verdict.mark() {
        put(&mut out, &((NLA_HDRLEN + 4) as u16).to_ne_bytes());
        put(
            &mut out,
            &(sys::nfqnl_attr_type::NFQA_MARK as u16).to_ne_bytes(),
        );
        put(&mut out, &mark.to_be_bytes());
    }
    let mut total = out.len;
    if verdict.payload().is_some() {
        put(&mut out, &((NLA_HDRLEN + payload_len) as u16).to_ne_bytes());
        put(
            &mut out,
            &(sys::nfqnl_attr_type::NFQA_PAYLOAD as u16).to_ne_bytes(),
        );
        total = out.len + align4(payload_len);
        out.padding = align4(payload_len) - payload_len;
    }
    if let Some(ct) = verdict.conntrack() {
        let mut nest = Vec::with_capacity(ct.encoded_len());
        ct.encode(&mut |bytes| nest.extend_from_slice(bytes));
        total += nest.len();
        out.tail = Some(nest.into_boxed_slice());
    }
    out.bytes[..4].copy_from_slice(&(total as u32).to_ne_bytes());
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same verdict built by libnetfilter_queue's own `nfq_nlmsg_*` helpers.
    fn encode_with_libnetfilter_queue(queue: u16, id: u32, verdict: &Verdict<'_>) -> Vec<u8> {
        #[repr(C, align(8))]
        struct Buf([u8; 0x11000]);
        let mut buf = Box::new(Buf([0; 0x11000]));
        // SAFETY: the buffer is aligned and larger than any message built here
        // (header, two small attributes and at most 0x10000 bytes of payload).
        unsafe {
            let nlh = sys::nfq_nlmsg_put(
                buf.0.as_mut_ptr().cast(),
                sys::nfqnl_msg_types::NFQNL_MSG_VERDICT as i32,
                u32::from(queue),
            );
            (*nlh).nlmsg_seq = id;
            sys::nfq_nlmsg_verdict_put(nlh, id as i32, verdict.kind().code() as i32);
            if let Some(mark) = verdict.mark() {
                sys::nfq_nlmsg_verdict_put_mark(nlh, mark);
            }
            if let Some(payload) = verdict.payload() {
                sys::nfq_nlmsg_verdict_put_pkt(nlh, payload.as_ptr().cast(), payload.len() as u32);
            }
            // The nest after the payload, where ours puts it (the kernel reads
            // attributes in any order), as libnetfilter_queue's example
            // nf-queue.c sets a connmark:
            // `nest = mnl_attr_nest_start(nlh, NFQA_CT);
            //  mnl_attr_put_u32(nlh, CTA_MARK, htonl(42));
            //  mnl_attr_nest_end(nlh, nest);`
            if let Some(ct) = verdict.conntrack() {
                use crate::conntrack::{CTA_LABELS, CTA_LABELS_MASK, CTA_MARK, CTA_MARK_MASK};
                let nest = sys::mnl_attr_nest_start(nlh, sys::nfqnl_attr_type::NFQA_CT as u16);
                if let Some((labels, mask)) = ct.labels() {
                    let put = |kind, bytes: &[u8; 16]| {
                        sys::mnl_attr_put(nlh, kind, 16, bytes.as_ptr().cast())
                    };
                    put(CTA_LABELS, labels.as_bytes());
                    if mask != CtLabels::ALL {
                        put(CTA_LABELS_MASK, mask.as_bytes());
                    }
                }
                if let Some((mark, mask)) = ct.mark() {
                    sys::mnl_attr_put_u32(nlh, CTA_MARK, mark.to_be());
                    if mask != u32::MAX {
                        sys::mnl_attr_put_u32(nlh, CTA_MARK_MASK, mask.to_be());
                    }
                }
                sys::mnl_attr_nest_end(nlh, nest);
            }
            buf.0[..(*nlh).nlmsg_len as usize].to_vec()
        }
    }

    fn encode_whole(queue: u16, id: u32, verdict: &Verdict<'_>) -> Vec<u8> {
        let header = encode(queue, id, verdict, false).unwrap();
        let (parts, used) = header.parts(verdict.payload());
        parts[..used].concat()
    }

    #[test]
    fn matches_libnetfilter_queue_byte_for_byte() {
        let payload: Vec<u8> = (0..=255u8).cycle().take(1001).collect();
        let cases = [
            Verdict::accept(),
            Verdict::drop().with_mark(0xdead_beef),
            Verdict::repeat().with_mark(1),
            Verdict::queue(7, true),
            Verdict::queue(65535, false).with_mark(3),
            Verdict::accept_final(),
            Verdict::accept().with_payload(&payload[..]),
            Verdict::accept()
                .with_mark(9)
                .with_payload(&payload[..1000]),
            Verdict::accept().with_payload(vec![0x45; MAX_PAYLOAD]),
            Verdict::accept().with_connmark(42),
            Verdict::drop()
                .with_mark(7)
                .with_connmark_masked(0xabcd, 0x0ff0),
            Verdict::accept().with_ct_labels(CtLabels::EMPTY.with_bit(3), CtLabels::ALL),
            Verdict::queue(2, true)
                .with_ct_labels([0xff; 16], CtLabels::EMPTY.with_bit(1).with_bit(127))
                .with_connmark(1),
            Verdict::accept()
                .with_mark(9)
                .with_connmark_masked(u32::MAX, 0xff)
                .with_ct_labels(CtLabels::EMPTY.with_bit(64), CtLabels::EMPTY.with_bit(64))
                .with_payload(&payload[..999]),
            Verdict::accept()
                .with_connmark_masked(0, 0)
                .with_payload(vec![0x45; MAX_PAYLOAD]),
        ];
        for (n, verdict) in cases.iter().enumerate() {
            let ours = encode_whole(3, 1000 + n as u32, verdict);
            let theirs = encode_with_libnetfilter_queue(3, 1000 + n as u32, verdict);
            assert_eq!(ours, theirs, "case {n}: {verdict:?}");
        }
    }

    #[test]
    fn rejects_payloads_a_netlink_attribute_cannot_carry() {
        let too_long = vec![0; MAX_PAYLOAD + 1];
        let err = encode(0, 1, &Verdict::accept().with_payload(&too_long[..]), false).unwrap_err();
        assert!(
            matches!(err, Error::PayloadTooLarge { len, max } if len == MAX_PAYLOAD + 1 && max == MAX_PAYLOAD)
        );
    }

    /// The kernel takes an empty payload attribute without an error and the
    /// packet disappears: refused here, before it is sent.
    #[test]
    fn rejects_an_empty_payload() {
        let err = encode(0, 1, &Verdict::accept().with_payload(&[][..]), false).unwrap_err();
        assert!(matches!(err, Error::EmptyPayload), "{err:?}");
        assert!(Verdict::accept()
            .with_payload(vec![0x45])
            .validate()
            .is_ok());
    }

    /// The conntrack nest as `ctnetlink_glue_parse` reads it: `NFQA_CT`
    /// (11) with `NLA_F_NESTED`, `CTA_MARK` (8) as `ntohl(nla_get_be32(...))`,
    /// `CTA_MARK_MASK` (21), `CTA_LABELS` (22) and `CTA_LABELS_MASK` (23) of
    /// 16 bytes each (`NF_CT_LABELS_MAX_SIZE`, a multiple of 4 as
    /// `ctnetlink_attach_labels` requires); values masked so that
    /// `(old & ~mask) ^ value` keeps the bits outside the mask.
    #[test]
    fn the_conntrack_nest_is_laid_out_as_the_kernel_reads_it() {
        let verdict = Verdict::accept()
            .with_connmark_masked(0x1234_5678, 0x0000_ff00)
            .with_ct_labels([0xff; 16], CtLabels::EMPTY.with_bit(0));
        let bytes = encode_whole(0, 1, &verdict);
        let ct = &bytes[16 + 4 + 12..];
        let ne16 = |at: usize| u16::from_ne_bytes([ct[at], ct[at + 1]]);
        assert_eq!(ne16(0) as usize, ct.len(), "the nest is the last attribute");
        assert_eq!(ne16(0), 4 + 20 + 20 + 8 + 8);
        assert_eq!(ne16(2), 11 | 0x8000);
        assert_eq!((ne16(4), ne16(6)), (20, 22));
        let mut first_label = [0u8; 16];
        first_label[..].copy_from_slice(CtLabels::EMPTY.with_bit(0).as_bytes());
        assert_eq!(&ct[8..24], &first_label, "labels masked");
        assert_eq!((ne16(24), ne16(26)), (20, 23));
        assert_eq!(&ct[28..44], &first_label);
        assert_eq!((ne16(44), ne16(46)), (8, 8));
        assert_eq!(&ct[48..52], &0x0000_5600u32.to_be_bytes(), "mark masked");
        assert_eq!((ne16(52), ne16(54)), (8, 21));
        assert_eq!(&ct[56..60], &0x0000_ff00u32.to_be_bytes());
        // A full mask is left out: `(old & 0) ^ value` replaces them all.
        let plain = encode_whole(0, 1, &Verdict::accept().with_connmark(5));
        assert_eq!(&plain[32..], &[12, 0, 11, 0x80, 8, 0, 8, 0, 0, 0, 0, 5]);
        let len = |v: &Verdict<'_>| encode(0, 1, v, false).unwrap().as_bytes().len();
        assert_eq!(
            len(&verdict.clone().with_mark(1).with_payload(vec![1])),
            HEADER_CAPACITY,
            "the largest header fits"
        );
    }

    #[test]
    fn a_batch_verdict_carries_no_conntrack_changes() {
        let err = encode(0, 1, &Verdict::accept().with_connmark(1), true).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument(_)), "{err:?}");
        let owned = Verdict::accept().with_connmark(3).into_owned();
        assert_eq!(owned.conntrack().unwrap().mark(), Some((3, u32::MAX)));
        assert!(Verdict::accept().conntrack().is_none());
    }

    #[test]
    fn mark_bits_keep_the_other_bits_of_the_packets_mark() {
        let bits = Verdict::accept().with_mark_bits(0x1234_5678, 0x0000_ff00);
        assert_eq!(bits.mark(), None, "not a whole mark yet");
        assert!(matches!(
            encode(0, 1, &bits, false),
            Err(Error::InvalidArgument(_))
        ));
        let resolved = bits.resolve_mark(0xaaaa_aaaa);
        assert_eq!(resolved.mark(), Some(0xaaaa_56aa));
        assert_eq!(resolved.mark_bits(), None);
        assert!(encode(0, 1, &resolved, false).is_ok());
        // A whole mark is left as it is, and replaces mark bits set before.
        let whole = Verdict::drop().with_mark_bits(1, 1).with_mark(7);
        assert_eq!(whole.resolve_mark(0xffff_ffff).mark(), Some(7));
        assert_eq!(Verdict::accept().resolve_mark(5).mark(), None);
    }

    #[test]
    fn verdict_codes_follow_the_kernel() {
        assert_eq!(VerdictKind::Drop.code(), 0);
        assert_eq!(VerdictKind::Accept.code(), 1);
        assert_eq!(
            VerdictKind::Queue {
                num: 5,
                bypass: false
            }
            .code(),
            0x0005_0003
        );
        assert_eq!(
            VerdictKind::Queue {
                num: 5,
                bypass: true
            }
            .code(),
            0x0005_8003
        );
    }
}
