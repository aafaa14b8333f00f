//! The conntrack entry the kernel attaches to a queued packet (`NFQA_CT` and
//! `NFQA_CT_INFO`), read as a typed view over its bytes; and the connection
//! labels that a verdict can set.
//!
//! The kernel attaches it to packets of a queue bound with
//! [`QueueFlags::CONNTRACK`](crate::QueueFlags::CONNTRACK), when the packet
//! has a conntrack entry and the kernel has the conntrack glue
//! (`CONFIG_NETFILTER_NETLINK_GLUE_CT`, in `nf_conntrack_netlink`); without
//! the glue, binding with the flag fails with `EOPNOTSUPP`.
//!
//! The layout is the one `ctnetlink_glue_build` writes
//! (net/netfilter/nf_conntrack_netlink.c):
//!
//! ```text
//! NFQA_CT (nested)                       nla_nest_start(skb, ct_attr)
//!   CTA_TUPLE_ORIG (nested)              __ctnetlink_glue_build
//!     CTA_TUPLE_IP (nested)              ctnetlink_dump_tuples_ip
//!       CTA_IP_V4_SRC, CTA_IP_V4_DST     nla_put_in_addr: 4 bytes, network order
//!       or CTA_IP_V6_SRC, CTA_IP_V6_DST  nla_put_in6_addr: 16 bytes
//!     CTA_TUPLE_PROTO (nested)           ctnetlink_dump_tuples_proto
//!       CTA_PROTO_NUM                    nla_put_u8
//!       CTA_PROTO_SRC_PORT, _DST_PORT    nf_ct_port_tuple_to_nlattr: nla_put_be16
//!       or CTA_PROTO_ICMP_ID, _TYPE, _CODE   icmp_tuple_to_nlattr: be16, u8, u8
//!       or CTA_PROTO_ICMPV6_ID, _TYPE, _CODE
//!     CTA_TUPLE_ZONE                     ctnetlink_dump_zone_id: be16, directional zones only
//!   CTA_TUPLE_REPLY (nested)             as above
//!   CTA_ZONE                             be16, when the zone is not directional
//!   CTA_ID                               ctnetlink_dump_id: be32
//!   CTA_STATUS                           ctnetlink_dump_status: htonl(ct->status)
//!   CTA_TIMEOUT                          ctnetlink_dump_timeout: be32 seconds
//!   CTA_PROTOINFO, CTA_HELP, ...         kept raw (see Conntrack::attributes)
//!   CTA_TUPLE_MASTER (nested)            ctnetlink_dump_master, for expected connections
//!   CTA_MARK                             ctnetlink_dump_mark: htonl(ct->mark)
//!   CTA_LABELS                           ctnetlink_dump_labels: the 16 bytes of the bitmap
//! NFQA_CT_INFO                           nla_put_be32(skb, ct_info_attr, htonl(ctinfo))
//! ```
//!
//! ```
//! use nfqueue_core::{CtState, PacketView};
//!
//! fn describe(packet: &PacketView<'_>) -> Result<(), nfqueue_core::MalformedError> {
//!     if let Some(ct) = packet.conntrack_view()? {
//!         if ct.state() == Some(CtState::New) {
//!             println!("new connection {:?}, mark {:?}", ct.original(), ct.mark());
//!         }
//!     }
//!     Ok(())
//! }
//! ```

use crate::attr::{be16, be32, Attribute, Attributes};
use crate::error::MalformedError;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// enum ctattr_type (include/uapi/linux/netfilter/nfnetlink_conntrack.h).
pub(crate) const CTA_TUPLE_ORIG: u16 = 1;
pub(crate) const CTA_TUPLE_REPLY: u16 = 2;
pub(crate) const CTA_STATUS: u16 = 3;
pub(crate) const CTA_TIMEOUT: u16 = 7;
pub(crate) const CTA_MARK: u16 = 8;
pub(crate) const CTA_ID: u16 = 12;
pub(crate) const CTA_TUPLE_MASTER: u16 = 14;
pub(crate) const CTA_ZONE: u16 = 18;
pub(crate) const CTA_MARK_MASK: u16 = 21;
pub(crate) const CTA_LABELS: u16 = 22;
pub(crate) const CTA_LABELS_MASK: u16 = 23;
// enum ctattr_tuple.
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_TUPLE_ZONE: u16 = 3;
// enum ctattr_ip.
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto.
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

/// Size of the label bitmap: `NF_CT_LABELS_MAX_SIZE`, 128 bits
/// (include/net/netfilter/nf_conntrack_labels.h).
pub const CT_LABELS_LEN: usize = 16;

