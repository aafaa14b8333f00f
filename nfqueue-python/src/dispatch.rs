//! The packets of one `run()` loop, handed to the package's Python loop by a
//! native iterator:
//!
//! ```python
//! packets = self._packets()
//! callback = packets.callback
//! for packet in packets:
//!     callback(packet)
//! ```
//!
//! Python's `for` calls the iterator's `__next__` slot directly, which keeps
//! the loop cheap, and the callback is called by Python, never from a Rust
//! frame (see `queue.rs`). The iterator serves one binding with one callback:
//! when the queue is bound again (by a callback, or another thread) it stops
//! with `done` false, and the loop starts a new one.

use crate::packet::Packet;
use crate::queue::{NetfilterQueue, Refill};
use crate::received::Received;
use crate::verdicts::Binding;
use crate::wait::{self, Woken};
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use pyo3::{PyTraverseError, PyVisit};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

/// An iterator over the packets of a `run()` loop, for its callback.
#[pyclass(module = "netfilterqueue", name = "_Packets")]
pub(crate) struct Packets {
    queue: Py<NetfilterQueue>,
    /// The binding served, and its callback (None: packets are ignored, as
    /// the reference ignores them with `bind(n, None)`).
    binding: Option<Arc<Binding>>,
    callback: Py<PyAny>,
    /// The queue's binding generation when this began.
    generation: u64,
    block: bool,
    /// Packets read, to be handed out in order.
    local: VecDeque<Received>,
    /// The packet handed out last: its payload goes when its callback returns.
    current: Option<Py<Packet>>,
    /// When the program's receive timeout runs out, as for its `recv`: counted
    /// from the first wait after a packet.
    deadline: Option<Instant>,
    /// The loop is over (rather than over for this binding).
    done: bool,
}

impl Packets {
    pub(crate) fn new(
        queue: Py<NetfilterQueue>,
        bound: Option<(Arc<Binding>, Py<PyAny>)>,
        generation: u64,
        block: bool,
        py: Python<'_>,
    ) -> Self {
        let (binding, callback) = match bound {
            Some((binding, callback)) => (Some(binding), callback),
            None => (None, py.None()),
        };
        Packets {
            queue,
            binding,
            callback,
            generation,
            block,
            local: VecDeque::new(),
            current: None,
            deadline: None,
            done: false,
        }
    }

    /// The callback of the packet handed out last has returned.
    fn end_current(&mut self) {
        if let Some(packet) = self.current.take() {
            packet.get().end_callback();
        }
    }

    /// Ends the iteration: the current packet's callback is over, and the
    /// packets not handed out go back to the queue, for the next loop (or
    /// are counted as stale if their binding has ended).
    pub(crate) fn close(&mut self, nfq: &NetfilterQueue, py: Python<'_>) {
        self.end_current();
        let rest = std::mem::take(&mut self.local);
        nfq.give_back(py, rest, self.generation);
    }
}

#[pymethods]
impl Packets {
    /// The callback for the packets.
    #[getter]
    fn callback(&self, py: Python<'_>) -> Py<PyAny> {
        self.callback.clone_ref(py)
    }

    /// True when the loop is over; false when it stopped for a new binding.
    #[getter]
    fn done(&self) -> bool {
        self.done
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    /// The next packet: from those read, else from a burst read now (the
    /// verdicts given so far go out first), else, for a blocking loop, after
    /// a wait until one comes, `stop()`, a signal whose handler raises, or the
    /// receive timeout the program set on the socket. A loop ends when the
    /// program made the socket non-blocking and it is empty.
    fn __next__<'py>(mut slf: PyRefMut<'py, Self>) -> PyResult<Option<Bound<'py, Packet>>> {
        let py = slf.py();
        let this = &mut *slf;
        this.end_current();
        let nfq = this.queue.bind(py).get();
        loop {
            if nfq.waker().take() {
                this.done = true;
                return Ok(None);
            }
            if nfq.generation() != this.generation {
                // Unbound (and perhaps bound again): what was read is stale.
                nfq.count_stale(std::mem::take(&mut this.local).len());
                return Ok(None);
            }
            if let Some(received) = this.local.pop_front() {
                match &this.binding {
                    Some(binding) if received.binding == Some(binding.core()) => {
                        if this.callback.is_none(py) {
                            continue;
                        }
                        let packet =
                            Packet::new(received, this.queue.clone_ref(py), binding.clone());
                        let packet = Bound::new(py, packet)?;
                        this.current = Some(packet.clone().unbind());
                        return Ok(Some(packet));
                    }
                    _ => {
                        nfq.count_stale(1);
                        continue;
                    }
                }
            }
            // The burst is done: its verdicts go out before anything is read
            // or waited for. A failed send is counted, and tried again.
            let _ = nfq.verdicts().flush();
            match nfq.refill(py, this.generation, &mut this.local)? {
                Refill::Rebound => return Ok(None),
                Refill::Read(0) => {}
                Refill::Read(_) => {
                    this.deadline = None;
                    continue;
                }
            }
            if !this.block || wait::is_nonblocking(nfq.fd()) {
                this.done = true;
                return Ok(None);
            }
            if this.deadline.is_none() {
                this.deadline = wait::receive_timeout(nfq.fd()).map(|t| Instant::now() + t);
            }
            // A signal that came since Python last looked.
            py.check_signals()?;
            let woken = wait::until_readable(py, nfq.fd(), nfq.waker(), this.deadline)
                .map_err(|err| PyOSError::new_err((err.raw_os_error(), "recv failed")))?;
            match woken {
                Woken::Readable | Woken::Stopped => {}
                Woken::TimedOut => {
                    this.done = true;
                    return Ok(None);
                }
                Woken::Signals => py.check_signals()?,
            }
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.queue)?;
        visit.call(&self.callback)?;
        if let Some(current) = &self.current {
            visit.call(current)?;
        }
        Ok(())
    }
}
