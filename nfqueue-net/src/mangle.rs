//! Rewriting packets so that the kernel can take them back with a verdict.
//!
//! The kernel puts a payload given with a verdict in place of the packet as it is:
//! it does not fix lengths or checksums. Every helper here leaves a consistent
//! packet: IPv4 total length and header checksum, IPv6 payload length, UDP length,
//! and the TCP, UDP, ICMP and ICMPv6 checksums (with the IPv4 or IPv6
//! pseudo-header) are recomputed after each edit. A UDP-over-IPv4 checksum of 0
//! ("no checksum") stays 0; a computed UDP checksum of 0 is sent as 0xffff.
//!
//! The helpers refuse, and leave the bytes as they were, when the result could not
//! be right: a truncated copy ([`MangleError::Truncated`]), a fragment
//! ([`MangleError::Fragment`], except for [`set_hop_limit`], which only touches the IP
//! header), a TCP payload of another length ([`MangleError::TcpLengthChange`]) and
//! a packet grown past [`MAX_PACKET_LEN`], the most a verdict can carry
//! ([`MangleError::TooLarge`]). The other helpers keep the length, so a packet
//! read from a queue stays one that a verdict can give back.

use core::net::IpAddr;

use super::checksum::{finish, fold, pseudo_header, sum, sum_without};
use super::error::{MangleError, ParseError};
use super::ip::{parse, IpVersion, IpView};
use super::transport::proto;

/// The longest packet the helpers build: 65531 bytes.
///
/// An IP packet may hold 65535 bytes, but an NFQUEUE verdict carries its
/// replacement packet in one netlink attribute, whose 16-bit length counts its
/// own 4-byte header too; a longer packet could not be given back
/// (`nfqueue_core::MAX_PAYLOAD` is the same number, checked when it compiles).
pub const MAX_PACKET_LEN: usize = 0xffff - 4;

/// Where things are in a packet, copied out of an [`IpView`] so the bytes can be
/// written.
#[derive(Debug, Clone, Copy)]
struct Layout {
    version: IpVersion,
    /// IPv4 header length without an authentication header.
    ip_header_len: usize,
    /// Offset of the transport header.
    l4: usize,
    /// End of the packet.
    end: usize,
    protocol: u8,
    fragment: bool,
    routing_pending: bool,
    headers_complete: bool,
}

impl Layout {
    fn of(view: &IpView<'_>) -> Self {
        let ip_header_len = match view.version() {
            IpVersion::V4 => usize::from(view.bytes().first().map_or(0, |b| b & 0x0f)) * 4,
            IpVersion::V6 => 40,
        };
        Layout {
            version: view.version(),
            ip_header_len,
            l4: view.header_len(),
            end: view.end(),
            protocol: view.protocol(),
            fragment: view.fragment().is_some(),
            routing_pending: view.routing_pending(),
            headers_complete: view.headers_complete(),
        }
    }

    /// The layout of a whole packet (not a truncated copy).
    fn whole(packet: &[u8]) -> Result<Self, MangleError> {
        let view = parse(packet)?;
        if view.is_truncated() {
            return Err(MangleError::Truncated {
                got: packet.len(),
                total_len: view.total_len(),
            });
        }
        Ok(Layout::of(&view))
    }

    /// The layout of a whole, unfragmented packet whose transport checksum can be
    /// recomputed.
    fn editable(packet: &[u8]) -> Result<Self, MangleError> {
        let layout = Layout::whole(packet)?;
        if layout.fragment {
            return Err(MangleError::Fragment);
        }
        if !layout.headers_complete {
            return Err(MangleError::BadExtensionHeaders);
        }
        if layout.routing_pending && has_pseudo_header(layout.protocol) {
            return Err(MangleError::RoutingHeader);
        }
        Ok(layout)
    }

    fn src(&self, packet: &[u8]) -> IpAddr {
        address(packet, self.version, true)
    }

    fn dst(&self, packet: &[u8]) -> IpAddr {
        address(packet, self.version, false)
    }
}

fn has_pseudo_header(protocol: u8) -> bool {
    matches!(
        protocol,
        proto::TCP | proto::UDP | proto::ICMPV6 | proto::DCCP | proto::UDPLITE
    )
}

