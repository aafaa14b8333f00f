//! The flow tuple of a packet, with direction-independent keys and hashes.

use core::net::IpAddr;

use super::ip::IpView;
use super::transport::{proto, TransportView};

/// The addresses, protocol and ports of a packet.
///
/// `Hash` and `Eq` are direction-dependent: A→B and B→A are different keys. For one
/// key per connection use [`canonical`](Self::canonical), and for dispatching
/// packets to workers [`flow_hash`](Self::flow_hash).
///
/// Ports are 0 when the packet has none: protocols without ports, and fragments
/// other than the first (which hold no transport header). ICMP and ICMPv6 echo
/// messages carry their identifier in both ports, so a request and its reply form
/// one flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport protocol number (see [`IpView::protocol`]).
    pub protocol: u8,
    /// Source port, or 0.
    pub src_port: u16,
    /// Destination port, or 0.
    pub dst_port: u16,
}

/// Which fields [`FlowTuple::hash_by`] uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum FlowKey {
    /// Addresses, protocol and ports: spreads the connections between two hosts.
    ///
    /// A later fragment has no ports, so it hashes apart from its first fragment;
    /// use [`Addresses`](Self::Addresses) where fragments of one flow must stay in
    /// order.
    #[default]
    FiveTuple,
    /// Addresses and protocol only: every packet between two hosts, fragments
    /// included, hashes alike.
    Addresses,
}

impl FlowTuple {
    /// The tuple of a parsed packet.
    ///
    /// Ports come from the first four bytes of the transport header for TCP, UDP,
    /// SCTP, DCCP and UDP-Lite (which is enough even in a truncated copy), from the
    /// identifier of ICMP/ICMPv6 echo messages, and are 0 otherwise, in particular in
    /// fragments other than the first.
    pub fn from_view(view: &IpView<'_>) -> FlowTuple {
        let (src_port, dst_port) = ports(view);
        FlowTuple {
            src: view.src(),
            dst: view.dst(),
            protocol: view.protocol(),
            src_port,
            dst_port,
        }
    }

    /// The same flow seen from the other side: addresses and ports swapped.
    pub fn reversed(&self) -> FlowTuple {
        FlowTuple {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }

    /// Whether the source endpoint (address, port) orders before or equal to the
    /// destination endpoint, as in [`canonical`](Self::canonical).
    pub fn is_canonical(&self) -> bool {
        (self.src, self.src_port) <= (self.dst, self.dst_port)
    }

    /// One form for both directions: the tuple with the lower (address, port)
    /// endpoint as source. `t.canonical() == t.reversed().canonical()`.
    pub fn canonical(&self) -> FlowTuple {
        if self.is_canonical() {
            *self
        } else {
            self.reversed()
        }
    }

    /// A direction-independent 64-bit hash of the five-tuple, for spreading flows
    /// over workers: both directions of a connection give the same value. See
    /// [`hash_by`](Self::hash_by) for fragments.
    pub fn flow_hash(&self) -> u64 {
        self.hash_by(FlowKey::FiveTuple)
    }

    /// A direction-independent 64-bit hash of the fields `key` names.
    ///
    /// The hash is fixed (no random seed), so it is the same in every run and
    /// process; it spreads ordinary traffic well but, like the kernel's
    /// `--queue-balance`, it is not meant to resist crafted collisions.
    pub fn hash_by(&self, key: FlowKey) -> u64 {
        let t = match key {
            FlowKey::FiveTuple => self.canonical(),
            FlowKey::Addresses => {
                let (a, b) = if self.src <= self.dst {
                    (self.src, self.dst)
                } else {
                    (self.dst, self.src)
                };
                FlowTuple {
                    src: a,
                    dst: b,
                    protocol: self.protocol,
                    src_port: 0,
                    dst_port: 0,
                }
            }
        };
        let mut h = Mixer(u64::from(t.protocol));
        h.addr(t.src);
        h.addr(t.dst);
        h.add(u64::from(t.src_port) << 16 | u64::from(t.dst_port));
        h.finish()
    }
}

impl From<&IpView<'_>> for FlowTuple {
    fn from(view: &IpView<'_>) -> Self {
        FlowTuple::from_view(view)
    }
}

