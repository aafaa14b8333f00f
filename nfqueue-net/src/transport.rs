//! Transport-layer views: TCP, UDP, ICMP and ICMPv6 over the bytes after the IP
//! headers.

use super::ip::IpVersion;

/// IANA protocol numbers used here.
pub(crate) mod proto {
    pub(crate) const ICMP: u8 = 1;
    pub(crate) const TCP: u8 = 6;
    pub(crate) const UDP: u8 = 17;
    pub(crate) const DCCP: u8 = 33;
    pub(crate) const ICMPV6: u8 = 58;
    pub(crate) const SCTP: u8 = 132;
    pub(crate) const UDPLITE: u8 = 136;
}

/// The transport header of a packet and what follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransportView<'a> {
    /// TCP.
    Tcp(TcpView<'a>),
    /// UDP.
    Udp(UdpView<'a>),
    /// ICMP over IPv4.
    Icmpv4(IcmpView<'a>),
    /// ICMPv6 over IPv6.
    Icmpv6(IcmpView<'a>),
    /// Any other protocol: its number and the bytes after the IP headers.
    Other {
        /// The protocol number.
        protocol: u8,
        /// The bytes after the IP headers.
        bytes: &'a [u8],
    },
}

impl<'a> TransportView<'a> {
    /// Reads the header of `protocol` at the start of `bytes`; `None` when it is cut
    /// short or invalid.
    pub(crate) fn parse(version: IpVersion, protocol: u8, bytes: &'a [u8]) -> Option<Self> {
        Some(match (protocol, version) {
            (proto::TCP, _) => TransportView::Tcp(TcpView::new(bytes)?),
            (proto::UDP, _) => TransportView::Udp(UdpView::new(bytes)?),
            (proto::ICMP, IpVersion::V4) => TransportView::Icmpv4(IcmpView::new(bytes, false)?),
            (proto::ICMPV6, IpVersion::V6) => TransportView::Icmpv6(IcmpView::new(bytes, true)?),
            (protocol, _) => TransportView::Other { protocol, bytes },
        })
    }

    /// The protocol number.
    pub fn protocol(&self) -> u8 {
        match self {
            TransportView::Tcp(_) => proto::TCP,
            TransportView::Udp(_) => proto::UDP,
            TransportView::Icmpv4(_) => proto::ICMP,
            TransportView::Icmpv6(_) => proto::ICMPV6,
            TransportView::Other { protocol, .. } => *protocol,
        }
    }

    /// The source port of TCP or UDP.
    pub fn src_port(&self) -> Option<u16> {
        match self {
            TransportView::Tcp(t) => Some(t.src_port()),
            TransportView::Udp(u) => Some(u.src_port()),
            _ => None,
        }
    }

    /// The destination port of TCP or UDP.
    pub fn dst_port(&self) -> Option<u16> {
        match self {
            TransportView::Tcp(t) => Some(t.dst_port()),
            TransportView::Udp(u) => Some(u.dst_port()),
            _ => None,
        }
    }

    /// Length of the transport header (0 for [`Other`](Self::Other)).
    pub fn header_len(&self) -> usize {
        match self {
            TransportView::Tcp(t) => t.header_len(),
            TransportView::Udp(_) => UdpView::HEADER_LEN,
            TransportView::Icmpv4(_) | TransportView::Icmpv6(_) => IcmpView::HEADER_LEN,
            TransportView::Other { .. } => 0,
        }
    }

    /// The bytes after the transport header (all of them for
    /// [`Other`](Self::Other)); in a truncated copy, what the copy holds.
    pub fn payload(&self) -> &'a [u8] {
        match self {
            TransportView::Tcp(t) => t.payload(),
            TransportView::Udp(u) => u.payload(),
            TransportView::Icmpv4(i) | TransportView::Icmpv6(i) => i.payload(),
            TransportView::Other { bytes, .. } => bytes,
        }
    }
}

bitflags::bitflags! {
    /// The TCP flags byte (byte 13 of the header).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct TcpFlags: u8 {
        /// No more data from the sender.
        const FIN = 0x01;
        /// Synchronize sequence numbers.
        const SYN = 0x02;
        /// Reset the connection.
        const RST = 0x04;
        /// Push.
        const PSH = 0x08;
        /// The acknowledgment field is significant.
        const ACK = 0x10;
        /// The urgent pointer is significant.
        const URG = 0x20;
        /// ECN echo.
        const ECE = 0x40;
        /// Congestion window reduced.
        const CWR = 0x80;
    }
}

/// The big-endian 16-bit word at `at`, 0 if out of range.
fn be16(bytes: &[u8], at: usize) -> u16 {
    match bytes.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

/// The big-endian 32-bit word at `at`, 0 if out of range.
fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from(be16(bytes, at)) << 16 | u32::from(be16(bytes, at + 2))
}

/// A TCP header (with its options) and the payload after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpView<'a> {
    bytes: &'a [u8],
    header_len: usize,
}

