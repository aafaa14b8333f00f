//! Packet builders and a seeded random generator for tests: this crate's, and
//! with the `testutil` feature those of the crates above it. Not a stable API.

/// A small deterministic pseudo-random generator (xorshift64*), so that failures
/// repeat.
#[derive(Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose sequence depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A value in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

use etherparse::{
    IpAuthHeader, IpFragOffset, IpHeaders, IpNumber, Ipv4Header, Ipv6Extensions,
    Ipv6FragmentHeader, Ipv6Header, Ipv6RawExtHeader, Ipv6RoutingExtensions, PacketBuilder,
};

/// Source address of the IPv4 packets built here.
pub const SRC4: [u8; 4] = [192, 0, 2, 1];
/// Destination address of the IPv4 packets built here.
pub const DST4: [u8; 4] = [198, 51, 100, 7];
/// Source address of the IPv6 packets built here.
pub const SRC6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
/// Destination address of the IPv6 packets built here.
pub const DST6: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// IPv4/UDP, port 5000 to 53, hop limit (TTL) 64.
pub fn udp4(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(SRC4, DST4, 64)
        .udp(5000, 53)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// IPv4/TCP, port 40000 to 80, SYN and ACK set.
pub fn tcp4(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(SRC4, DST4, 64)
        .tcp(40000, 80, 1000, 65535)
        .syn()
        .ack(77)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// An ICMP echo request, identifier 0x1234, sequence 7.
pub fn icmp4_echo(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv4(SRC4, DST4, 64)
        .icmpv4_echo_request(0x1234, 7)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// IPv4 with 8 bytes of options (two NOPs, then padding end-of-list).
pub fn udp4_options(payload: &[u8]) -> Vec<u8> {
    let mut h = Ipv4Header::new(0, 64, IpNumber::UDP, SRC4, DST4).unwrap();
    h.options = [1u8, 1, 0, 0, 0, 0, 0, 0][..].try_into().unwrap();
    let mut out = Vec::new();
    PacketBuilder::ip(IpHeaders::Ipv4(h, Default::default()))
        .udp(5000, 53)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// IPv6/UDP, port 5000 to 53, hop limit 64.
pub fn udp6(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(SRC6, DST6, 64)
        .udp(5000, 53)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// IPv6/TCP, port 40000 to 443.
pub fn tcp6(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(SRC6, DST6, 64)
        .tcp(40000, 443, 5, 1024)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// An ICMPv6 echo request, identifier 0x4321, sequence 9.
pub fn icmp6_echo(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    PacketBuilder::ipv6(SRC6, DST6, 64)
        .icmpv6_echo_request(0x4321, 9)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// Extension headers: hop-by-hop, destination options, routing (no segments
/// left), fragment (`offset` in 8-byte units, `more`), authentication.
pub fn exts6(frag: Option<(u16, bool)>) -> (Ipv6Extensions, usize) {
    let raw = |n| Ipv6RawExtHeader::new_raw(n, &[0, 0, 0, 0, 0, 0]).unwrap();
    let exts = Ipv6Extensions {
        hop_by_hop_options: Some(raw(IpNumber::UDP)),
        destination_options: Some(raw(IpNumber::UDP)),
        routing: Some(Ipv6RoutingExtensions {
            routing: raw(IpNumber::UDP),
            final_destination_options: None,
        }),
        fragment: frag.map(|(off, more)| {
            Ipv6FragmentHeader::new(
                IpNumber::UDP,
                IpFragOffset::try_new(off).unwrap(),
                more,
                0xdead_beef,
            )
        }),
        auth: Some(IpAuthHeader::new(IpNumber::UDP, 1, 2, &[0; 4]).unwrap()),
    };
    let len = 8 + 8 + 8 + frag.map_or(0, |_| 8) + 16;
    (exts, len)
}

fn ipv6_header() -> Ipv6Header {
    Ipv6Header {
        traffic_class: 0,
        flow_label: Default::default(),
        payload_length: 0,
        next_header: IpNumber::UDP,
        hop_limit: 64,
        source: SRC6,
        destination: DST6,
    }
}

/// IPv6 with every extension header, then TCP.
pub fn tcp6_exts(payload: &[u8]) -> Vec<u8> {
    let (exts, _) = exts6(None);
    let mut out = Vec::new();
    PacketBuilder::ip(IpHeaders::Ipv6(ipv6_header(), exts))
        .tcp(40000, 443, 5, 1024)
        .psh()
        .write(&mut out, payload)
        .unwrap();
    out
}

/// IPv6 with every extension header, then UDP.
pub fn udp6_exts(payload: &[u8], frag: Option<(u16, bool)>) -> Vec<u8> {
    let (exts, _) = exts6(frag);
    let mut out = Vec::new();
    PacketBuilder::ip(IpHeaders::Ipv6(ipv6_header(), exts))
        .udp(5000, 53)
        .write(&mut out, payload)
        .unwrap();
    out
}

/// Sets the IPv4 fragment fields (offset in 8-byte units) and fixes the header
/// checksum.
pub fn fragment4(packet: &mut [u8], offset: u16, more: bool) {
    let word = offset | if more { 0x2000 } else { 0 };
    packet[6..8].copy_from_slice(&word.to_be_bytes());
    packet[10..12].copy_from_slice(&[0, 0]);
    let ihl = usize::from(packet[0] & 0xf) * 4;
    let mut acc: u32 = 0;
    for pair in packet[..ihl].chunks(2) {
        acc += u32::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    packet[10..12].copy_from_slice(&(!(acc as u16)).to_be_bytes());
}

/// Checks every checksum with etherparse's own code, independent of ours.
pub fn etherparse_checksums_ok(packet: &[u8]) -> bool {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ip(packet).expect("etherparse parses the packet");
    let (src, dst): (Vec<u8>, Vec<u8>) = match &p.net {
        Some(NetSlice::Ipv4(v4)) => {
            let h = v4.header().to_header();
            if h.header_checksum != h.calc_header_checksum() {
                return false;
            }
            (h.source.to_vec(), h.destination.to_vec())
        }
        Some(NetSlice::Ipv6(v6)) => (
            v6.header().source().to_vec(),
            v6.header().destination().to_vec(),
        ),
        _ => panic!("no IP layer"),
    };
    let v4 = src.len() == 4;
    match &p.transport {
        Some(TransportSlice::Udp(u)) => {
            let h = u.to_header();
            if v4 && h.checksum == 0 {
                return true;
            }
            let c = if v4 {
                h.calc_checksum_ipv4_raw(
                    src.try_into().unwrap(),
                    dst.try_into().unwrap(),
                    u.payload(),
                )
            } else {
                h.calc_checksum_ipv6_raw(
                    src.try_into().unwrap(),
                    dst.try_into().unwrap(),
                    u.payload(),
                )
            };
            c.unwrap() == h.checksum
        }
        Some(TransportSlice::Tcp(t)) => {
            let c = if v4 {
                t.calc_checksum_ipv4(src.try_into().unwrap(), dst.try_into().unwrap())
            } else {
                t.calc_checksum_ipv6(src.try_into().unwrap(), dst.try_into().unwrap())
            };
            c.unwrap() == t.checksum()
        }
        Some(TransportSlice::Icmpv4(i)) => {
            i.header().icmp_type.calc_checksum(i.payload()) == i.checksum()
        }
        Some(TransportSlice::Icmpv6(i)) => {
            i.is_checksum_valid(src.try_into().unwrap(), dst.try_into().unwrap())
        }
        other => panic!("unexpected transport {other:?}"),
    }
}
