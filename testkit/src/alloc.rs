//! A counting global allocator, for tests that prove a path allocates
//! nothing: a test binary installs it, then counts what one thread, or every
//! thread, allocates while a closure runs.
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: nfqueue_testkit::alloc::Counting = nfqueue_testkit::alloc::Counting;
//!
//! let n = nfqueue_testkit::alloc::on_this_thread(|| { /* the hot path */ });
//! assert_eq!(n, 0);
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The allocator: the system's, counting while counting is on.
#[derive(Debug)]
pub struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// Bytes asked for by the allocations counted in `ALLOCATIONS`.
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Counting on for every thread.
static EVERY_THREAD: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Counting on for this thread.
    static THIS_THREAD: Cell<bool> = const { Cell::new(false) };
}

// SAFETY: every call is passed on to the system allocator unchanged; counting
// touches only atomics and a const-initialised thread-local (no allocation).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

fn count(bytes: usize) {
    if EVERY_THREAD.load(Ordering::Relaxed) || THIS_THREAD.with(Cell::get) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Allocations made by the calling thread while `f` runs (the test binary
/// must have installed [`Counting`] as its global allocator).
pub fn on_this_thread(f: impl FnOnce()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    THIS_THREAD.with(|c| c.set(true));
    f();
    THIS_THREAD.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed) - before
}

/// Allocations made by every thread of the process while `f` runs: run the
/// test alone in its binary, so that no other test is counted.
pub fn on_every_thread(f: impl FnOnce()) -> u64 {
    counted_on_every_thread(f).0
}

/// Allocations made by every thread while `f` runs, and the bytes they asked
/// for (a reallocation counts its new size): for a test that bounds how much
/// memory a path takes, not only how often.
pub fn counted_on_every_thread(f: impl FnOnce()) -> (u64, u64) {
    let before = (
        ALLOCATIONS.load(Ordering::Relaxed),
        BYTES.load(Ordering::Relaxed),
    );
    EVERY_THREAD.store(true, Ordering::Relaxed);
    f();
    EVERY_THREAD.store(false, Ordering::Relaxed);
    (
        ALLOCATIONS.load(Ordering::Relaxed) - before.0,
        BYTES.load(Ordering::Relaxed) - before.1,
    )
}
