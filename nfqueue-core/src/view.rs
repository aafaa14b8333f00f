//! A queued packet's metadata and payload as the kernel sent them, parsed once
//! and read through borrowing getters.

use crate::attr::{be16, be32, be64, AttrIndex, Attribute, Attributes};
use crate::binding::{Binding, PacketKey};
use crate::conntrack::{Conntrack, CtState};
use crate::error::MalformedError;
use crate::ifname::{self, InterfaceName};
use crate::message::{next_message, Message};
use nfqueue_sys as sys;
use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::time::{Duration, SystemTime};

use sys::nfqnl_attr_type as nfqa;

/// The netfilter hook a packet was queued from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hook {
    /// `PREROUTING`: arriving, before routing.
    PreRouting,
    /// `INPUT`: arriving, addressed to this host.
    LocalIn,
    /// `FORWARD`: passing through.
    Forward,
    /// `OUTPUT`: sent by this host.
    LocalOut,
    /// `POSTROUTING`: leaving, after routing.
    PostRouting,
    /// Another hook number (e.g. of the netdev or bridge families).
    Other(u8),
}

impl From<u8> for Hook {
    fn from(hook: u8) -> Self {
        match hook {
            0 => Hook::PreRouting,
            1 => Hook::LocalIn,
            2 => Hook::Forward,
            3 => Hook::LocalOut,
            4 => Hook::PostRouting,
            other => Hook::Other(other),
        }
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hook::PreRouting => f.write_str("PREROUTING"),
            Hook::LocalIn => f.write_str("INPUT"),
            Hook::Forward => f.write_str("FORWARD"),
            Hook::LocalOut => f.write_str("OUTPUT"),
            Hook::PostRouting => f.write_str("POSTROUTING"),
            Hook::Other(n) => write!(f, "hook {n}"),
        }
    }
}

bitflags::bitflags! {
    /// What the kernel says of the socket buffer (`NFQA_SKB_*`).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct SkbInfo: u32 {
        /// The transport checksum is not computed yet (offloaded); the payload's
        /// checksum field is not valid.
        const CSUM_NOT_READY = sys::NFQA_SKB_CSUMNOTREADY;
        /// The packet is a GSO super-packet (delivered whole under
        /// [`QueueFlags::GSO`](crate::QueueFlags::GSO)).
        const GSO = sys::NFQA_SKB_GSO;
        /// The checksum was not verified yet.
        const CSUM_NOT_VERIFIED = sys::NFQA_SKB_CSUM_NOTVERIFIED;
    }
}

/// The VLAN tag of a packet (`NFQA_VLAN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Vlan {
    /// The tag protocol (e.g. 0x8100).
    pub proto: u16,
    /// The tag control information: priority, DEI and VLAN id.
    pub tci: u16,
}

impl Vlan {
    /// The 12-bit VLAN id.
    pub fn id(&self) -> u16 {
        self.tci & 0x0fff
    }

    /// The 3-bit priority code point.
    pub fn priority(&self) -> u8 {
        (self.tci >> 13) as u8
    }
}

/// The id of a packet whose attributes cannot be parsed whole, if its
/// `NFQA_PACKET_HDR` (which the kernel puts first) can be read: so that the
/// packet still gets a verdict instead of waiting in the kernel.
pub(crate) fn packet_id(attrs: &[u8]) -> Option<u32> {
    Attributes::new(attrs)
        .map_while(Result::ok)
        .find(|attr| u32::from(attr.kind) == nfqa::NFQA_PACKET_HDR)
        .and_then(|attr| be32(attr.value))
}

/// A packet's metadata and payload, parsed from a netlink message without
/// copying. [`Packet`](crate::Packet) dereferences to it, an
/// [`OwnedPacket`](crate::OwnedPacket) gives it with
/// [`view`](crate::OwnedPacket::view) (without parsing again), and a
/// dispatcher's handler is given one. It reads captured bytes too
/// ([`from_message`](Self::from_message)); interface names then are unknown.
#[derive(Clone, Copy)]
pub struct PacketView<'a> {
    attrs: &'a [u8],
    meta: Meta,
}

/// What parsing found in a packet's attributes: kept beside an owned copy of
/// them, it makes a view again without parsing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    /// The queue and the binding of it the packet came through.
    binding: Binding,
    id: u32,
    hw_protocol: u16,
    hook: Hook,
    index: AttrIndex,
    /// A socket in the network namespace of the queue, to look interface
    /// names up in: borrowed for the view's lifetime (see
    /// [`PacketView::with_interface_names`]).
    names: Option<RawFd>,
}

