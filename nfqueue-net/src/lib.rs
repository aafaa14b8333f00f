//! Zero-copy views of IP packets, their flow tuple, and rewrites that leave
//! lengths and checksums right: IPv4 (options, fragments), IPv6 (extension
//! headers, fragments), TCP, UDP, ICMP and ICMPv6, in safe Rust with no C.
//!
//! ```
//! use nfqueue_net::{self as net, mangle, TransportView};
//!
//! // An Ethernet frame as a pcap file (link type 1) or an AF_PACKET SOCK_RAW
//! // socket gives it: IPv4/UDP 10.0.0.1:5000 -> 10.0.0.2:53 with payload "hi".
//! let frame: Vec<u8> = vec![
//!     2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, // MACs, EtherType IPv4
//!     0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 17, 0x26, 0xcd, // IPv4 header ..
//!     10, 0, 0, 1, 10, 0, 0, 2, // .. and its addresses
//!     0x13, 0x88, 0, 53, 0, 10, 0x6f, 0xb1, // UDP header
//!     b'h', b'i',
//! ];
//! // The IP packet follows the 14-byte Ethernet header.
//! let mut packet = frame[14..].to_vec();
//!
//! let view = net::parse(&packet)?;
//! assert_eq!(view.src(), "10.0.0.1".parse::<std::net::IpAddr>()?);
//! assert_eq!(view.protocol(), 17);
//! match view.transport() {
//!     Some(TransportView::Udp(udp)) => {
//!         assert_eq!(udp.dst_port(), 53);
//!         assert_eq!(udp.payload(), b"hi");
//!     }
//!     other => panic!("expected UDP, got {other:?}"),
//! }
//! assert!(mangle::verify_checksums(&packet)?.is_ok());
//! // Both directions of the flow hash alike.
//! let flow = view.flow();
//! assert_eq!(flow.flow_hash(), flow.reversed().flow_hash());
//!
//! // A longer payload: IP length, UDP length and checksums follow.
//! mangle::set_l4_payload(&mut packet, b"hello")?;
//! assert_eq!(net::parse(&packet)?.total_len(), 33);
//! assert!(mangle::verify_checksums(&packet)?.is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Where the bytes come from
//!
//! [`parse`] takes bytes that start at the IP header (IPv4 or IPv6). That is
//! what NFQUEUE hands over (the `nfqueue-core` crate re-exports this one as
//! `nfqueue_core::net`), what an AF_PACKET `SOCK_DGRAM` socket or a pcap file
//! of link type 101 (raw IP) holds, and what follows the link-layer header of
//! an AF_PACKET `SOCK_RAW` socket or an Ethernet pcap, as above. This crate
//! reads no file or socket itself and has no C dependency, so it builds, tests
//! and fuzzes anywhere Rust does.
//!
//! # What it does
//!
//! [`parse`] reads a packet into an [`IpView`], a zero-copy view that allocates
//! nothing and never panics: the bytes are checked once, and a copy cut short
//! (an NFQUEUE copy range, a pcap snap length) still gives a view, whose
//! [`IpView::is_truncated`] says so. The transport header (TCP, UDP, ICMP,
//! ICMPv6) is read only from the first fragment.
//!
//! [`FlowTuple`] names the flow a packet belongs to, with a direction-independent
//! [`FlowTuple::flow_hash`] for sending both directions of a flow to one worker.
//!
//! The kernel takes a payload given back with an NFQUEUE verdict as the new
//! packet and does not repair it: the helpers of the [`mangle`] module rewrite a
//! packet and leave its lengths and checksums right.
//!
//! The header code is our own, small and free of `unsafe`: every read is
//! bounds-checked. (etherparse 0.21 was measured first: its IPv6 extension-header
//! iterator reads past the end of a copy cut inside an extension header, so it
//! serves only the tests, as an independent builder and checksum check.)
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod checksum;
mod error;
mod flow;
mod ip;
pub mod mangle;
mod transport;

#[cfg(any(test, feature = "testutil"))]
#[doc(hidden)]
pub mod testutil;

pub use error::{MangleError, ParseError};
pub use flow::{FlowKey, FlowTuple};
pub use ip::{parse, Fragment, IpVersion, IpView};
pub use mangle::{ChecksumState, ChecksumStatus};
pub use transport::{IcmpView, TcpFlags, TcpView, TransportView, UdpView};