fn address(packet: &[u8], version: IpVersion, src: bool) -> IpAddr {
    let (at, len) = match (version, src) {
        (IpVersion::V4, true) => (12, 4),
        (IpVersion::V4, false) => (16, 4),
        (IpVersion::V6, true) => (8, 16),
        (IpVersion::V6, false) => (24, 16),
    };
    let bytes = packet.get(at..at + len).unwrap_or(&[]);
    if let Ok(a) = <[u8; 4]>::try_from(bytes) {
        IpAddr::from(a)
    } else {
        IpAddr::from(<[u8; 16]>::try_from(bytes).unwrap_or([0; 16]))
    }
}

fn put_u16(packet: &mut [u8], at: usize, value: u16) {
    if let Some(field) = packet.get_mut(at..at + 2) {
        field.copy_from_slice(&value.to_be_bytes());
    }
}

fn get_u16(packet: &[u8], at: usize) -> u16 {
    match packet.get(at..at + 2) {
        Some(&[a, b]) => u16::from_be_bytes([a, b]),
        _ => 0,
    }
}

/// Where a protocol keeps its checksum, and the shortest header holding it.
fn checksum_field(protocol: u8, version: IpVersion) -> Option<(usize, usize)> {
    match (protocol, version) {
        (proto::TCP, _) => Some((16, 20)),
        (proto::UDP, _) => Some((6, 8)),
        (proto::ICMP, IpVersion::V4) | (proto::ICMPV6, IpVersion::V6) => Some((2, 8)),
        _ => None,
    }
}

/// The checksum a transport segment should carry (with its checksum field left
/// out of the sum), or `None` for protocols without one handled here.
fn expected_l4(packet: &[u8], layout: &Layout) -> Option<u16> {
    let (field, min) = checksum_field(layout.protocol, layout.version)?;
    let segment = packet.get(layout.l4..layout.end)?;
    if segment.len() < min {
        return None;
    }
    let start = if layout.protocol == proto::ICMP {
        0
    } else {
        pseudo_header(
            layout.src(packet),
            layout.dst(packet),
            layout.protocol,
            segment.len(),
        )
    };
    let mut c = finish(sum_without(segment, field, start));
    if layout.protocol == proto::UDP && c == 0 {
        c = 0xffff;
    }
    Some(c)
}

/// Whether the transport checksum of an editable packet can be recomputed.
fn check_l4(layout: &Layout) -> Result<(), MangleError> {
    let protocol = layout.protocol;
    match checksum_field(protocol, layout.version) {
        None if matches!(protocol, proto::DCCP | proto::UDPLITE) => {
            Err(MangleError::UnsupportedProtocol { protocol })
        }
        None => Ok(()),
        Some((_, min)) if layout.end.saturating_sub(layout.l4) < min => {
            Err(MangleError::BadTransportHeader { protocol })
        }
        Some(_) => Ok(()),
    }
}

/// Recomputes the transport checksum of an editable packet that passed
/// [`check_l4`].
fn fix_l4(packet: &mut [u8], layout: &Layout) {
    let Some((field, _)) = checksum_field(layout.protocol, layout.version) else {
        return;
    };
    if layout.protocol == proto::UDP
        && layout.version == IpVersion::V4
        && get_u16(packet, layout.l4 + field) == 0
    {
        // Over IPv4, 0 means the sender computed no checksum: keep it that way.
        return;
    }
    if let Some(c) = expected_l4(packet, layout) {
        put_u16(packet, layout.l4 + field, c);
    }
}

/// Recomputes the IPv4 header checksum (nothing for IPv6).
fn fix_ipv4_header(packet: &mut [u8], layout: &Layout) {
    if layout.version == IpVersion::V4 {
        let header = packet.get(..layout.ip_header_len).unwrap_or(&[]);
        let c = finish(sum_without(header, 10, 0));
        put_u16(packet, 10, c);
    }
}

/// Writes the IP length fields for a packet of `len` bytes.
fn set_ip_len(packet: &mut [u8], layout: &Layout, len: usize) {
    match layout.version {
        IpVersion::V4 => put_u16(packet, 2, len as u16),
        IpVersion::V6 => put_u16(packet, 4, (len - 40) as u16),
    }
}

