//! `netfilterqueue.NetfilterQueue`: one socket and the queue number bound to it.

use crate::errors;
use crate::frame;
use crate::packet::Packet;
use crate::received::Received;
use crate::verdicts::{Binding, Verdicts};
use crate::wait;
use nfqueue_core::{
    CopyMode, Error as CoreError, Queue, QueueConfig, QueueFlags, StopHandle, BURST_LEN,
    MAX_COPY_RANGE, RECV_BUFFER_LEN,
};
use pyo3::exceptions::{PyOSError, PyOverflowError, PyRuntimeError, PyRuntimeWarning};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::{PyTraverseError, PyVisit};
use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};

/// `COPY_NONE`: the kernel sends nothing of the packets.
pub(crate) const COPY_NONE: u8 = 0;
/// `COPY_META`: metadata only.
pub(crate) const COPY_META: u8 = 1;
/// `COPY_PACKET`: metadata and payload.
pub(crate) const COPY_PACKET: u8 = 2;
/// The reference's default `max_len` (the kernel's own default too).
const DEFAULT_MAX_LEN: u32 = 1024;
/// The reference's default `range`; the kernel takes at most 65531.
const DEFAULT_RANGE: u32 = 0xffff;
/// The reference's default `sock_len`: room for half of 1024 packets of its
/// largest copy (4016 bytes and 780 of overhead each).
const DEFAULT_SOCK_LEN: u32 = 1024 * (4016 + 780) / 2;

/// A netlink socket that binds one queue number and hands its packets to a
/// callback.
// Weak references come from the package's subclass (`__slots__ =
// ("__weakref__",)`): the stable ABI of Python 3.8 cannot declare them here.
#[pyclass(frozen, subclass, module = "netfilterqueue", name = "NetfilterQueue")]
pub(crate) struct NetfilterQueue {
    state: Mutex<State>,
    verdicts: Arc<Verdicts>,
    fd: RawFd,
}

/// Lock order: the GIL first, then this; nothing waits for the GIL or runs
/// Python code while holding it.
struct State {
    queue: Queue,
    bound: Option<BoundQueue>,
    /// Packets read but not yet handed to the callback: the rest of a burst
    /// whose callback raised.
    pending: VecDeque<Received>,
    /// Set while `run()` or `run_socket()` is active.
    running: bool,
    /// Ends a blocking `run()`: used by `stop()` and `unbind()`.
    stop: Option<StopHandle>,
    /// Overflows (`ENOBUFS`) that `run_socket()` read from the caller's socket.
    socket_overflows: u64,
}

struct BoundQueue {
    binding: Arc<Binding>,
    callback: Py<PyAny>,
}

impl NetfilterQueue {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Unbinds, after sending the verdicts the current burst's callbacks gave.
    fn unbind_queue(&self, py: Python<'_>) -> PyResult<()> {
        let flushed = self.verdicts.flush(py);
        let (bound, unbound) = {
            let mut state = self.state();
            let Some(bound) = state.bound.take() else {
                return flushed;
            };
            bound.binding.mark_unbound();
            state.pending.clear();
            if let Some(stop) = &state.stop {
                stop.stop();
            }
            let unbound = state.queue.unbind(bound.binding.queue());
            (bound, unbound)
        };
        // The callback may hold the last reference to anything: drop it
        // outside the lock.
        drop(bound);
        flushed?;
        unbound.map_err(|err| errors::os_error(py, "Failed to unbind the queue.", &err))
    }

    /// Marks the queue as served by one loop, or says it is already.
    fn start_serving(&self, stop: Option<StopHandle>) -> PyResult<()> {
        let mut state = self.state();
        if state.running {
            return Err(PyRuntimeError::new_err(
                "run() is already running for this queue (in another thread, or this is its callback)",
            ));
        }
        state.running = true;
        state.stop = stop;
        Ok(())
    }

    fn stop_serving(&self, py: Python<'_>) -> PyResult<()> {
        let flushed = self.verdicts.flush(py);
        let mut state = self.state();
        state.running = false;
        state.stop = None;
        flushed
    }

    /// The loop of `run()`: dispatch, send the burst's verdicts, read the next
    /// burst, and wait (blocking runs only) when there is none.
    fn serve(&self, py: Python<'_>, stop: Option<&StopHandle>) -> PyResult<()> {
        loop {
            self.dispatch_pending(py, stop)?;
            py.check_signals()?;
            if stop.is_some_and(StopHandle::is_stopped) {
                return Ok(());
            }
            match self.read_burst()? {
                None => return Ok(()),
                Some(0) => {}
                Some(_) => continue,
            }
            let Some(stop) = stop else {
                return Ok(());
            };
            wait::until_readable(py, self.fd, stop)?;
        }
    }

