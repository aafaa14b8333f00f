//! L3/L4 views of a packet payload, the flow tuple and mangling helpers.
//!
//! The payload of an NFQUEUE packet starts at the IP header (IPv4 or IPv6, no
//! link-layer header). [`parse`] reads it into an [`IpView`], a zero-copy view that
//! allocates nothing and never panics: bytes from the kernel or the wire are
//! checked once, and a copy cut short by the copy range still gives a view, whose
//! [`IpView::is_truncated`] says so. The transport header (TCP, UDP, ICMP, ICMPv6)
//! is read only from the first fragment.
//!
//! [`FlowTuple`] names the flow a packet belongs to, with a direction-independent
//! [`FlowTuple::flow_hash`] for sending both directions of a flow to one worker.
//!
//! The kernel takes a payload given back with a verdict as the new packet and does
//! not repair it: the helpers of the [`mangle`] module rewrite a packet and leave
//! its lengths and checksums right.
//!
//! The header code is our own, small and free of `unsafe`: every read is
//! bounds-checked. (etherparse 0.21 was measured first: its IPv6 extension-header
//! iterator reads past the end of a copy cut inside an extension header, so it
//! serves only the tests, as an independent builder and checksum check.)
//!
//! # Example
//!
//! ```
//! use nfqueue_net::{self as net, mangle, TransportView};
//!
//! // An IPv4/UDP packet 10.0.0.1:5000 -> 10.0.0.2:53 with payload "hi".
//! let mut packet: Vec<u8> = vec![
//!     0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 17, 0, 0, // version/IHL .. protocol, checksum
//!     10, 0, 0, 1, 10, 0, 0, 2, // addresses
//!     0x13, 0x88, 0, 53, 0, 10, 0, 0, // UDP header
//!     b'h', b'i',
//! ];
//! mangle::fix_checksums(&mut packet)?;
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