fn ports(view: &IpView<'_>) -> (u16, u16) {
    if !view.is_first_fragment() || !view.headers_complete() {
        return (0, 0);
    }
    match view.protocol() {
        proto::TCP | proto::UDP | proto::SCTP | proto::DCCP | proto::UDPLITE => {
            match view.ip_payload() {
                [a, b, c, d, ..] => (u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])),
                _ => (0, 0),
            }
        }
        _ => match view.transport() {
            Some(TransportView::Icmpv4(i) | TransportView::Icmpv6(i)) if i.is_echo() => {
                (i.echo_id(), i.echo_id())
            }
            _ => (0, 0),
        },
    }
}

/// A multiply-rotate mixer with a SplitMix64 finish: a few cycles per word.
struct Mixer(u64);

impl Mixer {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn add(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(Self::K).rotate_left(29);
    }

    fn addr(&mut self, a: IpAddr) {
        match a {
            IpAddr::V4(a) => self.add(u64::from(u32::from(a))),
            IpAddr::V6(a) => {
                let v = u128::from(a);
                self.add((v >> 64) as u64);
                self.add(v as u64);
            }
        }
    }

    fn finish(self) -> u64 {
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse;
    use crate::testutil::*;

    #[test]
    fn tuple_of_tcp_and_udp() {
        let p = tcp4(b"");
        let t = parse(&p).unwrap().flow();
        assert_eq!(
            t,
            FlowTuple {
                src: IpAddr::from(SRC4),
                dst: IpAddr::from(DST4),
                protocol: 6,
                src_port: 40000,
                dst_port: 80
            }
        );
        let p = udp6(b"");
        let t = FlowTuple::from(&parse(&p).unwrap());
        assert_eq!((t.protocol, t.src_port, t.dst_port), (17, 5000, 53));
    }

    #[test]
    fn ports_survive_a_cut_tcp_header() {
        let p = tcp4(b"");
        let v = parse(&p[..24]).unwrap();
        assert!(v.transport().is_none());
        assert_eq!((v.flow().src_port, v.flow().dst_port), (40000, 80));
    }

    #[test]
    fn both_directions_share_key_and_hash() {
        let t = parse(&tcp4(b"")).unwrap().flow();
        let r = t.reversed();
        assert_ne!(t, r);
        assert_eq!(t.canonical(), r.canonical());
        assert!(t.canonical().is_canonical());
        assert_eq!(t.flow_hash(), r.flow_hash());
        assert_eq!(t.hash_by(FlowKey::Addresses), r.hash_by(FlowKey::Addresses));
        let mut other = t;
        other.src_port += 1;
        assert_ne!(t.flow_hash(), other.flow_hash());
        assert_eq!(
            t.hash_by(FlowKey::Addresses),
            other.hash_by(FlowKey::Addresses)
        );
    }

    #[test]
    fn same_endpoints_port_order_decides() {
        let a = IpAddr::from(SRC4);
        let t = FlowTuple {
            src: a,
            dst: a,
            protocol: 17,
            src_port: 9,
            dst_port: 3,
        };
        assert_eq!(t.canonical().src_port, 3);
        assert_eq!(t.flow_hash(), t.reversed().flow_hash());
    }

    #[test]
    fn echo_id_is_both_ports() {
        let t = parse(&icmp4_echo(b"")).unwrap().flow();
        assert_eq!((t.src_port, t.dst_port), (0x1234, 0x1234));
        let t = parse(&icmp6_echo(b"")).unwrap().flow();
        assert_eq!((t.protocol, t.src_port, t.dst_port), (58, 0x4321, 0x4321));
    }

    #[test]
    fn fragments_hash_alike_by_addresses_only() {
        let mut first = udp4(&[0; 16]);
        fragment4(&mut first, 0, true);
        let mut later = udp4(&[0; 16]);
        fragment4(&mut later, 3, false);
        let f = parse(&first).unwrap().flow();
        let l = parse(&later).unwrap().flow();
        assert_eq!(f.src_port, 5000);
        assert_eq!(l.src_port, 0);
        assert_eq!(f.hash_by(FlowKey::Addresses), l.hash_by(FlowKey::Addresses));
        assert_ne!(f.flow_hash(), l.flow_hash());
    }

    #[test]
    fn hash_spreads_over_buckets() {
        let mut buckets = [0u32; 8];
        for port in 0..8000u16 {
            let t = FlowTuple {
                src: IpAddr::from(SRC4),
                dst: IpAddr::from(DST4),
                protocol: 6,
                src_port: 1024 + port,
                dst_port: 443,
            };
            buckets[(t.flow_hash() % 8) as usize] += 1;
        }
        assert!(
            buckets.iter().all(|&n| (800..1200).contains(&n)),
            "{buckets:?}"
        );
    }
}
