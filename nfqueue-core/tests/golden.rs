//! Golden tests: netlink messages captured from the real kernel (in
//! `tests/data/*.bin`), parsed with [`PacketView::from_message`] and
//! [`net::parse`], and compared field by field with what the capture set up.
//! Then garbage: random bytes, every prefix and every single-byte mutation of
//! each capture must parse or fail with an error, never panic.
//!
//! The captures come from [`regenerate_captures`], an ignored test that sends
//! each kind of packet through a real queue in throwaway namespaces. Run it with
//! `NFQ_WRITE_GOLDEN=1 cargo test -p nfqueue-core --test golden -- --ignored`
//! to write the files again; without the variable it only checks fresh captures
//! against the same table.
//!
//! A queue socket hands out one netlink message per packet, but [`Queue`] keeps
//! the datagram to itself: the files hold the `nlmsghdr` and `nfgenmsg` rebuilt
//! around [`PacketView::attribute_bytes`] exactly as the kernel fills them
//! (`nlmsg_type` `NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET`, flags, sequence
//! and port id 0; the protocol family, version 0 and the queue number in network
//! order).

mod common;

use nfqueue_core::net::{self, mangle, ChecksumState, IpVersion, TcpFlags, TransportView};
use nfqueue_core::{Hook, PacketView, SkbInfo};
use std::net::IpAddr;
use std::sync::atomic::Ordering;

/// Where the captures live.
const DATA_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data");

/// Ports and payloads the capture uses, so the table can name them.
mod setup {
    /// Source port of every UDP and TCP packet captured.
    pub const SRC_PORT: u16 = 40001;
    /// Destination port of UDP packets.
    pub const UDP_PORT: u16 = 5001;
    /// Destination port of TCP packets.
    pub const TCP_PORT: u16 = 5002;
    /// Payload of the small UDP datagrams.
    pub const UDP_PAYLOAD: &[u8] = b"golden udp payload";
    /// Payload of the TCP connection.
    pub const TCP_PAYLOAD: &[u8] = b"golden tcp data segment";
    /// Body of the echo requests.
    pub const ECHO_BODY: &[u8] = b"golden echo body";
    /// Identifier and sequence number of the echo requests.
    pub const ECHO_ID: u16 = 0x4e51;
    /// Sequence number of the echo requests.
    pub const ECHO_SEQ: u16 = 7;
    /// Length of the UDP datagram that is fragmented.
    pub const BIG_LEN: usize = 3000;
    /// Length of the UDP datagram whose copy is cut short.
    pub const TRUNCATED_LEN: usize = 200;
    /// MTU of the links when fragments are captured.
    pub const SMALL_MTU: u32 = 1280;
}

/// What the capture of one file must show.
#[derive(Debug, Clone)]
struct Expected {
    file: String,
    queue: u16,
    id: u32,
    hook: Hook,
    hw_protocol: u16,
    indev: Option<u32>,
    outdev: Option<u32>,
    hw_addr: Option<[u8; 6]>,
    skb_info: SkbInfo,
    payload_len: usize,
    original_len: usize,
    src: &'static str,
    dst: &'static str,
    /// Transport protocol after the extension headers.
    protocol: u8,
    /// IP header length with options and extension headers.
    header_len: usize,
    /// Whether the extension headers could be read to the end.
    headers_complete: bool,
    /// Fragment offset and more-fragments flag.
    fragment: Option<(u16, bool)>,
    /// Source and destination ports of the flow tuple.
    ports: (u16, u16),
    transport: Transport,
}

/// The transport layer expected.
#[derive(Debug, Clone)]
enum Transport {
    /// UDP with these ports, length field, and a payload starting with these bytes
    /// (all of it unless the copy is truncated).
    Udp {
        dst_port: u16,
        length: u16,
        payload: Vec<u8>,
    },
    /// TCP with these flags and payload.
    Tcp {
        flags: TcpFlags,
        payload: &'static [u8],
    },
    /// An echo request with [`setup::ECHO_BODY`].
    Echo { v6: bool },
    /// No transport header: a later fragment, or a copy cut in the headers.
    None,
}

/// Capturing messages from the real kernel.
mod capture {
    use super::setup::*;
    use super::*;
    use common::PACKET_TIMEOUT;
    use nfqueue_core::{CopyMode, Queue, QueueConfig};
    use nfqueue_sys as sys;
    use nfqueue_testkit::traffic::pattern;
    use nfqueue_testkit::{cmd, Iface, Netns, Router, TwoHosts};
    use std::net::{SocketAddr, UdpSocket};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::{Duration, Instant};

    /// Queue number used by every capture.
    pub const QUEUE: u16 = 3;

