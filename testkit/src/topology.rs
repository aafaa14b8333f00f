//! Small networks of namespaces joined by veth pairs, with fixed names and
//! addresses so tests and their failure messages are easy to read.
//!
//! [`TwoHosts`]: `A (veth-a) <-> (veth-b) B` on one subnet.
//! [`Router`]: `A (veth-a) <-> (veth-ra) R (veth-rb) <-> (veth-b) B`, two subnets,
//! R forwarding IPv4 and IPv6, A and B routing through R (for `FORWARD` tests).
//!
//! Every address is usable when the constructor returns: links are running (a
//! packet sent before the carrier is seen would be dropped silently) and IPv6
//! addresses are added with `nodad` and link-local ones without duplicate address
//! detection, so none is tentative. Neighbours are static (`nud permanent`): no
//! ARP or neighbour discovery traffic crosses the links.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::cmd;
use crate::netns::{self, Netns};

/// How long to wait for links and addresses to become usable.
const READY_TIMEOUT: Duration = Duration::from_secs(5);

/// One end of a veth pair as seen inside its namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Iface {
    /// Interface name, such as `veth-a`.
    pub name: &'static str,
    /// Interface index inside its namespace (as `if_nametoindex` there gives it).
    pub ifindex: u32,
    /// Hardware address.
    pub mac: [u8; 6],
    /// IPv4 address (prefix length 24).
    pub ipv4: Ipv4Addr,
    /// IPv6 address (prefix length 64).
    pub ipv6: Ipv6Addr,
}

impl Iface {
    /// The hardware address as `02:00:00:00:00:0a`.
    pub fn mac_string(&self) -> String {
        mac_string(&self.mac)
    }

    /// `ipv4:port` as a socket address.
    pub fn v4(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.ipv4), port)
    }

    /// `[ipv6]:port` as a socket address.
    pub fn v6(&self, port: u16) -> SocketAddr {
        SocketAddr::new(IpAddr::V6(self.ipv6), port)
    }
}

/// A namespace with one veth interface.
#[derive(Debug)]
pub struct Host {
    /// The host's namespace.
    pub ns: Netns,
    /// Its interface.
    pub iface: Iface,
}

/// Two namespaces joined by a veth pair on `10.200.0.0/24` and `fd00:200::/64`.
///
/// | side | interface | MAC                 | IPv4       | IPv6         |
/// |------|-----------|---------------------|------------|--------------|
/// | A    | `veth-a`  | `02:00:00:00:00:0a` | 10.200.0.1 | fd00:200::1  |
/// | B    | `veth-b`  | `02:00:00:00:00:0b` | 10.200.0.2 | fd00:200::2  |
#[derive(Debug)]
pub struct TwoHosts {
    /// Side A.
    pub a: Host,
    /// Side B.
    pub b: Host,
}

impl TwoHosts {
    /// Creates both namespaces and the veth pair, and waits until it is usable.
    ///
    /// # Panics
    ///
    /// Panics when a namespace cannot be created (see [`Netns::new`]), an `ip`
    /// command fails, or the links are not running within 5 seconds.
    // No `Default`: creating kernel objects (and panicking) is not a default value.
    #[allow(clippy::new_without_default)]
    pub fn new() -> TwoHosts {
        let a = Netns::new();
        let b = Netns::new();
        let (ia, ib) = veth(
            &a,
            Spec {
                name: "veth-a",
                mac: [2, 0, 0, 0, 0, 0x0a],
                ipv4: Ipv4Addr::new(10, 200, 0, 1),
                ipv6: Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 1),
            },
            &b,
            Spec {
                name: "veth-b",
                mac: [2, 0, 0, 0, 0, 0x0b],
                ipv4: Ipv4Addr::new(10, 200, 0, 2),
                ipv6: Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 2),
            },
        );
        TwoHosts {
            a: Host { ns: a, iface: ia },
            b: Host { ns: b, iface: ib },
        }
    }
}

/// Three namespaces `A <-> R <-> B`; R forwards IPv4 and IPv6, A and B have
/// default routes through R.
///
/// | where | interface | MAC                 | IPv4       | IPv6        |
/// |-------|-----------|---------------------|------------|-------------|
/// | A     | `veth-a`  | `02:00:00:00:01:0a` | 10.200.1.2 | fd00:201::2 |
/// | R     | `veth-ra` | `02:00:00:00:01:01` | 10.200.1.1 | fd00:201::1 |
/// | R     | `veth-rb` | `02:00:00:00:02:01` | 10.200.2.1 | fd00:202::1 |
/// | B     | `veth-b`  | `02:00:00:00:02:0b` | 10.200.2.2 | fd00:202::2 |
#[derive(Debug)]
pub struct Router {
    /// Host A, on the `10.200.1.0/24` side.
    pub a: Host,
    /// The router's namespace.
    pub r: Netns,
    /// The router's interface towards A.
    pub r_a: Iface,
    /// The router's interface towards B.
    pub r_b: Iface,
    /// Host B, on the `10.200.2.0/24` side.
    pub b: Host,
}

