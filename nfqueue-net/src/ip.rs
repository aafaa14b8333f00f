//! The IP layer view: [`IpView`], built by [`parse`].

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::error::ParseError;
use super::flow::FlowTuple;
use super::transport::TransportView;

/// The IP version of a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IpVersion {
    /// IPv4 (RFC 791).
    V4,
    /// IPv6 (RFC 8200).
    V6,
}

/// Where a fragment sits in its datagram: from the IPv4 header or the IPv6
/// fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fragment {
    /// Offset of this fragment's data in the datagram, in bytes (the header field
    /// times 8).
    pub offset: u16,
    /// The more-fragments flag: other fragments follow this one.
    pub more: bool,
    /// The identification shared by the fragments of one datagram (16 bits in IPv4,
    /// 32 in IPv6).
    pub id: u32,
}

impl Fragment {
    /// Whether this is the first fragment, the one that holds the transport header.
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// A zero-copy view of an IP packet (IPv4 or IPv6) and its transport header.
///
/// Made by [`parse`], which checks the fixed IP header once; every accessor is then
/// cheap and none can panic. The view copes with truncated copies (a copy range
/// smaller than the packet): the IP header must be there, anything after it may be
/// cut off, which [`is_truncated`](Self::is_truncated) reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpView<'a> {
    bytes: &'a [u8],
    version: IpVersion,
    /// Offset of the transport header: IP header, options and extension headers.
    header_len: usize,
    /// Length the IP header declares (the slice length if that field is unusable).
    total_len: usize,
    /// End of the IP packet within `bytes`: `min(total_len, bytes.len())`.
    end: usize,
    protocol: u8,
    fragment: Option<Fragment>,
    /// The IPv6 extension headers stopped at an error (cut off or malformed).
    ext_error: bool,
    /// An extension header was cut off by the end of the copy.
    ext_truncated: bool,
    /// An IPv6 routing header with segments left is present.
    routing_pending: bool,
}

/// Reads an IP packet (the payload of an NFQUEUE packet, which starts at the IP
/// header) into a zero-copy [`IpView`].
///
/// # Errors
///
/// [`ParseError`] when the bytes are empty, hold neither IPv4 nor IPv6, or end
/// inside the fixed IP header (IPv4 header with options, or the 40-byte IPv6 header).
/// Anything cut off later still gives `Ok`.
pub fn parse(bytes: &[u8]) -> Result<IpView<'_>, ParseError> {
    let Some(&first) = bytes.first() else {
        return Err(ParseError::Truncated { needed: 1, got: 0 });
    };
    match first >> 4 {
        4 => parse_v4(bytes, first),
        6 => parse_v6(bytes),
        v => Err(ParseError::UnknownVersion(v)),
    }
}

const AUTH: u8 = 51;
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const FRAGMENT: u8 = 44;
const DEST_OPTIONS: u8 = 60;

fn parse_v4(bytes: &[u8], first: u8) -> Result<IpView<'_>, ParseError> {
    let ihl = first & 0x0f;
    if ihl < 5 {
        return Err(ParseError::BadHeaderLength { ihl });
    }
    let ip_header_len = usize::from(ihl) * 4;
    if bytes.len() < ip_header_len {
        return Err(ParseError::Truncated {
            needed: ip_header_len,
            got: bytes.len(),
        });
    }
    let declared = usize::from(be16(bytes, 2));
    // A total length shorter than the header is unusable: go by the copy.
    let total_len = if declared < ip_header_len {
        bytes.len()
    } else {
        declared
    };
    let flags_offset = be16(bytes, 6);
    let frag_offset = (flags_offset & 0x1fff) * 8;
    let more = flags_offset & 0x2000 != 0;
    let mut view = IpView {
        bytes,
        version: IpVersion::V4,
        header_len: ip_header_len,
        total_len,
        end: total_len.min(bytes.len()),
        protocol: byte(bytes, 9),
        fragment: (more || frag_offset != 0).then_some(Fragment {
            offset: frag_offset,
            more,
            id: u32::from(be16(bytes, 4)),
        }),
        ext_error: false,
        ext_truncated: false,
        routing_pending: false,
    };
    // An authentication header sits between IPv4 and the transport header; in a
    // later fragment the bytes after the IP header are data whatever the protocol.
    if view.protocol == AUTH && frag_offset == 0 {
        view.walk_extension(AUTH);
    }
    Ok(view)
}

