//! Waking a receive thread that sleeps in `poll(2)` when a worker sends it a
//! verdict, without a system call per verdict while it is busy.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

/// An eventfd plus a flag saying whether its owner is (about to be) asleep.
///
/// The owner sets the flag, checks its channel once more, then polls; a worker
/// sends on the channel, then reads the flag. With sequentially consistent
/// ordering on both sides, either the owner sees the message or the worker
/// sees the flag, so no wake-up is lost, and while the owner is busy workers
/// make no system call.
#[derive(Debug)]
pub(crate) struct Waker {
    sleeping: AtomicBool,
    event: OwnedFd,
}

impl Waker {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: plain system call; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new eventfd that nothing else owns.
        let event = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Waker {
            sleeping: AtomicBool::new(false),
            event,
        })
    }

    /// Called by a worker after it sent a message to the owner.
    pub(crate) fn wake_if_sleeping(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            let one: u64 = 1;
            // SAFETY: writes 8 bytes from a valid u64 to our eventfd. A full
            // counter (EAGAIN) leaves it readable, which is all that matters.
            unsafe { libc::write(self.event.as_raw_fd(), (&one as *const u64).cast(), 8) };
        }
    }

    /// Called by the owner before its last check for messages and the poll.
    pub(crate) fn prepare_to_sleep(&self) {
        self.sleeping.store(true, Ordering::SeqCst);
    }

    /// Called by the owner once awake (or when the last check found messages).
    pub(crate) fn awake(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
        let mut value: u64 = 0;
        // SAFETY: reads 8 bytes into a valid u64 from our non-blocking eventfd;
        // EAGAIN (nothing written) is fine.
        unsafe { libc::read(self.event.as_raw_fd(), (&mut value as *mut u64).cast(), 8) };
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.event.as_raw_fd()
    }
}