impl<'a> PacketView<'a> {
    /// Parses a whole netlink message of type `NFQNL_MSG_PACKET` (as received
    /// from the kernel, including its `nlmsghdr`).
    ///
    /// # Errors
    /// [`MalformedError`] when the bytes are not such a message.
    pub fn from_message(bytes: &'a [u8]) -> Result<Self, MalformedError> {
        match next_message(bytes)?.0 {
            Message::Packet { queue, attrs } => Self::parse(queue, attrs),
            _ => Err(MalformedError::MissingPacketHeader),
        }
    }

    /// Parses the attributes of a packet message of queue `queue` (the bytes
    /// after its `nfgenmsg`, as [`attribute_bytes`](Self::attribute_bytes) returns
    /// them). The view came through no binding of this process: a verdict for
    /// its [`key`](Self::key) is refused.
    ///
    /// # Errors
    /// [`MalformedError`] when they are not a packet's attributes.
    pub fn parse(queue: u16, attrs: &'a [u8]) -> Result<Self, MalformedError> {
        Self::parse_with_names(Binding::detached(queue), attrs, None)
    }

    /// Parses the attributes of a packet received through `binding`, e.g. a
    /// copy of them that a receive thread handed to a worker (see
    /// [`parse`](Self::parse)); its [`key`](Self::key) then names the packet
    /// for verdicts.
    ///
    /// # Errors
    /// [`MalformedError`] when they are not a packet's attributes.
    pub fn parse_received(binding: Binding, attrs: &'a [u8]) -> Result<Self, MalformedError> {
        Self::parse_with_names(binding, attrs, None)
    }

    /// [`parse_received`](Self::parse_received), looking interface names up
    /// through `names` (a socket the caller keeps open while the view lives).
    #[inline]
    pub(crate) fn parse_with_names(
        binding: Binding,
        attrs: &'a [u8],
        names: Option<RawFd>,
    ) -> Result<Self, MalformedError> {
        let index = AttrIndex::parse(attrs)?;
        // struct nfqnl_msg_packet_hdr { __be32 packet_id; __be16 hw_protocol; __u8 hook; }
        let header = index
            .get(attrs, nfqa::NFQA_PACKET_HDR)
            .ok_or(MalformedError::MissingPacketHeader)?;
        if header.len() < 7 {
            return Err(MalformedError::Truncated {
                what: "NFQA_PACKET_HDR",
                needed: 7,
                got: header.len(),
            });
        }
        Ok(PacketView {
            attrs,
            meta: Meta {
                binding,
                id: be32(header).unwrap_or_default(),
                hw_protocol: be16(&header[4..]).unwrap_or_default(),
                hook: Hook::from(header[6]),
                index,
                names,
            },
        })
    }

    /// The view of `attrs` as `meta` found it, without parsing again.
    pub(crate) fn from_meta(attrs: &'a [u8], meta: Meta) -> Self {
        PacketView { attrs, meta }
    }

    /// What parsing found, to make the view again from a copy of the bytes.
    pub(crate) fn meta(&self) -> Meta {
        self.meta
    }

    /// This view, looking interface names up in the network namespace of
    /// `socket` (any socket there will do; the queue's own socket is the one
    /// sure to be in the right namespace). A queue's packets come with it; use
    /// this on a view parsed from a copy of the bytes.
    pub fn with_interface_names(mut self, socket: BorrowedFd<'a>) -> Self {
        self.meta.names = Some(socket.as_raw_fd());
        self
    }