    /// Hands the packets read to the callback, one by one, then sends the
    /// verdicts they gave. A callback that raises ends it; the packets after
    /// that one wait for the next `run()`.
    fn dispatch_pending(&self, py: Python<'_>, stop: Option<&StopHandle>) -> PyResult<()> {
        self.verdicts.begin_burst();
        let dispatched = self.dispatch_each(py, stop);
        let flushed = self.verdicts.flush(py);
        dispatched.and(flushed)
    }

    fn dispatch_each(&self, py: Python<'_>, stop: Option<&StopHandle>) -> PyResult<()> {
        loop {
            if stop.is_some_and(StopHandle::is_stopped) {
                return Ok(());
            }
            let (received, binding, callback) = {
                let mut state = self.state();
                let State { bound, pending, .. } = &mut *state;
                let Some(bound) = bound.as_ref() else {
                    return Ok(());
                };
                let Some(received) = pending.pop_front() else {
                    return Ok(());
                };
                (
                    received,
                    bound.binding.clone(),
                    bound.callback.clone_ref(py),
                )
            };
            let packet = Bound::new(py, Packet::new(received, binding))?;
            let called = callback.call1(py, (&packet,));
            packet.get().end_callback();
            called?;
        }
    }

    /// Reads what is waiting, up to a burst, without blocking; `None` when no
    /// queue is bound.
    fn read_burst(&self) -> PyResult<Option<usize>> {
        let mut state = self.state();
        let State {
            queue,
            bound,
            pending,
            ..
        } = &mut *state;
        if bound.is_none() {
            return Ok(None);
        }
        queue
            .recv_burst(BURST_LEN, |packet| {
                // The callback decides; an unverdicted packet stays queued.
                pending.push_back(Received::copy(&packet.detach()));
            })
            .map(Some)
            .map_err(|err| errors::os_error_errno("recv failed:", &err))
    }

    /// The loop of `run_socket()`: the caller's socket reads, we dispatch.
    fn serve_socket(&self, py: Python<'_>, sock: &Bound<'_, PyAny>) -> PyResult<()> {
        loop {
            let data = match sock.call_method1("recv", (RECV_BUFFER_LEN,)) {
                Ok(data) => data,
                Err(err) if err.is_instance_of::<PyOSError>(py) => {
                    let errno: Option<i32> = err.value(py).getattr("errno")?.extract()?;
                    match errno {
                        Some(libc::ENOBUFS) => {
                            self.state().socket_overflows += 1;
                            continue;
                        }
                        // A non-blocking socket with nothing left: call again when readable.
                        Some(libc::EAGAIN) => return Ok(()),
                        _ => return Err(err),
                    }
                }
                Err(err) => return Err(err),
            };
            let datagram = data.cast::<PyBytes>()?;
            {
                let mut state = self.state();
                if state.bound.is_none() {
                    return Ok(());
                }
                if let Some(received) = Received::parse_datagram(datagram.as_bytes()) {
                    state.pending.push_back(received);
                }
            }
            self.dispatch_pending(py, None)?;
        }
    }
}

/// The error of a failed `bind()`, with the reference's messages first.
fn bind_error(py: Python<'_>, queue: u16, err: &CoreError) -> PyErr {
    match err {
        CoreError::Config { what, .. } if *what == "copy mode" => {
            errors::os_error(py, "Failed to set packet copy mode.", err)
        }
        CoreError::Config { what, .. } | CoreError::NoAck { what, .. } if *what != "bind" => {
            errors::os_error(py, &format!("Failed to configure queue {queue}."), err)
        }
        _ => errors::os_error(py, &format!("Failed to create queue {queue}."), err),
    }
}

