//! The testkit against the real kernel. Needs CAP_SYS_ADMIN: run as root, or
//! as an ordinary user inside `unshare --user --map-root-user --net`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, UdpSocket};
use std::time::Duration;

use nfqueue_testkit::{cmd, counters, ip, ip6tables, iptables, traffic, Netns, Router, TwoHosts};

const IDLE: Duration = Duration::from_millis(200);

/// The inode in `readlink /proc/self/ns/net` output such as `net:[4026532281]`.
fn inode_of_readlink(out: &str) -> u64 {
    out.trim()
        .strip_prefix("net:[")
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected readlink output {out:?}"))
}

#[test]
fn new_namespace_differs_from_the_parent_and_enter_moves_only_this_thread() {
    let parent = Netns::current_thread_inode();
    let ns = Netns::new();
    assert_ne!(ns.inode(), parent);
    assert_eq!(
        Netns::current_thread_inode(),
        parent,
        "new() must not move the caller"
    );

    let before = UdpSocket::bind("127.0.0.1:0").unwrap();
    ns.enter();
    assert_eq!(Netns::current_thread_inode(), ns.inode());
    let after = UdpSocket::bind("127.0.0.1:0").unwrap();
    assert_eq!(
        Netns::socket_inode(&after),
        ns.inode(),
        "socket made after enter"
    );
    assert_eq!(
        Netns::socket_inode(&before),
        parent,
        "socket made before enter"
    );

    // Threads spawned afterwards start inside.
    let inode = std::thread::spawn(Netns::current_thread_inode)
        .join()
        .unwrap();
    assert_eq!(inode, ns.inode());
}

#[test]
fn children_inherit_the_thread_namespace_and_lo_is_up() {
    let ns = Netns::new();
    ns.enter();
    let out = cmd::run("readlink", ["/proc/self/ns/net"]);
    assert_eq!(inode_of_readlink(&out), ns.inode());
    let lo = ip(["-o", "link", "show", "lo"]);
    assert!(lo.contains("<LOOPBACK,UP,LOWER_UP>"), "{lo}");
    // Only lo exists in a new namespace.
    assert_eq!(ip(["-o", "link", "show"]).lines().count(), 1);
}

#[test]
fn run_enters_on_another_thread_and_path_works_for_other_programs() {
    let parent = Netns::current_thread_inode();
    let ns = Netns::new();
    assert_eq!(ns.run(Netns::current_thread_inode), ns.inode());
    assert_eq!(Netns::current_thread_inode(), parent);

    let path = ns.path();
    let out = cmd::run(
        "nsenter",
        [
            format!("--net={}", path.display()).as_str(),
            "readlink",
            "/proc/self/ns/net",
        ],
    );
    assert_eq!(inode_of_readlink(&out), ns.inode());

    // `ip link set X netns <path>` moves an interface there.
    let other = Netns::new();
    other.run(|| {
        ip(["link", "add", "x0", "type", "veth", "peer", "name", "x1"]);
        ip(["link", "set", "x0", "netns", path.to_str().unwrap()]);
    });
    assert!(ns.run(|| ip(["-o", "link", "show"])).contains("x0@"));
}

#[test]
fn run_passes_panics_on() {
    let ns = Netns::new();
    let r = std::panic::catch_unwind(|| ns.run(|| panic!("inside")));
    let msg = *r.unwrap_err().downcast::<&str>().unwrap();
    assert_eq!(msg, "inside");
}

#[test]
fn cmd_failure_is_reported_with_the_command_line() {
    let ns = Netns::new();
    ns.enter();
    let err = cmd::try_run("ip", ["link", "show", "no-such-link"]).unwrap_err();
    assert!(
        err.starts_with("`ip link show no-such-link` failed"),
        "{err}"
    );
    assert!(err.contains("does not exist"), "{err}");
}

fn udp_across(from: &Netns, to: &Netns, dest_ip: IpAddr, src_ip: IpAddr) {
    let receiver = to.run(|| traffic::udp_receiver(dest_ip));
    let dest = receiver.local_addr().unwrap();
    let sent = from.run(|| {
        let sender = traffic::udp_sender(src_ip);
        traffic::send_numbered_udp(&sender, dest, 5, 100)
    });
    assert_eq!(sent, 5);
    let got = traffic::recv_all_until_idle(&receiver, IDLE, 100);
    let seqs: Vec<_> = got.iter().map(|d| traffic::seq_of(d).unwrap()).collect();
    assert_eq!(seqs, [0, 1, 2, 3, 4], "from {src_ip} to {dest}");
    assert!(got
        .iter()
        .all(|d| d.len() == 100 && d[8..] == traffic::pattern(100)[8..]));
}