    /// The whole netlink message of a queued packet, rebuilt around its attributes.
    pub fn message_of(view: &PacketView<'_>) -> Vec<u8> {
        let family = match view.hw_protocol() {
            0x86dd => libc::AF_INET6,
            _ => libc::AF_INET,
        } as u8;
        let attrs = view.attribute_bytes();
        let len = 16 + 4 + attrs.len();
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&(len as u32).to_ne_bytes());
        let kind = (sys::NFNL_SUBSYS_QUEUE << 8) | sys::nfqnl_msg_types::NFQNL_MSG_PACKET;
        out.extend_from_slice(&(kind as u16).to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes()); // flags
        out.extend_from_slice(&0u32.to_ne_bytes()); // sequence
        out.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel
        out.extend_from_slice(&[family, 0]);
        out.extend_from_slice(&view.queue().to_be_bytes());
        out.extend_from_slice(attrs);
        out
    }

    /// Installs `rules` in `queue_ns`, binds [`QUEUE`] there with `copy`, runs
    /// `traffic` on a thread in `traffic_ns`, accepts every packet queued, and
    /// returns the messages of those `keep` picks (at most `want`). Packets keep
    /// being accepted until the traffic is done, so nothing is left waiting.
    pub fn run(
        queue_ns: &Netns,
        rules: &[(&str, Vec<&str>)],
        copy: CopyMode,
        traffic_ns: &Netns,
        traffic: impl FnOnce() + Send,
        want: usize,
        keep: fn(&PacketView<'_>) -> bool,
    ) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        queue_ns.run(|| {
            for (program, args) in rules {
                cmd::run(program, args.iter());
            }
            let mut queue = Queue::open().expect("opening a queue socket");
            queue
                .bind(QUEUE, &QueueConfig::default().copy_mode(copy))
                .expect("binding the queue");
            std::thread::scope(|s| {
                let sender = std::thread::Builder::new()
                    .name("capture-traffic".into())
                    .spawn_scoped(s, || {
                        traffic_ns.enter();
                        traffic();
                    })
                    .expect("spawning a thread");
                let mut kept = Vec::new();
                while Instant::now() < deadline && !(sender.is_finished() && kept.len() >= want) {
                    match queue.recv_timeout(Duration::from_millis(50)) {
                        Ok(Some(packet)) => {
                            if kept.len() < want && keep(&packet) {
                                kept.push(message_of(&packet));
                            }
                            packet.accept().expect("accepting");
                        }
                        Ok(None) => {}
                        Err(e) => panic!("receiving: {e}"),
                    }
                }
                sender
                    .join()
                    .unwrap_or_else(|p| std::panic::resume_unwind(p));
                // What comes after (the last ACKs of a closed connection) passes.
                while let Ok(Some(packet)) = queue.recv_timeout(Duration::from_millis(300)) {
                    packet.accept().expect("accepting");
                    if Instant::now() > deadline {
                        break;
                    }
                }
                assert_eq!(kept.len(), want, "captured {} of {want}", kept.len());
                nfqueue_testkit::counters::assert_queue_drained(QUEUE);
                for (program, args) in rules {
                    let delete = args.iter().map(|a| if *a == "-A" { "-D" } else { a });
                    cmd::run(program, delete);
                }
                kept
            })
        })
    }

    fn udp_socket(local: SocketAddr) -> UdpSocket {
        let sock = UdpSocket::bind(local).unwrap_or_else(|e| panic!("binding {local}: {e}"));
        sock.set_read_timeout(Some(PACKET_TIMEOUT)).unwrap();
        sock
    }

    /// Sends `payload` from `src` to `dst` and waits until it arrives at `receiver`
    /// (when given).
    fn udp_send(src: SocketAddr, dst: SocketAddr, payload: &[u8], receiver: Option<&UdpSocket>) {
        udp_socket(src).send_to(payload, dst).expect("sending");
        if let Some(r) = receiver {
            let mut buf = vec![0; 65536];
            let n = r.recv(&mut buf).expect("the datagram did not arrive");
            assert_eq!(&buf[..n], payload);
        }
    }

    fn setsockopt(fd: &impl AsRawFd, level: i32, name: i32, value: &[u8]) {
        // SAFETY: `value` is valid for reads of its length during the call.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                level,
                name,
                value.as_ptr().cast(),
                value.len() as libc::socklen_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "setsockopt {level}/{name}: {}",
            std::io::Error::last_os_error()
        );
    }

    /// A raw socket of `protocol` for `dst`'s family.
    fn raw_socket(v6: bool, protocol: i32) -> OwnedFd {
        let family = if v6 { libc::AF_INET6 } else { libc::AF_INET };
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor nobody else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    fn sockaddr(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
        // SAFETY: sockaddr_storage is plain data, valid when zeroed.
        let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        let len = match addr {
            IpAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: 0,
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.octets()),
                    },
                    sin_zero: [0; 8],
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin)
                };
                std::mem::size_of::<libc::sockaddr_in>()
            }
            IpAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: 0,
                    sin6_flowinfo: 0,
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.octets(),
                    },
                    sin6_scope_id: 0,
                };
                // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
                unsafe {
                    std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6)
                };
                std::mem::size_of::<libc::sockaddr_in6>()
            }
        };
        (storage, len as libc::socklen_t)
    }

    /// Sends an echo request to `dst` on a raw socket.
    fn ping(dst: IpAddr) {
        let v6 = dst.is_ipv6();
        let sock = raw_socket(
            v6,
            if v6 {
                libc::IPPROTO_ICMPV6
            } else {
                libc::IPPROTO_ICMP
            },
        );
        let mut msg = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
        msg.extend_from_slice(&ECHO_ID.to_be_bytes());
        msg.extend_from_slice(&ECHO_SEQ.to_be_bytes());
        msg.extend_from_slice(ECHO_BODY);
        if !v6 {
            // The kernel computes the ICMPv6 checksum of a raw socket, not the ICMP one.
            let c = internet_checksum(&msg);
            msg[2..4].copy_from_slice(&c.to_be_bytes());
        }
        let (addr, len) = sockaddr(dst);
        // SAFETY: `msg` and `addr` are valid for reads of their lengths.
        let rc = unsafe {
            libc::sendto(
                sock.as_raw_fd(),
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&addr as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        assert_eq!(
            rc,
            msg.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
    }

    pub fn internet_checksum(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            acc += u32::from(pair[0]) << 8 | u32::from(pair.get(1).copied().unwrap_or(0));
        }
        while acc >> 16 != 0 {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    /// Connects from `src` to a listener at `dst`, writes [`TCP_PAYLOAD`] and waits
    /// for the peer to close.
    fn tcp_exchange(src: SocketAddr, listener: std::net::TcpListener) {
        let dst = listener.local_addr().unwrap();
        let reader = std::thread::spawn(move || {
            use std::io::Read;
            listener.set_nonblocking(false).unwrap();
            let (mut s, _) = listener.accept().expect("accept");
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).expect("reading");
            got
        });
        let family = if src.is_ipv6() {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        // SAFETY: plain socket(2); the descriptor is owned right away.
        let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
        assert!(fd >= 0);
        // SAFETY: a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        setsockopt(
            &fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            &1i32.to_ne_bytes(),
        );
        let (mut local, len) = sockaddr(src.ip());
        set_port(&mut local, src.port());
        // SAFETY: `local` holds a socket address of `len` bytes.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&local as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        assert_eq!(rc, 0, "bind {src}: {}", std::io::Error::last_os_error());
        let (mut remote, len) = sockaddr(dst.ip());
        set_port(&mut remote, dst.port());
        // SAFETY: as above.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&remote as *const libc::sockaddr_storage).cast(),
                len,
            )
        };
        assert_eq!(rc, 0, "connect {dst}: {}", std::io::Error::last_os_error());
        let mut stream = std::net::TcpStream::from(fd);
        {
            use std::io::Write;
            stream.write_all(TCP_PAYLOAD).unwrap();
        }
        stream.shutdown(std::net::Shutdown::Write).unwrap();
        assert_eq!(reader.join().unwrap(), TCP_PAYLOAD);
    }

    fn set_port(addr: &mut libc::sockaddr_storage, port: u16) {
        // sin_port and sin6_port both sit at offset 2.
        let p = (addr as *mut libc::sockaddr_storage).cast::<u8>();
        // SAFETY: offset 2..4 lies inside the storage.
        unsafe { std::ptr::copy_nonoverlapping(port.to_be_bytes().as_ptr(), p.add(2), 2) };
    }

    fn tables(v6: bool) -> &'static str {
        if v6 {
            "ip6tables"
        } else {
            "iptables"
        }
    }

    fn addr(iface: &Iface, v6: bool, port: u16) -> SocketAddr {
        if v6 {
            iface.v6(port)
        } else {
            iface.v4(port)
        }
    }

    /// Queues every UDP packet of `chain` in `table`.
    fn udp_rule(
        v6: bool,
        table: &'static str,
        chain: &'static str,
    ) -> Vec<(&'static str, Vec<&'static str>)> {
        let args = vec![
            "-t",
            table,
            "-A",
            chain,
            "-p",
            "udp",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "3",
        ];
        vec![(tables(v6), args)]
    }

    /// The captures between A and B of one IP version, named by file.
    fn two_hosts(v6: bool, out: &mut Vec<(String, Vec<u8>)>) {
        let ip = if v6 { "6" } else { "4" };
        let h = TwoHosts::new();
        let (a, b) = (&h.a.iface, &h.b.iface);
        let receiver = h.b.ns.run(|| udp_socket(addr(b, v6, UDP_PORT)));
        let send = |payload: &[u8]| {
            udp_send(
                addr(a, v6, SRC_PORT),
                addr(b, v6, UDP_PORT),
                payload,
                Some(&receiver),
            )
        };

        // UDP leaving A, then arriving at B (with B's interface and A's MAC).
        let m = run(
            &h.a.ns,
            &udp_rule(v6, "filter", "OUTPUT"),
            CopyMode::default(),
            &h.a.ns,
            || send(UDP_PAYLOAD),
            1,
            |_| true,
        );
        out.push((format!("udp{ip}_output"), m[0].clone()));
        let m = run(
            &h.b.ns,
            &udp_rule(v6, "filter", "INPUT"),
            CopyMode::default(),
            &h.a.ns,
            || send(UDP_PAYLOAD),
            1,
            |_| true,
        );
        out.push((format!("udp{ip}_input"), m[0].clone()));

        // A copy cut short by the copy range.
        let long = pattern(TRUNCATED_LEN);
        let m = run(
            &h.a.ns,
            &udp_rule(v6, "filter", "OUTPUT"),
            CopyMode::Packet(64),
            &h.a.ns,
            || send(&long),
            1,
            |_| true,
        );
        out.push((format!("udp{ip}_truncated"), m[0].clone()));

        // TCP: the SYN and the segment with data (the ACK between them is not kept).
        let listener =
            h.b.ns
                .run(|| std::net::TcpListener::bind(addr(b, v6, TCP_PORT)).unwrap());
        let rule = vec![
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "--dport",
            "5002",
            "-j",
            "NFQUEUE",
            "--queue-num",
            "3",
        ];
        let m = run(
            &h.a.ns,
            &[(tables(v6), rule)],
            CopyMode::default(),
            &h.a.ns,
            || tcp_exchange(addr(a, v6, SRC_PORT), listener),
            2,
            |p| match net::parse(p.payload()).ok().and_then(|v| v.transport()) {
                Some(TransportView::Tcp(t)) => {
                    t.flags() == TcpFlags::SYN || !t.payload().is_empty()
                }
                _ => false,
            },
        );
        out.push((format!("tcp{ip}_syn"), m[0].clone()));
        out.push((format!("tcp{ip}_data"), m[1].clone()));

        // An echo request from a raw socket.
        let rule = if v6 {
            vec![
                "-A",
                "OUTPUT",
                "-p",
                "icmpv6",
                "--icmpv6-type",
                "echo-request",
                "-j",
                "NFQUEUE",
                "--queue-num",
                "3",
            ]
        } else {
            vec![
                "-A",
                "OUTPUT",
                "-p",
                "icmp",
                "--icmp-type",
                "echo-request",
                "-j",
                "NFQUEUE",
                "--queue-num",
                "3",
            ]
        };
        let m = run(
            &h.a.ns,
            &[(tables(v6), rule)],
            CopyMode::default(),
            &h.a.ns,
            || ping(addr(b, v6, 0).ip()),
            1,
            |_| true,
        );
        out.push((format!("icmp{ip}_echo"), m[0].clone()));

        if v6 {
            // Hop-by-hop and destination options, whole and cut inside the first.
            let send_ext = || {
                let sock = udp_socket(addr(a, true, SRC_PORT));
                // Next header (filled in by the kernel), length 0 (8 bytes), PadN of 4.
                let options = [0, 0, 1, 4, 0, 0, 0, 0];
                setsockopt(&sock, libc::IPPROTO_IPV6, libc::IPV6_HOPOPTS, &options);
                setsockopt(&sock, libc::IPPROTO_IPV6, libc::IPV6_DSTOPTS, &options);
                sock.send_to(UDP_PAYLOAD, addr(b, true, UDP_PORT))
                    .expect("sending");
                let mut buf = [0; 256];
                let n = receiver
                    .recv(&mut buf)
                    .expect("the datagram did not arrive");
                assert_eq!(&buf[..n], UDP_PAYLOAD);
            };
            let m = run(
                &h.a.ns,
                &udp_rule(true, "filter", "OUTPUT"),
                CopyMode::default(),
                &h.a.ns,
                send_ext,
                1,
                |_| true,
            );
            out.push(("udp6_ext".into(), m[0].clone()));
            let m = run(
                &h.a.ns,
                &udp_rule(true, "filter", "OUTPUT"),
                CopyMode::Packet(44),
                &h.a.ns,
                send_ext,
                1,
                |_| true,
            );
            out.push(("udp6_ext_truncated".into(), m[0].clone()));
        }

        // Fragments of a datagram larger than the MTU, as B's PREROUTING sees them.
        // (In namespaces of their own, for the smaller MTU.)
        let h = TwoHosts::new();
        let m = fragments_at(&h, v6, &h.b.ns, "mangle", "PREROUTING", 3);
        out.push((format!("udp{ip}_frag_first"), m[0].clone()));
        out.push((format!("udp{ip}_frag_last"), m[2].clone()));
    }

    /// Sets the MTU of both ends to [`SMALL_MTU`], sends a datagram of
    /// [`BIG_LEN`] bytes from A to B, and returns the first `want` messages
    /// queued from `chain` of `table` in `ns`.
    pub fn fragments_at(
        h: &TwoHosts,
        v6: bool,
        ns: &Netns,
        table: &'static str,
        chain: &'static str,
        want: usize,
    ) -> Vec<Vec<u8>> {
        for (n, dev) in [(&h.a.ns, "veth-a"), (&h.b.ns, "veth-b")] {
            n.run(|| cmd::ip(["link", "set", dev, "mtu", &SMALL_MTU.to_string()]));
        }
        let (a, b) = (&h.a.iface, &h.b.iface);
        let receiver = h.b.ns.run(|| udp_socket(addr(b, v6, UDP_PORT)));
        let big = pattern(BIG_LEN);
        run(
            ns,
            &udp_rule(v6, table, chain),
            CopyMode::default(),
            &h.a.ns,
            || {
                udp_send(
                    addr(a, v6, SRC_PORT),
                    addr(b, v6, UDP_PORT),
                    &big,
                    Some(&receiver),
                )
            },
            want,
            |_| true,
        )
    }

    /// UDP from A through R's FORWARD chain to B.
    fn forwarded(v6: bool, out: &mut Vec<(String, Vec<u8>)>) {
        let ip = if v6 { "6" } else { "4" };
        let r = Router::new();
        let (a, b) = (&r.a.iface, &r.b.iface);
        let receiver = r.b.ns.run(|| udp_socket(addr(b, v6, UDP_PORT)));
        let m = run(
            &r.r,
            &udp_rule(v6, "filter", "FORWARD"),
            CopyMode::default(),
            &r.a.ns,
            || {
                udp_send(
                    addr(a, v6, SRC_PORT),
                    addr(b, v6, UDP_PORT),
                    UDP_PAYLOAD,
                    Some(&receiver),
                )
            },
            1,
            |_| true,
        );
        out.push((format!("udp{ip}_forward"), m[0].clone()));
    }

    /// Every capture, named by file.
    pub fn all() -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        for v6 in [false, true] {
            two_hosts(v6, &mut out);
            forwarded(v6, &mut out);
        }
        out
    }
}