    fn get(&self, kind: u32) -> Option<&'a [u8]> {
        self.meta.index.get(self.attrs, kind)
    }

    fn get_be32(&self, kind: u32) -> Option<u32> {
        self.get(kind).and_then(be32)
    }

    /// The queue number the packet came from.
    pub fn queue(&self) -> u16 {
        self.meta.binding.queue()
    }

    /// The packet's queue, id and binding: what a verdict by id names (see
    /// [`VerdictHandle::verdict`](crate::VerdictHandle::verdict)).
    pub fn key(&self) -> PacketKey {
        self.meta.binding.packet(self.meta.id)
    }

    /// The packet id: verdicts name the packet by it.
    pub fn id(&self) -> u32 {
        self.meta.id
    }

    /// The link-layer protocol (EtherType), e.g. 0x0800 for IPv4, 0x86dd for IPv6.
    pub fn hw_protocol(&self) -> u16 {
        self.meta.hw_protocol
    }

    /// The hook the packet was queued from.
    pub fn hook(&self) -> Hook {
        self.meta.hook
    }

    /// The packet's mark (`skb->mark`); 0 when it has none.
    pub fn mark(&self) -> u32 {
        self.get_be32(nfqa::NFQA_MARK).unwrap_or(0)
    }

    /// When the packet was received, if the kernel stamped it (arriving packets
    /// are stamped while some socket on the host asks for receive timestamps;
    /// locally sent ones usually are not).
    pub fn timestamp(&self) -> Option<SystemTime> {
        // struct nfqnl_msg_packet_timestamp { __aligned_be64 sec; __aligned_be64 usec; }
        let raw = self.get(nfqa::NFQA_TIMESTAMP)?;
        let secs = be64(raw)?;
        let micros = be64(raw.get(8..)?)?;
        let since_epoch = Duration::from_secs(secs).checked_add(Duration::from_micros(micros))?;
        SystemTime::UNIX_EPOCH.checked_add(since_epoch)
    }

    /// Index of the interface the packet arrived on.
    pub fn indev(&self) -> Option<u32> {
        self.get_be32(nfqa::NFQA_IFINDEX_INDEV)
    }

    /// Index of the interface the packet leaves on.
    pub fn outdev(&self) -> Option<u32> {
        self.get_be32(nfqa::NFQA_IFINDEX_OUTDEV)
    }

    /// Index of the physical interface the packet arrived on (bridge ports).
    pub fn physindev(&self) -> Option<u32> {
        self.get_be32(nfqa::NFQA_IFINDEX_PHYSINDEV)
    }

    /// Index of the physical interface the packet leaves on (bridge ports).
    pub fn physoutdev(&self) -> Option<u32> {
        self.get_be32(nfqa::NFQA_IFINDEX_PHYSOUTDEV)
    }

    /// The name of the interface the packet arrived on, looked up in the
    /// network namespace of the queue's socket (one system call). `None`
    /// without an input interface, for a view parsed from bytes (no socket),
    /// or when no interface has that index any more.
    pub fn indev_name(&self) -> Option<InterfaceName> {
        self.interface_name(self.indev()?)
    }

    /// The name of the interface the packet leaves on (see
    /// [`indev_name`](Self::indev_name)).
    pub fn outdev_name(&self) -> Option<InterfaceName> {
        self.interface_name(self.outdev()?)
    }

    /// The name of the physical interface the packet arrived on (bridge ports).
    pub fn physindev_name(&self) -> Option<InterfaceName> {
        self.interface_name(self.physindev()?)
    }

    /// The name of the physical interface the packet leaves on (bridge ports).
    pub fn physoutdev_name(&self) -> Option<InterfaceName> {
        self.interface_name(self.physoutdev()?)
    }

    /// The name of interface `index` in the network namespace of the queue's
    /// socket; `None` for a view without a socket.
    pub fn interface_name(&self, index: u32) -> Option<InterfaceName> {
        ifname::lookup(self.meta.names?, index).ok()
    }

    /// The link-layer source address of an arriving packet, exactly as long as
    /// the kernel says (6 bytes for Ethernet).
    pub fn hw_addr(&self) -> Option<&'a [u8]> {
        // struct nfqnl_msg_packet_hw { __be16 hw_addrlen; __u16 _pad; __u8 hw_addr[8]; }
        let raw = self.get(nfqa::NFQA_HWADDR)?;
        let len = usize::from(be16(raw)?).min(8);
        raw.get(4..4 + len)
    }

    /// The payload from the IP header on: whole, or the first bytes of it when the
    /// copy range is smaller than the packet (see [`original_len`](Self::original_len)).
    /// Empty in [`CopyMode::Meta`](crate::CopyMode::Meta).
    pub fn payload(&self) -> &'a [u8] {
        self.get(nfqa::NFQA_PAYLOAD).unwrap_or_default()
    }

    /// The packet's full length: larger than `payload().len()` when the copy was
    /// cut short by the copy range. In [`CopyMode::Meta`](crate::CopyMode::Meta)
    /// the kernel sends no length at all, and this is 0.
    pub fn original_len(&self) -> usize {
        match self.get_be32(nfqa::NFQA_CAP_LEN) {
            Some(len) => len as usize,
            None => self.payload().len(),
        }
    }

    /// True when the payload is shorter than the packet.
    pub fn is_truncated(&self) -> bool {
        self.original_len() > self.payload().len()
    }

    /// The uid of the local socket that sent the packet, as the initial user
    /// namespace sees it (needs [`QueueFlags::UID_GID`](crate::QueueFlags::UID_GID)).
    pub fn uid(&self) -> Option<u32> {
        self.get_be32(nfqa::NFQA_UID)
    }

    /// The gid of the local socket that sent the packet (needs
    /// [`QueueFlags::UID_GID`](crate::QueueFlags::UID_GID)).
    pub fn gid(&self) -> Option<u32> {
        self.get_be32(nfqa::NFQA_GID)
    }

    /// The security context (needs [`QueueFlags::SECCTX`](crate::QueueFlags::SECCTX)
    /// and a security module that labels packets), without its trailing NUL.
    pub fn secctx(&self) -> Option<&'a [u8]> {
        let raw = self.get(nfqa::NFQA_SECCTX)?;
        Some(raw.strip_suffix(&[0]).unwrap_or(raw))
    }

    /// What the kernel says of the socket buffer: GSO, checksum state.
    pub fn skb_info(&self) -> SkbInfo {
        SkbInfo::from_bits_retain(self.get_be32(nfqa::NFQA_SKB_INFO).unwrap_or(0))
    }

    /// The VLAN tag, if the packet has one.
    pub fn vlan(&self) -> Option<Vlan> {
        let nested = self.get(nfqa::NFQA_VLAN)?;
        let (mut proto, mut tci) = (None, None);
        for attr in Attributes::new(nested) {
            let Ok(Attribute { kind, value }) = attr else {
                break;
            };
            match u32::from(kind) {
                sys::nfqnl_vlan_attr::NFQA_VLAN_PROTO => proto = be16(value),
                sys::nfqnl_vlan_attr::NFQA_VLAN_TCI => tci = be16(value),
                _ => {}
            }
        }
        Some(Vlan {
            proto: proto?,
            tci: tci?,
        })
    }

    /// The link-layer header of an arriving packet (e.g. the 14-byte Ethernet
    /// header), as the kernel attaches it for bridged and some other packets.
    pub fn l2_header(&self) -> Option<&'a [u8]> {
        self.get(nfqa::NFQA_L2HDR)
    }

    /// The packet's priority (`skb->priority`), when the kernel sends it.
    pub fn priority(&self) -> Option<u32> {
        self.get_be32(nfqa::NFQA_PRIORITY)
    }

    /// The conntrack entry as nested `CTA_*` attributes, raw (needs
    /// [`QueueFlags::CONNTRACK`](crate::QueueFlags::CONNTRACK), a kernel
    /// with the conntrack glue, and a tracked connection);
    /// [`conntrack_view`](Self::conntrack_view) reads them.
    pub fn conntrack(&self) -> Option<&'a [u8]> {
        self.get(nfqa::NFQA_CT)
    }

    /// The conntrack entry, read: tuples, state, status, mark, id, zone and
    /// labels ([`Conntrack`]). `Ok(None)` when the packet came without one:
    /// the queue was bound without
    /// [`QueueFlags::CONNTRACK`](crate::QueueFlags::CONNTRACK), or the packet
    /// is not tracked (the raw table's `NOTRACK`, a protocol conntrack does
    /// not follow).
    ///
    /// # Errors
    /// [`MalformedError`] when the attribute's bytes are not a conntrack entry.
    pub fn conntrack_view(&self) -> Result<Option<Conntrack<'a>>, MalformedError> {
        self.conntrack()
            .map(|raw| Conntrack::parse(raw, self.conntrack_info()))
            .transpose()
    }

    /// The conntrack state as its number (`enum ip_conntrack_info`: 0
    /// established, 1 related, 2 new, 3 established reply, 4 related reply);
    /// [`conntrack_state`](Self::conntrack_state) names it.
    pub fn conntrack_info(&self) -> Option<u32> {
        self.get_be32(nfqa::NFQA_CT_INFO)
    }

    /// The conntrack state (`NFQA_CT_INFO`), as `-m conntrack --ctstate`
    /// sees it.
    pub fn conntrack_state(&self) -> Option<CtState> {
        self.conntrack_info().map(CtState::from)
    }

    /// The conntrack expectation as nested attributes, when the packet has one.
    pub fn conntrack_expectation(&self) -> Option<&'a [u8]> {
        self.get(nfqa::NFQA_EXP)
    }

    /// The value of any attribute by its `NFQA_*` number, including ones newer
    /// than this crate.
    pub fn attribute(&self, kind: u16) -> Option<&'a [u8]> {
        self.attributes()
            .filter_map(Result::ok)
            .filter(|a| a.kind == kind)
            .last()
            .map(|a| a.value)
    }

    /// Every attribute of the message, in order.
    pub fn attributes(&self) -> Attributes<'a> {
        Attributes::new(self.attrs)
    }

    /// The message's attribute bytes: copy them to keep the packet, and parse
    /// them again with [`parse`](Self::parse).
    pub fn attribute_bytes(&self) -> &'a [u8] {
        self.attrs
    }
}

impl fmt::Debug for PacketView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PacketView")
            .field("queue", &self.queue())
            .field("id", &self.id())
            .field("hw_protocol", &format_args!("{:#06x}", self.hw_protocol()))
            .field("hook", &self.hook())
            .field("mark", &self.mark())
            .field("indev", &self.indev())
            .field("outdev", &self.outdev())
            .field("payload_len", &self.payload().len())
            .field("original_len", &self.original_len())
            .finish_non_exhaustive()
    }
}
