//! What the kernel tells about a queued packet, checked against what the test
//! knows: hooks, interfaces, link-layer addresses, timestamps, owners, lengths,
//! GSO and copy modes.

mod common;

use common::*;
use nfqueue_core::{CopyMode, Hook, Queue, QueueConfig, QueueFlags, SkbInfo, StopHandle};
use nfqueue_testkit::{counters, iptables, traffic, Router, TwoHosts};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

fn output_on_loopback(v6: bool) {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(v6, 1);
    let mut queue = bound_queue(1);
    udp.sender.send_to(b"local out", udp.dest()).unwrap();
    let packet = next_packet(&mut queue);
    assert_eq!(packet.hook(), Hook::LocalOut);
    assert_eq!(packet.hw_protocol(), if v6 { 0x86dd } else { 0x0800 });
    assert_eq!(packet.outdev(), Some(1), "lo is interface 1");
    assert_eq!(packet.outdev_name().unwrap().as_str(), "lo");
    assert_eq!(
        packet.indev(),
        None,
        "a locally sent packet has no input device"
    );
    assert_eq!(packet.indev_name(), None);
    assert_eq!(
        packet.hw_addr(),
        None,
        "no link-layer source before it is sent"
    );
    packet.accept().unwrap();
    assert_eq!(queue.interface_name(1).unwrap().as_str(), "lo");
    assert_eq!(recv_datagram(&udp.receiver), b"local out");
    counters::assert_queue_drained(1);
}

#[test]
fn output_on_loopback_v4() {
    output_on_loopback(false);
}

#[test]
fn output_on_loopback_v6() {
    output_on_loopback(true);
}

/// Asks for receive timestamps on `sock` (`SO_TIMESTAMP`).
fn want_timestamps(sock: &UdpSocket) {
    let on: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMP,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_TIMESTAMP: {}", std::io::Error::last_os_error());
}

/// `t` cut to whole microseconds, the kernel's resolution for queued packets.
fn to_micros(t: SystemTime) -> SystemTime {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap();
    SystemTime::UNIX_EPOCH + Duration::from_micros(since.as_micros() as u64)
}

/// A queue socket in namespace `ns` with `num` bound, and an iptables rule in
/// `chain` of that namespace sending UDP to `port` there.
fn queue_in(ns: &nfqueue_testkit::Netns, v6: bool, chain: &str, port: u16, num: u16) -> Queue {
    let mut queue = ns.run(Queue::open).expect("opening a queue socket");
    queue.bind(num, &QueueConfig::default()).unwrap();
    ns.run(|| nfqueue_testkit::rules::queue_udp(v6, chain, port, num));
    queue
}

