//! A running dispatcher: its threads, its stop handle and its statistics.

use crate::builder::DispatcherBuilder;
use crate::failure::FirstFailure;
use crate::stats::{Counters, DispatchStats, KernelStats};
use crate::stats_handle::StatsHandle;
use nfqueue_core::{Error, QueueStats, Result, StopHandle};
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
    counters: Arc<Counters>,
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
        counters: Arc<Counters>,
        failures: Arc<FirstFailure>,
        queues: Vec<u16>,
    ) -> Self {
        Dispatcher {
            stop,
            counters,
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

    /// The counters now.
    pub fn stats(&self) -> DispatchStats {
        self.counters.snapshot()
    }

    /// A handle that reads the counters from another thread, also while
    /// [`join`](Self::join) waits (for a metrics endpoint).
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle::new(Arc::clone(&self.counters), &self.queues)
    }

    /// The kernel's lines for this dispatcher's queues, read in the calling
    /// thread's network namespace (the one the dispatcher was built in).
    ///
    /// # Errors
    /// When /proc/net/netfilter/nfnetlink_queue cannot be read.
    pub fn kernel_stats(&self) -> std::io::Result<KernelStats> {
        Ok(QueueStats::read_all()?
            .into_iter()
            .filter(|s| self.queues.contains(&s.queue))
            .collect())
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
        Ok(self.counters.snapshot())
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