impl Router {
    /// Creates the three namespaces and two veth pairs, turns forwarding on in R,
    /// adds the default routes, and waits until everything is usable.
    ///
    /// # Panics
    ///
    /// Panics when a namespace cannot be created (see [`Netns::new`]), a command
    /// fails, or the links are not running within 5 seconds.
    // No `Default`: creating kernel objects (and panicking) is not a default value.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Router {
        let a = Netns::new();
        let r = Netns::new();
        let b = Netns::new();
        let (ia, ira) = veth(
            &a,
            Spec {
                name: "veth-a",
                mac: [2, 0, 0, 0, 1, 0x0a],
                ipv4: Ipv4Addr::new(10, 200, 1, 2),
                ipv6: Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, 2),
            },
            &r,
            Spec {
                name: "veth-ra",
                mac: [2, 0, 0, 0, 1, 1],
                ipv4: Ipv4Addr::new(10, 200, 1, 1),
                ipv6: Ipv6Addr::new(0xfd00, 0x201, 0, 0, 0, 0, 0, 1),
            },
        );
        let (ib, irb) = veth(
            &b,
            Spec {
                name: "veth-b",
                mac: [2, 0, 0, 0, 2, 0x0b],
                ipv4: Ipv4Addr::new(10, 200, 2, 2),
                ipv6: Ipv6Addr::new(0xfd00, 0x202, 0, 0, 0, 0, 0, 2),
            },
            &r,
            Spec {
                name: "veth-rb",
                mac: [2, 0, 0, 0, 2, 1],
                ipv4: Ipv4Addr::new(10, 200, 2, 1),
                ipv6: Ipv6Addr::new(0xfd00, 0x202, 0, 0, 0, 0, 0, 1),
            },
        );
        r.run(|| {
            // /proc/sys/net shows the namespace of the thread that opens it.
            for knob in [
                "/proc/sys/net/ipv4/ip_forward",
                "/proc/sys/net/ipv6/conf/all/forwarding",
            ] {
                std::fs::write(knob, "1").unwrap_or_else(|e| panic!("writing {knob}: {e}"));
            }
        });
        for (host, gw) in [(&a, &ira), (&b, &irb)] {
            host.run(|| {
                cmd::ip(["route", "add", "default", "via", &gw.ipv4.to_string()]);
                cmd::ip(["-6", "route", "add", "default", "via", &gw.ipv6.to_string()]);
            });
        }
        Router {
            a: Host { ns: a, iface: ia },
            r,
            r_a: ira,
            r_b: irb,
            b: Host { ns: b, iface: ib },
        }
    }
}

/// What to configure on one end of a veth pair.
struct Spec {
    name: &'static str,
    mac: [u8; 6],
    ipv4: Ipv4Addr,
    ipv6: Ipv6Addr,
}

/// Creates a veth pair between `x` and `y`, addresses both ends, brings them up
/// and waits until they are usable.
fn veth(x: &Netns, xs: Spec, y: &Netns, ys: Spec) -> (Iface, Iface) {
    // A `/proc/<pid>/fd/<n>` path is always ASCII.
    let y_path = y.path().display().to_string();
    let (x_mac, y_mac) = (mac_string(&xs.mac), mac_string(&ys.mac));
    x.run(|| {
        cmd::ip([
            "link", "add", xs.name, "address", &x_mac, "type", "veth", "peer", "name", ys.name,
            "address", &y_mac, "netns", &y_path,
        ]);
    });
    let configure = |s: &Spec| {
        // No duplicate address detection on the link-local address either, so
        // no address is ever tentative and nothing has to wait for DAD.
        let knob = format!("/proc/sys/net/ipv6/conf/{}/accept_dad", s.name);
        std::fs::write(&knob, "0").unwrap_or_else(|e| panic!("writing {knob}: {e}"));
        cmd::ip(["addr", "add", &format!("{}/24", s.ipv4), "dev", s.name]);
        cmd::ip([
            "addr",
            "add",
            &format!("{}/64", s.ipv6),
            "dev",
            s.name,
            "nodad",
        ]);
        cmd::ip(["link", "set", s.name, "up"]);
    };
    // Static neighbours: no ARP or neighbour discovery packets to meet in
    // rules or queues, and no first packets lost while a router resolves its
    // next hop (seen with IPv6 forwarding right after setup).
    let neighbours = |s: &Spec, peer: &Spec| {
        let mac = mac_string(&peer.mac);
        for addr in [peer.ipv4.to_string(), peer.ipv6.to_string()] {
            cmd::ip([
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &mac,
                "dev",
                s.name,
                "nud",
                "permanent",
            ]);
        }
    };
    x.run(|| {
        configure(&xs);
        neighbours(&xs, &ys);
    });
    y.run(|| {
        configure(&ys);
        neighbours(&ys, &xs);
    });
    let ready = |s: &Spec| {
        netns::wait_link_running(s.name, READY_TIMEOUT);
        wait_no_tentative(s.name);
        Iface {
            name: s.name,
            ifindex: ifindex(s.name),
            mac: s.mac,
            ipv4: s.ipv4,
            ipv6: s.ipv6,
        }
    };
    (x.run(|| ready(&xs)), y.run(|| ready(&ys)))
}

/// `02:00:00:00:00:0a`.
fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The index of `name` in the current thread's namespace.
fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).expect("interface name with NUL");
    // SAFETY: `c` is a NUL-terminated string alive across the call, which only
    // reads it.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    assert_ne!(
        index,
        0,
        "if_nametoindex({name}): {}",
        std::io::Error::last_os_error()
    );
    index
}

/// Waits until no IPv6 address of `dev` is tentative (`nodad` and `accept_dad=0`
/// should make this immediate; the check guards against a kernel that ignores
/// them).
fn wait_no_tentative(dev: &str) {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let out = cmd::ip(["-6", "-o", "addr", "show", "dev", dev, "tentative"]);
        if out.trim().is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "IPv6 addresses of {dev} still tentative after {READY_TIMEOUT:?}: {out}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
