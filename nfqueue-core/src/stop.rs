//! Stopping a blocked receive loop from another thread or a signal handler.

use crate::error::{Error, Result};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;

/// Stops the blocking receive calls and [`Queue::run`](crate::Queue::run) of the
/// queue it was taken from. `Send + Sync + Clone`; [`stop`](Self::stop) only
/// writes to an eventfd, so it is async-signal-safe and may be called from a
/// signal handler. Once stopped, a queue stays stopped.
#[derive(Debug, Clone)]
pub struct StopHandle {
    event: Arc<OwnedFd>,
}

impl StopHandle {
    /// A new handle, not yet tied to a queue (a dispatcher running several
    /// queues uses one for all of them).
    ///
    /// # Errors
    /// [`Error::Sys`] when the eventfd cannot be created.
    pub fn new() -> Result<Self> {
        // SAFETY: plain system call; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(Error::last_os("eventfd"));
        }
        // SAFETY: `fd` is a new eventfd that nothing else owns.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(StopHandle {
            event: Arc::new(event),
        })
    }

    /// Makes every blocking receive on the queue return [`Error::Stopped`], now
    /// and from now on.
    pub fn stop(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to an eventfd we own. A full
        // counter (EAGAIN) still leaves the eventfd readable, which is all we need.
        unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// True once [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        let mut poll = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout.
        unsafe { libc::poll(&mut poll, 1, 0) == 1 }
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }
}

/// The eventfd becomes readable once [`StopHandle::stop`] was called: add it to a
/// `poll(2)` set to wake up then.
impl AsRawFd for StopHandle {
    fn as_raw_fd(&self) -> RawFd {
        self.fd()
    }
}
