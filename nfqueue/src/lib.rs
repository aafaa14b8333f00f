//! Multi-core NFQUEUE dispatch on top of [`nfqueue_core`].
//!
//! This layer re-exports the single-queue API for now; the threaded dispatcher
//! builds on it.
//!
//! ```no_run
//! use nfqueue::{Queue, QueueConfig};
//!
//! let mut queue = Queue::open()?;
//! queue.bind(0, &QueueConfig::default())?;
//! let packet = queue.recv()?;
//! packet.accept()?;
//! # Ok::<(), nfqueue::Error>(())
//! ```
#![warn(missing_docs)]

pub use nfqueue_core::*;
