//! Reading a dispatcher's counters from another thread while it runs.

use crate::stats::{Counters, DispatchStats, KernelStats};
use nfqueue_core::QueueStats;
use std::sync::Arc;

/// Reads the counters of a running [`Dispatcher`](crate::Dispatcher) from any
/// thread, also while [`join`](crate::Dispatcher::join) waits: for a metrics
/// endpoint, say. `Send + Sync + Clone`; it stays valid after the dispatcher
/// stops and then shows the final counts.
#[derive(Debug, Clone)]
pub struct StatsHandle {
    counters: Arc<Counters>,
    queues: Arc<[u16]>,
}

impl StatsHandle {
    pub(crate) fn new(counters: Arc<Counters>, queues: &[u16]) -> Self {
        StatsHandle {
            counters,
            queues: queues.into(),
        }
    }

    /// The counters now.
    pub fn stats(&self) -> DispatchStats {
        self.counters.snapshot()
    }

    /// The kernel's lines for the dispatcher's queues, read in the calling
    /// thread's network namespace (use it from a thread of the namespace the
    /// dispatcher was built in).
    ///
    /// # Errors
    /// When /proc/net/netfilter/nfnetlink_queue cannot be read.
    pub fn kernel_stats(&self) -> std::io::Result<KernelStats> {
        Ok(QueueStats::read_all()?
            .into_iter()
            .filter(|s| self.queues.contains(&s.queue))
            .collect())
    }
}
