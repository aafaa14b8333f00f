//! The blocking wait of `run()`: the GIL released, woken by the socket, by
//! `stop()` (or `unbind()` from another thread), by a signal, or by the receive
//! timeout the program set on the socket.
//!
//! Nothing of ours is set on the socket: a program that shares it (through
//! `get_fd()` and `socket.fromfd`) finds it as it left it, and what it sets
//! (`SO_RCVTIMEO`, `O_NONBLOCK`) is read here at each wait and honoured as the
//! reference's blocking `recv` honours it.

use crate::gil;
use pyo3::prelude::*;
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// What `stop()` uses: an eventfd to wake a wait, and a flag that says why.
/// Made with the queue, so that its number is taken before the program can
/// close the socket's (a number freed then must not become ours).
#[derive(Debug)]
pub(crate) struct Waker {
    event: OwnedFd,
    stopped: AtomicBool,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Waker {
            // SAFETY: `fd` is a new eventfd that nothing else owns.
            event: unsafe { OwnedFd::from_raw_fd(fd) },
            stopped: AtomicBool::new(false),
        })
    }

    /// Asks the loop to stop (now, or the next one to start).
    pub(crate) fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd. A full
        // counter still leaves it readable, which is all a wait needs.
        unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Takes a stop asked for, if any: true once per `stop()`.
    pub(crate) fn take(&self) -> bool {
        if !self.stopped.swap(false, Ordering::AcqRel) {
            return false;
        }
        self.drain();
        true
    }

    fn drain(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd.
        unsafe { libc::read(self.event.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// Why a wait ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Woken {
    /// The socket is readable (or has an error to report, or was closed).
    Readable,
    /// The deadline (the program's receive timeout) passed: the reference's
    /// `EAGAIN`.
    TimedOut,
    /// `stop()` was used.
    Stopped,
    /// A signal came, or it is time to look for one: Python's handlers are
    /// due.
    Signals,
}

/// How often the main thread looks at Python's signals while it waits. A
/// signal that comes just before the wait starts has had its C handler run
/// already and does not interrupt it (the reference's blocking `recv` has the
/// same window); this bounds how long its Python handler (Ctrl-C's) then
/// waits. Other threads run no Python signal handlers and wait without it.
const SIGNAL_CHECK: Duration = Duration::from_millis(100);

/// Waits, with the GIL released, until `fd` is readable, `waker` is used, a
/// signal arrives (or, on the main thread, [`SIGNAL_CHECK`] passes) or
/// `deadline` passes (`None`: no limit).
pub(crate) fn until_readable(
    py: Python<'_>,
    fd: RawFd,
    waker: &Waker,
    deadline: Option<Instant>,
) -> io::Result<Woken> {
    let event = waker.event.as_raw_fd();
    // SAFETY: getpid and gettid have no preconditions.
    let main_thread = unsafe { libc::syscall(libc::SYS_gettid) == i64::from(libc::getpid()) };
    gil::detach(py, || loop {
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: event,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        let limit = match (left, main_thread) {
            (Some(left), true) => Some(left.min(SIGNAL_CHECK)),
            (None, true) => Some(SIGNAL_CHECK),
            (left, false) => left,
        };
        let limit = limit.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let limit_ptr = limit
            .as_ref()
            .map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` is a valid array of two pollfds and `limit_ptr` null or
        // a valid timespec, both for the whole call; no signal mask is given.
        let rc = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, limit_ptr, std::ptr::null()) };
        if rc < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EINTR) => Ok(Woken::Signals),
                _ => Err(err),
            };
        }
        if rc == 0 {
            return Ok(match deadline {
                Some(deadline) if Instant::now() >= deadline => Woken::TimedOut,
                _ => Woken::Signals,
            });
        }
        if fds[1].revents != 0 {
            if waker.stopped.load(Ordering::Acquire) {
                return Ok(Woken::Stopped);
            }
            // A stop taken already left its count behind: clear it, wait on.
            waker.drain();
        }
        // POLLNVAL (the program closed the descriptor) and POLLERR read as
        // readable: the receive that follows reports them as the reference's
        // `recv` would.
        if fds[0].revents != 0 {
            return Ok(Woken::Readable);
        }
    })
}

/// Whether the program made the socket non-blocking (`setblocking(False)` or
/// `settimeout()` on a `socket.fromfd` of it share the flag with us).
pub(crate) fn is_nonblocking(fd: RawFd) -> bool {
    // SAFETY: F_GETFL on any integer is safe; an error returns -1.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_NONBLOCK != 0
}

/// The receive timeout the program set on the socket (`SO_RCVTIMEO`), if any.
pub(crate) fn receive_timeout(fd: RawFd) -> Option<Duration> {
    // SAFETY: all-zero is a valid timeval.
    let mut tv: libc::timeval = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: `tv` and `len` are valid for writes and describe a timeval.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    };
    if rc < 0 || (tv.tv_sec <= 0 && tv.tv_usec <= 0) {
        return None;
    }
    Some(Duration::from_secs(tv.tv_sec as u64) + Duration::from_micros(tv.tv_usec as u64))
}