#[test]
fn two_hosts_carry_udp_both_ways_over_ipv4_and_ipv6() {
    let t = TwoHosts::new();
    let (a, b) = (&t.a, &t.b);
    udp_across(&a.ns, &b.ns, b.iface.ipv4.into(), a.iface.ipv4.into());
    udp_across(&b.ns, &a.ns, a.iface.ipv4.into(), b.iface.ipv4.into());
    udp_across(&a.ns, &b.ns, b.iface.ipv6.into(), a.iface.ipv6.into());
    udp_across(&b.ns, &a.ns, a.iface.ipv6.into(), b.iface.ipv6.into());

    for h in [a, b] {
        let out = h.ns.run(|| ip(["-o", "link", "show", h.iface.name]));
        assert!(
            out.starts_with(&format!("{}: {}@", h.iface.ifindex, h.iface.name)),
            "{out}"
        );
        assert!(
            out.contains(&format!("link/ether {}", h.iface.mac_string())),
            "{out}"
        );
    }
    assert_eq!(a.iface.mac_string(), "02:00:00:00:00:0a");
    assert_eq!(b.iface.mac_string(), "02:00:00:00:00:0b");
}

#[test]
fn router_forwards_between_its_sides_and_counts_in_forward() {
    let t = Router::new();
    // /proc/sys/net is per namespace of the reading thread.
    let fwd = |ns: &Netns| ns.run(|| std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward"));
    assert_eq!(fwd(&t.r).unwrap().trim(), "1");
    assert_eq!(fwd(&t.a.ns).unwrap().trim(), "0");

    t.r.run(|| {
        iptables([
            "-A",
            "FORWARD",
            "-m",
            "comment",
            "--comment",
            "fwd4",
            "-j",
            "ACCEPT",
        ]);
        ip6tables([
            "-A",
            "FORWARD",
            "-p",
            "udp",
            "-m",
            "comment",
            "--comment",
            "fwd6",
        ]);
    });
    udp_across(
        &t.a.ns,
        &t.b.ns,
        t.b.iface.ipv4.into(),
        t.a.iface.ipv4.into(),
    );
    udp_across(
        &t.b.ns,
        &t.a.ns,
        t.a.iface.ipv6.into(),
        t.b.iface.ipv6.into(),
    );
    t.r.run(|| {
        assert_eq!(
            counters::rule_packets("iptables", "filter", "FORWARD", "fwd4"),
            5
        );
        assert_eq!(
            counters::rule_packets("ip6tables", "filter", "FORWARD", "fwd6"),
            5
        );
    });
}

#[test]
fn iptables_rule_with_comment_counts_packets() {
    let ns = Netns::new();
    ns.enter();
    let udp = traffic::udp_pair_v4();
    let port = udp.dest().port().to_string();
    iptables([
        "-A",
        "INPUT",
        "-p",
        "udp",
        "--dport",
        &port,
        "-m",
        "comment",
        "--comment",
        "tk in",
    ]);
    assert_eq!(
        counters::rule_packets("iptables", "filter", "INPUT", "tk in"),
        0
    );
    traffic::send_numbered_udp(&udp.sender, udp.dest(), 3, 20);
    assert_eq!(
        traffic::recv_all_until_idle(&udp.receiver, IDLE, 10).len(),
        3
    );
    assert_eq!(
        counters::rule_packets("iptables", "filter", "INPUT", "tk in"),
        3
    );
    assert_eq!(
        counters::rule_bytes("iptables", "filter", "INPUT", "tk in"),
        3 * (20 + 28)
    );

    let udp6 = traffic::udp_pair_v6();
    let port6 = udp6.dest().port().to_string();
    ip6tables([
        "-t",
        "mangle",
        "-A",
        "PREROUTING",
        "-p",
        "udp",
        "--dport",
        &port6,
    ]);
    ip6tables([
        "-t",
        "mangle",
        "-A",
        "PREROUTING",
        "-m",
        "comment",
        "--comment",
        "six",
    ]);
    traffic::send_numbered_udp(&udp6.sender, udp6.dest(), 2, 20);
    assert_eq!(
        traffic::recv_all_until_idle(&udp6.receiver, IDLE, 10).len(),
        2
    );
    assert_eq!(
        counters::rule_packets("ip6tables", "mangle", "PREROUTING", "six"),
        2
    );
}

#[test]
fn queue_line_is_none_when_nothing_is_bound() {
    let ns = Netns::new();
    ns.enter();
    assert_eq!(counters::queue_lines(), []);
    assert_eq!(counters::queue_line(0), None);
    counters::assert_queue_drained(0);
}

#[test]
fn nfqueue_without_a_listener_drops_and_with_bypass_accepts() {
    let ns = Netns::new();
    ns.enter();
    let udp = traffic::udp_pair_v4();
    let port = udp.dest().port().to_string();
    let rule = |bypass: bool| {
        let mut args = vec![
            "-p",
            "udp",
            "--dport",
            &port,
            "-m",
            "comment",
            "--comment",
            "q",
        ];
        args.extend(["-j", "NFQUEUE", "--queue-num", "7"]);
        if bypass {
            args.push("--queue-bypass");
        }
        args
    };
    iptables([&["-A", "INPUT"][..], &rule(false)].concat());
    traffic::send_numbered_udp(&udp.sender, udp.dest(), 3, 20);
    assert!(traffic::recv_all_until_idle(&udp.receiver, IDLE, 10).is_empty());
    assert_eq!(
        counters::rule_packets("iptables", "filter", "INPUT", "q"),
        3
    );

    iptables([&["-R", "INPUT", "1"][..], &rule(true)].concat());
    traffic::send_numbered_udp(&udp.sender, udp.dest(), 3, 20);
    assert_eq!(
        traffic::recv_all_until_idle(&udp.receiver, IDLE, 10).len(),
        3
    );
    assert_eq!(counters::queue_line(7), None);
}

#[test]
fn snmp_counters_move() {
    let ns = Netns::new();
    ns.enter();
    let v4 = counters::snmp_counter("Udp", "InDatagrams");
    let v6 = counters::snmp6_counter("Udp6InDatagrams");
    assert_eq!((v4, v6), (0, 0), "a new namespace starts from zero");
    assert_eq!(counters::snmp_counter("Udp", "InCsumErrors"), 0);
    assert_eq!(counters::snmp6_counter("Udp6InCsumErrors"), 0);
    for pair in [traffic::udp_pair_v4(), traffic::udp_pair_v6()] {
        traffic::send_numbered_udp(&pair.sender, pair.dest(), 4, 8);
        assert_eq!(
            traffic::recv_all_until_idle(&pair.receiver, IDLE, 10).len(),
            4
        );
    }
    assert_eq!(counters::snmp_counter("Udp", "InDatagrams"), 4);
    assert_eq!(counters::snmp6_counter("Udp6InDatagrams"), 4);
}

#[test]
fn tcp_transfer_delivers_everything_within_a_namespace_and_across() {
    let ns = Netns::new();
    ns.enter();
    let len = 3 << 20;
    assert!(traffic::tcp_transfer(IpAddr::V4(Ipv4Addr::LOCALHOST), len) == traffic::pattern(len));
    assert!(traffic::tcp_transfer(IpAddr::V6(Ipv6Addr::LOCALHOST), 1000) == traffic::pattern(1000));

    let t = TwoHosts::new();
    let sink =
        t.b.ns
            .run(|| traffic::TcpSink::bind(t.b.iface.ipv6.into(), 1 << 20));
    let data = traffic::pattern(200_000);
    t.a.ns
        .run(|| traffic::tcp_send(sink.addr(), &data))
        .unwrap();
    assert!(sink.finish().unwrap() == data);
}

#[test]
fn big_send_buffer() {
    let ns = Netns::new();
    ns.enter();
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let size = traffic::set_big_sndbuf(&sock);
    eprintln!("send buffer: {size} bytes");
    assert!(size >= 200_000, "{size}");
}

#[test]
fn the_payload_probe_comes_to_an_answer_and_a_payload_verdict_arrives_as_root() {
    let started = std::time::Instant::now();
    let arrives = nfqueue_testkit::userns::payload_verdict_arrives()
        .unwrap_or_else(|why| panic!("the probe could not tell: {why}"));
    if nfqueue_testkit::userns::in_initial_user_namespace() {
        assert!(
            arrives,
            "a payload verdict from the initial user namespace was dropped"
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no wait when the packets arrive: {:?}",
            started.elapsed()
        );
        assert_eq!(nfqueue_testkit::userns::payload_verdicts_dropped(), None);
    } else {
        // Either answer is the kernel's; the cached one agrees with it.
        assert_eq!(
            nfqueue_testkit::userns::payload_verdicts_dropped().is_some(),
            !arrives
        );
    }
}
