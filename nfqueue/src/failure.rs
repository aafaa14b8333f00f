//! Which receive thread failed first, so that `join` reports that error
//! whatever order the threads end in.

use std::sync::atomic::{AtomicUsize, Ordering};

const NONE: usize = usize::MAX;

/// The slot (queue index) of the first receive thread that failed.
#[derive(Debug)]
pub(crate) struct FirstFailure(AtomicUsize);

impl Default for FirstFailure {
    fn default() -> Self {
        FirstFailure(AtomicUsize::new(NONE))
    }
}

impl FirstFailure {
    /// Records that the thread of `slot` failed; only the first record stays.
    pub(crate) fn record(&self, slot: usize) {
        let _ = self
            .0
            .compare_exchange(NONE, slot, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The slot of the first thread that failed, if any did.
    pub(crate) fn first(&self) -> Option<usize> {
        match self.0.load(Ordering::Acquire) {
            NONE => None,
            slot => Some(slot),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_failure_is_kept() {
        let failures = FirstFailure::default();
        assert_eq!(failures.first(), None);
        failures.record(2);
        failures.record(0);
        assert_eq!(failures.first(), Some(2));
    }
}