const A4: &str = "10.200.0.1";
const B4: &str = "10.200.0.2";
const A6: &str = "fd00:200::1";
const B6: &str = "fd00:200::2";
/// A and B of the router topology.
const RA4: &str = "10.200.1.2";
const RB4: &str = "10.200.2.2";
const RA6: &str = "fd00:201::2";
const RB6: &str = "fd00:202::2";
const MAC_A: [u8; 6] = [2, 0, 0, 0, 0, 0x0a];
const MAC_RA: [u8; 6] = [2, 0, 0, 0, 1, 0x0a];

/// What every capture must show. Interface indexes are those of fresh
/// namespaces: `lo` is 1, the first veth 2, a second one 3.
fn table() -> Vec<Expected> {
    use nfqueue_testkit::traffic::pattern;
    use setup::*;
    let udp = |length: usize, payload: Vec<u8>| Transport::Udp {
        dst_port: UDP_PORT,
        length: length as u16,
        payload,
    };
    let small_udp = || udp(8 + UDP_PAYLOAD.len(), UDP_PAYLOAD.to_vec());
    let mut out = Vec::new();
    for v6 in [false, true] {
        let ip_len = if v6 { 40 } else { 20 };
        let (a, b, ra, rb) = if v6 {
            (A6, B6, RA6, RB6)
        } else {
            (A4, B4, RA4, RB4)
        };
        let sent = Expected {
            file: String::new(),
            queue: capture::QUEUE,
            id: 1,
            hook: Hook::LocalOut,
            hw_protocol: if v6 { 0x86dd } else { 0x0800 },
            indev: None,
            outdev: Some(2),
            hw_addr: None,
            skb_info: SkbInfo::empty(),
            payload_len: ip_len + 8 + UDP_PAYLOAD.len(),
            original_len: ip_len + 8 + UDP_PAYLOAD.len(),
            src: a,
            dst: b,
            protocol: 17,
            header_len: ip_len,
            headers_complete: true,
            fragment: None,
            ports: (SRC_PORT, UDP_PORT),
            transport: small_udp(),
        };
        let received = Expected {
            hook: Hook::LocalIn,
            indev: Some(2),
            outdev: None,
            hw_addr: Some(MAC_A),
            ..sent.clone()
        };
        let name = |s: &str| s.replace('#', if v6 { "6" } else { "4" });
        out.push(Expected {
            file: name("udp#_output"),
            ..sent.clone()
        });
        out.push(Expected {
            file: name("udp#_input"),
            ..received.clone()
        });
        out.push(Expected {
            file: name("udp#_truncated"),
            payload_len: 64,
            original_len: ip_len + 8 + TRUNCATED_LEN,
            transport: udp(8 + TRUNCATED_LEN, pattern(64 - ip_len - 8)),
            ..sent.clone()
        });
        // SYN with MSS, SACK permitted, timestamps and window scale: 40 bytes.
        out.push(Expected {
            file: name("tcp#_syn"),
            payload_len: ip_len + 40,
            original_len: ip_len + 40,
            protocol: 6,
            ports: (SRC_PORT, TCP_PORT),
            transport: Transport::Tcp {
                flags: TcpFlags::SYN,
                payload: b"",
            },
            ..sent.clone()
        });
        // After the SYN (id 1) and the ACK of the handshake (id 2); timestamps: 32 bytes.
        out.push(Expected {
            file: name("tcp#_data"),
            id: 3,
            payload_len: ip_len + 32 + TCP_PAYLOAD.len(),
            original_len: ip_len + 32 + TCP_PAYLOAD.len(),
            protocol: 6,
            ports: (SRC_PORT, TCP_PORT),
            transport: Transport::Tcp {
                flags: TcpFlags::PSH | TcpFlags::ACK,
                payload: TCP_PAYLOAD,
            },
            ..sent.clone()
        });
        out.push(Expected {
            file: name("icmp#_echo"),
            payload_len: ip_len + 8 + ECHO_BODY.len(),
            original_len: ip_len + 8 + ECHO_BODY.len(),
            protocol: if v6 { 58 } else { 1 },
            ports: (ECHO_ID, ECHO_ID),
            transport: Transport::Echo { v6 },
            ..sent.clone()
        });
        if v6 {
            // Two 8-byte extension headers: hop-by-hop, destination options.
            out.push(Expected {
                file: "udp6_ext".into(),
                payload_len: 56 + 8 + UDP_PAYLOAD.len(),
                original_len: 56 + 8 + UDP_PAYLOAD.len(),
                header_len: 56,
                ..sent.clone()
            });
            // Cut 4 bytes into the hop-by-hop header: no transport, no ports.
            out.push(Expected {
                file: "udp6_ext_truncated".into(),
                payload_len: 44,
                original_len: 56 + 8 + UDP_PAYLOAD.len(),
                protocol: 0,
                header_len: 40,
                headers_complete: false,
                ports: (0, 0),
                transport: Transport::None,
                ..sent.clone()
            });
        }
        // Fragments of BIG_LEN + 8 bytes of UDP at an MTU of 1280, in 8-byte units.
        let per_fragment = (SMALL_MTU as usize - ip_len - if v6 { 8 } else { 0 }) / 8 * 8;
        let frag_header_len = ip_len + if v6 { 8 } else { 0 };
        let last_offset = (8 + BIG_LEN) / per_fragment * per_fragment;
        out.push(Expected {
            file: name("udp#_frag_first"),
            hook: Hook::PreRouting,
            payload_len: frag_header_len + per_fragment,
            original_len: frag_header_len + per_fragment,
            header_len: frag_header_len,
            fragment: Some((0, true)),
            // Made by the sender's fragmentation, fragments carry no checksum
            // state: B has not verified them. (Whole datagrams cross veth as
            // CHECKSUM_PARTIAL, which counts as verified.)
            skb_info: SkbInfo::CSUM_NOT_VERIFIED,
            transport: udp(8 + BIG_LEN, pattern(per_fragment - 8)),
            ..received.clone()
        });
        out.push(Expected {
            file: name("udp#_frag_last"),
            id: 3,
            hook: Hook::PreRouting,
            payload_len: frag_header_len + 8 + BIG_LEN - last_offset,
            original_len: frag_header_len + 8 + BIG_LEN - last_offset,
            header_len: frag_header_len,
            fragment: Some((last_offset as u16, false)),
            skb_info: SkbInfo::CSUM_NOT_VERIFIED,
            ports: (0, 0),
            transport: Transport::None,
            ..received.clone()
        });
        out.push(Expected {
            file: name("udp#_forward"),
            hook: Hook::Forward,
            indev: Some(2),
            outdev: Some(3),
            hw_addr: Some(MAC_RA),
            src: ra,
            dst: rb,
            ..sent.clone()
        });
    }
    out
}

