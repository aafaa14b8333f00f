//! Sending verdicts: at once, or collected while `run()` calls the callbacks
//! of a burst and sent together in one `sendmsg` when the burst is done.

use crate::errors;
use nfqueue_core::{InterfaceName, PacketKey, Verdict, VerdictBatch, VerdictHandle, VerdictKind};
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::{self, ThreadId};

/// The verdict side of one `NetfilterQueue`, shared with its packets.
#[derive(Debug)]
pub(crate) struct Verdicts {
    handle: VerdictHandle,
    collector: Mutex<Collector>,
}

/// Verdicts given by the callbacks of the burst `run()` is dispatching.
#[derive(Debug, Default)]
struct Collector {
    batch: VerdictBatch,
    /// The thread running the callbacks, while it does: its verdicts wait for
    /// the end of the burst; other threads' go out at once.
    dispatching: Option<ThreadId>,
}

impl Verdicts {
    pub(crate) fn new(handle: VerdictHandle) -> Self {
        Verdicts {
            handle,
            collector: Mutex::default(),
        }
    }

    /// The counters of the socket.
    pub(crate) fn stats(&self) -> nfqueue_core::Stats {
        self.handle.stats()
    }

    /// From now until [`flush`](Self::flush), verdicts given on this thread
    /// are collected.
    pub(crate) fn begin_burst(&self) {
        self.collector().dispatching = Some(thread::current().id());
    }

    /// Sends the verdicts collected, in the order given, with the GIL released.
    pub(crate) fn flush(&self, py: Python<'_>) -> PyResult<()> {
        let mut batch = {
            let mut collector = self.collector();
            collector.dispatching = None;
            std::mem::take(&mut collector.batch)
        };
        if batch.is_empty() {
            return Ok(());
        }
        let sent = py.detach(|| self.handle.send_all(&mut batch));
        // Give the emptied batch back: it keeps its storage for the next burst.
        self.collector().batch = batch;
        sent.map(drop)
            .map_err(|err| errors::os_error_errno("Failed to send verdicts:", &err))
    }

    /// Gives the packet `key` names its verdict: into the burst's batch when
    /// the thread dispatching it gives it, else at once.
    fn give(
        &self,
        py: Python<'_>,
        key: PacketKey,
        kind: VerdictKind,
        mark: Option<u32>,
        payload: Option<&Py<PyBytes>>,
    ) -> PyResult<()> {
        let mut verdict = Verdict::new(kind);
        if let Some(mark) = mark {
            verdict = verdict.with_mark(mark);
        }
        if let Some(payload) = payload {
            verdict = verdict.with_payload(payload.as_bytes(py));
        }
        {
            let mut collector = self.collector();
            if collector.dispatching == Some(thread::current().id()) {
                return collector
                    .batch
                    .push(key, verdict)
                    .map_err(|err| errors::os_error_errno("Failed to give verdict:", &err));
            }
        }
        py.detach(|| self.handle.verdict(key, &verdict))
            .map_err(|err| errors::os_error_errno("Failed to send verdict:", &err))
    }

    fn collector(&self) -> MutexGuard<'_, Collector> {
        // A panic while holding the lock leaves nothing half-done worth refusing.
        self.collector.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One `bind()` of a queue number: what its packets need to give their verdict.
#[derive(Debug)]
pub(crate) struct Binding {
    core: nfqueue_core::Binding,
    unbound: AtomicBool,
    verdicts: Arc<Verdicts>,
}

impl Binding {
    pub(crate) fn new(core: nfqueue_core::Binding, verdicts: Arc<Verdicts>) -> Self {
        Binding {
            core,
            unbound: AtomicBool::new(false),
            verdicts,
        }
    }

    /// The queue number.
    pub(crate) fn queue(&self) -> u16 {
        self.core.queue()
    }

    /// From now on its packets refuse verdicts: the kernel has dropped them.
    pub(crate) fn mark_unbound(&self) {
        self.unbound.store(true, Ordering::Release);
    }

    /// True once the queue was unbound.
    pub(crate) fn is_unbound(&self) -> bool {
        self.unbound.load(Ordering::Acquire)
    }

    /// Gives packet `id` its verdict (see [`Verdicts::give`]).
    pub(crate) fn give(
        &self,
        py: Python<'_>,
        id: u32,
        kind: VerdictKind,
        mark: Option<u32>,
        payload: Option<&Py<PyBytes>>,
    ) -> PyResult<()> {
        self.verdicts
            .give(py, self.core.packet(id), kind, mark, payload)
    }

    /// The name of interface `index` in the socket's network namespace.
    pub(crate) fn interface_name(&self, index: u32) -> Option<InterfaceName> {
        self.verdicts.handle.interface_name(index).ok()
    }
}