fn forward_and_input_on_veth(v6: bool) {
    let net = Router::new();
    let ip = |iface: &nfqueue_testkit::Iface| -> IpAddr {
        if v6 {
            iface.ipv6.into()
        } else {
            iface.ipv4.into()
        }
    };
    let receiver = net.b.ns.run(|| traffic::udp_receiver(ip(&net.b.iface)));
    // Arriving packets are stamped only while some socket on the host wants
    // receive timestamps (a global switch, turned on by SO_TIMESTAMP and friends).
    want_timestamps(&receiver);
    let dest = receiver.local_addr().unwrap();
    let sender = net.a.ns.run(|| traffic::udp_sender(ip(&net.a.iface)));
    let mut forward = queue_in(&net.r, v6, "FORWARD", dest.port(), 1);
    let mut input = queue_in(&net.b.ns, v6, "INPUT", dest.port(), 2);

    // The switch is flipped by a deferred kernel work item: the first packets
    // after SO_TIMESTAMP may still go unstamped. Wait (bounded) for a stamped one.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut warmups = 0;
    loop {
        sender.send_to(b"warm-up", dest).unwrap();
        let warm = next_packet(&mut forward);
        let stamped = warm.timestamp().is_some();
        warm.accept().unwrap();
        let warm = next_packet(&mut input);
        assert!(warm.timestamp().is_some() || !stamped);
        warm.accept().unwrap();
        assert_eq!(recv_datagram(&receiver), b"warm-up");
        warmups += 1;
        if stamped {
            break;
        }
        assert!(
            Instant::now() < deadline && warmups < 100,
            "no queued packet was timestamped after {warmups} tries"
        );
        thread::sleep(Duration::from_millis(20));
    }

    let message = traffic::pattern(1000);
    let before = to_micros(SystemTime::now());
    sender.send_to(&message, dest).unwrap();

    let packet = next_packet(&mut forward);
    assert_eq!(packet.hook(), Hook::Forward);
    assert_eq!(packet.hw_protocol(), if v6 { 0x86dd } else { 0x0800 });
    assert_eq!(packet.indev(), Some(net.r_a.ifindex));
    assert_eq!(packet.outdev(), Some(net.r_b.ifindex));
    assert_eq!(packet.indev_name().unwrap().as_str(), "veth-ra");
    assert_eq!(packet.outdev_name().unwrap().as_str(), "veth-rb");
    assert_eq!(packet.hw_addr(), Some(&net.a.iface.mac[..]), "A's MAC");
    let forwarded_at = packet.timestamp().expect("a timestamp in FORWARD");
    assert_eq!(udp_data(packet.payload()), &message[..]);
    packet.accept().unwrap();

    let packet = next_packet(&mut input);
    assert_eq!(packet.hook(), Hook::LocalIn);
    assert_eq!(packet.indev(), Some(net.b.iface.ifindex));
    assert_eq!(packet.indev_name().unwrap().as_str(), "veth-b");
    assert_eq!(
        packet.outdev(),
        None,
        "a packet for this host goes out nowhere"
    );
    assert_eq!(
        packet.hw_addr(),
        Some(&net.r_b.mac[..]),
        "R's MAC towards B"
    );
    let arrived_at = packet.timestamp().expect("a timestamp in INPUT");
    packet.accept().unwrap();

    assert_eq!(recv_datagram(&receiver), message, "the bytes arrive intact");
    let after = SystemTime::now();
    for (hook, at) in [("FORWARD", forwarded_at), ("INPUT", arrived_at)] {
        assert!(
            before <= at && at <= after,
            "{hook} timestamp {at:?} is not within [{before:?}, {after:?}]"
        );
    }
    assert!(
        forwarded_at <= arrived_at,
        "B received it after R forwarded it"
    );
    net.r.run(|| counters::assert_queue_drained(1));
    net.b.ns.run(|| counters::assert_queue_drained(2));
}

#[test]
fn forward_and_input_on_veth_v4() {
    forward_and_input_on_veth(false);
}

#[test]
fn forward_and_input_on_veth_v6() {
    forward_and_input_on_veth(true);
}

/// The uid (or gid) that `id` of this process's user namespace is in the
/// initial one, from `/proc/self/uid_map` (or `gid_map`).
fn global_id(map: &str, id: u32) -> u32 {
    let path = format!("/proc/self/{map}");
    let text = std::fs::read_to_string(&path).unwrap();
    for line in text.lines() {
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect();
        let (inside, outside, count) = (f[0], f[1], f[2]);
        let id = u64::from(id);
        if inside <= id && id < inside + count {
            return (outside + id - inside) as u32;
        }
    }
    panic!("{id} is not mapped in {path}: {text}");
}

/// True when this process runs in the initial user namespace (as real root, in
/// these tests).
fn in_initial_user_ns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        == ["0", "0", "4294967295"]
}

/// `setfsuid`/`setfsgid` as raw system calls: per thread, unlike glibc's
/// `setuid` family, which changes every thread of the process. Returns the
/// previous value; an invalid `id` (such as `u32::MAX`) changes nothing.
fn set_fs_id(call: libc::c_long, id: u32) -> u32 {
    // SAFETY: setfsuid/setfsgid take one integer and touch only this thread's
    // credentials.
    unsafe { libc::syscall(call, id) as u32 }
}

/// A UDP socket whose file credentials are `uid`/`gid`: made on a thread that
/// sets its filesystem uid and gid for the call (the kernel reports the opener's
/// fsuid/fsgid), and restores them before it ends.
fn socket_owned_by(ip: IpAddr, uid: u32, gid: u32) -> UdpSocket {
    thread::scope(|s| {
        s.spawn(|| {
            let old_gid = set_fs_id(libc::SYS_setfsgid, gid);
            let old_uid = set_fs_id(libc::SYS_setfsuid, uid);
            assert_eq!(set_fs_id(libc::SYS_setfsuid, u32::MAX), uid, "setfsuid");
            assert_eq!(set_fs_id(libc::SYS_setfsgid, u32::MAX), gid, "setfsgid");
            let sock = traffic::udp_sender(ip);
            set_fs_id(libc::SYS_setfsuid, old_uid);
            set_fs_id(libc::SYS_setfsgid, old_gid);
            sock
        })
        .join()
        .unwrap()
    })
}