/// Compares a message with what the table says, field by field.
#[track_caller]
fn check(e: &Expected, message: &[u8]) {
    let f = &e.file;
    let p = PacketView::from_message(message).unwrap_or_else(|err| panic!("{f}: {err}"));
    assert_eq!(p.queue(), e.queue, "{f}: queue");
    assert_eq!(p.id(), e.id, "{f}: id");
    assert_eq!(p.hook(), e.hook, "{f}: hook");
    assert_eq!(p.hw_protocol(), e.hw_protocol, "{f}: hw_protocol");
    assert_eq!(p.indev(), e.indev, "{f}: indev");
    assert_eq!(p.outdev(), e.outdev, "{f}: outdev");
    assert_eq!(
        (p.physindev(), p.physoutdev()),
        (None, None),
        "{f}: physdev"
    );
    assert_eq!(
        p.hw_addr(),
        e.hw_addr.as_ref().map(|m| &m[..]),
        "{f}: hw_addr"
    );
    assert_eq!(p.skb_info(), e.skb_info, "{f}: skb_info");
    assert_eq!(p.mark(), 0, "{f}: mark");
    assert_eq!(
        (p.uid(), p.gid(), p.vlan()),
        (None, None, None),
        "{f}: uid, gid, vlan"
    );
    assert_eq!(p.conntrack(), None, "{f}: no conntrack on this machine");
    assert_eq!(p.payload().len(), e.payload_len, "{f}: payload length");
    assert_eq!(p.original_len(), e.original_len, "{f}: original length");
    assert_eq!(
        p.is_truncated(),
        e.original_len > e.payload_len,
        "{f}: truncation"
    );
    assert!(p.attributes().all(|a| a.is_ok()), "{f}: attributes");
    // The same attributes parse alike on their own.
    let again = PacketView::parse(e.queue, p.attribute_bytes()).unwrap();
    assert_eq!(
        (again.id(), again.payload()),
        (p.id(), p.payload()),
        "{f}: parse"
    );

    let ip = net::parse(p.payload()).unwrap_or_else(|err| panic!("{f}: {err}"));
    let version = if e.hw_protocol == 0x86dd {
        IpVersion::V6
    } else {
        IpVersion::V4
    };
    assert_eq!(ip.version(), version, "{f}: version");
    assert_eq!(ip.src(), e.src.parse::<IpAddr>().unwrap(), "{f}: src");
    assert_eq!(ip.dst(), e.dst.parse::<IpAddr>().unwrap(), "{f}: dst");
    assert_eq!(ip.protocol(), e.protocol, "{f}: protocol");
    assert_eq!(ip.header_len(), e.header_len, "{f}: header length");
    assert_eq!(
        ip.total_len(),
        e.original_len,
        "{f}: the IP length is the packet's"
    );
    assert_eq!(ip.is_truncated(), p.is_truncated(), "{f}: IP truncation");
    assert_eq!(
        ip.headers_complete(),
        e.headers_complete,
        "{f}: headers complete"
    );
    assert_eq!(
        ip.fragment().map(|x| (x.offset, x.more)),
        e.fragment,
        "{f}: fragment"
    );
    assert_eq!(
        ip.is_first_fragment(),
        e.fragment.map_or(true, |(o, _)| o == 0),
        "{f}: first"
    );
    let flow = ip.flow();
    assert_eq!(
        (flow.src, flow.dst, flow.protocol),
        (ip.src(), ip.dst(), e.protocol),
        "{f}: flow"
    );
    assert_eq!((flow.src_port, flow.dst_port), e.ports, "{f}: flow ports");
    assert_eq!(
        flow.flow_hash(),
        flow.reversed().flow_hash(),
        "{f}: flow hash"
    );

    match (&e.transport, ip.transport()) {
        (
            Transport::Udp {
                dst_port,
                length,
                payload,
            },
            Some(TransportView::Udp(u)),
        ) => {
            assert_eq!(
                (u.src_port(), u.dst_port()),
                (setup::SRC_PORT, *dst_port),
                "{f}: ports"
            );
            assert_eq!(u.length(), *length, "{f}: UDP length");
            assert_eq!(u.payload(), &payload[..], "{f}: UDP payload");
        }
        (Transport::Tcp { flags, payload }, Some(TransportView::Tcp(t))) => {
            assert_eq!(
                (t.src_port(), t.dst_port()),
                (setup::SRC_PORT, setup::TCP_PORT),
                "{f}"
            );
            assert_eq!(t.flags(), *flags, "{f}: TCP flags");
            assert_eq!(t.payload(), *payload, "{f}: TCP payload");
        }
        (Transport::Echo { v6 }, Some(TransportView::Icmpv4(i) | TransportView::Icmpv6(i))) => {
            assert_eq!(i.is_v6(), *v6, "{f}");
            assert_eq!(
                (i.icmp_type(), i.code()),
                (if *v6 { 128 } else { 8 }, 0),
                "{f}: type"
            );
            assert!(i.is_echo(), "{f}");
            assert_eq!(
                (i.echo_id(), i.echo_seq()),
                (setup::ECHO_ID, setup::ECHO_SEQ),
                "{f}"
            );
            assert_eq!(i.payload(), setup::ECHO_BODY, "{f}: echo body");
        }
        (Transport::None, None) => {}
        (want, got) => panic!("{f}: expected {want:?}, got {got:?}"),
    }

    // Without GSO the kernel completes a pending checksum before copying: what
    // user space sees is what goes on the wire.
    let sums = mangle::verify_checksums(p.payload()).unwrap();
    if version == IpVersion::V4 {
        assert_eq!(
            sums.ip_header,
            ChecksumState::Valid,
            "{f}: IPv4 header checksum"
        );
    }
    let whole = !p.is_truncated() && e.fragment.is_none();
    let transport = if whole {
        ChecksumState::Valid
    } else {
        ChecksumState::Unchecked
    };
    assert_eq!(sums.transport, transport, "{f}: transport checksum");
}

