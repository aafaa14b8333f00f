//! Captures real NFQUEUE messages from the kernel and writes them as seeds of the
//! fuzz corpora:
//!
//! - `corpus/message/seed-*`: whole netlink datagrams as received (one packet
//!   message each), read straight from the queue socket;
//! - `corpus/net_parse/seed-*`: their payloads (IP packets);
//! - `corpus/mangle/seed-*`: the payloads behind a prefix of edits (see
//!   `fuzz_targets/mangle.rs` for the format).
//!
//! Run as root (or in `unshare --user --map-root-user --net`), from `fuzz/`:
//! `cargo run -p nfqueue-fuzz-capture -- corpus`. Each scenario runs in a
//! throwaway network namespace.

use nfqueue_core::{CopyMode, PacketView, Queue, QueueConfig, QueueFlags, Verdict};
use nfqueue_testkit::{ip6tables, iptables, Netns, TwoHosts};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const UDP_PORT: u16 = 9;
const TCP_PORT: u16 = 10;

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    let mut seeds = Vec::new();

    seeds.extend(Netns::new().run(loopback));
    seeds.extend(Netns::new().run(|| copy_modes(1, CopyMode::Packet(48), "range48")));
    seeds.extend(Netns::new().run(|| copy_modes(2, CopyMode::Meta, "meta")));
    let hosts = TwoHosts::new();
    seeds.extend(arriving(&hosts));

    for dir in ["message", "net_parse", "mangle"] {
        std::fs::create_dir_all(out.join(dir)).expect("creating the corpus directories");
    }
    for (name, message) in &seeds {
        write(&out, "message", name, message);
        let view = PacketView::from_message(message).expect("a captured packet message");
        if !view.payload().is_empty() {
            write(&out, "net_parse", name, view.payload());
            // One edit (set the transport payload to 4 bytes "seed") before the packet.
            let mut mangle = vec![1, 5, 4];
            mangle.extend_from_slice(b"seed");
            mangle.resize(1 + 17, 0);
            mangle.extend_from_slice(view.payload());
            write(&out, "mangle", name, &mangle);
        }
    }
    println!("{} messages captured into {}", seeds.len(), out.display());
}