/// The conntrack state of a packet: `enum ip_conntrack_info`
/// (include/uapi/linux/netfilter/nf_conntrack_common.h), as `NFQA_CT_INFO`
/// carries it; `-m conntrack --ctstate` matches the same states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CtState {
    /// `IP_CT_ESTABLISHED` (0): part of an established connection, original
    /// direction.
    Established,
    /// `IP_CT_RELATED` (1): a new connection related to an existing one (an
    /// expectation, or an ICMP error), original direction.
    Related,
    /// `IP_CT_NEW` (2): the first packets of a connection, before a reply.
    New,
    /// `IP_CT_ESTABLISHED_REPLY` (3): an established connection, reply
    /// direction.
    EstablishedReply,
    /// `IP_CT_RELATED_REPLY` (4): a related connection, reply direction.
    RelatedReply,
    /// `IP_CT_NEW_REPLY` (5): kept by the kernel "only for userspace
    /// compatibility"; a packet never has it.
    NewReply,
    /// A value this crate does not know.
    Other(u32),
}

impl CtState {
    /// `IP_CT_IS_REPLY`: states from this value on are of the reply direction.
    const IS_REPLY: u32 = 3;

    /// The state's number, as `NFQA_CT_INFO` carries it.
    pub fn raw(self) -> u32 {
        match self {
            CtState::Established => 0,
            CtState::Related => 1,
            CtState::New => 2,
            CtState::EstablishedReply => 3,
            CtState::RelatedReply => 4,
            CtState::NewReply => 5,
            CtState::Other(n) => n,
        }
    }

    /// True for a packet of the reply direction.
    pub fn is_reply(self) -> bool {
        self.raw() >= Self::IS_REPLY
    }
}

impl From<u32> for CtState {
    fn from(raw: u32) -> Self {
        match raw {
            0 => CtState::Established,
            1 => CtState::Related,
            2 => CtState::New,
            3 => CtState::EstablishedReply,
            4 => CtState::RelatedReply,
            5 => CtState::NewReply,
            other => CtState::Other(other),
        }
    }
}

bitflags::bitflags! {
    /// The status bits of a conntrack entry (`enum ip_conntrack_status`,
    /// include/uapi/linux/netfilter/nf_conntrack_common.h); bits this crate
    /// does not name are kept.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct CtStatus: u32 {
        /// `IPS_EXPECTED`: an expected connection (of a helper).
        const EXPECTED = 1 << 0;
        /// `IPS_SEEN_REPLY`: packets were seen both ways.
        const SEEN_REPLY = 1 << 1;
        /// `IPS_ASSURED`: the connection will not be dropped early.
        const ASSURED = 1 << 2;
        /// `IPS_CONFIRMED`: the entry is in the table (its first packet left
        /// the last hook).
        const CONFIRMED = 1 << 3;
        /// `IPS_SRC_NAT`: source NAT applies.
        const SRC_NAT = 1 << 4;
        /// `IPS_DST_NAT`: destination NAT applies.
        const DST_NAT = 1 << 5;
        /// `IPS_SEQ_ADJUST`: TCP sequence numbers are adjusted.
        const SEQ_ADJUST = 1 << 6;
        /// `IPS_SRC_NAT_DONE`.
        const SRC_NAT_DONE = 1 << 7;
        /// `IPS_DST_NAT_DONE`.
        const DST_NAT_DONE = 1 << 8;
        /// `IPS_DYING`: the entry is being removed.
        const DYING = 1 << 9;
        /// `IPS_FIXED_TIMEOUT`.
        const FIXED_TIMEOUT = 1 << 10;
        /// `IPS_TEMPLATE`.
        const TEMPLATE = 1 << 11;
        /// `IPS_UNTRACKED`.
        const UNTRACKED = 1 << 12;
        /// `IPS_HELPER`: a helper was assigned explicitly.
        const HELPER = 1 << 13;
        /// `IPS_OFFLOAD`: in the flowtable fast path.
        const OFFLOAD = 1 << 14;
        /// `IPS_HW_OFFLOAD`: offloaded to hardware.
        const HW_OFFLOAD = 1 << 15;
    }
}

/// The 128 connection label bits (`CTA_LABELS`; `-m connlabel --label N`,
/// nft's `ct label`), as the kernel stores them: an array of `unsigned long`
/// in which bit `N` is `test_bit(N, bits)`.
///
/// ```
/// use nfqueue_core::CtLabels;
///
/// let labels = CtLabels::EMPTY.with_bit(3).with_bit(100);
/// assert!(labels.contains(3) && labels.contains(100) && !labels.contains(4));
/// assert_eq!(labels.iter().collect::<Vec<_>>(), [3, 100]);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CtLabels([u8; CT_LABELS_LEN]);

impl CtLabels {
    /// No bit set.
    pub const EMPTY: CtLabels = CtLabels([0; CT_LABELS_LEN]);
    /// Every bit set: as a mask, "all labels".
    pub const ALL: CtLabels = CtLabels([0xff; CT_LABELS_LEN]);

    /// The bitmap from its bytes, in the kernel's memory order.
    pub const fn from_bytes(bytes: [u8; CT_LABELS_LEN]) -> Self {
        CtLabels(bytes)
    }

    /// The bytes, in the kernel's memory order (what `CTA_LABELS` carries).
    pub const fn as_bytes(&self) -> &[u8; CT_LABELS_LEN] {
        &self.0
    }

