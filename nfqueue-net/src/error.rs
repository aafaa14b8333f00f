//! Errors of the packet views and of the mangling helpers.

use super::ip::IpVersion;

/// Why bytes could not be read as an IP packet.
///
/// Only the fixed IP header can fail: trouble further in (a cut-off extension
/// header, a short transport header) still yields a view, whose
/// [`is_truncated`](super::IpView::is_truncated) and
/// [`transport`](super::IpView::transport) tell what is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The bytes end before the IP header does.
    #[error("truncated IP header: needs {needed} bytes, got {got}")]
    Truncated {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes that were there.
        got: usize,
    },
    /// The version field is neither 4 nor 6.
    #[error(
        "unknown IP version {0}: the bytes must start at an IPv4 or IPv6 header \
         (skip any link-layer header first; an NFQUEUE payload has none)"
    )]
    UnknownVersion(u8),
    /// The IPv4 header length field (IHL) is below its minimum of 5 (20 bytes).
    #[error("IPv4 header length field is {ihl}, below the minimum of 5 (20 bytes)")]
    BadHeaderLength {
        /// The IHL field, in 32-bit words.
        ihl: u8,
    },
}

/// Why a packet could not be rewritten.
///
/// A mangling helper that returns an error leaves the packet as it was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MangleError {
    /// The bytes are not an IP packet.
    #[error("not an IP packet: {0}")]
    Parse(#[from] ParseError),
    /// The copy holds less than the whole packet, so a rewritten copy given back
    /// with a verdict would cut the packet short.
    #[error(
        "the copy holds {got} of the packet's {total_len} bytes: set a copy range that covers \
         the whole packet (copy mode packet, range 65531, the default) before mangling"
    )]
    Truncated {
        /// Bytes in the copy.
        got: usize,
        /// Length the IP header declares.
        total_len: usize,
    },
    /// The packet is a fragment: its transport checksum covers the whole datagram,
    /// which no single fragment holds.
    #[error(
        "the packet is a fragment: its transport checksum covers data in other fragments \
         (let the kernel reassemble first, e.g. with conntrack loaded)"
    )]
    Fragment,
    /// A TCP payload of another length would shift the sequence numbers of the rest
    /// of the stream; the kernel only adjusts them for connections tracked by
    /// conntrack with a helper, so the stream would break.
    #[error(
        "a TCP payload of {new} bytes cannot replace one of {old} bytes: sequence numbers \
         would no longer match (only same-length TCP rewrites are safe)"
    )]
    TcpLengthChange {
        /// Length of the current TCP payload.
        old: usize,
        /// Length of the payload given.
        new: usize,
    },
    /// The rewritten packet would be longer than
    /// [`MAX_PACKET_LEN`](crate::mangle::MAX_PACKET_LEN), the most an NFQUEUE
    /// verdict can carry back to the kernel.
    #[error(
        "the rewritten packet would be {len} bytes, but a verdict carries at most {max} \
         (a netlink attribute's 16-bit length includes its 4-byte header): shorten the payload"
    )]
    TooLarge {
        /// Length the packet would have had.
        len: usize,
        /// The longest packet allowed ([`MAX_PACKET_LEN`](crate::mangle::MAX_PACKET_LEN)).
        max: usize,
    },
    /// An address of the other IP version was given.
    #[error("the packet is {packet:?}: give an address of that version")]
    AddressFamily {
        /// The version of the packet.
        packet: IpVersion,
    },
    /// Ports were asked of a protocol that has none here (only TCP and UDP).
    #[error("protocol {protocol} has no ports to rewrite (only TCP and UDP do)")]
    NoPorts {
        /// The packet's transport protocol number.
        protocol: u8,
    },
    /// The transport protocol's payload or checksum is not one these helpers know how
    /// to rewrite (they know TCP, UDP, ICMP and ICMPv6; address changes also refuse
    /// DCCP and UDP-Lite, whose checksums cover the addresses).
    #[error("cannot rewrite protocol {protocol}: its payload or checksum is not handled here")]
    UnsupportedProtocol {
        /// The packet's transport protocol number.
        protocol: u8,
    },
    /// The transport header is cut short or invalid (for example a TCP data offset
    /// below 5 or past the end of the packet).
    #[error("the header of protocol {protocol} is short or invalid")]
    BadTransportHeader {
        /// The packet's transport protocol number.
        protocol: u8,
    },
    /// The IPv6 extension headers are cut short or malformed.
    #[error("the IPv6 extension headers are malformed")]
    BadExtensionHeaders,
    /// An IPv6 routing header with segments left: the transport checksum covers the
    /// final destination, which is not the address in the IPv6 header.
    #[error(
        "the packet has an IPv6 routing header with segments left: its transport checksum \
         uses the final destination, which is not handled here"
    )]
    RoutingHeader,
}