fn write(out: &Path, dir: &str, name: &str, bytes: &[u8]) {
    let path = out.join(dir).join(format!("seed-{name}"));
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Reads `n` datagrams from the queue socket as they are, accepting each packet.
fn take(queue: &Queue, n: usize) -> Vec<Vec<u8>> {
    let handle = queue.verdict_handle();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 70_000];
    while got.len() < n && Instant::now() < deadline {
        let mut pfd = libc::pollfd {
            fd: queue.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd for the duration of the call.
        if unsafe { libc::poll(&mut pfd, 1, 200) } <= 0 {
            continue;
        }
        // SAFETY: the buffer is valid for writes of its length.
        let len = unsafe { libc::recv(pfd.fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
        let Ok(len) = usize::try_from(len) else {
            continue;
        };
        let message = buf[..len].to_vec();
        if let Ok(view) = PacketView::from_message(&message) {
            handle
                .verdict(view.queue(), view.id(), &Verdict::accept())
                .expect("accepting a captured packet");
            got.push(message);
        }
    }
    assert_eq!(got.len(), n, "captured fewer packets than expected");
    got
}

fn queue_rule(tool: fn(&[&str]) -> String, chain: &str, proto: &[&str], queue: u16) {
    let num = queue.to_string();
    let mut args = vec!["-A", chain];
    args.extend_from_slice(proto);
    args.extend_from_slice(&["-j", "NFQUEUE", "--queue-num", &num]);
    tool(&args);
}

fn v4(args: &[&str]) -> String {
    iptables(args)
}

fn v6(args: &[&str]) -> String {
    ip6tables(args)
}

/// UDP, TCP and ICMP over IPv4 and IPv6 on loopback, with uid, gid
/// and a mark.
fn loopback() -> Vec<(String, Vec<u8>)> {
    let udp = UDP_PORT.to_string();
    let tcp = TCP_PORT.to_string();
    for tool in [v4 as fn(&[&str]) -> String, v6] {
        queue_rule(tool, "OUTPUT", &["-p", "udp", "--dport", &udp], 0);
        queue_rule(tool, "OUTPUT", &["-p", "tcp", "--dport", &tcp, "--syn"], 0);
    }
    queue_rule(
        v4,
        "OUTPUT",
        &["-p", "icmp", "--icmp-type", "echo-request"],
        0,
    );
    queue_rule(
        v6,
        "OUTPUT",
        &["-p", "ipv6-icmp", "--icmpv6-type", "echo-request"],
        0,
    );
    let mut queue = Queue::open().unwrap();
    let flags = QueueFlags::UID_GID;
    queue.bind(0, &QueueConfig::default().flags(flags)).unwrap();

    let mut seeds = Vec::new();
    for (name, ip) in [
        ("udp4", Ipv4Addr::LOCALHOST.into()),
        ("udp6", Ipv6Addr::LOCALHOST.into()),
    ] {
        let to = SocketAddr::new(ip, UDP_PORT);
        let receiver = UdpSocket::bind(to).unwrap();
        let sender = UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap();
        let mark: u32 = 0x2a;
        // SAFETY: SO_MARK reads one int from a valid pointer.
        unsafe {
            libc::setsockopt(
                sender.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_MARK,
                (&raw const mark).cast(),
                4,
            );
        }
        sender.send_to(b"hello, queue", to).unwrap();
        seeds.push((name.to_string(), take(&queue, 1).remove(0)));
        drop(receiver);
    }
    for (name, ip) in [
        ("tcp4-syn", Ipv4Addr::LOCALHOST.into()),
        ("tcp6-syn", Ipv6Addr::LOCALHOST.into()),
    ] {
        let to = SocketAddr::new(ip, TCP_PORT);
        let listener = TcpListener::bind(to).unwrap();
        let client = std::thread::spawn(move || {
            let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
            conn.write_all(b"data").unwrap();
        });
        seeds.push((name.to_string(), take(&queue, 1).remove(0)));
        client.join().unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        let mut data = [0u8; 4];
        conn.read_exact(&mut data).unwrap();
    }
    for (name, flag, addr) in [
        ("icmp4-echo", "-4", "127.0.0.1"),
        ("icmp6-echo", "-6", "::1"),
    ] {
        let mut ping = Command::new("ping")
            .args([flag, "-c", "1", "-W", "2", "-s", "24", addr])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("ping (iputils-ping)");
        seeds.push((name.to_string(), take(&queue, 1).remove(0)));
        ping.wait().unwrap();
    }
    seeds
}

/// A 600-byte datagram with a short copy range (`NFQA_CAP_LEN`, truncated
/// payload) or none at all (meta copy mode).
fn copy_modes(num: u16, mode: CopyMode, name: &str) -> Vec<(String, Vec<u8>)> {
    let udp = UDP_PORT.to_string();
    queue_rule(v4, "OUTPUT", &["-p", "udp", "--dport", &udp], num);
    let mut queue = Queue::open().unwrap();
    queue
        .bind(num, &QueueConfig::default().copy_mode(mode))
        .unwrap();
    let to = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), UDP_PORT);
    let _receiver = UdpSocket::bind(to).unwrap();
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sender.send_to(&[0x5a; 600], to).unwrap();
    vec![(format!("udp4-{name}"), take(&queue, 1).remove(0))]
}

/// Datagrams arriving over a veth pair: input interface and hardware address.
fn arriving(hosts: &TwoHosts) -> Vec<(String, Vec<u8>)> {
    let udp = UDP_PORT.to_string();
    hosts.b.ns.run(|| {
        queue_rule(v4, "INPUT", &["-p", "udp", "--dport", &udp], 3);
        queue_rule(v6, "INPUT", &["-p", "udp", "--dport", &udp], 3);
    });
    let mut queue = hosts.b.ns.run(|| {
        let mut queue = Queue::open().unwrap();
        queue.bind(3, &QueueConfig::default()).unwrap();
        queue
    });
    let mut seeds = Vec::new();
    for (name, to) in [
        ("udp4-veth-in", hosts.b.iface.v4(UDP_PORT)),
        ("udp6-veth-in", hosts.b.iface.v6(UDP_PORT)),
    ] {
        let receiver = hosts.b.ns.run(|| UdpSocket::bind(to).unwrap());
        hosts.a.ns.run(|| {
            let from = SocketAddr::new(
                if to.is_ipv4() {
                    hosts.a.iface.ipv4.into()
                } else {
                    hosts.a.iface.ipv6.into()
                },
                0,
            );
            let sender = UdpSocket::bind(from).unwrap();
            sender.send_to(b"over the wire", to).unwrap();
        });
        seeds.push((name.to_string(), take(&queue, 1).remove(0)));
        drop(receiver);
    }
    let _ = &mut queue;
    seeds
}