    /// Where bit `bit` lies: its byte and the bit within the byte. The kernel
    /// numbers bits within `unsigned long` words stored in the host's byte
    /// order; on a little-endian host bit N is simply bit N % 8 of byte N / 8.
    const fn locate(bit: u8) -> (usize, u8) {
        const WORD: usize = std::mem::size_of::<std::ffi::c_ulong>();
        let bit = bit as usize;
        let (word, in_word) = (bit / (WORD * 8), bit % (WORD * 8));
        let byte = if cfg!(target_endian = "little") {
            in_word / 8
        } else {
            WORD - 1 - in_word / 8
        };
        (word * WORD + byte, (in_word % 8) as u8)
    }

    /// This bitmap with label `bit` (0 to 127) set.
    ///
    /// # Panics
    /// When `bit` is 128 or more: there are 128 labels.
    pub const fn with_bit(mut self, bit: u8) -> Self {
        assert!((bit as usize) < CT_LABELS_LEN * 8, "labels are 0 to 127");
        let (byte, shift) = Self::locate(bit);
        self.0[byte] |= 1 << shift;
        self
    }

    /// Whether label `bit` is set (false for 128 and more).
    pub fn contains(&self, bit: u8) -> bool {
        if usize::from(bit) >= CT_LABELS_LEN * 8 {
            return false;
        }
        let (byte, shift) = Self::locate(bit);
        self.0[byte] & (1 << shift) != 0
    }

    /// The labels set, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=127u8).filter(|&bit| self.contains(bit))
    }

    /// True when no label is set.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; CT_LABELS_LEN]
    }

    /// The bits set in both.
    pub fn and(self, other: CtLabels) -> CtLabels {
        CtLabels(std::array::from_fn(|i| self.0[i] & other.0[i]))
    }
}

impl From<[u8; CT_LABELS_LEN]> for CtLabels {
    fn from(bytes: [u8; CT_LABELS_LEN]) -> Self {
        CtLabels(bytes)
    }
}

impl fmt::Debug for CtLabels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// The ICMP or ICMPv6 part of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CtIcmp {
    /// The echo identifier (`CTA_PROTO_ICMP_ID`).
    pub id: u16,
    /// The type (`CTA_PROTO_ICMP_TYPE`).
    pub kind: u8,
    /// The code (`CTA_PROTO_ICMP_CODE`).
    pub code: u8,
}

/// One direction of a connection (`CTA_TUPLE_ORIG`, `CTA_TUPLE_REPLY`,
/// `CTA_TUPLE_MASTER`): addresses, protocol, and ports or ICMP fields, each
/// as present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CtTuple {
    src: Option<IpAddr>,
    dst: Option<IpAddr>,
    protocol: Option<u8>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    icmp: Option<CtIcmp>,
    zone: Option<u16>,
}

impl CtTuple {
    /// The source address.
    pub fn src(&self) -> Option<IpAddr> {
        self.src
    }

    /// The destination address.
    pub fn dst(&self) -> Option<IpAddr> {
        self.dst
    }

    /// The IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6, ...).
    pub fn protocol(&self) -> Option<u8> {
        self.protocol
    }

    /// The source port (TCP, UDP, UDP-Lite, SCTP, DCCP; GRE keys too).
    pub fn src_port(&self) -> Option<u16> {
        self.src_port
    }

    /// The destination port.
    pub fn dst_port(&self) -> Option<u16> {
        self.dst_port
    }

    /// The ICMP or ICMPv6 identifier, type and code.
    pub fn icmp(&self) -> Option<CtIcmp> {
        self.icmp
    }

    /// The conntrack zone of this direction (`CTA_TUPLE_ZONE`), when the
    /// zone is directional; else see [`Conntrack::zone`].
    pub fn zone(&self) -> Option<u16> {
        self.zone
    }

    /// Parses the attributes of a tuple nest.
    fn parse(bytes: &[u8]) -> Result<CtTuple, MalformedError> {
        let mut tuple = CtTuple::default();
        for attr in Attributes::new(bytes) {
            let Attribute { kind, value } = attr?;
            match kind {
                CTA_TUPLE_IP => tuple.parse_ip(value)?,
                CTA_TUPLE_PROTO => tuple.parse_proto(value)?,
                CTA_TUPLE_ZONE => tuple.zone = Some(exact16("CTA_TUPLE_ZONE", value)?),
                _ => {}
            }
        }
        Ok(tuple)
    }

    fn parse_ip(&mut self, bytes: &[u8]) -> Result<(), MalformedError> {
        for attr in Attributes::new(bytes) {
            let Attribute { kind, value } = attr?;
            let v4 = |what| exact::<4>(what, value).map(|a| IpAddr::V4(Ipv4Addr::from(a)));
            let v6 = |what| exact::<16>(what, value).map(|a| IpAddr::V6(Ipv6Addr::from(a)));
            match kind {
                CTA_IP_V4_SRC => self.src = Some(v4("CTA_IP_V4_SRC")?),
                CTA_IP_V4_DST => self.dst = Some(v4("CTA_IP_V4_DST")?),
                CTA_IP_V6_SRC => self.src = Some(v6("CTA_IP_V6_SRC")?),
                CTA_IP_V6_DST => self.dst = Some(v6("CTA_IP_V6_DST")?),
                _ => {}
            }
        }
        Ok(())
    }

