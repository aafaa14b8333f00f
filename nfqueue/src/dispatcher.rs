//! A running dispatcher: its threads, its stop handle and its statistics.

use crate::builder::DispatcherBuilder;
use crate::failure::FirstFailure;
use crate::stats::{DispatchStats, KernelStats};
use crate::stats_handle::StatsHandle;
use nfqueue_core::{Error, Result, StopHandle};
use std::panic;
use std::sync::Arc;
use std::thread::JoinHandle;

/// Receive threads and a worker pool serving one or more queues.
///
/// Stop it with its [`StopHandle`] (from any thread, or a signal handler) and
/// then [`join`](Self::join) it; dropping it does both. On stop, every packet
/// already read gets its verdict (packets that were still unread in a socket
/// get the default verdict); then the sockets close, and the kernel drops what
/// arrives after that (or accepts it, with `--queue-bypass`).
///
/// A queue that fails (its socket can no longer be read, or its verdicts have
/// not gone out for half a second, each send retried) stops the whole
/// dispatcher the same way: the other queues give their packets their verdicts
/// and stop, and [`join`](Self::join) returns that first error.
#[derive(Debug)]
pub struct Dispatcher {
    stop: StopHandle,
    stats: StatsHandle,
    failures: Arc<FirstFailure>,
    queues: Vec<u16>,
    receivers: Vec<JoinHandle<Result<()>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Dispatcher {
    /// A builder with the defaults.
    pub fn builder() -> DispatcherBuilder {
        DispatcherBuilder::new()
    }

    pub(crate) fn new(
        stop: StopHandle,
        stats: StatsHandle,
        failures: Arc<FirstFailure>,
        queues: Vec<u16>,
    ) -> Self {
        Dispatcher {
            stop,
            stats,
            failures,
            queues,
            receivers: Vec::new(),
            workers: Vec::new(),
        }
    }

    pub(crate) fn add_receiver(&mut self, handle: JoinHandle<Result<()>>) {
        self.receivers.push(handle);
    }

    pub(crate) fn add_worker(&mut self, handle: JoinHandle<()>) {
        self.workers.push(handle);
    }

    /// Stops the dispatcher when used (`Send + Sync + Clone`, async-signal-safe).
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// The counters now, summed over the queues.
    pub fn stats(&self) -> DispatchStats {
        self.stats.stats()
    }

    /// The counters now, of each queue, in the order the queues were given to
    /// the builder.
    pub fn stats_by_queue(&self) -> Vec<(u16, DispatchStats)> {
        self.stats.stats_by_queue()
    }

    /// A handle that reads the counters from another thread, also while
    /// [`join`](Self::join) waits (for a metrics endpoint).
    pub fn stats_handle(&self) -> StatsHandle {
        self.stats.clone()
    }

    /// The kernel's lines for this dispatcher's queues, read in the network
    /// namespace its sockets were made in (see
    /// [`DispatcherBuilder::netns`](crate::DispatcherBuilder::netns)).
    ///
    /// # Errors
    /// As [`KernelStatsReader::read_all`](nfqueue_core::KernelStatsReader::read_all).
    pub fn kernel_stats(&self) -> Result<KernelStats> {
        self.stats.kernel_stats()
    }

    /// The queue numbers served.
    pub fn queues(&self) -> &[u16] {
        &self.queues
    }

    /// Waits until the dispatcher stops (after its stop handle is used, or a
    /// receive thread fails, which stops them all), joins every thread, and
    /// returns the final counters.
    ///
    /// # Errors
    /// The error of the receive thread that failed first.
    ///
    /// # Panics
    /// Passes on a panic of the dispatcher's own code (handler panics are caught).
    pub fn join(mut self) -> Result<DispatchStats> {
        self.join_threads()?;
        Ok(self.stats.stats())
    }

    /// Stops the dispatcher and joins it.
    ///
    /// # Errors
    /// As [`join`](Self::join).
    pub fn stop_and_join(self) -> Result<DispatchStats> {
        self.stop.stop();
        self.join()
    }

    fn join_threads(&mut self) -> Result<()> {
        // A thread that fails stops the others itself, so each of these joins
        // ends, in whatever order the threads do.
        let mut errors: Vec<(usize, Error)> = Vec::new();
        for (slot, handle) in self.receivers.drain(..).enumerate() {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => errors.push((slot, err)),
                Err(panic) => {
                    self.stop.stop();
                    panic::resume_unwind(panic)
                }
            }
        }
        // The receive threads held the last senders to the workers: the workers
        // finish their channels and return.
        for handle in self.workers.drain(..) {
            if let Err(panic) = handle.join() {
                panic::resume_unwind(panic);
            }
        }
        let first = self.failures.first();
        match errors.iter().position(|(slot, _)| Some(*slot) == first) {
            Some(at) => Err(errors.swap_remove(at).1),
            None => errors
                .into_iter()
                .next()
                .map_or(Ok(()), |(_, err)| Err(err)),
        }
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if !self.receivers.is_empty() || !self.workers.is_empty() {
            self.stop.stop();
            let _ = self.join_threads();
        }
    }
}
