//! Reading a dispatcher's counters from another thread while it runs.

use crate::stats::{DispatchStats, KernelStats, QueueCounters};
use nfqueue_core::{KernelStatsReader, Result};
use std::sync::Arc;

/// Reads the counters of a running [`Dispatcher`](crate::Dispatcher) from any
/// thread, also while [`join`](crate::Dispatcher::join) waits: for a metrics
/// endpoint, say. `Send + Sync + Clone`; it stays valid after the dispatcher
/// stops and then shows the final counts.
#[derive(Debug, Clone)]
pub struct StatsHandle {
    counters: Arc<QueueCounters>,
    queues: Arc<[u16]>,
    kernel: KernelStatsReader,
}

impl StatsHandle {
    pub(crate) fn new(
        counters: Arc<QueueCounters>,
        queues: &[u16],
        kernel: KernelStatsReader,
    ) -> Self {
        StatsHandle {
            counters,
            queues: queues.into(),
            kernel,
        }
    }

    /// The counters now, summed over the queues.
    pub fn stats(&self) -> DispatchStats {
        self.counters.total()
    }

    /// The counters now, of each queue, in the order the queues were given to
    /// the builder.
    pub fn stats_by_queue(&self) -> Vec<(u16, DispatchStats)> {
        self.counters.by_queue()
    }

    /// The kernel's lines for the dispatcher's queues, read in the network
    /// namespace its sockets were made in, from whichever thread calls.
    ///
    /// # Errors
    /// As [`KernelStatsReader::read_all`].
    pub fn kernel_stats(&self) -> Result<KernelStats> {
        Ok(self
            .kernel
            .read_all()?
            .into_iter()
            .filter(|s| self.queues.contains(&s.queue))
            .collect())
    }
}
