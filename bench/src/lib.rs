//! The benchmark harness behind `cargo xtask bench`: packets per second through
//! NFQUEUE, nfqueue's consumers side by side with C and Python ones, in a
//! throwaway network namespace.

mod bench;
mod bench_callgrind;
mod bench_latency;
mod bench_measure;
mod bench_report;
mod bench_svg;
mod bench_targets;
mod python;

pub use bench::{inner, run, INNER, USAGE};
use xtask_support::cmd;