    fn parse_proto(&mut self, bytes: &[u8]) -> Result<(), MalformedError> {
        let (mut id, mut kind_, mut code) = (None, None, None);
        for attr in Attributes::new(bytes) {
            let Attribute { kind, value } = attr?;
            match kind {
                CTA_PROTO_NUM => self.protocol = Some(exact::<1>("CTA_PROTO_NUM", value)?[0]),
                CTA_PROTO_SRC_PORT => self.src_port = Some(exact16("CTA_PROTO_SRC_PORT", value)?),
                CTA_PROTO_DST_PORT => self.dst_port = Some(exact16("CTA_PROTO_DST_PORT", value)?),
                CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                    id = Some(exact16("CTA_PROTO_ICMP_ID", value)?);
                }
                CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                    kind_ = Some(exact::<1>("CTA_PROTO_ICMP_TYPE", value)?[0]);
                }
                CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                    code = Some(exact::<1>("CTA_PROTO_ICMP_CODE", value)?[0]);
                }
                _ => {}
            }
        }
        if let (Some(id), Some(kind), Some(code)) = (id, kind_, code) {
            self.icmp = Some(CtIcmp { id, kind, code });
        }
        Ok(())
    }
}

impl fmt::Display for CtTuple {
    /// `udp 10.0.0.1:5000 -> 10.0.0.2:53`, `icmp 10.0.0.1 -> 10.0.0.2 id 7
    /// type 8 code 0`, with a `zone N` when there is one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.protocol {
            Some(6) => f.write_str("tcp")?,
            Some(17) => f.write_str("udp")?,
            Some(1) => f.write_str("icmp")?,
            Some(58) => f.write_str("icmpv6")?,
            Some(n) => write!(f, "proto {n}")?,
            None => f.write_str("?")?,
        }
        let end = |f: &mut fmt::Formatter<'_>, addr: Option<IpAddr>, port: Option<u16>| match (
            addr, port,
        ) {
            (Some(IpAddr::V6(a)), Some(p)) => write!(f, " [{a}]:{p}"),
            (Some(a), Some(p)) => write!(f, " {a}:{p}"),
            (Some(a), None) => write!(f, " {a}"),
            (None, _) => f.write_str(" ?"),
        };
        end(f, self.src, self.src_port)?;
        f.write_str(" ->")?;
        end(f, self.dst, self.dst_port)?;
        if let Some(icmp) = self.icmp {
            write!(f, " id {} type {} code {}", icmp.id, icmp.kind, icmp.code)?;
        }
        if let Some(zone) = self.zone {
            write!(f, " zone {zone}")?;
        }
        Ok(())
    }
}

/// A packet's conntrack entry: a view over the bytes of its `NFQA_CT`
/// attribute, checked once when it is made, and the state from
/// `NFQA_CT_INFO`. Attributes this crate does not read stay available raw
/// ([`attributes`](Self::attributes), [`raw`](Self::raw)).
///
/// Get it from a packet with
/// [`PacketView::conntrack_view`](crate::PacketView::conntrack_view).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Conntrack<'a> {
    raw: &'a [u8],
    info: Option<u32>,
    original: Option<CtTuple>,
    reply: Option<CtTuple>,
    master: Option<CtTuple>,
    status: Option<u32>,
    timeout: Option<u32>,
    mark: Option<u32>,
    id: Option<u32>,
    zone: Option<u16>,
    labels: Option<CtLabels>,
}

impl<'a> Conntrack<'a> {
    /// Reads the value of an `NFQA_CT` attribute (the nested `CTA_*`
    /// attributes) and the value of `NFQA_CT_INFO`, if any.
    ///
    /// # Errors
    /// [`MalformedError`] when an attribute is cut short or a value this
    /// view reads has the wrong length; attributes it does not read are only
    /// checked to be whole.
    pub fn parse(raw: &'a [u8], info: Option<u32>) -> Result<Self, MalformedError> {
        let mut ct = Conntrack {
            raw,
            info,
            original: None,
            reply: None,
            master: None,
            status: None,
            timeout: None,
            mark: None,
            id: None,
            zone: None,
            labels: None,
        };
        for attr in Attributes::new(raw) {
            let Attribute { kind, value } = attr?;
            match kind {
                CTA_TUPLE_ORIG => ct.original = Some(CtTuple::parse(value)?),
                CTA_TUPLE_REPLY => ct.reply = Some(CtTuple::parse(value)?),
                CTA_TUPLE_MASTER => ct.master = Some(CtTuple::parse(value)?),
                CTA_STATUS => ct.status = Some(exact32("CTA_STATUS", value)?),
                CTA_TIMEOUT => ct.timeout = Some(exact32("CTA_TIMEOUT", value)?),
                CTA_MARK => ct.mark = Some(exact32("CTA_MARK", value)?),
                CTA_ID => ct.id = Some(exact32("CTA_ID", value)?),
                CTA_ZONE => ct.zone = Some(exact16("CTA_ZONE", value)?),
                CTA_LABELS => ct.labels = Some(labels(value)?),
                _ => {}
            }
        }
        Ok(ct)
    }

