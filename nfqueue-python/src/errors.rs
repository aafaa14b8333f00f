//! Python exceptions for the errors of nfqueue-core. Programs written for the
//! reference package catch by type and match by message, so an exception says
//! exactly what the reference's says; what nfqueue-core knows besides (the
//! errno, the reason, what to do) is its `__cause__`, an `OSError` of its own.

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

/// `OSError(errno, "<what nfqueue-core says>")`: the detail of an error.
pub(crate) fn detail(err: &Error) -> PyErr {
    let message = capitalized(err);
    match errno(err) {
        Some(errno) => PyOSError::new_err((errno, message)),
        None => PyOSError::new_err(message),
    }
}

/// `OSError(message)`, the one-argument form the reference raises (its `errno`
/// is None), caused by the detail of `err`.
pub(crate) fn os_error(py: Python<'_>, message: &str, err: &Error) -> PyErr {
    caused(py, PyOSError::new_err(message.to_owned()), detail(err))
}

/// `OSError(errno, message)`, the two-argument form the reference raises for a
/// failed system call, caused by the detail of `err`.
pub(crate) fn os_error_errno(py: Python<'_>, message: &str, err: &Error) -> PyErr {
    let exc = match errno(err) {
        Some(errno) => PyOSError::new_err((errno, message.to_owned())),
        None => PyOSError::new_err(message.to_owned()),
    };
    caused(py, exc, detail(err))
}

/// `exc` with `cause` as its `__cause__`.
pub(crate) fn caused(py: Python<'_>, exc: PyErr, cause: PyErr) -> PyErr {
    exc.set_cause(py, Some(cause));
    exc
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
