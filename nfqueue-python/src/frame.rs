//! A traceback entry named after the method an exception left. Native methods
//! add no frame of their own, and programs (the reference's tests among them)
//! look for `NetfilterQueue.run` in the traceback of a Ctrl-C.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

/// One function per method name, each only re-raising its argument.
const SOURCE: &std::ffi::CStr = c"
def _named(name):
    def reraise(exc):
        raise exc
    reraise.__code__ = reraise.__code__.replace(co_name=name)
    return reraise

run = _named('NetfilterQueue.run')
run_socket = _named('NetfilterQueue.run_socket')
";

static FRAMES: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

/// `err`, re-raised from a frame named `NetfilterQueue.<method>`.
pub(crate) fn named(py: Python<'_>, method: &str, err: PyErr) -> PyErr {
    let frames = FRAMES.get_or_try_init(py, || {
        PyModule::from_code(py, SOURCE, c"netfilterqueue", c"netfilterqueue._frames")
            .map(Bound::unbind)
    });
    let reraise = match frames.and_then(|m| m.bind(py).getattr(method)) {
        Ok(reraise) => reraise,
        // No frame is better than losing the error.
        Err(_) => return err,
    };
    match reraise.call1((err.into_value(py),)) {
        Err(reraised) => reraised,
        Ok(_) => unreachable!("the helper always raises"),
    }
}