#[pymethods]
impl NetfilterQueue {
    /// Opens the socket. `af` is accepted and ignored: the kernel has ignored
    /// the protocol family since Linux 3.8, and a queue gets every family its
    /// rules send. `sockfd` adopts (a duplicate of) a `NETLINK_NETFILTER`
    /// socket, e.g. one opened in another network namespace.
    #[new]
    #[pyo3(signature = (*, af = libc::AF_INET as u16, sockfd = -1))]
    fn new(af: u16, sockfd: i32) -> PyResult<Self> {
        let _ = af;
        let queue = if sockfd >= 0 {
            // SAFETY: fcntl on any integer is safe; the result is checked.
            let dup = unsafe { libc::fcntl(sockfd, libc::F_DUPFD_CLOEXEC, 0) };
            if dup < 0 {
                let err = std::io::Error::last_os_error();
                return Err(PyOSError::new_err((err.raw_os_error(), "dup2 failed")));
            }
            // SAFETY: `dup` is a new descriptor that nothing else owns.
            let owned = unsafe { OwnedFd::from_raw_fd(dup) };
            Queue::from_fd(owned)
        } else {
            Queue::open()
        }
        .map_err(|err| errors::os_error_errno("Failed to open NFQueue.", &err))?;
        Ok(NetfilterQueue {
            fd: queue.as_raw_fd(),
            verdicts: Arc::new(Verdicts::new(queue.verdict_handle())),
            state: Mutex::new(State {
                queue,
                bound: None,
                pending: VecDeque::new(),
                running: false,
                stop: None,
                socket_overflows: 0,
            }),
        })
    }