#[test]
fn uid_and_gid_of_the_sending_socket() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 3);
    let mut queue = bound_queue_with(3, &QueueConfig::default().flags(QueueFlags::UID_GID));

    // The kernel reports the sending socket's file credentials
    // (from_kuid_munged(&init_user_ns, file->f_cred->fsuid)): ids as the initial
    // user namespace sees them, whatever namespace the test runs in.
    // SAFETY: plain getters.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let expected = (global_id("uid_map", uid), global_id("gid_map", gid));
    udp.sender.send_to(b"mine", udp.dest()).unwrap();
    let packet = next_packet(&mut queue);
    assert_eq!(
        (packet.uid(), packet.gid()),
        (Some(expected.0), Some(expected.1))
    );
    packet.accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"mine");

    if in_initial_user_ns() {
        // As real root: a socket opened with other file credentials reports those,
        // not the credentials of the thread that sends on it.
        let nobody = socket_owned_by(loopback(false), 65534, 65534);
        nobody.send_to(b"nobody's", udp.dest()).unwrap();
        let packet = next_packet(&mut queue);
        assert_eq!((packet.uid(), packet.gid()), (Some(65534), Some(65534)));
        packet.accept().unwrap();
        assert_eq!(recv_datagram(&udp.receiver), b"nobody's");
    }

    // Without the flag the kernel attaches neither.
    queue.configure(3, &QueueConfig::default()).unwrap();
    udp.sender.send_to(b"anonymous", udp.dest()).unwrap();
    let packet = next_packet(&mut queue);
    assert_eq!((packet.uid(), packet.gid()), (None, None));
    packet.accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"anonymous");
    counters::assert_queue_drained(3);
}

fn a_big_datagram_arrives_whole(v6: bool) {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(v6, 4);
    let mut queue = bound_queue(4);
    let message = traffic::pattern(60_000);
    udp.sender.send_to(&message, udp.dest()).unwrap();
    let packet = next_packet(&mut queue);
    let ip_header = if v6 { 40 } else { 20 };
    assert_eq!(packet.payload().len(), ip_header + 8 + 60_000);
    assert_eq!(packet.original_len(), packet.payload().len());
    assert!(!packet.is_truncated());
    assert_eq!(udp_data(packet.payload()), &message[..]);
    packet.accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver), message);
    counters::assert_queue_drained(4);
}

#[test]
fn a_60000_byte_datagram_arrives_whole_v4() {
    a_big_datagram_arrives_whole(false);
}

#[test]
fn a_60000_byte_datagram_arrives_whole_v6() {
    a_big_datagram_arrives_whole(true);
}

/// What a consumer saw of one queued packet.
struct Seen {
    len: usize,
    original_len: usize,
    skb_info: SkbInfo,
}

/// Sends `len` bytes over TCP from A to a sink in B while a consumer thread
/// accepts every packet of A's OUTPUT queue `num`; returns what it saw.
fn tcp_through_output_queue(flags: QueueFlags, num: u16, len: usize) -> Vec<Seen> {
    let net = TwoHosts::new();
    net.a.ns.enter();
    iptables([
        "-A",
        "OUTPUT",
        "-p",
        "tcp",
        "-d",
        &net.b.iface.ipv4.to_string(),
        "-j",
        "NFQUEUE",
        "--queue-num",
        &num.to_string(),
    ]);
    let queue = bound_queue_with(num, &QueueConfig::default().flags(flags));
    let stop: StopHandle = queue.stop_handle();
    let (tx, rx) = mpsc::channel();
    let consumer = thread::spawn(move || {
        let mut queue = queue;
        let mut seen = Vec::new();
        let result = queue.run(|packet| {
            seen.push(Seen {
                len: packet.payload().len(),
                original_len: packet.original_len(),
                skb_info: packet.skb_info(),
            });
            packet.accept().unwrap();
        });
        let _ = tx.send(());
        result.map(|()| seen)
    });

    let sink = net
        .b
        .ns
        .run(|| traffic::TcpSink::bind(net.b.iface.ipv4.into(), len));
    let data = traffic::pattern(len);
    let sent = traffic::tcp_send(sink.addr(), &data);
    let got = sink.finish();
    stop.stop();
    rx.recv_timeout(Duration::from_secs(10))
        .expect("the consumer did not stop");
    let seen = consumer.join().unwrap().expect("the consumer failed");
    sent.expect("sending over TCP");
    let got = got.expect("receiving over TCP");
    assert!(
        got == data,
        "{} of {len} bytes arrived, or changed",
        got.len()
    );
    counters::assert_queue_drained(num);
    seen
}

