//! Support for tests that talk to the real kernel: throwaway network namespaces
//! and the commands that configure them.
#![warn(missing_docs)]

pub mod cmd;
pub mod netns;

pub use cmd::{ip, ip6tables, iptables};
pub use netns::Netns;