/// Recomputes the IPv4 header checksum and the transport checksum (TCP, UDP,
/// ICMP, ICMPv6) in place. Lengths are left as they are.
///
/// A UDP-over-IPv4 checksum of 0 stays 0. Other transport protocols are left
/// alone. In a fragment only the IPv4 header checksum is recomputed: the transport
/// checksum covers data in other fragments.
///
/// # Errors
///
/// [`MangleError::Parse`] for bytes that are not an IP packet,
/// [`MangleError::Truncated`] for a truncated copy, and for an unfragmented packet
/// [`MangleError::BadExtensionHeaders`], [`MangleError::RoutingHeader`],
/// [`MangleError::BadTransportHeader`] or [`MangleError::UnsupportedProtocol`]
/// (DCCP, UDP-Lite) when the transport checksum cannot be recomputed.
pub fn fix_checksums(packet: &mut [u8]) -> Result<(), MangleError> {
    let layout = Layout::whole(packet)?;
    if !layout.fragment {
        let layout = Layout::editable(packet)?;
        check_l4(&layout)?;
        fix_l4(packet, &layout);
    }
    fix_ipv4_header(packet, &layout);
    Ok(())
}

/// The state of one checksum, as [`verify_checksums`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumState {
    /// The checksum is right.
    Valid,
    /// The checksum is wrong.
    Invalid {
        /// The value in the packet.
        found: u16,
        /// The value it should have.
        expected: u16,
    },
    /// There is no checksum: IPv6 has no header checksum, and a UDP-over-IPv4
    /// checksum of 0 means none was computed.
    Absent,
    /// Not checked: a fragment, a truncated copy, a protocol not handled here, or a
    /// short transport header.
    Unchecked,
}

/// The checksums of a packet, from [`verify_checksums`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChecksumStatus {
    /// The IPv4 header checksum ([`ChecksumState::Absent`] for IPv6).
    pub ip_header: ChecksumState,
    /// The TCP, UDP, ICMP or ICMPv6 checksum.
    pub transport: ChecksumState,
}

impl ChecksumStatus {
    /// Whether no checksum was found wrong (absent and unchecked ones pass).
    pub fn is_ok(&self) -> bool {
        !matches!(self.ip_header, ChecksumState::Invalid { .. })
            && !matches!(self.transport, ChecksumState::Invalid { .. })
    }
}

/// Checks the IPv4 header checksum and the transport checksum without changing
/// anything.
///
/// # Errors
///
/// [`ParseError`] when the bytes are not an IP packet.
pub fn verify_checksums(packet: &[u8]) -> Result<ChecksumStatus, ParseError> {
    let view = parse(packet)?;
    let layout = Layout::of(&view);
    let ip_header = match layout.version {
        IpVersion::V6 => ChecksumState::Absent,
        IpVersion::V4 => {
            let header = packet.get(..layout.ip_header_len).unwrap_or(&[]);
            state(get_u16(header, 10), fold(sum(header, 0)), || {
                finish(sum_without(header, 10, 0))
            })
        }
    };
    let transport = if view.is_truncated()
        || layout.fragment
        || !layout.headers_complete
        || (layout.routing_pending && has_pseudo_header(layout.protocol))
    {
        ChecksumState::Unchecked
    } else {
        transport_state(packet, &layout)
    };
    Ok(ChecksumStatus {
        ip_header,
        transport,
    })
}

fn transport_state(packet: &[u8], layout: &Layout) -> ChecksumState {
    let Some((field, _)) = checksum_field(layout.protocol, layout.version) else {
        return ChecksumState::Unchecked;
    };
    let Some(expected) = expected_l4(packet, layout) else {
        return ChecksumState::Unchecked;
    };
    let found = get_u16(packet, layout.l4 + field);
    if layout.protocol == proto::UDP && layout.version == IpVersion::V4 && found == 0 {
        return ChecksumState::Absent;
    }
    // A stored checksum is right when the sum over everything, checksum included,
    // is all ones; adding the found value to the sum without it does just that.
    let without = !expected;
    let all = fold(u64::from(without) + u64::from(found));
    state(found, all, || expected)
}

fn state(found: u16, folded_sum: u16, expected: impl FnOnce() -> u16) -> ChecksumState {
    if folded_sum == 0xffff {
        ChecksumState::Valid
    } else {
        ChecksumState::Invalid {
            found,
            expected: expected(),
        }
    }
}