impl<'a> TcpView<'a> {
    /// A view when `bytes` hold the whole header: a data offset of at least 5 words,
    /// all of them present.
    fn new(bytes: &'a [u8]) -> Option<Self> {
        let header_len = usize::from(bytes.get(12)? >> 4) * 4;
        (header_len >= 20 && bytes.len() >= header_len).then_some(TcpView { bytes, header_len })
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        be16(self.bytes, 0)
    }
    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.bytes, 2)
    }
    /// The sequence number.
    pub fn seq(&self) -> u32 {
        be32(self.bytes, 4)
    }
    /// The acknowledgment number.
    pub fn ack(&self) -> u32 {
        be32(self.bytes, 8)
    }
    /// The flags.
    pub fn flags(&self) -> TcpFlags {
        TcpFlags::from_bits_retain(self.bytes.get(13).copied().unwrap_or(0))
    }
    /// The receive window.
    pub fn window(&self) -> u16 {
        be16(self.bytes, 14)
    }
    /// The checksum field as found.
    pub fn checksum(&self) -> u16 {
        be16(self.bytes, 16)
    }
    /// The urgent pointer.
    pub fn urgent_ptr(&self) -> u16 {
        be16(self.bytes, 18)
    }
    /// Header length in bytes (the data offset times 4).
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// The options bytes (between the 20-byte fixed header and the payload).
    pub fn options(&self) -> &'a [u8] {
        self.bytes.get(20..self.header_len).unwrap_or(&[])
    }
    /// The payload after the header; in a truncated copy, what the copy holds.
    pub fn payload(&self) -> &'a [u8] {
        self.bytes.get(self.header_len..).unwrap_or(&[])
    }
    /// The header and payload.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// A UDP header and the payload after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpView<'a> {
    bytes: &'a [u8],
}

impl<'a> UdpView<'a> {
    /// Length of the UDP header.
    pub const HEADER_LEN: usize = 8;

    /// A view when the 8-byte header is there; the datagram ends at the UDP length,
    /// or at the end of `bytes` when that length is unusable (below 8, or past the
    /// end of a truncated copy).
    fn new(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len() < Self::HEADER_LEN {
            return None;
        }
        let len = usize::from(be16(bytes, 4));
        let bytes = match bytes.get(..len) {
            Some(b) if len >= Self::HEADER_LEN => b,
            _ => bytes,
        };
        Some(UdpView { bytes })
    }

    /// The source port.
    pub fn src_port(&self) -> u16 {
        be16(self.bytes, 0)
    }
    /// The destination port.
    pub fn dst_port(&self) -> u16 {
        be16(self.bytes, 2)
    }
    /// The length field (header plus payload) as found.
    pub fn length(&self) -> u16 {
        be16(self.bytes, 4)
    }
    /// The checksum field as found (0 over IPv4: no checksum).
    pub fn checksum(&self) -> u16 {
        be16(self.bytes, 6)
    }
    /// The payload: up to the UDP length, or to the end of the copy when that is
    /// shorter (or the length field is unusable).
    pub fn payload(&self) -> &'a [u8] {
        self.bytes.get(Self::HEADER_LEN..).unwrap_or(&[])
    }
    /// The header and payload.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}

/// An ICMP or ICMPv6 header (type, code, checksum and the four type-specific
/// bytes) and the message body after it.
///
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IcmpView<'a> {
    bytes: &'a [u8],
    v6: bool,
}

impl<'a> IcmpView<'a> {
    /// Length of the ICMP header.
    pub const HEADER_LEN: usize = 8;

    fn new(bytes: &'a [u8], v6: bool) -> Option<Self> {
        (bytes.len() >= Self::HEADER_LEN).then_some(IcmpView { bytes, v6 })
    }

    fn byte(&self, at: usize) -> u8 {
        self.bytes.get(at).copied().unwrap_or(0)
    }

    fn word(&self, at: usize) -> u16 {
        be16(self.bytes, at)
    }

    /// The type.
    pub fn icmp_type(&self) -> u8 {
        self.byte(0)
    }
    /// The code.
    pub fn code(&self) -> u8 {
        self.byte(1)
    }
    /// The checksum field as found.
    pub fn checksum(&self) -> u16 {
        self.word(2)
    }
    /// Bytes 4 to 7, whose meaning depends on the type (identifier and sequence of
    /// an echo, the MTU of "fragmentation needed" or "packet too big", ...).
    pub fn rest_of_header(&self) -> [u8; 4] {
        [self.byte(4), self.byte(5), self.byte(6), self.byte(7)]
    }
    /// Whether this is ICMPv6 rather than ICMP.
    pub fn is_v6(&self) -> bool {
        self.v6
    }
    /// Whether the message is an echo request or reply (types 8 and 0 in ICMP, 128
    /// and 129 in ICMPv6).
    pub fn is_echo(&self) -> bool {
        matches!(
            (self.v6, self.icmp_type()),
            (false, 0 | 8) | (true, 128 | 129)
        )
    }
    /// The identifier field of an echo message (bytes 4-5).
    pub fn echo_id(&self) -> u16 {
        self.word(4)
    }
    /// The sequence field of an echo message (bytes 6-7).
    pub fn echo_seq(&self) -> u16 {
        self.word(6)
    }
    /// The message body after the eight header bytes.
    pub fn payload(&self) -> &'a [u8] {
        self.bytes.get(Self::HEADER_LEN..).unwrap_or(&[])
    }
    /// The header and body.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }
}