fn data_path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(DATA_DIR).join(format!("{name}.bin"))
}

fn read_capture(name: &str) -> Vec<u8> {
    let path = data_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn captured_messages_parse_to_the_expected_values() {
    for e in table() {
        check(&e, &read_capture(&e.file));
    }
}

#[test]
fn every_capture_is_in_the_table() {
    let mut files: Vec<String> = std::fs::read_dir(DATA_DIR)
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .filter_map(|n| n.strip_suffix(".bin").map(str::to_owned))
        .collect();
    files.sort();
    let mut names: Vec<String> = table().iter().map(|e| e.file.clone()).collect();
    names.sort();
    assert_eq!(files, names);
}

/// How much of [`exercise`] to run.
#[derive(Debug, Clone, Copy)]
struct Scope<'a> {
    /// A payload already exercised: skip it when it comes again.
    known: Option<&'a [u8]>,
    /// Try the mangling helpers too.
    edits: bool,
}

const EVERYTHING: Scope<'static> = Scope {
    known: None,
    edits: true,
};

/// Calls every getter of the packet views on `message`, and every mangling helper
/// on a copy of its payload: none may panic, and a helper that succeeds must
/// leave right checksums.
fn exercise(message: &[u8], scope: Scope<'_>) {
    match PacketView::from_message(message) {
        Ok(p) => exercise_view(&p, scope),
        // The attributes may still parse on their own.
        Err(_) => {
            if let Ok(p) = PacketView::parse(3, message.get(20..).unwrap_or_default()) {
                exercise_view(&p, scope);
            }
        }
    }
}