/// Sets the source address (IPv4 or IPv6, as the packet is) and recomputes the
/// checksums that cover it.
///
/// # Errors
///
/// [`MangleError::AddressFamily`] for an address of the other version, and the
/// errors of [`fix_checksums`] plus [`MangleError::Fragment`].
pub fn set_src_addr(packet: &mut [u8], addr: IpAddr) -> Result<(), MangleError> {
    set_addr(packet, addr, true)
}

/// Sets the destination address (IPv4 or IPv6, as the packet is) and recomputes
/// the checksums that cover it.
///
/// # Errors
///
/// As [`set_src_addr`].
pub fn set_dst_addr(packet: &mut [u8], addr: IpAddr) -> Result<(), MangleError> {
    set_addr(packet, addr, false)
}

fn set_addr(packet: &mut [u8], addr: IpAddr, src: bool) -> Result<(), MangleError> {
    let layout = Layout::editable(packet)?;
    let mut octets = [0u8; 16];
    let (at, len) = match (layout.version, addr) {
        (IpVersion::V4, IpAddr::V4(a)) => {
            octets[..4].copy_from_slice(&a.octets());
            (if src { 12 } else { 16 }, 4)
        }
        (IpVersion::V6, IpAddr::V6(a)) => {
            octets = a.octets();
            (if src { 8 } else { 24 }, 16)
        }
        (packet, _) => return Err(MangleError::AddressFamily { packet }),
    };
    check_l4(&layout)?;
    if let (Some(field), Some(new)) = (packet.get_mut(at..at + len), octets.get(..len)) {
        field.copy_from_slice(new);
    }
    fix_l4(packet, &layout);
    fix_ipv4_header(packet, &layout);
    Ok(())
}

/// Sets the TCP or UDP source port and recomputes the transport checksum.
///
/// # Errors
///
/// [`MangleError::NoPorts`] for other protocols, [`MangleError::Fragment`], and
/// the errors of [`fix_checksums`].
pub fn set_src_port(packet: &mut [u8], port: u16) -> Result<(), MangleError> {
    set_port(packet, port, 0)
}

/// Sets the TCP or UDP destination port and recomputes the transport checksum.
///
/// # Errors
///
/// As [`set_src_port`].
pub fn set_dst_port(packet: &mut [u8], port: u16) -> Result<(), MangleError> {
    set_port(packet, port, 2)
}

fn set_port(packet: &mut [u8], port: u16, at: usize) -> Result<(), MangleError> {
    let layout = Layout::editable(packet)?;
    if !matches!(layout.protocol, proto::TCP | proto::UDP) {
        return Err(MangleError::NoPorts {
            protocol: layout.protocol,
        });
    }
    check_l4(&layout)?;
    put_u16(packet, layout.l4 + at, port);
    fix_l4(packet, &layout);
    Ok(())
}

/// Sets the hop limit: the IPv6 Hop Limit, or the IPv4 Time to Live (and
/// recomputes the IPv4 header checksum). Works on fragments too: only the IP
/// header changes.
///
/// # Errors
///
/// [`MangleError::Parse`] for bytes that are not an IP packet,
/// [`MangleError::Truncated`] for a truncated copy.
pub fn set_hop_limit(packet: &mut [u8], hop_limit: u8) -> Result<(), MangleError> {
    let layout = Layout::whole(packet)?;
    let at = match layout.version {
        IpVersion::V4 => 8,
        IpVersion::V6 => 7,
    };
    if let Some(b) = packet.get_mut(at) {
        *b = hop_limit;
    }
    fix_ipv4_header(packet, &layout);
    Ok(())
}