fn parse_v6(bytes: &[u8]) -> Result<IpView<'_>, ParseError> {
    const FIXED: usize = 40;
    if bytes.len() < FIXED {
        return Err(ParseError::Truncated {
            needed: FIXED,
            got: bytes.len(),
        });
    }
    let declared = usize::from(be16(bytes, 4));
    // A zero payload length (jumbogram) leaves the copy's length to go by.
    let total_len = if declared == 0 && bytes.len() > FIXED {
        bytes.len()
    } else {
        FIXED + declared
    };
    let mut view = IpView {
        bytes,
        version: IpVersion::V6,
        header_len: FIXED,
        total_len,
        end: total_len.min(bytes.len()),
        protocol: byte(bytes, 6),
        fragment: None,
        ext_error: false,
        ext_truncated: false,
        routing_pending: false,
    };
    // Each step moves past at least 8 bytes, so the walk ends.
    while matches!(
        view.protocol,
        HOP_BY_HOP | ROUTING | FRAGMENT | DEST_OPTIONS | AUTH
    ) {
        if view.protocol == HOP_BY_HOP && view.header_len != FIXED {
            // Hop-by-hop options may only come first (RFC 8200 section 4.1).
            view.ext_error = true;
            break;
        }
        if !view.walk_extension(view.protocol) {
            break;
        }
    }
    Ok(view)
}

impl IpView<'_> {
    /// Steps over the extension header `kind` at `header_len`; false when it stops
    /// the walk (cut off, malformed, or a later fragment's data follows).
    fn walk_extension(&mut self, kind: u8) -> bool {
        let at = self.header_len;
        let Some(h) = self.bytes.get(at..self.end).filter(|h| h.len() >= 8) else {
            self.stop_walk(at + 8);
            return false;
        };
        let len = match kind {
            FRAGMENT => 8,
            // The AH length counts 32-bit words minus 2; it is at least 12 bytes.
            AUTH if h[1] == 0 => {
                self.ext_error = true;
                return false;
            }
            AUTH => (usize::from(h[1]) + 2) * 4,
            _ => (usize::from(h[1]) + 1) * 8,
        };
        if h.len() < len {
            self.stop_walk(at + len);
            return false;
        }
        self.header_len = at + len;
        self.protocol = h[0];
        match kind {
            ROUTING => self.routing_pending |= h[3] != 0,
            FRAGMENT => {
                let word = u16::from_be_bytes([h[2], h[3]]);
                let frag = Fragment {
                    offset: word & 0xfff8,
                    more: word & 1 != 0,
                    id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                };
                self.fragment = Some(frag);
                // After the fragment header of a later fragment comes data, even
                // when its next-header field names another extension header.
                return frag.is_first();
            }
            _ => {}
        }
        true
    }

    /// Records an extension header that does not fit before the end (`needed` is
    /// where it would end): cut off by the copy, or longer than the packet.
    fn stop_walk(&mut self, needed: usize) {
        self.ext_error = true;
        self.ext_truncated = self.end < self.total_len && needed > self.end;
    }
}

impl<'a> IpView<'a> {
    /// IPv4 or IPv6.
    pub fn version(&self) -> IpVersion {
        self.version
    }

    /// The source address.
    pub fn src(&self) -> IpAddr {
        match self.version {
            IpVersion::V4 => IpAddr::V4(Ipv4Addr::from(array::<4>(self.bytes, 12))),
            IpVersion::V6 => IpAddr::V6(Ipv6Addr::from(array::<16>(self.bytes, 8))),
        }
    }

    /// The destination address (for IPv6 with a routing header, the next hop named
    /// in the IPv6 header, not the final destination).
    pub fn dst(&self) -> IpAddr {
        match self.version {
            IpVersion::V4 => IpAddr::V4(Ipv4Addr::from(array::<4>(self.bytes, 16))),
            IpVersion::V6 => IpAddr::V6(Ipv6Addr::from(array::<16>(self.bytes, 24))),
        }
    }

