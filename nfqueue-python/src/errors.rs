//! Python exceptions for the errors of nfqueue-core. Programs written for the
//! reference package catch by type and match by message, so each one starts with
//! the reference's text and goes on with what nfqueue-core knows.

use nfqueue_core::Error;
use pyo3::exceptions::PyOSError;
use pyo3::prelude::*;

/// The errno that best names `err`.
fn errno(err: &Error) -> Option<i32> {
    match err {
        Error::Sys { source, .. }
        | Error::Config { source, .. }
        | Error::VerdictRejected { source, .. }
        | Error::Netns { source, .. } => source.raw_os_error(),
        Error::PermissionDenied { .. } => Some(libc::EPERM),
        Error::QueueTaken { .. } | Error::AlreadyBound { .. } => Some(libc::EBUSY),
        Error::NotNetfilterSocket { .. } => Some(libc::ENOTSOCK),
        Error::ReceiveOverflow => Some(libc::ENOBUFS),
        Error::NoAck { .. } => Some(libc::ETIMEDOUT),
        _ => Some(libc::EINVAL),
    }
}

/// `OSError("<prefix> <what nfqueue-core says>")`, with `errno` set as an
/// attribute only: `str()` and `args` stay the plain message, as the reference's
/// one-argument `OSError`s are.
pub(crate) fn os_error(py: Python<'_>, prefix: &str, err: &Error) -> PyErr {
    os_error_message(py, format!("{prefix} {}", capitalized(err)), errno(err))
}

/// `OSError(message)` with `errno` set as an attribute only.
pub(crate) fn os_error_message(py: Python<'_>, message: String, errno: Option<i32>) -> PyErr {
    let exc = PyOSError::new_err(message);
    if let Some(errno) = errno {
        // Setting an attribute of a fresh OSError cannot fail.
        let _ = exc.value(py).setattr("errno", errno);
    }
    exc
}

/// `OSError(errno, "<prefix> <what nfqueue-core says>")`, the two-argument form
/// the reference raises for failed system calls.
pub(crate) fn os_error_errno(prefix: &str, err: &Error) -> PyErr {
    let message = format!("{prefix} {}", capitalized(err));
    match errno(err) {
        Some(errno) => PyOSError::new_err((errno, message)),
        None => PyOSError::new_err(message),
    }
}

/// The error's message as a sentence of its own.
fn capitalized(err: &Error) -> String {
    let text = err.to_string();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).chain(['.']).collect(),
        None => text,
    }
}