/// Replaces the transport payload (the bytes after the TCP, UDP, ICMP or ICMPv6
/// header) and fixes lengths and checksums.
///
/// UDP and ICMP payloads may change length: the packet grows or shrinks and the IP
/// length fields and the UDP length follow. A TCP payload must keep its length
/// (see [`MangleError::TcpLengthChange`]). Bytes after the declared end of the
/// packet, if any, are dropped.
///
/// # Errors
///
/// [`MangleError::TcpLengthChange`], [`MangleError::TooLarge`] for a packet
/// longer than [`MAX_PACKET_LEN`],
/// [`MangleError::UnsupportedProtocol`] for other protocols,
/// [`MangleError::Fragment`], and the errors of [`fix_checksums`].
pub fn set_l4_payload(packet: &mut Vec<u8>, payload: &[u8]) -> Result<(), MangleError> {
    let mut layout = Layout::editable(packet)?;
    check_l4(&layout)?;
    let protocol = layout.protocol;
    let header_len = match (protocol, layout.version) {
        (proto::TCP, _) => {
            let offset = packet
                .get(layout.l4 + 12)
                .map_or(0, |b| usize::from(b >> 4) * 4);
            if offset < 20 || layout.l4 + offset > layout.end {
                return Err(MangleError::BadTransportHeader { protocol });
            }
            let old = layout.end - layout.l4 - offset;
            if old != payload.len() {
                return Err(MangleError::TcpLengthChange {
                    old,
                    new: payload.len(),
                });
            }
            offset
        }
        (proto::UDP, _) | (proto::ICMP, IpVersion::V4) | (proto::ICMPV6, IpVersion::V6) => 8,
        _ => return Err(MangleError::UnsupportedProtocol { protocol }),
    };
    let start = layout.l4 + header_len;
    let len = start + payload.len();
    if len > MAX_PACKET_LEN {
        return Err(MangleError::TooLarge {
            len,
            max: MAX_PACKET_LEN,
        });
    }
    packet.truncate(start);
    packet.extend_from_slice(payload);
    layout.end = len;
    set_ip_len(packet, &layout, len);
    if protocol == proto::UDP {
        put_u16(packet, layout.l4 + 4, (len - layout.l4) as u16);
    }
    fix_l4(packet, &layout);
    fix_ipv4_header(packet, &layout);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;
    use crate::TransportView;

    /// Our verification and etherparse's agree that every checksum is right.
    fn assert_valid(p: &[u8]) {
        let status = verify_checksums(p).unwrap();
        assert!(status.is_ok(), "{status:?}");
        assert_ne!(status.transport, ChecksumState::Unchecked);
        assert!(etherparse_checksums_ok(p));
    }

    fn all_kinds() -> Vec<Vec<u8>> {
        vec![
            udp4(b"payload"),
            udp4_options(b"payload"),
            tcp4(b"payload"),
            icmp4_echo(b"payload"),
            udp6(b"payload"),
            icmp6_echo(b"payload"),
            tcp6_exts(b"payload"),
            udp6_exts(b"payload", None),
        ]
    }

    #[test]
    fn built_packets_verify() {
        for p in all_kinds() {
            assert_valid(&p);
            let s = verify_checksums(&p).unwrap();
            let v6 = p[0] >> 4 == 6;
            assert_eq!(s.ip_header == ChecksumState::Absent, v6);
        }
    }

    #[test]
    fn fix_checksums_repairs_corruption() {
        for mut p in all_kinds() {
            let good = p.clone();
            let last = p.len() - 1;
            p[last] ^= 0x5a;
            if p[0] >> 4 == 4 {
                p[10] ^= 0xff;
            }
            let s = verify_checksums(&p).unwrap();
            assert!(
                matches!(s.transport, ChecksumState::Invalid { .. }),
                "{s:?}"
            );
            fix_checksums(&mut p).unwrap();
            assert_valid(&p);
            // The expected value reported is the one fix_checksums writes.
            let mut q = good.clone();
            q[last] ^= 0x5a;
            if let ChecksumState::Invalid { expected, .. } = verify_checksums(&q).unwrap().transport
            {
                let mut fixed = q.clone();
                fix_checksums(&mut fixed).unwrap();
                let v = crate::parse(&fixed).unwrap();
                let found = match v.transport().unwrap() {
                    TransportView::Tcp(t) => t.checksum(),
                    TransportView::Udp(u) => u.checksum(),
                    TransportView::Icmpv4(i) | TransportView::Icmpv6(i) => i.checksum(),
                    other => panic!("{other:?}"),
                };
                assert_eq!(found, expected);
            }
        }
    }

    #[test]
    fn udp_payload_of_another_length_v4_and_v6() {
        for (mut p, fixed) in [
            (udp4(b"abc"), 20),
            (udp4_options(b"abc"), 28),
            (udp6(b"abc"), 40),
            (udp6_exts(b"abc", None), 40 + exts6(None).1),
        ] {
            for new in [
                &b""[..],
                b"a much longer payload than before",
                &[0xab; 1000],
            ] {
                set_l4_payload(&mut p, new).unwrap();
                assert_eq!(p.len(), fixed + 8 + new.len());
                let v = crate::parse(&p).unwrap();
                assert_eq!(v.total_len(), p.len());
                let Some(TransportView::Udp(u)) = v.transport() else {
                    panic!()
                };
                assert_eq!(usize::from(u.length()), 8 + new.len());
                assert_eq!(u.payload(), new);
                assert_valid(&p);
            }
        }
    }

    #[test]
    fn icmp_payload_of_another_length() {
        for mut p in [icmp4_echo(b"ping"), icmp6_echo(b"ping")] {
            set_l4_payload(&mut p, b"a longer echo body").unwrap();
            assert_eq!(
                crate::parse(&p).unwrap().payload(),
                Some(&b"a longer echo body"[..])
            );
            assert_valid(&p);
        }
    }

    #[test]
    fn tcp_same_length_rewrite_and_length_change() {
        for mut p in [tcp4(b"GET /a"), tcp6_exts(b"GET /a")] {
            set_l4_payload(&mut p, b"GET /b").unwrap();
            assert_eq!(crate::parse(&p).unwrap().payload(), Some(&b"GET /b"[..]));
            assert_valid(&p);
            let before = p.clone();
            assert_eq!(
                set_l4_payload(&mut p, b"GET /longer"),
                Err(MangleError::TcpLengthChange { old: 6, new: 11 })
            );
            assert_eq!(p, before, "an error leaves the packet as it was");
        }
    }

    #[test]
    fn udp_over_ipv4_without_checksum_stays_without() {
        let mut p = udp4(b"abc");
        p[26..28].copy_from_slice(&[0, 0]);
        assert_eq!(
            verify_checksums(&p).unwrap().transport,
            ChecksumState::Absent
        );
        set_l4_payload(&mut p, b"longer").unwrap();
        set_src_port(&mut p, 1).unwrap();
        fix_checksums(&mut p).unwrap();
        assert_eq!(&p[26..28], &[0, 0]);
        assert!(etherparse_checksums_ok(&p));
        // Over IPv6 a zero UDP checksum is wrong, and is fixed.
        let mut p = udp6(b"abc");
        p[46..48].copy_from_slice(&[0, 0]);
        assert!(!verify_checksums(&p).unwrap().is_ok());
        fix_checksums(&mut p).unwrap();
        assert_valid(&p);
    }

    #[test]
    fn computed_zero_udp_checksum_is_sent_as_ffff() {
        // Choose the last payload word so that the checksum comes out as 0.
        let mut p = udp4(&[1, 2, 3, 4, 0, 0]);
        p[26..28].copy_from_slice(&[0, 0]);
        let layout = Layout::whole(&p).unwrap();
        let sum_rest = sum_without(
            &p[layout.l4..],
            6,
            pseudo_header(layout.src(&p), layout.dst(&p), 17, p.len() - layout.l4),
        );
        let word = finish(sum_rest);
        let last = p.len() - 2;
        p[last..].copy_from_slice(&word.to_be_bytes());
        p[26..28].copy_from_slice(&[0, 1]); // not "absent"
        fix_checksums(&mut p).unwrap();
        assert_eq!(&p[26..28], &[0xff, 0xff]);
        assert_valid(&p);
    }

    #[test]
    fn addresses_ports_and_hop_limit() {
        let v4a: IpAddr = "203.0.113.9".parse().unwrap();
        let v4b: IpAddr = "10.1.2.3".parse().unwrap();
        let v6a: IpAddr = "2001:db8::99".parse().unwrap();
        let v6b: IpAddr = "fd00::1".parse().unwrap();
        for mut p in all_kinds() {
            let v6 = p[0] >> 4 == 6;
            let (a, b, wrong) = if v6 { (v6a, v6b, v4a) } else { (v4a, v4b, v6a) };
            set_src_addr(&mut p, a).unwrap();
            set_dst_addr(&mut p, b).unwrap();
            assert_valid(&p);
            let v = crate::parse(&p).unwrap();
            assert_eq!((v.src(), v.dst()), (a, b));
            let before = p.clone();
            assert!(matches!(
                set_src_addr(&mut p, wrong),
                Err(MangleError::AddressFamily { .. })
            ));
            assert_eq!(p, before);
            set_hop_limit(&mut p, 4).unwrap();
            assert_eq!(crate::parse(&p).unwrap().hop_limit(), 4);
            assert_valid(&p);
            let proto = crate::parse(&p).unwrap().protocol();
            match proto {
                6 | 17 => {
                    set_src_port(&mut p, 1111).unwrap();
                    set_dst_port(&mut p, 2222).unwrap();
                    assert_valid(&p);
                    let t = crate::parse(&p).unwrap().transport().unwrap();
                    assert_eq!((t.src_port(), t.dst_port()), (Some(1111), Some(2222)));
                }
                _ => assert_eq!(
                    set_src_port(&mut p, 1),
                    Err(MangleError::NoPorts { protocol: proto })
                ),
            }
        }
    }

    #[test]
    fn refusals() {
        // Fragments: no transport edit, but the hop limit is fine.
        let mut p = udp4(&[0; 32]);
        fragment4(&mut p, 0, true);
        assert_eq!(set_l4_payload(&mut p, b"x"), Err(MangleError::Fragment));
        assert_eq!(set_src_port(&mut p, 1), Err(MangleError::Fragment));
        assert_eq!(
            set_dst_addr(&mut p, IpAddr::from(SRC4)),
            Err(MangleError::Fragment)
        );
        set_hop_limit(&mut p, 9).unwrap();
        fix_checksums(&mut p).unwrap();
        assert!(verify_checksums(&p).unwrap().is_ok());
        let mut p = udp6_exts(&[0; 32], Some((3, false)));
        assert_eq!(set_l4_payload(&mut p, b"x"), Err(MangleError::Fragment));

        // A truncated copy.
        let p = tcp4(b"0123456789");
        let mut cut = p[..p.len() - 4].to_vec();
        assert_eq!(
            set_l4_payload(&mut cut, b"x"),
            Err(MangleError::Truncated {
                got: p.len() - 4,
                total_len: p.len()
            })
        );
        assert!(matches!(
            set_hop_limit(&mut cut, 1),
            Err(MangleError::Truncated { .. })
        ));
        assert!(matches!(
            fix_checksums(&mut cut),
            Err(MangleError::Truncated { .. })
        ));
        assert_eq!(
            verify_checksums(&cut).unwrap().transport,
            ChecksumState::Unchecked
        );

        // Not IP.
        assert!(matches!(
            fix_checksums(&mut [0x10; 40]),
            Err(MangleError::Parse(ParseError::UnknownVersion(1)))
        ));

        // A routing header with segments left.
        let mut p = udp6_exts(b"x", None);
        p[40 + 16 + 3] = 1;
        assert_eq!(set_src_port(&mut p, 1), Err(MangleError::RoutingHeader));
        assert_eq!(
            verify_checksums(&p).unwrap().transport,
            ChecksumState::Unchecked
        );
    }

    /// Nothing longer than a verdict can carry: 65531 bytes is built, one more
    /// is refused with the bytes left as they were, and so is the 65535 an IP
    /// packet could hold.
    #[test]
    fn no_packet_longer_than_a_verdict_carries() {
        for p in [udp4(b""), udp6(b""), icmp4_echo(b""), icmp6_echo(b"")] {
            let headers = p.len();
            for len in [MAX_PACKET_LEN + 1, 65535] {
                let mut q = p.clone();
                assert_eq!(
                    set_l4_payload(&mut q, &vec![7; len - headers]),
                    Err(MangleError::TooLarge {
                        len,
                        max: MAX_PACKET_LEN
                    })
                );
                assert_eq!(q, p, "a refusal leaves the packet as it was");
            }
            let mut q = p.clone();
            set_l4_payload(&mut q, &vec![7; MAX_PACKET_LEN - headers]).unwrap();
            assert_eq!(q.len(), MAX_PACKET_LEN);
            assert_eq!(crate::parse(&q).unwrap().total_len(), MAX_PACKET_LEN);
            assert_valid(&q);
        }
        let err = MangleError::TooLarge {
            len: 65532,
            max: MAX_PACKET_LEN,
        };
        assert!(err.to_string().contains("65532 bytes"), "{err}");
        assert!(err.to_string().contains("65531"), "{err}");
    }

    #[test]
    fn trailing_bytes_are_dropped_by_a_payload_rewrite() {
        let mut p = udp4(b"abc");
        p.extend_from_slice(&[0xee; 6]);
        set_l4_payload(&mut p, b"xyz").unwrap();
        assert_eq!(p.len(), 31);
        assert_valid(&p);
    }
}