    /// The transport protocol number: the IPv4 protocol field, or the last IPv6
    /// next-header value after the extension headers (for a later fragment, the one
    /// in its fragment header). When IPv6 extension headers stop early (cut off or
    /// malformed) it is the number of the header that could not be read.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// The hop limit: the IPv6 Hop Limit field, or the IPv4 Time to Live, which
    /// routers decrement by one per hop too (RFC 1812, section 5.3.1).
    pub fn hop_limit(&self) -> u8 {
        let at = match self.version {
            IpVersion::V4 => 8,
            IpVersion::V6 => 7,
        };
        self.bytes.get(at).copied().unwrap_or(0)
    }

    /// Length of the whole packet as its IP header declares it (IPv4 total length,
    /// or 40 plus the IPv6 payload length). When that field is unusable (an IPv4
    /// total length shorter than its header, an IPv6 jumbogram) the length of the
    /// bytes given stands in.
    pub fn total_len(&self) -> usize {
        self.total_len
    }

    /// Length of the IP header with its options and extension headers (and an
    /// authentication header): the offset of the transport header.
    pub fn header_len(&self) -> usize {
        self.header_len
    }

    /// Fragment information when the packet is a fragment (IPv4 with the
    /// more-fragments flag or a non-zero offset; IPv6 with a fragment header).
    pub fn fragment(&self) -> Option<Fragment> {
        self.fragment
    }

    /// Whether the transport header is in this packet: not a fragment, or the
    /// first one.
    pub fn is_first_fragment(&self) -> bool {
        self.fragment.map_or(true, |f| f.is_first())
    }

    /// Whether the bytes hold less than the packet: shorter than
    /// [`total_len`](Self::total_len), or ending inside an extension header.
    pub fn is_truncated(&self) -> bool {
        self.bytes.len() < self.total_len || self.ext_truncated
    }

    /// Whether the extension headers were read to the end without error. When not,
    /// [`transport`](Self::transport) is `None`.
    pub fn headers_complete(&self) -> bool {
        !self.ext_error
    }

    /// All the bytes given to [`parse`], including any beyond the declared length.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The bytes after the IP headers up to the declared end of the packet (or the
    /// end of the copy): the transport header and its payload, or fragment data.
    pub fn ip_payload(&self) -> &'a [u8] {
        self.bytes.get(self.header_len..self.end).unwrap_or(&[])
    }

    /// The transport header, when this is the first fragment (or not a fragment), the
    /// extension headers are complete and the header is whole; protocols without a
    /// view here come as [`TransportView::Other`].
    pub fn transport(&self) -> Option<TransportView<'a>> {
        if !self.is_first_fragment() || self.ext_error {
            return None;
        }
        TransportView::parse(self.version, self.protocol, self.ip_payload())
    }

    /// The payload after the transport header (see [`transport`](Self::transport)).
    pub fn payload(&self) -> Option<&'a [u8]> {
        self.transport().map(|t| t.payload())
    }

    /// The flow tuple of this packet (see [`FlowTuple::from_view`]).
    pub fn flow(&self) -> FlowTuple {
        FlowTuple::from_view(self)
    }

    /// An IPv6 routing header with segments left is present (the transport
    /// checksum then covers another destination).
    pub(crate) fn routing_pending(&self) -> bool {
        self.routing_pending
    }

    /// End of the packet within the bytes.
    pub(crate) fn end(&self) -> usize {
        self.end
    }
}

/// The byte at `at`, 0 if out of range (never, once the header is checked).
fn byte(bytes: &[u8], at: usize) -> u8 {
    bytes.get(at).copied().unwrap_or(0)
}

/// The big-endian 16-bit word at `at`, 0 if out of range.
fn be16(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(array::<2>(bytes, at))
}

