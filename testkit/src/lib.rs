//! Support for tests that talk to the real kernel: throwaway network namespaces
//! the commands that configure them, and kernel counters.
#![warn(missing_docs)]

pub mod cmd;
pub mod counters;
pub mod netns;
pub mod topology;

pub use cmd::{ip, ip6tables, iptables};
pub use netns::Netns;
pub use topology::{Host, Iface, Router, TwoHosts};
