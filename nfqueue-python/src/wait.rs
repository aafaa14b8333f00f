//! The blocking wait of `run()`: the GIL released, woken by the socket, by
//! `stop()`/`unbind()` from another thread, or by a signal.

use nfqueue_core::StopHandle;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

/// Longest one wait sleeps. A signal delivered to another thread does not
/// interrupt this one's `poll`; Python runs its handler on the main thread, so
/// the main thread looks at the signals at least this often.
const SIGNAL_CHECK_MS: libc::c_int = 100;

/// Waits until `fd` is readable, `stop` is used or the interval passes, then
/// runs the Python signal handlers that are due (a `KeyboardInterrupt` from
/// Ctrl-C comes back as the error).
pub(crate) fn until_readable(py: Python<'_>, fd: RawFd, stop: &StopHandle) -> PyResult<()> {
    let stop_fd = stop.as_raw_fd();
    let polled = py.detach(|| {
        let mut fds = [
            libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: stop_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfds for the whole call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, SIGNAL_CHECK_MS) };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    });
    match polled {
        Ok(()) => {}
        Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
        Err(err) => {
            return Err(PyOSError::new_err((
                err.raw_os_error(),
                format!("poll failed: {err}"),
            )))
        }
    }
    py.check_signals()
}
