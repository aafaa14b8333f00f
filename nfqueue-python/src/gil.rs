//! Releasing the GIL around waits and kernel round trips, safely also while
//! the interpreter shuts down.
//!
//! When the interpreter finalizes, CPython (before 3.14) ends every other
//! thread that tries to take the GIL back with `pthread_exit()`. That is a
//! forced unwind, and one that crosses Rust frames aborts the process ("FATAL:
//! exception not rethrown"). So a thread of ours never takes the GIL back once
//! shutdown has begun: it parks, without a lock held, and the process exit
//! ends it, as it ends a thread that CPython 3.14 hangs in the same place.
//!
//! Shutdown is seen through an `atexit` hook, which CPython runs on the
//! finalizing thread before it marks the runtime as finalizing; the hook then
//! waits (the GIL released, briefly) for every thread that had already decided
//! to take the GIL back to have it. A thread checks the hook's flag only after
//! it announced itself, so no thread can slip from "not shutting down" into
//! CPython's exit path. `Py_IsFinalizing` is checked as well, for a
//! finalization that ran no `atexit` hooks.

use pyo3::prelude::*;
use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering::SeqCst};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

/// Set by the `atexit` hook: the interpreter is shutting down.
static EXITING: AtomicBool = AtomicBool::new(false);
/// The thread (its kernel id) that ran the hook: the one that finalizes, which
/// goes on.
static FINALIZER: AtomicI64 = AtomicI64::new(0);
/// Threads between deciding to take the GIL back and having it.
static RETAKING: AtomicUsize = AtomicUsize::new(0);
/// How long the hook waits for them; they only wait for the GIL, which the
/// hook gives up meanwhile.
const HOOK_WAIT: Duration = Duration::from_secs(1);

/// Runs `work` with the GIL released, then takes the GIL back, unless the
/// interpreter is shutting down and this thread is not the one finalizing it:
/// then the thread parks for good instead of returning.
///
/// `work` must leave no lock held and nothing half-done when it returns: a
/// parked thread never comes back to finish it.
pub(crate) fn detach<T, F>(py: Python<'_>, work: F) -> T
where
    F: Send + FnOnce() -> T,
    T: Send,
{
    let out = py.detach(|| {
        let out = work();
        RETAKING.fetch_add(1, SeqCst);
        if must_not_return() {
            RETAKING.fetch_sub(1, SeqCst);
            park_forever();
        }
        out
    });
    RETAKING.fetch_sub(1, SeqCst);
    out
}

/// Whether this thread must not take the GIL back.
fn must_not_return() -> bool {
    let me = thread_id();
    if EXITING.load(SeqCst) {
        return FINALIZER.load(SeqCst) != me;
    }
    // Without the hook (it runs in every Py_FinalizeEx), the process's first
    // thread is taken for the finalizing one.
    // SAFETY: getpid has no preconditions.
    is_finalizing() && me != i64::from(unsafe { libc::getpid() })
}

/// The calling thread's kernel id.
fn thread_id() -> i64 {
    // SAFETY: gettid has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) }
}

fn park_forever() -> ! {
    loop {
        thread::park();
    }
}

type IsFinalizing = unsafe extern "C" fn() -> c_int;

/// `Py_IsFinalizing` (3.13 on) or `_Py_IsFinalizing` (3.7 to 3.12), found at
/// run time: neither is in the stable ABI this module is built for.
fn is_finalizing() -> bool {
    static FUNCTION: OnceLock<Option<IsFinalizing>> = OnceLock::new();
    let function = FUNCTION.get_or_init(|| {
        [c"Py_IsFinalizing", c"_Py_IsFinalizing"]
            .into_iter()
            .find_map(|name| {
                // SAFETY: dlsym with RTLD_DEFAULT and a NUL-terminated name only
                // looks the symbol up.
                let found = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
                (!found.is_null()).then(|| {
                    // SAFETY: both functions take nothing and return an int,
                    // in every CPython that has them.
                    unsafe { std::mem::transmute::<*mut c_void, IsFinalizing>(found) }
                })
            })
    });
    // SAFETY: the function only reads the runtime's finalizing state, an
    // atomic that may be read without the GIL (pyo3 calls it so, too).
    function.is_some_and(|f| unsafe { f() } != 0)
}

/// The `atexit` hook: from now on threads of ours park rather than take the
/// GIL back. Waits for the threads already on their way to it.
#[pyfunction]
fn at_exit(py: Python<'_>) {
    FINALIZER.store(thread_id(), SeqCst);
    EXITING.store(true, SeqCst);
    let deadline = Instant::now() + HOOK_WAIT;
    while RETAKING.load(SeqCst) > 0 && Instant::now() < deadline {
        // Plain detach: this is the finalizing thread, which goes on.
        py.detach(|| thread::sleep(Duration::from_millis(1)));
    }
}

/// Registers the `atexit` hook and looks up `Py_IsFinalizing` while nothing
/// else runs.
pub(crate) fn install(m: &Bound<'_, PyModule>) -> PyResult<()> {
    is_finalizing();
    let hook = wrap_pyfunction!(at_exit, m)?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}
