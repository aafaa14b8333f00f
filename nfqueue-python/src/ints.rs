//! Integer arguments taken as the reference package takes them: its Cython code
//! converts with the type's `__int__`, so `7.0`, `x / 2`, `Decimal` and numpy
//! numbers pass (truncated), a `str` or an object with only `__index__` does
//! not, and an out-of-range value raises `OverflowError` with Cython's words.

use pyo3::exceptions::{PyDeprecationWarning, PyOverflowError, PyTypeError};
use pyo3::prelude::*;
use pyo3::types::PyInt;

/// A C integer argument: any object (converted in the method body, so that its
/// errors read as the reference's, with no argument name put in front), or
/// its default when not given.
pub(crate) enum IntArg<'py> {
    Given(Bound<'py, PyAny>),
    Default,
}

impl<'a, 'py> FromPyObject<'a, 'py> for IntArg<'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        Ok(IntArg::Given(obj.to_owned()))
    }
}

impl IntArg<'_> {
    /// The value as the C type `name` of `max` at most, or `default`.
    pub(crate) fn unsigned(&self, default: u64, max: u64, name: &str) -> PyResult<u64> {
        match self {
            IntArg::Given(obj) => unsigned(obj, max, name),
            IntArg::Default => Ok(default),
        }
    }

    /// The value as a C `int`, or `default`.
    pub(crate) fn c_int(&self, default: i32) -> PyResult<i32> {
        match self {
            IntArg::Given(obj) => c_int(obj),
            IntArg::Default => Ok(default),
        }
    }
}

/// `obj` as a Python int, the way Cython gets one: an int as it is, else the
/// result of its type's `__int__`.
fn integer<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyInt>> {
    if let Ok(int) = obj.cast::<PyInt>() {
        return Ok(int.clone());
    }
    let py = obj.py();
    let Ok(to_int) = obj.get_type().getattr("__int__") else {
        return Err(PyTypeError::new_err("an integer is required"));
    };
    let result = to_int.call1((obj,))?;
    let type_name = || -> PyResult<String> { Ok(result.get_type().name()?.to_string()) };
    match result.cast::<PyInt>() {
        Ok(int) if result.is_exact_instance_of::<PyInt>() => Ok(int.clone()),
        Ok(int) => {
            let message = format!(
                "__int__ returned non-int (type {}).  The ability to return an instance of a \
                 strict subclass of int is deprecated, and may be removed in a future version \
                 of Python.",
                type_name()?
            );
            let message = std::ffi::CString::new(message).unwrap_or_default();
            PyErr::warn(py, &py.get_type::<PyDeprecationWarning>(), &message, 1)?;
            Ok(int.clone())
        }
        Err(_) => Err(PyTypeError::new_err(format!(
            "__int__ returned non-int (type {})",
            type_name()?
        ))),
    }
}

/// `obj` as the unsigned C type `name` (`u_int32_t`, ...) of `max` at most.
pub(crate) fn unsigned(obj: &Bound<'_, PyAny>, max: u64, name: &str) -> PyResult<u64> {
    let int = integer(obj)?;
    if int.lt(0)? {
        return Err(PyOverflowError::new_err(format!(
            "can't convert negative value to {name}"
        )));
    }
    match int.extract::<u64>() {
        Ok(value) if value <= max => Ok(value),
        Ok(_) => Err(PyOverflowError::new_err(format!(
            "value too large to convert to {name}"
        ))),
        Err(_) => Err(PyOverflowError::new_err(
            "Python int too large to convert to C unsigned long",
        )),
    }
}

/// `obj` as a C `int`.
pub(crate) fn c_int(obj: &Bound<'_, PyAny>) -> PyResult<i32> {
    let int = integer(obj)?;
    let value = int
        .extract::<i64>()
        .map_err(|_| PyOverflowError::new_err("Python int too large to convert to C long"))?;
    i32::try_from(value).map_err(|_| PyOverflowError::new_err("value too large to convert to int"))
}

/// `obj` as a `u_int32_t` (a mark, a length).
pub(crate) fn u32_arg(obj: &Bound<'_, PyAny>) -> PyResult<u32> {
    unsigned(obj, u32::MAX.into(), "u_int32_t").map(|v| v as u32)
}