fn exercise_view(p: &PacketView<'_>, scope: Scope<'_>) {
    let _ = format!("{p:?}");
    let _ = (p.id(), p.hook(), p.hw_protocol(), p.mark(), p.timestamp());
    let _ = (
        p.indev(),
        p.outdev(),
        p.physindev(),
        p.physoutdev(),
        p.hw_addr(),
    );
    let _ = (
        p.original_len(),
        p.is_truncated(),
        p.uid(),
        p.gid(),
        p.secctx(),
    );
    let _ = (p.skb_info(), p.vlan(), p.l2_header(), p.priority());
    let _ = (p.conntrack(), p.conntrack_info(), p.conntrack_expectation());
    // An attribute the kernel does not send, found by walking them all.
    let _ = p.attribute(0x7ff);
    for a in p.attributes().take(1000) {
        let _ = a.map(|a| (a.kind, a.value.len()));
    }
    if scope.known != Some(p.payload()) {
        exercise_ip(p.payload(), scope.edits);
    }
}

fn exercise_ip(bytes: &[u8], edits: bool) {
    if let Ok(v) = net::parse(bytes) {
        let _ = (v.version(), v.src(), v.dst(), v.protocol(), v.hop_limit());
        let _ = (
            v.total_len(),
            v.header_len(),
            v.fragment(),
            v.is_first_fragment(),
        );
        let _ = (
            v.is_truncated(),
            v.headers_complete(),
            v.ip_payload().len(),
            v.payload(),
        );
        let flow = v.flow();
        let _ = (
            flow.flow_hash(),
            flow.canonical(),
            flow.hash_by(net::FlowKey::Addresses),
        );
        if let Some(t) = v.transport() {
            let _ = (
                t.protocol(),
                t.src_port(),
                t.dst_port(),
                t.header_len(),
                t.payload().len(),
            );
            match t {
                TransportView::Tcp(t) => {
                    let _ = (t.seq(), t.ack(), t.flags(), t.window(), t.checksum());
                    let _ = (t.urgent_ptr(), t.options().len(), t.bytes().len());
                }
                TransportView::Udp(u) => {
                    let _ = (u.length(), u.checksum(), u.bytes().len());
                }
                TransportView::Icmpv4(i) | TransportView::Icmpv6(i) => {
                    let _ = (i.icmp_type(), i.code(), i.checksum(), i.rest_of_header());
                    let _ = (i.is_echo(), i.echo_id(), i.echo_seq(), i.bytes().len());
                }
                _ => {}
            }
        }
    }
    let _ = mangle::verify_checksums(bytes);
    if !edits {
        return;
    }
    let v6 = bytes.first().is_some_and(|b| b >> 4 == 6);
    let other: IpAddr = if v6 {
        "fd00::9".parse().unwrap()
    } else {
        "192.0.2.9".parse().unwrap()
    };
    type Edit = fn(&mut Vec<u8>, IpAddr) -> bool;
    let edits: [(&str, Edit); 7] = [
        ("fix_checksums", |p, _| mangle::fix_checksums(p).is_ok()),
        ("set_l4_payload", |p, _| {
            mangle::set_l4_payload(p, b"abc").is_ok()
        }),
        ("set_dst_addr", |p, a| mangle::set_dst_addr(p, a).is_ok()),
        ("set_src_addr", |p, a| mangle::set_src_addr(p, a).is_ok()),
        ("set_dst_port", |p, _| mangle::set_dst_port(p, 7).is_ok()),
        ("set_src_port", |p, _| mangle::set_src_port(p, 8).is_ok()),
        ("set_hop_limit", |p, _| mangle::set_hop_limit(p, 9).is_ok()),
    ];
    let before = mangle::verify_checksums(bytes).ok();
    for (name, edit) in edits {
        let mut copy = bytes.to_vec();
        if !edit(&mut copy, other) {
            assert_eq!(copy, bytes, "{name} failed but changed the packet");
            continue;
        }
        let after = mangle::verify_checksums(&copy).unwrap();
        // The port helpers leave the IPv4 header alone, checksum and all; every
        // other helper recomputes it.
        let ip_header_ok = match name {
            "set_dst_port" | "set_src_port" => Some(after.ip_header) == before.map(|b| b.ip_header),
            _ => !matches!(after.ip_header, ChecksumState::Invalid { .. }),
        };
        let fixed_transport = !matches!(name, "set_hop_limit");
        assert!(
            ip_header_ok
                && (!fixed_transport || !matches!(after.transport, ChecksumState::Invalid { .. })),
            "{name} left bad checksums {after:?} in {copy:02x?} (from {bytes:02x?})"
        );
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn captures() -> Vec<(String, Vec<u8>)> {
    table()
        .into_iter()
        .map(|e| {
            let message = read_capture(&e.file);
            (e.file, message)
        })
        .collect()
}

#[test]
fn every_prefix_parses_or_fails_without_panicking() {
    for (name, m) in captures() {
        for end in 0..m.len() {
            exercise(&m[..end], EVERYTHING);
            if end < m.len() {
                assert!(
                    PacketView::from_message(&m[..end]).is_err(),
                    "{name}: prefix {end} accepted"
                );
            }
        }
        exercise(&m, EVERYTHING);
    }
}

#[test]
fn every_single_byte_mutation_parses_or_fails_without_panicking() {
    let captures = captures();
    // Runs of 64 positions, shared out over threads: this is the slowest test here.
    let jobs: Vec<(usize, usize)> = captures
        .iter()
        .enumerate()
        .flat_map(|(i, (_, m))| (0..m.len()).step_by(64).map(move |at| (i, at)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while let Some(&(i, start)) = jobs.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let m = &captures[i].1;
                    let payload = PacketView::from_message(m).unwrap().payload();
                    // The headers: netlink, attributes, and the first bytes of the
                    // packet. Mutations past them are parsed, not mangled: they
                    // only change data that checksums cover.
                    let headers_end = m.len() - payload.len() + payload.len().min(128);
                    let mut copy = m.clone();
                    for at in start..m.len().min(start + 64) {
                        let scope = Scope {
                            known: Some(payload),
                            edits: at < headers_end,
                        };
                        for value in 0..=255u8 {
                            copy[at] = value;
                            exercise(&copy, scope);
                        }
                        copy[at] = m[at];
                    }
                }
            });
        }
    });
}