    /// The `NFQA_CT` bytes this view reads: the nested `CTA_*` attributes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Every attribute of the entry, in order, including those this view does
    /// not read (`CTA_PROTOINFO`, `CTA_HELP`, counters, ...).
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::new(self.raw)
    }

    /// The packet's conntrack state (`NFQA_CT_INFO`).
    pub fn state(&self) -> Option<CtState> {
        self.info.map(CtState::from)
    }

    /// The tuple of the original direction (the first packet's).
    pub fn original(&self) -> Option<CtTuple> {
        self.original
    }

    /// The tuple of the reply direction: after NAT, where the replies come
    /// from and go to.
    pub fn reply(&self) -> Option<CtTuple> {
        self.reply
    }

    /// For an expected connection, the original tuple of the connection
    /// that expected it (`CTA_TUPLE_MASTER`).
    pub fn master(&self) -> Option<CtTuple> {
        self.master
    }

    /// The status bits.
    pub fn status(&self) -> Option<CtStatus> {
        self.status.map(CtStatus::from_bits_retain)
    }

    /// Seconds until the entry expires, as the kernel said when it queued the
    /// packet.
    pub fn timeout(&self) -> Option<u32> {
        self.timeout
    }

    /// The connection's mark (`ct->mark`, `-m connmark`; the kernel sends it
    /// also when 0).
    pub fn mark(&self) -> Option<u32> {
        self.mark
    }

    /// The entry's id (`CTA_ID`), as `conntrack -L -o id` shows it.
    pub fn id(&self) -> Option<u32> {
        self.id
    }

    /// The conntrack zone, when it applies to both directions (`CTA_ZONE`;
    /// the kernel leaves the default zone 0 out). A directional zone is in
    /// the tuples ([`CtTuple::zone`]).
    pub fn zone(&self) -> Option<u16> {
        self.zone
    }

    /// The connection labels; `None` when the kernel sent none (it sends
    /// them only when some label is set).
    pub fn labels(&self) -> Option<CtLabels> {
        self.labels
    }
}

impl fmt::Debug for Conntrack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conntrack")
            .field("state", &self.state())
            .field("original", &self.original)
            .field("reply", &self.reply)
            .field("status", &self.status())
            .field("mark", &self.mark)
            .field("id", &self.id)
            .field("zone", &self.zone)
            .field("labels", &self.labels)
            .finish_non_exhaustive()
    }
}

/// The value of `what`, which must be exactly `N` bytes long.
fn exact<const N: usize>(what: &'static str, value: &[u8]) -> Result<[u8; N], MalformedError> {
    value.try_into().map_err(|_| MalformedError::Length {
        what,
        expected: N,
        got: value.len(),
    })
}

fn exact16(what: &'static str, value: &[u8]) -> Result<u16, MalformedError> {
    exact::<2>(what, value).map(|b| be16(&b).unwrap_or_default())
}

fn exact32(what: &'static str, value: &[u8]) -> Result<u32, MalformedError> {
    exact::<4>(what, value).map(|b| be32(&b).unwrap_or_default())
}

