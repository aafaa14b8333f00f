//! A safe NFQUEUE handle: open a netlink socket, bind queue numbers, configure
//! them, receive packets with all their metadata, and give verdicts.
//!
//! Linux hands packets that match an iptables rule such as
//! `iptables -A INPUT -p udp --dport 9999 -j NFQUEUE --queue-num 0` to the
//! program that bound queue 0, which decides what happens to each one.
//!
//! ```no_run
//! use nfqueue_core::{Queue, QueueConfig, QueueFlags, Verdict};
//!
//! let mut queue = Queue::open()?;
//! queue.bind(0, &QueueConfig::default().flags(QueueFlags::UID_GID))?;
//! loop {
//!     let packet = queue.recv()?;
//!     println!("packet {} from uid {:?}: {} bytes", packet.id(), packet.uid(), packet.payload().len());
//!     if packet.payload().len() > 1400 {
//!         packet.drop()?;
//!     } else {
//!         packet.verdict(&Verdict::accept().with_mark(7))?;
//!     }
//! }
//! # Ok::<(), nfqueue_core::Error>(())
//! ```
//!
//! Binding a queue needs CAP_NET_ADMIN in the network namespace (root, or
//! `unshare --user --map-root-user --net`). This crate links libnetfilter_queue
//! (GPL-2.0-or-later).
#![warn(missing_docs)]

#[cfg(feature = "tokio")]
mod async_queue;
mod attr;
mod batch;
mod binding;
mod config;
mod conntrack;
mod counter_set;
mod ct_update;
mod deadline;
mod deferred;
mod error;
mod handle;
mod ifname;
mod kernel_stats;
mod line;
mod message;
mod netns;
mod packet;
mod queue;
mod recv_buffer;
mod retry;
mod socket;
mod stats;
mod stop;
mod verdict;
mod verdict_right;
mod view;

// L3/L4 views, the flow tuple and checksum-repairing rewrites live in a crate
// of their own, which needs no queue and no C; its docs are this module's.
#[doc(inline)]
pub use nfqueue_net as net;
pub mod doctor;
pub mod prometheus;

#[cfg(feature = "tokio")]
pub use async_queue::{AsyncQueue, PacketStream};
pub use attr::{Attribute, Attributes};
pub use batch::VerdictBatch;
pub use binding::{Binding, PacketKey};
pub use config::{CopyMode, QueueConfig, QueueFlags, DEFAULT_MAX_LEN, MAX_COPY_RANGE};
pub use conntrack::{Conntrack, CtIcmp, CtLabels, CtState, CtStatus, CtTuple, CT_LABELS_LEN};
pub use ct_update::CtUpdate;
pub use deadline::Deadline;
pub use deferred::{OwnedPacket, PendingVerdict};
pub use error::{Error, MalformedError, Result};
pub use handle::VerdictHandle;
pub use ifname::InterfaceName;
pub use kernel_stats::KernelStatsReader;
pub use packet::Packet;
pub use queue::Queue;
pub use recv_buffer::{BURST_LEN, RECV_BUFFER_LEN};
pub use stats::{QueueStats, Stats};
pub use stop::StopHandle;
pub use verdict::{Verdict, VerdictKind, MAX_PAYLOAD};
pub use verdict_right::VerdictError;
pub use view::{Hook, PacketView, SkbInfo, Vlan};
