//! Multi-core NFQUEUE: receive threads fan packets out to a pool of workers over
//! bounded channels; verdicts come back by packet id and are written, coalesced,
//! on the socket that bound each queue.
//!
//! ```no_run
//! use nfqueue::{Dispatcher, PacketView, Verdict};
//!
//! // iptables -A FORWARD -j NFQUEUE --queue-balance 0:1
//! let dispatcher = Dispatcher::builder().queues(0..=1).build(|packet: &PacketView<'_>| {
//!     let port = nfqueue::net::parse(packet.payload())
//!         .ok()
//!         .and_then(|ip| ip.transport())
//!         .and_then(|transport| transport.dst_port());
//!     if port == Some(23) { Verdict::drop() } else { Verdict::accept() }
//! })?;
//! let stop = dispatcher.stop_handle();
//! // ... later, from any thread or a signal handler:
//! stop.stop();
//! let stats = dispatcher.join()?;
//! println!("{stats:?}");
//! # Ok::<(), nfqueue::Error>(())
//! ```
//!
//! # Where handlers run
//! By default on a pool of workers (one per core), which suits handlers that
//! cost more than handing a packet between threads. With
//! [`workers(0)`](DispatcherBuilder::workers) each queue's receive thread runs
//! the handler itself, on the packet as it lies in its buffer: the fastest way
//! for cheap handlers, spread over cores with several queues.
//!
//! Each queue reaches the workers through a channel of its own, which every
//! worker reads, and a worker takes its next batch of packets at random among
//! the queues that have some. A flood on one queue therefore cannot hold back
//! another queue's packets, and a receive thread whose packets are all out
//! waits only for its own verdicts, which wake it.
//!
//! # What a slow or stuck handler holds back
//! The packets it has, and no more than
//! [`max_in_flight`](DispatcherBuilder::max_in_flight) packets of its queue:
//! until that many are out, the other workers go on with the rest. Without
//! flow affinity, a worker is handed a share of a burst at a time (at most
//! ⌈80 / workers⌉ packets), and a handler that does not return holds that
//! share. With [flow affinity](DispatcherBuilder::flow_affinity), a batch
//! holds one flow's packets and a flow has one batch out at a time, so a
//! stuck handler holds back its own flow and no other.
//!
//! # Why handlers are synchronous
//! A handler returns its packet's verdict at once, on a thread of the pool:
//! coalescing sends the verdicts of a run of packets together, which a
//! handler that awaits I/O would hold up, and a blocked handler holds up its
//! worker's share of the packets. For verdicts that wait on I/O (a policy
//! service, a prompt), use [`AsyncQueue`] (feature
//! `tokio`) on each queue instead, with `--queue-balance` to spread queues over
//! cores: a task per packet then waits without holding up the others.
//!
//! # What a packet gets when things go wrong
//! Nothing lets a packet through that the handler or the builder did not
//! choose: a handler that panics gives its packet the
//! [`on_panic`](DispatcherBuilder::on_panic) verdict (drop unless changed),
//! also when the panic's payload panics again as it is dropped; a verdict with
//! a payload the kernel cannot take drops the packet (and so, without an
//! error, does a payload verdict from a non-initial user namespace on some
//! kernels: see [`Verdict::with_payload`](nfqueue_core::Verdict::with_payload));
//! a packet whose message cannot be parsed is dropped; a queue that fails
//! stops the dispatcher, after its packets got their verdicts where the socket
//! still takes them (the kernel drops the rest when it closes). Verdicts whose
//! send failed go out again in their order, and nothing behind them overtakes
//! them. The queue's [unanswered verdict](nfqueue_core::QueueConfig::unanswered)
//! (drop unless changed) only answers packets read while stopping. A build
//! that fails, or whose handler factory panics, unbinds its queues and joins
//! its threads before it returns.
//!
//! # Verdict coalescing
//! A receive thread reads up to 16 datagrams per `recvmmsg` and keeps the
//! packets it dispatched in order. Whenever the verdicts of a run at the front
//! of that order are known and equal (same verdict, same mark, no payload), the
//! run is settled with one
//! `NFQNL_MSG_VERDICT_BATCH` message; every message of a round goes out in one
//! `sendmsg`. Verdicts behind a packet still being handled are held until the
//! receive thread has nothing left to read or 256 are held, then sent one by
//! one. There is no timer: a verdict waits at most until the receive thread's
//! current round ends (about 64 packets read), so on an idle queue a packet's
//! added latency is one thread hand-off each way.
//!
//! The single-queue API of [`nfqueue_core`] is re-exported here for users who
//! want both layers from one crate. This crate links libnetfilter_queue
//! (GPL-2.0-or-later).
#![warn(missing_docs)]

mod affinity;
mod batch;
mod builder;
mod coalesce;
mod dispatcher;
mod failure;
mod flows;
mod handout;
pub mod prometheus;
mod receiver;
mod stats;
mod stats_handle;
mod wake;
mod worker;

pub use builder::{
    DispatcherBuilder, DEFAULT_MAX_IN_FLIGHT, DEFAULT_RECV_BUFFER, MAX_IN_FLIGHT, MAX_WORKERS,
};
pub use dispatcher::Dispatcher;
pub use nfqueue_core::*;
pub use stats::{DispatchStats, KernelStats};
pub use stats_handle::StatsHandle;
pub use worker::{Handler, PanicHandler, PanicReport};

/// The examples of the README and of the guide in `docs/`, compiled as
/// doctests (here, where both crates are in reach).
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

/// The examples of `docs/core.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/core.md")]
pub struct CoreGuideDoctests;

/// The examples of `docs/dispatcher.md`.
#[cfg(doctest)]
#[doc = include_str!("../../docs/dispatcher.md")]
pub struct DispatcherGuideDoctests;