/// `CTA_LABELS`: the kernel sends the whole 16-byte bitmap; a shorter one (a
/// multiple of 4, as `ctnetlink_attach_labels` takes) is padded with zeros.
fn labels(value: &[u8]) -> Result<CtLabels, MalformedError> {
    if value.len() > CT_LABELS_LEN || value.len() % 4 != 0 {
        return Err(MalformedError::Length {
            what: "CTA_LABELS",
            expected: CT_LABELS_LEN,
            got: value.len(),
        });
    }
    let mut bytes = [0; CT_LABELS_LEN];
    bytes[..value.len()].copy_from_slice(value);
    Ok(CtLabels(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attr::{align4, NLA_HDRLEN};

    /// `NLA_F_NESTED`, which `nla_nest_start` sets since Linux 5.2
    /// (include/net/netlink.h: `return nla_nest_start_noflag(skb, attrtype |
    /// NLA_F_NESTED);`).
    const NESTED: u16 = 1 << 15;

    /// One attribute, padded, as `nla_put` writes it.
    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((NLA_HDRLEN + value.len()) as u16).to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align4(out.len()), 0);
        out
    }

    fn nest(kind: u16, parts: &[Vec<u8>]) -> Vec<u8> {
        attr(kind | NESTED, &parts.concat())
    }

    /// What `ctnetlink_dump_tuples` writes for a UDP or TCP tuple:
    /// ```text
    /// nest_parms = nla_nest_start(skb, CTA_TUPLE_IP);          ctnetlink_dump_tuples_ip
    /// nla_put_in_addr(skb, CTA_IP_V4_SRC, tuple->src.u3.ip)    ipv4_tuple_to_nlattr
    /// nla_put_in_addr(skb, CTA_IP_V4_DST, tuple->dst.u3.ip)
    /// nest_parms = nla_nest_start(skb, CTA_TUPLE_PROTO);       ctnetlink_dump_tuples_proto
    /// nla_put_u8(skb, CTA_PROTO_NUM, tuple->dst.protonum)
    /// nla_put_be16(skb, CTA_PROTO_SRC_PORT, tuple->src.u.tcp.port)   nf_ct_port_tuple_to_nlattr
    /// nla_put_be16(skb, CTA_PROTO_DST_PORT, tuple->dst.u.tcp.port)
    /// ```
    fn tuple_v4(proto: u8, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
        [
            nest(
                CTA_TUPLE_IP,
                &[attr(CTA_IP_V4_SRC, &src), attr(CTA_IP_V4_DST, &dst)],
            ),
            nest(
                CTA_TUPLE_PROTO,
                &[
                    attr(CTA_PROTO_NUM, &[proto]),
                    attr(CTA_PROTO_SRC_PORT, &sport.to_be_bytes()),
                    attr(CTA_PROTO_DST_PORT, &dport.to_be_bytes()),
                ],
            ),
        ]
        .concat()
    }

    /// The `NFQA_CT` value of a UDP flow 10.0.0.1:5000 -> 10.0.0.2:53 as
    /// `__ctnetlink_glue_build` (net/netfilter/nf_conntrack_netlink.c) writes
    /// it, in its order: the tuples (`nla_nest_start(skb, CTA_TUPLE_ORIG)`,
    /// `ctnetlink_dump_tuples`, then `CTA_TUPLE_REPLY`), `ctnetlink_dump_id`
    /// (`nla_put_be32(skb, CTA_ID, id)`), `ctnetlink_dump_status`
    /// (`nla_put_be32(skb, CTA_STATUS, htonl(ct->status))`),
    /// `ctnetlink_dump_timeout` (`nla_put_be32(skb, CTA_TIMEOUT,
    /// htonl(timeout))`), `ctnetlink_dump_mark` (`nla_put_be32(skb, CTA_MARK,
    /// htonl(mark))`) and `ctnetlink_dump_labels` (`nla_put(skb, CTA_LABELS,
    /// sizeof(labels->bits), labels->bits)`).
    fn udp_entry(labels: Option<[u8; 16]>) -> Vec<u8> {
        let mut parts = vec![
            nest(
                CTA_TUPLE_ORIG,
                &[tuple_v4(17, [10, 0, 0, 1], 5000, [10, 0, 0, 2], 53)],
            ),
            nest(
                CTA_TUPLE_REPLY,
                &[tuple_v4(17, [10, 0, 0, 2], 53, [10, 0, 0, 1], 5000)],
            ),
            attr(CTA_ID, &0x1234_5678u32.to_be_bytes()),
            // IPS_CONFIRMED | IPS_SEEN_REPLY
            attr(CTA_STATUS, &0x0000_000au32.to_be_bytes()),
            attr(CTA_TIMEOUT, &30u32.to_be_bytes()),
            attr(CTA_MARK, &0x2au32.to_be_bytes()),
        ];
        if let Some(labels) = labels {
            parts.push(attr(CTA_LABELS, &labels));
        }
        parts.concat()
    }

    #[test]
    fn reads_a_udp_entry_as_the_kernel_writes_it() {
        let mut labels = [0u8; 16];
        labels[0] = 0b1000; // label 3 on a little-endian host
        let bytes = udp_entry(Some(CtLabels::EMPTY.with_bit(3).0));
        // NFQA_CT_INFO: nla_put_be32(skb, ct_info_attr, htonl(ctinfo)),
        // IP_CT_ESTABLISHED_REPLY.
        let ct = Conntrack::parse(&bytes, Some(3)).unwrap();
        let original = ct.original().unwrap();
        assert_eq!(original.src(), Some("10.0.0.1".parse().unwrap()));
        assert_eq!(original.dst(), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(original.protocol(), Some(17));
        assert_eq!(
            (original.src_port(), original.dst_port()),
            (Some(5000), Some(53))
        );
        assert_eq!(original.icmp(), None);
        assert_eq!(original.to_string(), "udp 10.0.0.1:5000 -> 10.0.0.2:53");
        assert_eq!(
            ct.reply().unwrap().to_string(),
            "udp 10.0.0.2:53 -> 10.0.0.1:5000"
        );
        assert_eq!(ct.id(), Some(0x1234_5678));
        assert_eq!(
            ct.status(),
            Some(CtStatus::CONFIRMED | CtStatus::SEEN_REPLY)
        );
        assert_eq!(ct.timeout(), Some(30));
        assert_eq!(ct.mark(), Some(0x2a));
        assert_eq!(ct.state(), Some(CtState::EstablishedReply));
        assert!(ct.state().unwrap().is_reply());
        assert_eq!(ct.labels().unwrap().iter().collect::<Vec<_>>(), [3]);
        if cfg!(target_endian = "little") {
            assert_eq!(ct.labels().unwrap().as_bytes(), &labels);
        }
        assert_eq!(ct.zone(), None);
        assert_eq!(ct.master(), None);
        assert_eq!(ct.raw(), &bytes[..]);
        assert_eq!(ct.attributes().count(), 7);
    }

    /// An ICMPv6 echo in zone 7 of the original direction only, whose entry
    /// expects nothing: `icmpv6_tuple_to_nlattr` writes id, type and code;
    /// `ctnetlink_dump_zone_id(skb, CTA_TUPLE_ZONE, zone,
    /// NF_CT_ZONE_DIR_ORIG)` writes `nla_put_be16(skb, attrtype,
    /// htons(zone->id))` inside the original tuple only.
    #[test]
    fn reads_icmpv6_tuples_and_a_directional_zone() {
        let a: [u8; 16] = "fd00::1".parse::<Ipv6Addr>().unwrap().octets();
        let b: [u8; 16] = "fd00::2".parse::<Ipv6Addr>().unwrap().octets();
        let tuple = |src: &[u8; 16], dst: &[u8; 16], kind: u8, zone: Option<u16>| {
            let mut parts = vec![
                nest(
                    CTA_TUPLE_IP,
                    &[attr(CTA_IP_V6_SRC, src), attr(CTA_IP_V6_DST, dst)],
                ),
                nest(
                    CTA_TUPLE_PROTO,
                    &[
                        attr(CTA_PROTO_NUM, &[58]),
                        attr(CTA_PROTO_ICMPV6_ID, &0x0107u16.to_be_bytes()),
                        attr(CTA_PROTO_ICMPV6_TYPE, &[kind]),
                        attr(CTA_PROTO_ICMPV6_CODE, &[0]),
                    ],
                ),
            ];
            if let Some(zone) = zone {
                parts.push(attr(CTA_TUPLE_ZONE, &zone.to_be_bytes()));
            }
            parts
        };
        let bytes = [
            nest(CTA_TUPLE_ORIG, &tuple(&a, &b, 128, Some(7))),
            nest(CTA_TUPLE_REPLY, &tuple(&b, &a, 129, None)),
            attr(CTA_STATUS, &8u32.to_be_bytes()),
        ]
        .concat();
        let ct = Conntrack::parse(&bytes, Some(2)).unwrap();
        assert_eq!(ct.state(), Some(CtState::New));
        let original = ct.original().unwrap();
        assert_eq!(
            original.icmp(),
            Some(CtIcmp {
                id: 0x0107,
                kind: 128,
                code: 0
            })
        );
        assert_eq!(original.zone(), Some(7));
        assert_eq!(ct.reply().unwrap().zone(), None);
        assert_eq!(
            original.to_string(),
            "icmpv6 fd00::1 -> fd00::2 id 263 type 128 code 0 zone 7"
        );
        assert_eq!(
            ct.mark(),
            None,
            "no CTA_MARK without CONFIG_NF_CONNTRACK_MARK"
        );
        assert_eq!(ct.labels(), None);
    }

    /// A zone of both directions is `CTA_ZONE` at the top
    /// (`ctnetlink_dump_zone_id(skb, CTA_ZONE, zone, NF_CT_DEFAULT_ZONE_DIR)`);
    /// attributes this view does not read (`CTA_PROTOINFO`, a nest) and
    /// unknown ones stay available raw.
    #[test]
    fn keeps_what_it_does_not_read() {
        let bytes = [
            attr(CTA_ZONE, &9u16.to_be_bytes()),
            nest(4, &[nest(1, &[attr(1, &[3])])]),
            attr(200, b"future"),
        ]
        .concat();
        let ct = Conntrack::parse(&bytes, None).unwrap();
        assert_eq!(ct.zone(), Some(9));
        assert_eq!(ct.state(), None);
        let kinds: Vec<u16> = ct.attributes().map(|a| a.unwrap().kind).collect();
        assert_eq!(kinds, [CTA_ZONE, 4, 200]);
        assert_eq!(ct.attributes().nth(2).unwrap().unwrap().value, b"future");
    }

    #[test]
    fn wrong_lengths_are_errors() {
        let cases = [
            attr(CTA_MARK, &[0, 0, 1]),
            attr(CTA_STATUS, &[0; 5]),
            attr(CTA_ZONE, &[0; 4]),
            attr(CTA_LABELS, &[0; 20]),
            attr(CTA_LABELS, &[0; 6]),
            nest(
                CTA_TUPLE_ORIG,
                &[nest(CTA_TUPLE_IP, &[attr(CTA_IP_V4_SRC, &[1; 16])])],
            ),
            nest(
                CTA_TUPLE_REPLY,
                &[nest(CTA_TUPLE_PROTO, &[attr(CTA_PROTO_NUM, &[6, 0])])],
            ),
        ];
        for bytes in cases {
            let err = Conntrack::parse(&bytes, None).unwrap_err();
            assert!(matches!(err, MalformedError::Length { .. }), "{err:?}");
        }
        // A shorter label bitmap, in whole words, is padded.
        let short = attr(CTA_LABELS, &[1, 0, 0, 0]);
        assert!(Conntrack::parse(&short, None)
            .unwrap()
            .labels()
            .unwrap()
            .contains(0));
    }

    /// No input makes the parser panic: every prefix and every single-byte
    /// change of a full entry parses or fails with an error, and whatever
    /// parses can be read through every getter.
    #[test]
    fn no_bytes_make_it_panic() {
        let entry = udp_entry(Some([0xa5; 16]));
        let check = |bytes: &[u8]| {
            if let Ok(ct) = Conntrack::parse(bytes, Some(u32::MAX)) {
                let _ = format!("{ct:?}");
                for tuple in [ct.original(), ct.reply(), ct.master()]
                    .into_iter()
                    .flatten()
                {
                    let _ = tuple.to_string();
                }
                let _ = (
                    ct.status(),
                    ct.state(),
                    ct.labels().map(|l| l.iter().count()),
                );
                assert!(ct.attributes().all(|a| a.is_ok()));
            }
        };
        for end in 0..=entry.len() {
            check(&entry[..end]);
        }
        for at in 0..entry.len() {
            for value in [0, 1, 3, 4, 5, 0x7f, 0x80, 0xff] {
                let mut changed = entry.clone();
                changed[at] = value;
                check(&changed);
            }
        }
    }

    /// A packet message as `nfqnl_build_packet_message` writes it under
    /// `NFQA_CFG_F_CONNTRACK`: `nfnl_ct->build(skb, ct, ctinfo, NFQA_CT,
    /// NFQA_CT_INFO)`, i.e. `ctnetlink_glue_build`, which nests the entry in
    /// `NFQA_CT` (`nla_nest_start(skb, ct_attr)`) and then puts
    /// `nla_put_be32(skb, ct_info_attr, htonl(ctinfo))`.
    #[test]
    fn a_packet_view_reads_its_conntrack_entry() {
        use crate::PacketView;
        use nfqueue_sys::nfqnl_attr_type as nfqa;
        let entry = udp_entry(None);
        let attrs = [
            attr(nfqa::NFQA_PACKET_HDR as u16, &[0, 0, 0, 7, 8, 0, 1]),
            nest(nfqa::NFQA_CT as u16, std::slice::from_ref(&entry)),
            attr(nfqa::NFQA_CT_INFO as u16, &2u32.to_be_bytes()),
        ]
        .concat();
        let view = PacketView::parse(0, &attrs).unwrap();
        assert_eq!(view.conntrack(), Some(&entry[..]));
        assert_eq!(view.conntrack_state(), Some(CtState::New));
        let ct = view.conntrack_view().unwrap().unwrap();
        assert_eq!(ct.state(), Some(CtState::New));
        assert_eq!(ct.mark(), Some(0x2a));
        // Without the flag the kernel sends neither attribute.
        let plain = attr(nfqa::NFQA_PACKET_HDR as u16, &[0, 0, 0, 7, 8, 0, 1]);
        let view = PacketView::parse(0, &plain).unwrap();
        assert!(view.conntrack_view().unwrap().is_none());
        // A broken entry is an error, not a panic and not a silent None.
        let broken = [
            attr(nfqa::NFQA_PACKET_HDR as u16, &[0, 0, 0, 7, 8, 0, 1]),
            nest(nfqa::NFQA_CT as u16, &[attr(CTA_MARK, &[1])]),
        ]
        .concat();
        let view = PacketView::parse(0, &broken).unwrap();
        assert!(view.conntrack_view().is_err());
    }

    #[test]
    fn states_round_trip_and_know_their_direction() {
        for raw in 0..8 {
            let state = CtState::from(raw);
            assert_eq!(state.raw(), raw);
            assert_eq!(state.is_reply(), raw >= 3);
        }
        assert_eq!(CtState::from(9), CtState::Other(9));
    }

    #[test]
    fn label_bits_follow_the_kernels_bitmap() {
        // test_bit(bit, unsigned long *): word bit / BITS_PER_LONG, in the
        // host's byte order.
        let labels = CtLabels::EMPTY.with_bit(0).with_bit(9).with_bit(127);
        assert_eq!(labels.iter().collect::<Vec<_>>(), [0, 9, 127]);
        assert!(!labels.contains(128) && !labels.contains(255));
        if cfg!(target_endian = "little") {
            let mut bytes = [0u8; 16];
            bytes[0] = 1;
            bytes[1] = 2;
            bytes[15] = 0x80;
            assert_eq!(labels.as_bytes(), &bytes);
        }
        assert_eq!(format!("{labels:?}"), "{0, 9, 127}");
        assert!(CtLabels::EMPTY.is_empty() && !labels.is_empty());
        assert_eq!(
            labels
                .and(CtLabels::EMPTY.with_bit(9))
                .iter()
                .collect::<Vec<_>>(),
            [9]
        );
    }
}
