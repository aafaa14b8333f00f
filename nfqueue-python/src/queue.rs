//! `netfilterqueue.NetfilterQueue`: one socket and the queue number bound to it.
//!
//! The loops of `run()` and `run_socket()` are Python code (the package's
//! `NetfilterQueue` subclass) that calls the private methods here for each
//! packet, and calls the program's callback itself: no Rust frame is on the
//! stack while a callback runs, so when CPython ends a daemon thread at
//! shutdown (a forced unwind, from wherever the callback was waiting for the
//! GIL), the unwind crosses C and Python frames only, as with the reference.
//!
//! Locks: `queue` may be held across a kernel round trip (with the GIL
//! released); `state` is only ever held briefly. Neither is waited for while
//! the GIL is held, and `queue` is taken before `state` when both are.

use crate::dispatch::Packets;
use crate::errors;
use crate::gil;
use crate::ints::{self, IntArg};
use crate::packet::Packet;
use crate::received::Received;
use crate::verdicts::{Binding, Mode, Verdicts};
use crate::wait::Waker;
use nfqueue_core::{
    CopyMode, Error as CoreError, Queue, QueueConfig, QueueFlags, BURST_LEN, MAX_COPY_RANGE,
};
use pyo3::exceptions::{PyOSError, PyOverflowError, PyRuntimeError, PyRuntimeWarning};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::{PyTraverseError, PyVisit};
use std::collections::VecDeque;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::thread::{self, ThreadId};

/// `COPY_NONE`: the kernel sends nothing of the packets.
pub(crate) const COPY_NONE: u8 = 0;
/// `COPY_META`: metadata only.
pub(crate) const COPY_META: u8 = 1;
/// `COPY_PACKET`: metadata and payload.
pub(crate) const COPY_PACKET: u8 = 2;
/// The reference's default `max_len` (the kernel's own default too).
const DEFAULT_MAX_LEN: u64 = 1024;
/// The reference's default `range`; the kernel takes at most 65531.
const DEFAULT_RANGE: u64 = 0xffff;
/// The reference's default `sock_len`: room for half of 1024 packets of its
/// largest copy (4016 bytes and 780 of overhead each).
const DEFAULT_SOCK_LEN: u64 = 1024 * (4016 + 780) / 2;
/// The reference's default `af` (`PF_INET`).
const DEFAULT_AF: u64 = libc::AF_INET as u64;

/// What `_next()` and `_feed()` hand the Python loop: the callback and its
/// packet.
type Dispatch<'py> = Option<(Py<PyAny>, Bound<'py, Packet>)>;

/// A netlink socket that binds one queue number and hands its packets to a
/// callback.
// Weak references and `__del__` come from the package's subclass: the stable
// ABI of Python 3.8 cannot declare them here.
#[pyclass(frozen, subclass, module = "netfilterqueue", name = "NetfilterQueue")]
pub(crate) struct NetfilterQueue {
    queue: Mutex<QueueSide>,
    state: Mutex<State>,
    verdicts: Arc<Verdicts>,
    waker: Waker,
    fd: RawFd,
    /// Changes, with the queue lock held, whenever a queue is bound or
    /// unbound: a loop serving one binding sees that it is over.
    generation: AtomicU64,
    /// Packets read but not handed out before their queue was unbound (the
    /// kernel dropped them then).
    stale: AtomicU64,
}

/// The socket's receive side.
struct QueueSide {
    queue: Queue,
    /// Packets read but not handed to the callback, kept for the next loop:
    /// the rest of a burst whose callback raised, or that `stop()` ended.
    pending: VecDeque<Received>,
}

/// What [`NetfilterQueue::refill`] did.
pub(crate) enum Refill {
    /// Read this many packets (0: none was waiting).
    Read(usize),
    /// The queue was bound or unbound since the loop began.
    Rebound,
}

struct State {
    bound: Option<BoundQueue>,
    running: Option<Running>,
    /// The packet whose callback `run_socket()` runs now: its payload goes
    /// when it returns (`run()`'s is its iterator's).
    current: Option<Py<Packet>>,
    /// Overflows (`ENOBUFS`) that `run_socket()` read from the caller's socket.
    socket_overflows: u64,
}

struct BoundQueue {
    binding: Arc<Binding>,
    callback: Py<PyAny>,
}