#[test]
fn random_bytes_parse_or_fail_without_panicking() {
    let mut rng = Rng(0x6e66_7175_6575_6531);
    let captures = captures();
    for _ in 0..20_000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        exercise(&bytes, EVERYTHING);
        exercise_ip(&bytes, true);
        // Random bytes after a real start get further into the parsers.
        let (_, m) = &captures[rng.below(captures.len())];
        let keep = rng.below(m.len());
        let mut mixed = m[..keep].to_vec();
        mixed.extend((0..rng.below(300)).map(|_| rng.next() as u8));
        exercise(&mixed, EVERYTHING);
        // And a few random bytes sprinkled over a real message.
        let mut sprinkled = m.clone();
        for _ in 0..1 + rng.below(8) {
            let at = rng.below(sprinkled.len());
            sprinkled[at] = rng.next() as u8;
        }
        exercise(&sprinkled, EVERYTHING);
    }
}

/// Where the fragments of a datagram larger than the MTU are seen on their way
/// from A to B: the sender fragments after POSTROUTING; IPv4 reassembles before
/// INPUT, IPv6 only after it (in its fragment header handler), so B's INPUT sees
/// IPv6 fragments but whole IPv4 datagrams. (Without conntrack, which would
/// reassemble both before PREROUTING.)
#[test]
fn where_fragments_are_visible() {
    use nfqueue_testkit::TwoHosts;
    for v6 in [false, true] {
        let h = TwoHosts::new();
        let seen = |ns, table, chain| {
            let m = capture::fragments_at(&h, v6, ns, table, chain, 1);
            let p = PacketView::from_message(&m[0]).unwrap();
            let ip = net::parse(p.payload()).unwrap();
            (ip.fragment().map(|f| (f.offset, f.more)), p.payload().len())
        };
        let whole = (None, if v6 { 40 } else { 20 } + 8 + setup::BIG_LEN);
        let first = Some((0, true));
        assert_eq!(
            seen(&h.a.ns, "mangle", "POSTROUTING"),
            whole,
            "A POSTROUTING, v6 {v6}"
        );
        assert_eq!(
            seen(&h.b.ns, "mangle", "PREROUTING").0,
            first,
            "B PREROUTING, v6 {v6}"
        );
        let input = seen(&h.b.ns, "filter", "INPUT");
        if v6 {
            assert_eq!(input.0, first, "B INPUT sees IPv6 fragments");
        } else {
            assert_eq!(input, whole, "B INPUT sees reassembled IPv4");
        }
        // (Each capture ends with its queue drained, checked in its namespace.)
    }
}

#[test]
#[ignore = "captures from the kernel; NFQ_WRITE_GOLDEN=1 writes tests/data"]
fn regenerate_captures() {
    let table = table();
    let captured = capture::all();
    let mut names: Vec<&str> = captured.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    let mut expected: Vec<&str> = table.iter().map(|e| e.file.as_str()).collect();
    expected.sort();
    assert_eq!(
        names, expected,
        "the captures and the table name the same files"
    );
    for (name, message) in &captured {
        let e = table.iter().find(|e| e.file == *name).unwrap();
        check(e, message);
    }
    if std::env::var_os("NFQ_WRITE_GOLDEN").is_some() {
        std::fs::create_dir_all(DATA_DIR).unwrap();
        for (name, message) in &captured {
            std::fs::write(data_path(name), message).unwrap();
        }
    }
}