/// `N` bytes at `at`, zeros if out of range (never, once the header is checked).
fn array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes
        .get(at..at + N)
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .unwrap_or([0; N])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::{mangle, TcpFlags};

    #[test]
    fn ipv4_udp() {
        let p = udp4(b"query");
        let v = parse(&p).unwrap();
        assert_eq!(v.version(), IpVersion::V4);
        assert_eq!(v.src(), IpAddr::from(SRC4));
        assert_eq!(v.dst(), IpAddr::from(DST4));
        assert_eq!(v.protocol(), 17);
        assert_eq!(v.hop_limit(), 64);
        assert_eq!(v.total_len(), 20 + 8 + 5);
        assert_eq!(v.header_len(), 20);
        assert_eq!(v.fragment(), None);
        assert!(!v.is_truncated());
        assert!(v.headers_complete());
        assert_eq!(v.ip_payload().len(), 13);
        let Some(TransportView::Udp(u)) = v.transport() else {
            panic!("{:?}", v.transport())
        };
        assert_eq!((u.src_port(), u.dst_port(), u.length()), (5000, 53, 13));
        assert_eq!(u.payload(), b"query");
        assert_eq!(v.payload(), Some(&b"query"[..]));
    }

    #[test]
    fn ipv4_options() {
        let p = udp4_options(b"x");
        let v = parse(&p).unwrap();
        assert_eq!(v.header_len(), 28);
        assert_eq!(v.total_len(), 28 + 8 + 1);
        assert_eq!(v.transport().unwrap().dst_port(), Some(53));
        assert_eq!(v.payload(), Some(&b"x"[..]));
    }

    #[test]
    fn ipv4_tcp() {
        let p = tcp4(b"GET /");
        let v = parse(&p).unwrap();
        let Some(TransportView::Tcp(t)) = v.transport() else {
            panic!()
        };
        assert_eq!((t.src_port(), t.dst_port()), (40000, 80));
        assert_eq!((t.seq(), t.ack()), (1000, 77));
        assert_eq!(t.flags(), TcpFlags::SYN | TcpFlags::ACK);
        assert_eq!(t.window(), 65535);
        assert_eq!(t.header_len(), 20);
        assert!(t.options().is_empty());
        assert_eq!(t.payload(), b"GET /");
        assert_eq!(t.bytes().len(), 25);
    }

    #[test]
    fn ipv4_icmp_echo() {
        let p = icmp4_echo(b"ping");
        let v = parse(&p).unwrap();
        let Some(TransportView::Icmpv4(i)) = v.transport() else {
            panic!()
        };
        assert_eq!((i.icmp_type(), i.code()), (8, 0));
        assert!(i.is_echo() && !i.is_v6());
        assert_eq!((i.echo_id(), i.echo_seq()), (0x1234, 7));
        assert_eq!(i.rest_of_header(), [0x12, 0x34, 0, 7]);
        assert_eq!(i.payload(), b"ping");
    }

    #[test]
    fn ipv4_first_and_later_fragments() {
        let mut first = udp4(&[7; 64]);
        fragment4(&mut first, 0, true);
        let v = parse(&first).unwrap();
        let id = u32::from(u16::from_be_bytes([first[4], first[5]]));
        assert_eq!(
            v.fragment(),
            Some(Fragment {
                offset: 0,
                more: true,
                id
            })
        );
        assert!(v.is_first_fragment());
        assert_eq!(v.transport().unwrap().src_port(), Some(5000));

        let mut later = udp4(&[7; 64]);
        fragment4(&mut later, 185, false);
        let v = parse(&later).unwrap();
        assert_eq!(v.fragment().unwrap().offset, 1480);
        assert!(!v.fragment().unwrap().more);
        assert!(!v.is_first_fragment());
        assert_eq!(v.protocol(), 17);
        assert!(v.transport().is_none());
        assert_eq!(v.payload(), None);
        assert_eq!(v.ip_payload().len(), 8 + 64);
        assert_eq!(v.flow().src_port, 0);
    }

    #[test]
    fn ipv4_later_fragment_with_auth_protocol_is_data() {
        let mut p = udp4(&[0; 32]);
        p[9] = 51; // authentication header
        fragment4(&mut p, 3, false);
        let v = parse(&p).unwrap();
        assert_eq!(v.header_len(), 20);
        assert_eq!(v.protocol(), 51);
        assert!(v.headers_complete());
    }

    #[test]
    fn ipv6_udp_and_icmpv6() {
        let p = udp6(b"abc");
        let v = parse(&p).unwrap();
        assert_eq!(v.version(), IpVersion::V6);
        assert_eq!(v.src(), IpAddr::from(SRC6));
        assert_eq!(v.dst(), IpAddr::from(DST6));
        assert_eq!((v.header_len(), v.total_len(), v.hop_limit()), (40, 51, 64));
        assert_eq!(v.payload(), Some(&b"abc"[..]));

        let p = icmp6_echo(b"ping");
        let v = parse(&p).unwrap();
        let Some(TransportView::Icmpv6(i)) = v.transport() else {
            panic!()
        };
        assert!(i.is_echo() && i.is_v6());
        assert_eq!((i.icmp_type(), i.echo_id(), i.echo_seq()), (128, 0x4321, 9));
    }

    #[test]
    fn ipv6_extension_headers() {
        let p = tcp6_exts(b"hello");
        let v = parse(&p).unwrap();
        let (_, ext_len) = exts6(None);
        assert_eq!(v.header_len(), 40 + ext_len);
        assert_eq!(v.protocol(), 6);
        assert_eq!(v.fragment(), None);
        assert!(v.headers_complete());
        let Some(TransportView::Tcp(t)) = v.transport() else {
            panic!("{:?}", v.transport())
        };
        assert_eq!(t.dst_port(), 443);
        assert_eq!(t.flags(), TcpFlags::PSH);
        assert_eq!(t.payload(), b"hello");
        assert!(mangle::verify_checksums(&p).unwrap().is_ok());
    }

    #[test]
    fn ipv6_fragments() {
        let p = udp6_exts(&[1; 40], Some((0, true)));
        let v = parse(&p).unwrap();
        let (_, ext_len) = exts6(Some((0, true)));
        assert_eq!(
            v.fragment(),
            Some(Fragment {
                offset: 0,
                more: true,
                id: 0xdead_beef
            })
        );
        assert_eq!(v.header_len(), 40 + ext_len);
        assert_eq!(v.transport().unwrap().dst_port(), Some(53));

        // A later fragment: after the fragment header comes data, though its
        // next-header field names the authentication header built after it.
        let p = udp6_exts(&[1; 40], Some((10, false)));
        let v = parse(&p).unwrap();
        assert_eq!(v.fragment().unwrap().offset, 80);
        assert_eq!(v.header_len(), 40 + 8 + 8 + 8 + 8);
        assert_eq!(v.protocol(), 51);
        assert!(v.transport().is_none());
        assert_eq!(v.flow().dst_port, 0);
    }

    #[test]
    fn errors() {
        assert_eq!(parse(&[]), Err(ParseError::Truncated { needed: 1, got: 0 }));
        assert_eq!(parse(&[0x50; 40]), Err(ParseError::UnknownVersion(5)));
        assert_eq!(
            parse(&[0x44; 40]),
            Err(ParseError::BadHeaderLength { ihl: 4 })
        );
        assert_eq!(
            parse(&[0x46; 20]),
            Err(ParseError::Truncated {
                needed: 24,
                got: 20
            })
        );
        assert_eq!(
            parse(&[0x60; 39]),
            Err(ParseError::Truncated {
                needed: 40,
                got: 39
            })
        );
    }

    #[test]
    fn total_len_fallbacks() {
        // An IPv4 total length below the header: the copy's length stands in.
        let mut p = udp4(b"abc");
        p[2..4].copy_from_slice(&10u16.to_be_bytes());
        let v = parse(&p).unwrap();
        assert_eq!(v.total_len(), p.len());
        assert!(!v.is_truncated());
        // Trailing bytes past the declared length are not payload.
        let mut p = udp4(b"abc");
        p.extend_from_slice(&[9; 5]);
        let v = parse(&p).unwrap();
        assert_eq!(v.total_len(), p.len() - 5);
        assert_eq!(v.payload(), Some(&b"abc"[..]));
    }

    #[test]
    fn extension_header_cut_by_the_copy() {
        // Hop-by-hop naming a fragment header that the copy does not hold (the
        // input that made etherparse 0.21 read past the end).
        let mut p = vec![0x60, 0, 0, 0, 0, 16, 0, 64];
        p.extend_from_slice(&[0; 32]);
        p.extend_from_slice(&[44, 0, 0, 0, 0, 0, 0, 0]);
        let v = parse(&p).unwrap();
        assert!(v.is_truncated());
        assert!(!v.headers_complete());
        assert_eq!((v.protocol(), v.header_len()), (44, 48));
        assert!(v.transport().is_none());
        // Hop-by-hop anywhere but first is malformed.
        let mut p = udp6(b"x");
        p[6] = 60;
        p.splice(40..40, [0u8, 0, 0, 0, 0, 0, 0, 0]);
        p[5] += 8;
        let v = parse(&p).unwrap();
        assert!(!v.headers_complete() && !v.is_truncated());
        assert_eq!(v.protocol(), 0);
    }

    fn samples() -> Vec<Vec<u8>> {
        let mut later4 = udp4(&[3; 30]);
        fragment4(&mut later4, 2, true);
        vec![
            udp4(b"payload"),
            udp4_options(b"payload"),
            tcp4(b"payload"),
            icmp4_echo(b"payload"),
            later4,
            udp6(b"payload"),
            icmp6_echo(b"payload"),
            tcp6_exts(b"payload"),
            udp6_exts(b"payload", Some((0, true))),
            udp6_exts(b"payload", Some((4, false))),
        ]
    }

    /// Everything a user may call on a view, and the mangling helpers on a copy.
    fn exercise(bytes: &[u8]) {
        if let Ok(v) = parse(bytes) {
            let _ = (v.src(), v.dst(), v.hop_limit(), v.protocol(), v.fragment());
            let _ = (v.is_truncated(), v.ip_payload(), v.payload(), v.flow());
            assert!(v.header_len() <= bytes.len() || !v.headers_complete() || v.is_truncated());
            if let Some(t) = v.transport() {
                let _ = (t.src_port(), t.dst_port(), t.payload(), t.header_len());
            }
            let _ = v.flow().flow_hash();
        }
        let _ = mangle::verify_checksums(bytes);
        let mut copy = bytes.to_vec();
        let _ = mangle::fix_checksums(&mut copy);
        let _ = mangle::set_hop_limit(&mut copy, 1);
        let _ = mangle::set_src_port(&mut copy, 1);
        let _ = mangle::set_dst_addr(&mut copy, IpAddr::from(DST6));
        let _ = mangle::set_src_addr(&mut copy, IpAddr::from(SRC4));
        let _ = mangle::set_l4_payload(&mut copy, b"new payload");
    }

    #[test]
    fn every_prefix_parses_or_errs() {
        for p in samples() {
            let full = parse(&p).unwrap();
            for len in 0..=p.len() {
                let prefix = &p[..len];
                exercise(prefix);
                if let Ok(v) = parse(prefix) {
                    assert_eq!(v.is_truncated(), len < full.total_len(), "len {len}");
                }
            }
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng::new(1);
        for i in 0..20_000 {
            let len = rng.below(120);
            let mut bytes = rng.bytes(len);
            // Half of them look like IPv4 or IPv6 to get past the version check.
            if let Some(b) = bytes.first_mut() {
                match i % 4 {
                    0 => *b = 0x45,
                    1 => *b = 0x40 | (*b & 0x0f),
                    2 => *b = 0x60,
                    _ => {}
                }
            }
            exercise(&bytes);
        }
    }

    #[test]
    fn mutated_packets_never_panic() {
        let mut rng = Rng::new(2);
        let samples = samples();
        for _ in 0..20_000 {
            let mut p = samples[rng.below(samples.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(p.len());
                p[at] = rng.next_u64() as u8;
            }
            if rng.below(3) == 0 {
                p.truncate(rng.below(p.len() + 1));
            }
            exercise(&p);
        }
    }
}
