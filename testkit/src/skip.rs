//! Tests that cannot run here say so, rather than pass in silence.
//!
//! libtest has no skipped state, so a test that cannot run where it is
//! prints one line, `SKIPPED: <test>: <reason>`, and returns (libtest then
//! counts it as passed). The line goes straight to the process's standard
//! output, past libtest's capture, so that it shows in every run, and
//! `cargo xtask test-netns` counts these lines and lists them, with their
//! reasons, in its summary.
//!
//! ```no_run
//! #[test]
//! fn a_replaced_payload_arrives() {
//!     if nfqueue_testkit::skip::payload_verdicts_dropped() {
//!         return;
//!     }
//!     // ...
//! }
//! ```

use std::io::Write;

/// What starts the text of a skip report.
pub const MARK: &str = "SKIPPED: ";

/// Reports that the calling test is skipped, and why: prints
/// `SKIPPED: <test>: <reason>` (libtest names each test's thread after the
/// test). The caller then returns.
pub fn report(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("?");
    let line = format!("{MARK}{test}: {reason}\n");
    // One write of the whole line, not through print!, which libtest captures.
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

/// Whether the calling test, which gives verdicts with a payload, must be
/// skipped because the kernel drops such packets in this process's user
/// namespace (see [`userns::payload_verdicts_dropped`](crate::userns::payload_verdicts_dropped)).
/// When it must, this reports the skip with the reason.
///
/// Call it first thing in the test, and return when it says `true`. In the
/// initial user namespace it is always `false`.
pub fn payload_verdicts_dropped() -> bool {
    match crate::userns::payload_verdicts_dropped() {
        Some(why) => {
            report(why);
            true
        }
        None => false,
    }
}