    /// Binds queue number `queue_num` and calls `user_callback` with each of
    /// its packets from `run()`. The keyword-only flags set the kernel's queue
    /// flags.
    #[pyo3(signature = (
        queue_num, user_callback, max_len = DEFAULT_MAX_LEN, mode = COPY_PACKET,
        range = DEFAULT_RANGE, sock_len = DEFAULT_SOCK_LEN, *, fail_open = false,
        gso = false, uid_gid = false, conntrack = false, secctx = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn bind(
        &self,
        py: Python<'_>,
        queue_num: i64,
        user_callback: Py<PyAny>,
        max_len: u32,
        mode: u8,
        range: u32,
        sock_len: u32,
        fail_open: bool,
        gso: bool,
        uid_gid: bool,
        conntrack: bool,
        secctx: bool,
    ) -> PyResult<()> {
        let num = u16::try_from(queue_num).map_err(|_| {
            PyOverflowError::new_err(format!(
                "queue_num {queue_num} is out of range: queue numbers are 0 to 65535"
            ))
        })?;
        let copy_mode = match mode {
            COPY_NONE => CopyMode::None,
            COPY_META => CopyMode::Meta,
            COPY_PACKET => CopyMode::Packet(range.min(MAX_COPY_RANGE)),
            other => {
                return Err(errors::os_error_message(
                    py,
                    format!(
                        "Failed to set packet copy mode. Mode {other} is none of COPY_NONE (0), \
                         COPY_META (1) and COPY_PACKET (2)."
                    ),
                    Some(libc::EINVAL),
                ))
            }
        };
        let flags = [
            (fail_open, QueueFlags::FAIL_OPEN),
            (gso, QueueFlags::GSO),
            (uid_gid, QueueFlags::UID_GID),
            (conntrack, QueueFlags::CONNTRACK),
            (secctx, QueueFlags::SECCTX),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .fold(QueueFlags::empty(), |all, (_, flag)| all | flag);
        let config = QueueConfig::default()
            .copy_mode(copy_mode)
            .max_len(max_len)
            .flags(flags);
        let granted = {
            let mut state = self.state();
            if state.bound.is_some() {
                return Err(PyRuntimeError::new_err(
                    "A queue is already bound; use unbind() first",
                ));
            }
            state
                .queue
                .bind(num, &config)
                .map_err(|err| bind_error(py, num, &err))?;
            let core = state.queue.binding(num).expect("bound just now");
            state.bound = Some(BoundQueue {
                binding: Arc::new(Binding::new(core, self.verdicts.clone())),
                callback: user_callback,
            });
            // The kernel caps a larger request itself.
            state
                .queue
                .set_recv_buffer_size(sock_len.min(i32::MAX as u32) as usize)
        };
        let granted = match granted {
            Ok(granted) => granted,
            Err(err) => {
                let _ = self.unbind_queue(py);
                return Err(errors::os_error(
                    py,
                    "Failed to set the receive buffer size.",
                    &err,
                ));
            }
        };
        // The kernel reports twice the size asked for when it grants it all.
        if granted as u32 != sock_len.wrapping_mul(2) {
            let message = CString::new(format!(
                "Socket rcvbuf limit is now {granted}, requested {sock_len}."
            ))
            .expect("no NUL in the message");
            let category = py.get_type::<PyRuntimeWarning>();
            // Stack level 1: the warning names the caller's line.
            if let Err(err) = PyErr::warn(py, &category, &message, 1) {
                // Raised as an error: leave no queue bound behind it.
                let _ = self.unbind_queue(py);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Unbinds the queue: the kernel drops the packets still waiting in it. Does
    /// nothing when none is bound. Ends a blocking `run()` in another thread.
    fn unbind(&self, py: Python<'_>) -> PyResult<()> {
        self.unbind_queue(py)
    }

    /// The socket's file descriptor, to watch for readability in an event loop
    /// (then call `run(block=False)`).
    fn get_fd(&self) -> RawFd {
        self.fd
    }

    /// Calls the callback for every packet until an exception (from the
    /// callback, or a signal handler such as Ctrl-C's) or, from another thread,
    /// `stop()` or `unbind()`. With `block=False`, handles what is waiting and
    /// returns.
    #[pyo3(signature = (block = None))]
    fn run(&self, py: Python<'_>, block: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        // Any object, by its truth value, as in the reference; not given: True.
        let block = block.map_or(Ok(true), |b| b.is_truthy())?;
        let stop = if block {
            Some(StopHandle::new().map_err(|err| errors::os_error_errno("eventfd failed:", &err))?)
        } else {
            None
        };
        self.start_serving(stop.clone())?;
        let served = self.serve(py, stop.as_ref());
        let stopped = self.stop_serving(py);
        served
            .and(stopped)
            .map_err(|err| frame::named(py, "run", err))
    }

    /// As `run()`, but reads with `sock.recv()`, so that a library such as
    /// gevent can make the wait cooperative. Returns when a non-blocking
    /// `sock` has nothing more to read.
    fn run_socket(&self, py: Python<'_>, sock: &Bound<'_, PyAny>) -> PyResult<()> {
        self.start_serving(None)?;
        let served = self.serve_socket(py, sock);
        let stopped = self.stop_serving(py);
        served
            .and(stopped)
            .map_err(|err| frame::named(py, "run_socket", err))
    }

    /// Ends a blocking `run()` running in another thread (or in this one's
    /// callback) once its current packet is done; the queue stays bound.
    fn stop(&self) {
        if let Some(stop) = &self.state().stop {
            stop.stop();
        }
    }

    /// Counters: this socket's (packets, verdicts, ...) and, under `kernel`,
    /// the queue's line of /proc/net/netfilter/nfnetlink_queue (None when no
    /// queue is bound or the file cannot be read).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let ours = self.verdicts.stats();
        let (kernel, socket_overflows) = {
            let state = self.state();
            let kernel = state
                .bound
                .as_ref()
                .and_then(|b| state.queue.kernel_stats(b.binding.queue()).ok().flatten());
            (kernel, state.socket_overflows)
        };
        let dict = PyDict::new(py);
        dict.set_item("packets", ours.packets)?;
        dict.set_item("verdicts", ours.verdicts)?;
        dict.set_item("batch_verdicts", ours.batch_verdicts)?;
        dict.set_item("rejected_verdicts", ours.rejected_verdicts)?;
        dict.set_item("failed_sends", ours.failed_sends)?;
        dict.set_item(
            "receive_overflows",
            ours.receive_overflows + socket_overflows,
        )?;
        dict.set_item("malformed", ours.malformed)?;
        dict.set_item("recv_calls", ours.recv_calls)?;
        dict.set_item("send_calls", ours.send_calls)?;
        let kernel = match kernel {
            Some(k) => {
                let line = PyDict::new(py);
                line.set_item("queue", k.queue)?;
                line.set_item("portid", k.portid)?;
                line.set_item("waiting", k.waiting)?;
                line.set_item("copy_mode", k.copy_mode)?;
                line.set_item("copy_range", k.copy_range)?;
                line.set_item("queue_dropped", k.queue_dropped)?;
                line.set_item("user_dropped", k.user_dropped)?;
                line.set_item("last_id", k.last_id)?;
                Some(line)
            }
            None => None,
        };
        dict.set_item("kernel", kernel)?;
        Ok(dict)
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // A lock held elsewhere means no collection is possible now anyway.
        if let Ok(state) = self.state.try_lock() {
            if let Some(bound) = &state.bound {
                visit.call(&bound.callback)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self, py: Python<'_>) {
        let _ = self.unbind_queue(py);
    }
}

impl Drop for NetfilterQueue {
    /// Dropping the last reference unbinds, as the reference's `__del__` does.
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(bound) = state.bound.take() {
            bound.binding.mark_unbound();
            let _ = state.queue.unbind(bound.binding.queue());
        }
    }
}