/// The loop that serves the queue now.
#[derive(Clone, Copy)]
struct Running {
    thread: ThreadId,
    block: bool,
    /// `run_socket()`, which `stop()` does not end.
    socket: bool,
}

/// Locks `mutex`, waiting with the GIL released when another thread holds
/// it, and never holding it while waiting for the GIL.
fn lock_detached<'a, T: Send>(py: Python<'_>, mutex: &'a Mutex<T>) -> MutexGuard<'a, T> {
    loop {
        match mutex.try_lock() {
            Ok(guard) => return guard,
            Err(TryLockError::Poisoned(poisoned)) => return poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => gil::detach(py, || drop(lock(mutex))),
        }
    }
}

/// Locks `mutex`; a panic while it was held leaves nothing half-done.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl NetfilterQueue {
    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Unbinds: the verdicts given so far go out first, then the queue goes,
    /// with whatever of it was read and not handed out, and the verdicts that
    /// could not be sent. Quiet when the socket is gone (closed by the
    /// program), as the reference's `unbind()` is. Ends a `run()` that another
    /// thread is running (one that this thread runs, from a callback, goes on,
    /// and serves the queue if the callback binds one again).
    fn unbind_queue(&self, py: Python<'_>) {
        let me = thread::current().id();
        let taken = gil::detach(py, || {
            let mut side = lock(&self.queue);
            let bound = {
                let mut state = self.state();
                let bound = state.bound.take()?;
                self.generation.fetch_add(1, Ordering::AcqRel);
                bound.binding.mark_unbound();
                if state.running.is_some_and(|r| r.thread != me && !r.socket) {
                    self.waker.stop();
                }
                bound
            };
            // Failed sends are counted and, past the unbind, forgotten.
            let _ = self.verdicts.flush();
            let _ = side.queue.unbind(bound.binding.queue());
            self.verdicts.discard_unsent();
            self.count_stale(side.pending.len());
            side.pending.clear();
            Some(bound)
        });
        // The callback may hold the last reference to anything: drop it with
        // the GIL, outside the locks.
        drop(taken);
    }

    /// The callback of the packet handed out last has returned.
    fn end_current(&self) {
        let current = self.state().current.take();
        if let Some(packet) = current {
            packet.get().end_callback();
        }
    }

    /// Makes the packet for `callback` (of `run_socket()`), and remembers it as
    /// the current one.
    fn dispatch<'py>(
        &self,
        slf: &Bound<'py, Self>,
        received: Received,
        binding: Arc<Binding>,
        callback: Py<PyAny>,
    ) -> PyResult<Dispatch<'py>> {
        let py = slf.py();
        if callback.is_none(py) {
            return Ok(None);
        }
        let packet = Bound::new(py, Packet::new(received, slf.clone().unbind(), binding))?;
        self.state().current = Some(packet.clone().unbind());
        Ok(Some((callback, packet)))
    }

    pub(crate) fn waker(&self) -> &Waker {
        &self.waker
    }

    pub(crate) fn verdicts(&self) -> &Verdicts {
        &self.verdicts
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// The binding generation (see the field).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Counts packets dropped unhandled because their binding ended.
    pub(crate) fn count_stale(&self, packets: usize) {
        if packets > 0 {
            self.stale.fetch_add(packets as u64, Ordering::Relaxed);
        }
    }

    /// Fills `local` (empty) for a loop of binding generation `generation`:
    /// with the packets an earlier loop left, else with what is waiting in
    /// the socket, up to a burst, without blocking.
    pub(crate) fn refill(
        &self,
        py: Python<'_>,
        generation: u64,
        local: &mut VecDeque<Received>,
    ) -> PyResult<Refill> {
        let mut side = lock_detached(py, &self.queue);
        if self.generation() != generation {
            return Ok(Refill::Rebound);
        }
        if !side.pending.is_empty() {
            std::mem::swap(local, &mut side.pending);
            return Ok(Refill::Read(local.len()));
        }
        side.queue
            .recv_burst(BURST_LEN, |packet| {
                // The callback decides; an unverdicted packet stays queued.
                local.push_back(Received::copy(&packet.detach()));
            })
            .map(Refill::Read)
            .map_err(|err| errors::os_error_errno(py, "recv failed", &err))
    }

    /// Keeps `rest`, read by a loop of generation `generation` and not handed
    /// out, for the next loop; stale when the queue was unbound since.
    pub(crate) fn give_back(&self, py: Python<'_>, mut rest: VecDeque<Received>, generation: u64) {
        if rest.is_empty() {
            return;
        }
        let mut side = lock_detached(py, &self.queue);
        if self.generation() != generation {
            self.count_stale(rest.len());
            return;
        }
        rest.append(&mut side.pending);
        side.pending = rest;
    }

    /// Makes the socket readable, by asking the kernel for an empty answer:
    /// for packets read already but not handed out (after a callback raised,
    /// or a `stop()`), which an event loop watching `get_fd()` would otherwise
    /// not know about, as the reference's packets still in the socket are
    /// known. The receive side skips the answer.
    fn nudge(&self) {
        let request = libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<libc::nlmsghdr>() as u32,
            nlmsg_type: libc::NLMSG_NOOP as u16,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_ACK) as u16,
            nlmsg_seq: 0,
            nlmsg_pid: 0,
        };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut kernel: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `request` and `kernel` are valid for reads of the sizes
        // passed for the whole call. A failure only leaves the fd as it was.
        unsafe {
            libc::sendto(
                self.fd,
                (&request as *const libc::nlmsghdr).cast(),
                std::mem::size_of::<libc::nlmsghdr>(),
                libc::MSG_DONTWAIT,
                (&kernel as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
    }
}

/// The error of a failed `bind()`, in the reference's words.
fn bind_error(py: Python<'_>, queue: u16, err: &CoreError) -> PyErr {
    match err {
        CoreError::Config { what, .. } if *what == "flags" => {
            errors::os_error(py, &format!("Failed to configure queue {queue}."), err)
        }
        CoreError::Config { what, .. } if *what == "copy mode" => {
            errors::os_error(py, "Failed to set packet copy mode.", err)
        }
        CoreError::InvalidArgument(_) => {
            errors::os_error(py, "Failed to set packet copy mode.", err)
        }
        _ => errors::os_error(py, &format!("Failed to create queue {queue}."), err),
    }
}

/// Why a bind did not happen.
enum BindFailure {
    /// This object has a queue bound already.
    Bound,
    Core(CoreError),
}

#[pymethods]
impl NetfilterQueue {
    /// Opens the socket. `af` is accepted and ignored: the kernel has ignored
    /// the protocol family since Linux 3.8, and a queue gets every family its
    /// rules send. `sockfd` adopts (a duplicate of) a `NETLINK_NETFILTER`
    /// socket, e.g. one opened in another network namespace.
    #[new]
    #[pyo3(signature = (*, af = IntArg::Default, sockfd = IntArg::Default))]
    fn new(py: Python<'_>, af: IntArg<'_>, sockfd: IntArg<'_>) -> PyResult<Self> {
        af.unsigned(DEFAULT_AF, u16::MAX.into(), "u_int16_t")?;
        let sockfd = sockfd.c_int(-1)?;
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
        .map_err(|err| errors::os_error_errno(py, "Failed to open NFQueue.", &err))?;
        let waker = Waker::new()
            .map_err(|err| PyOSError::new_err((err.raw_os_error(), "Failed to open NFQueue.")))?;
        Ok(NetfilterQueue {
            fd: queue.as_raw_fd(),
            verdicts: Arc::new(Verdicts::new(queue.verdict_handle())),
            waker,
            queue: Mutex::new(QueueSide {
                queue,
                pending: VecDeque::new(),
            }),
            generation: AtomicU64::new(0),
            stale: AtomicU64::new(0),
            state: Mutex::new(State {
                bound: None,
                running: None,
                current: None,
                socket_overflows: 0,
            }),
        })
    }

    /// Binds queue number `queue_num` and calls `user_callback` with each of
    /// its packets from `run()`. The keyword-only flags set the kernel's queue
    /// flags.
    #[pyo3(signature = (
        queue_num, user_callback, max_len = IntArg::Default, mode = IntArg::Default,
        range = IntArg::Default, sock_len = IntArg::Default, *, fail_open = false,
        gso = false, uid_gid = false, conntrack = false, secctx = false,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn bind(
        &self,
        py: Python<'_>,
        queue_num: &Bound<'_, PyAny>,
        user_callback: Py<PyAny>,
        max_len: IntArg<'_>,
        mode: IntArg<'_>,
        range: IntArg<'_>,
        sock_len: IntArg<'_>,
        fail_open: bool,
        gso: bool,
        uid_gid: bool,
        conntrack: bool,
        secctx: bool,
    ) -> PyResult<()> {
        // The arguments first, in order, as the reference converts them.
        let queue_num = ints::c_int(queue_num)?;
        let u32_max = u64::from(u32::MAX);
        let max_len = max_len.unsigned(DEFAULT_MAX_LEN, u32_max, "u_int32_t")? as u32;
        let mode = mode.unsigned(COPY_PACKET.into(), u8::MAX.into(), "u_int8_t")? as u8;
        let range = range.unsigned(DEFAULT_RANGE, u32_max, "u_int32_t")? as u32;
        let sock_len = sock_len.unsigned(DEFAULT_SOCK_LEN, u32_max, "u_int32_t")? as u32;
        if self.state().bound.is_some() {
            return Err(PyRuntimeError::new_err(
                "A queue is already bound; use unbind() first",
            ));
        }
        // Deliberately stricter than the reference, which masks the number.
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
                return Err(errors::caused(
                    py,
                    PyOSError::new_err("Failed to set packet copy mode."),
                    PyOSError::new_err((
                        libc::EINVAL,
                        format!(
                            "Mode {other} is none of COPY_META (1) and COPY_PACKET (2): the \
                             kernel would queue no packet"
                        ),
                    )),
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
        let verdicts = Arc::clone(&self.verdicts);
        // The kernel round trip with the GIL released; the binding is known to
        // the loop before the queue lock (which reads its packets) is let go.
        let bound = gil::detach(py, || {
            let mut side = lock(&self.queue);
            if self.state().bound.is_some() {
                return Err((BindFailure::Bound, user_callback));
            }
            // Left by an unbind that could not reach the kernel (the program
            // closed the socket): try again, quietly.
            for stale in side.queue.bound_queues() {
                let _ = side.queue.unbind(stale);
            }
            if let Err(err) = side.queue.bind(num, &config) {
                return Err((BindFailure::Core(err), user_callback));
            }
            let core = side.queue.binding(num).expect("bound just now");
            self.state().bound = Some(BoundQueue {
                binding: Arc::new(Binding::new(core, verdicts)),
                callback: user_callback,
            });
            self.generation.fetch_add(1, Ordering::AcqRel);
            // The kernel caps a larger request itself.
            Ok(side
                .queue
                .set_recv_buffer_size(sock_len.min(i32::MAX as u32) as usize))
        });
        let granted = match bound {
            Ok(granted) => granted,
            Err((BindFailure::Bound, _)) => {
                return Err(PyRuntimeError::new_err(
                    "A queue is already bound; use unbind() first",
                ))
            }
            Err((BindFailure::Core(err), _)) => return Err(bind_error(py, num, &err)),
        };
        let granted = match granted {
            Ok(granted) => granted,
            Err(err) => {
                self.unbind_queue(py);
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
                self.unbind_queue(py);
                return Err(err);
            }
        }
        Ok(())
    }

    /// Unbinds the queue: the kernel drops the packets still waiting in it. Does
    /// nothing when none is bound. Ends a blocking `run()` in another thread.
    fn unbind(&self, py: Python<'_>) {
        self.unbind_queue(py);
    }

    /// The socket's file descriptor, to watch for readability in an event loop
    /// (then call `run(block=False)`).
    fn get_fd(&self) -> RawFd {
        self.fd
    }

    /// Ends a `run()` running in another thread (or in this one's callback)
    /// once its current packet is done; the queue stays bound. Called when no
    /// `run()` is running, it makes the next one return at once.
    fn stop(&self) {
        self.waker.stop();
    }

    /// Counters: this socket's (packets, verdicts, ...) and, under `kernel`,
    /// the queue's line of /proc/net/netfilter/nfnetlink_queue (None when no
    /// queue is bound or the file cannot be read).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let ours = self.verdicts.stats();
        let queue = self.state().bound.as_ref().map(|b| b.binding.queue());
        let kernel = {
            let side = lock_detached(py, &self.queue);
            queue.and_then(|q| side.queue.kernel_stats(q).ok().flatten())
        };
        let stale = self.stale.load(Ordering::Relaxed);
        let socket_overflows = self.state().socket_overflows;
        let dict = PyDict::new(py);
        dict.set_item("packets", ours.packets)?;
        dict.set_item("verdicts", ours.verdicts)?;
        dict.set_item("batch_verdicts", ours.batch_verdicts)?;
        dict.set_item("rejected_verdicts", ours.rejected_verdicts)?;
        dict.set_item("failed_sends", ours.failed_sends)?;
        dict.set_item("send_retries", ours.send_retries)?;
        dict.set_item("unsent_verdicts", self.verdicts.unsent())?;
        dict.set_item("stale_verdicts", ours.stale_verdicts)?;
        dict.set_item("stale_packets", ours.stale_packets + stale)?;
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

    /// Starts a loop of `run()` (`socket` false) or `run_socket()` on this
    /// thread; false when a `stop()` came first (the loop returns at once).
    fn _begin(&self, block: bool, batch: bool, socket: bool) -> PyResult<bool> {
        let mut state = self.state();
        if state.running.is_some() {
            return Err(PyRuntimeError::new_err(
                "run() is already running for this queue (in another thread, or this is its callback)",
            ));
        }
        if !socket && self.waker.take() {
            return Ok(false);
        }
        state.running = Some(Running {
            thread: thread::current().id(),
            block,
            socket,
        });
        drop(state);
        if !socket {
            self.verdicts
                .begin(if batch { Mode::Burst } else { Mode::Timed });
        }
        Ok(true)
    }

    /// The packets of the binding bound now, for `run()`'s loop (see
    /// `dispatch.rs`).
    fn _packets(slf: &Bound<'_, Self>) -> Packets {
        let py = slf.py();
        let this = slf.get();
        let generation = this.generation();
        let state = this.state();
        let block = state.running.is_some_and(|r| r.block);
        let bound = state
            .bound
            .as_ref()
            .map(|b| (b.binding.clone(), b.callback.clone_ref(py)));
        drop(state);
        Packets::new(slf.clone().unbind(), bound, generation, block, py)
    }

    /// The packet in a datagram `run_socket()` read, and its callback; `None`
    /// for a datagram that holds none. Ends the previous packet's callback.
    fn _feed<'py>(
        slf: &Bound<'py, Self>,
        datagram: &Bound<'py, PyBytes>,
    ) -> PyResult<Dispatch<'py>> {
        let py = slf.py();
        let this = slf.get();
        this.end_current();
        let Some(mut received) = Received::parse_datagram(datagram.as_bytes()) else {
            return Ok(None);
        };
        let (binding, callback) = {
            let state = this.state();
            match &state.bound {
                Some(b) if b.binding.queue() == received.queue => {
                    (b.binding.clone(), b.callback.clone_ref(py))
                }
                _ => return Ok(None),
            }
        };
        received.binding = Some(binding.core());
        this.dispatch(slf, received, binding, callback)
    }

    /// `run_socket()` read an overflow (`ENOBUFS`) from its socket.
    fn _overflowed(&self) {
        self.state().socket_overflows += 1;
    }

    /// Ends the loop: the current packet's callback, the verdicts given (sent
    /// now), a `stop()` meant for this loop. Packets read and not handed out
    /// wait for the next loop, and the socket is made readable for them.
    #[pyo3(signature = (packets))]
    fn _end(&self, py: Python<'_>, packets: Option<PyRefMut<'_, Packets>>) {
        if let Some(mut packets) = packets {
            packets.close(self, py);
        }
        self.end_current();
        // A failed send is counted, and tried again.
        let _ = self.verdicts.end();
        let waiting = !lock_detached(py, &self.queue).pending.is_empty();
        let running = self.state().running.take();
        if running.is_some_and(|r| !r.socket) {
            self.waker.take();
        }
        if waiting {
            self.nudge();
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // A lock held elsewhere means no collection is possible now anyway.
        if let Ok(state) = self.state.try_lock() {
            if let Some(bound) = &state.bound {
                visit.call(&bound.callback)?;
            }
            if let Some(current) = &state.current {
                visit.call(current)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self, py: Python<'_>) {
        self.unbind_queue(py);
        let current = self.state().current.take();
        drop(current);
    }
}

impl Drop for NetfilterQueue {
    /// Dropping the last reference unbinds, as the reference's `__dealloc__`
    /// closes its handle (the package's `__del__` has unbound already).
    fn drop(&mut self) {
        let side = self.queue.get_mut().unwrap_or_else(|e| e.into_inner());
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(bound) = state.bound.take() {
            bound.binding.mark_unbound();
            let _ = side.queue.unbind(bound.binding.queue());
        }
    }
}
