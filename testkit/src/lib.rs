//! Support for tests that talk to the real kernel: throwaway network namespaces,
//! veth topologies, `ip`/`iptables` commands, kernel counters and test traffic.
//!
//! Every test makes its own network namespace and enters it on its own thread
//! (libtest runs each test on a thread of its own). Namespaces, their interfaces
//! and their rules vanish with the last handle, socket or thread in them, so
//! nothing is left behind, also when a test panics.
//!
//! Creating a namespace needs `CAP_SYS_ADMIN`: run these tests as root, or as an
//! ordinary user inside `unshare --user --map-root-user --net`. In a user
//! namespace iptables cannot load kernel modules: on a kernel that builds
//! `nfnetlink_queue`, `xt_NFQUEUE` or `xt_comment` as modules, load them first as
//! root. `SO_SNDBUFFORCE` needs root in the initial user namespace; without it
//! [`traffic::set_big_sndbuf`] falls back to `SO_SNDBUF`, capped by
//! `net.core.wmem_max`.
//!
//! A test that cannot run where it is says so with a `SKIPPED` line rather than
//! pass in silence ([`skip`]): a test that replaces payloads, where the kernel
//! drops a packet whose verdict carries a payload in a non-initial user
//! namespace ([`userns`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use nfqueue_testkit::{counters, iptables, traffic, Netns};
//!
//! let ns = Netns::new();
//! ns.enter(); // this thread, and all it spawns from now on, is inside
//!
//! let udp = traffic::udp_pair_v4();
//! let port = udp.dest().port().to_string();
//! iptables([
//!     "-A", "INPUT", "-p", "udp", "--dport", &port,
//!     "-m", "comment", "--comment", "to-queue",
//!     "-j", "NFQUEUE", "--queue-num", "7", "--queue-bypass",
//! ]);
//! assert_eq!(counters::queue_line(7), None); // nobody bound queue 7 yet
//!
//! traffic::send_numbered_udp(&udp.sender, udp.dest(), 3, 64);
//! // --queue-bypass accepts the packets while no one listens
//! let got = traffic::recv_all_until_idle(&udp.receiver, Duration::from_millis(200), 10);
//! assert_eq!(got.len(), 3);
//! assert_eq!(counters::rule_packets("iptables", "filter", "INPUT", "to-queue"), 3);
//! counters::assert_queue_drained(7);
//! ```
#![warn(missing_docs)]

pub mod alloc;
pub mod caps;
pub mod cmd;
pub mod counters;
pub mod fault;
pub mod kernel_model;
pub mod netns;
pub mod oracle;
pub mod rules;
pub mod skip;
pub mod topology;
pub mod traffic;
pub mod userns;

pub use caps::without_capabilities;
pub use cmd::{ip, ip6tables, iptables};
pub use netns::{enter_new_netns, Netns};
pub use topology::{Host, Iface, Router, TwoHosts};