const TRANSFER: usize = 2 << 20;

#[test]
fn gso_delivers_super_packets_whole() {
    let seen = tcp_through_output_queue(QueueFlags::GSO, 5, TRANSFER);
    let largest = seen.iter().map(|s| s.len).max().unwrap();
    let big: Vec<&Seen> = seen.iter().filter(|s| s.len > 1500).collect();
    assert!(
        !big.is_empty(),
        "no payload over the 1500-byte MTU among {} packets (largest {largest})",
        seen.len()
    );
    for s in &big {
        assert!(s.skb_info.contains(SkbInfo::GSO), "{:?}", s.skb_info);
        assert_eq!(
            s.original_len, s.len,
            "the copy range covers a super-packet"
        );
    }
}

#[test]
fn without_gso_every_packet_fits_the_mtu() {
    let seen = tcp_through_output_queue(QueueFlags::empty(), 6, TRANSFER);
    assert!(seen.len() > TRANSFER / 1500, "{} packets", seen.len());
    for s in &seen {
        assert!(s.len <= 1500, "a {}-byte packet", s.len);
        assert!(!s.skb_info.contains(SkbInfo::GSO), "{:?}", s.skb_info);
    }
}

#[test]
fn copy_modes_cut_what_user_space_sees_but_not_the_packet() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 7);
    let dest: SocketAddr = udp.dest();
    let message = traffic::pattern(1000);

    let mut queue = bound_queue_with(7, &QueueConfig::default().copy_mode(CopyMode::Packet(100)));
    let line = queue.kernel_stats(7).unwrap().expect("queue 7 is bound");
    assert_eq!(
        (line.copy_mode, line.copy_range, line.portid),
        (2, 100, queue.portid())
    );
    udp.sender.send_to(&message, dest).unwrap();
    let packet = next_packet(&mut queue);
    assert_eq!(packet.payload().len(), 100);
    assert_eq!(packet.original_len(), 20 + 8 + 1000);
    assert!(packet.is_truncated());
    assert_eq!(udp_data(packet.payload()), &message[..100 - 28]);
    packet.accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver), message);

    queue
        .configure(7, &QueueConfig::default().copy_mode(CopyMode::Meta))
        .unwrap();
    let line = queue.kernel_stats(7).unwrap().expect("queue 7 is bound");
    assert_eq!(
        (line.copy_mode, line.copy_range, line.portid),
        (1, 0, queue.portid())
    );
    udp.sender.send_to(&message, dest).unwrap();
    let packet = next_packet(&mut queue);
    assert!(packet.payload().is_empty());
    // The kernel sends NFQA_CAP_LEN only in packet mode: no length at all here.
    assert_eq!(packet.original_len(), 0);
    assert_eq!(packet.hook(), Hook::LocalOut, "metadata still comes");
    packet.accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver), message);
    counters::assert_queue_drained(7);
}

#[test]
fn the_priority_of_the_sending_socket_is_reported() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 44);
    let mut queue = bound_queue(44);
    udp.sender.send_to(b"plain", udp.dest()).unwrap();
    let packet = next_packet(&mut queue);
    // The kernel sends NFQA_PRIORITY only for a non-zero skb->priority.
    assert_eq!(packet.priority(), None);
    packet.accept().unwrap();

    let priority: libc::c_int = 6;
    // SAFETY: sets an int option on a socket we own, from a valid c_int.
    let rc = unsafe {
        libc::setsockopt(
            udp.sender.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PRIORITY,
            (&priority as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_PRIORITY: {}", std::io::Error::last_os_error());
    udp.sender.send_to(b"urgent", udp.dest()).unwrap();
    let packet = next_packet(&mut queue);
    assert_eq!(packet.priority(), Some(6));
    packet.accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"plain");
    assert_eq!(recv_datagram(&udp.receiver), b"urgent");
    counters::assert_queue_drained(44);
}
