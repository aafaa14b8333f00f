//! The benchmark harness behind `cargo xtask bench`: packets per second
//! through NFQUEUE, nfqueue's consumers side by side with C and Python ones, in
//! a throwaway network namespace.
//!
//! [`run`] (outside) builds the consumers (the C ones in `bench/` with `cc`,
//! the Rust ones as `bench_*` examples in release mode, the Python ones into
//! virtualenvs), then runs the program that called it again as [`INNER`]
//! inside `unshare --net --pid --fork`, like `cargo xtask demo`: the namespace
//! and its rules disappear with that process. That program passes the
//! arguments after [`INNER`] to [`inner`], which measures every scenario and
//! writes the report.
//!
//! Inside, a UDP sender pinned to CPU 0 sends to 127.0.0.1, port 9.
//! `mangle OUTPUT` queues the packets to queue 0; a rule in `filter OUTPUT` (a
//! later hook priority) counts what the consumer, pinned to CPU 1, accepted; a
//! `raw PREROUTING` rule drops it when it comes back in through loopback.
//! Consumers take turns round by round (A B C A B C ...), and the report pairs
//! ratios by round. The scaling scenarios give the handler CPU work and the
//! consumer both CPUs; the latency scenario paces request/response pairs
//! through the queue instead.
//!
//! # Layout
//!
//! The modules follow the flow of a run; each uses only modules above it in
//! this list (and `xtask-support`, shared with xtask):
//!
//! 1. `stats`: the median and the spread (median, min, max) of a set of
//!    numbers, the small shared part.
//! 2. Scenarios: `scenario` (the traffic, the consumers that take turns, their
//!    CPUs and handler work), then `options` (the command line: which
//!    scenarios and consumers, how many rounds of how long).
//! 3. Running a consumer: `consumer` (what each name runs, and building it),
//!    then `running` (the namespace's rules; a consumer started until it has
//!    bound its queues, and stopped for its count).
//! 4. Measuring: `measure` (one consumer once, a throughput scenario round by
//!    round, the soak run), then `latency` (the latency scenario) and
//!    `callgrind` (instructions and cache misses per packet under valgrind).
//! 5. Report and chart: `targets` (the targets checked against a run), then
//!    `report` (markdown and CSV) and `chart` (the SVG).
//!
//! This file ties them together: [`run`] and [`inner`].
//!
//! The crate depends on no library crate of the workspace: it builds the
//! consumers when it runs, after `cargo xtask` has checked (or installed) the
//! system libraries they need.

// In the order of the flow (see above); each uses only those before it.
// 1. Shared numbers.
mod stats;
// 2. Scenarios.
mod scenario;
// 2. What the command line picks of them.
mod options;
// 3. Running a consumer: what it is, and building it.
mod consumer;
// 3. Running a consumer: the namespace's rules, start, stop.
mod running;
// 4. Measuring: throughput and soak.
mod measure;
// 4. Measuring: the latency scenario.
mod latency;
// 4. Measuring: instructions per packet.
mod callgrind;
// 5. Report and chart: the targets.
mod targets;
// 5. Report and chart: markdown and CSV.
mod report;
// 5. Report and chart: the SVG.
mod chart;

use consumer::{Consumer, Programs};
use latency::LatencyPoint;
use measure::Measured;
use options::Options;
use scenario::{Traffic, LATENCY_LOADS, SCENARIOS};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xtask_support::cmd::{self, ChildGuard, Result};

pub use options::USAGE;

/// The hidden command that runs inside the namespace.
pub const INNER: &str = "__bench-inner";

/// The directory for results: `target/bench` (or `$CARGO_TARGET_DIR/bench`).
fn out_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                cmd::workspace_root().join(t)
            }
        })
        .unwrap_or_else(|| cmd::workspace_root().join("target"))
        .join("bench")
}

/// `cargo xtask bench ARGS`: checks the tools with `ensure_tools(callgrind)`
/// (xtask's prerequisites check, which installs what is missing as root on
/// Debian), builds the consumers, and runs the program that called it again
/// as [`INNER`] in a throwaway namespace; returns the exit code to pass on.
///
/// # Errors
///
/// Bad arguments, not root, a missing tool, a failed build, or a run over its
/// time limit.
pub fn run(args: &[String], ensure_tools: impl FnOnce(bool) -> Result<()>) -> Result<u8> {
    let opts = Options::parse(args)?;
    if !cmd::is_root() {
        return Err(
            "bench: needs root (pinned processes, SO_SNDBUFFORCE, iptables and \
                    /proc/net/netfilter in a network namespace)"
                .into(),
        );
    }
    ensure_tools(opts.callgrind.is_some())?;
    let out = out_dir();
    let bin = out.join("bin");
    std::fs::create_dir_all(&bin)?;
    consumer::build_c(&bin)?;
    consumer::build_examples(&bin)?;
    let python_wanted = opts.soak.is_none()
        && opts.callgrind.is_none()
        && SCENARIOS
            .iter()
            .filter(|s| opts.wants(s.name))
            .flat_map(|s| opts.consumers_of(s))
            .any(consumer::is_python);
    if python_wanted {
        consumer::prepare_python(&cmd::workspace_root(), &out, &bin)?;
    }

    let mut unshare = cmd::program("unshare");
    unshare
        // A /proc of the new PID namespace, where the consumers' PIDs are found.
        .args(["--net", "--pid", "--fork", "--kill-child", "--mount-proc"])
        .arg(std::env::current_exe()?)
        .arg(INNER)
        .arg(&out)
        .args(opts.to_args());
    let limit = budget(&opts, Pace::Limit);
    eprintln!(
        "bench: expect about {:.1} min (at most {:.1} min)",
        budget(&opts, Pace::Typical).as_secs_f64() / 60.0,
        limit.as_secs_f64() / 60.0
    );
    let mut child = ChildGuard(cmd::spawn(&mut unshare)?);
    match cmd::wait_until(&mut child.0, Instant::now() + limit)? {
        Some(status) => Ok(cmd::exit_code(status)),
        None => Err(format!("bench: timed out after {}s", limit.as_secs()).into()),
    }
}

/// Time per measurement beyond its measured window: a typical one, for the
/// estimate printed at the start, or the most allowed, for the time limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pace {
    Typical,
    Limit,
}

impl Pace {
    /// Seconds to start a consumer, read counters, start the traffic and stop
    /// the consumer again, around one measured window.
    fn overhead(self) -> f64 {
        match self {
            Pace::Typical => 1.5,
            Pace::Limit => 8.0,
        }
    }

    /// Seconds around one run of the latency client: the process and the
    /// rule's changes.
    fn client_overhead(self) -> f64 {
        match self {
            Pace::Typical => 0.2,
            Pace::Limit => 3.0,
        }
    }
}

/// How long the whole run takes: typically, or at most (its time limit, with
/// room for starting and stopping).
fn budget(opts: &Options, pace: Pace) -> Duration {
    let overhead = pace.overhead();
    let mut secs = if pace == Pace::Limit { 60.0 } else { 10.0 };
    // A soak or callgrind run measures nothing else.
    let scenarios = if opts.soak.is_some() || opts.callgrind.is_some() {
        &[][..]
    } else {
        SCENARIOS
    };
    for scenario in scenarios.iter().filter(|s| opts.wants(s.name)) {
        let consumers = opts.consumers_of(scenario).len() as f64;
        secs += match scenario.traffic {
            Traffic::Latency => {
                let run = latency::run_secs(opts.secs) + pace.client_overhead();
                // A saturation run each where udp-64 gave no capacity, the
                // client's ceiling through each, then per round each consumer
                // once, each load with and without the queue.
                let saturation = if opts.wants("udp-64") {
                    0.0
                } else {
                    consumers * (latency::SATURATION_SECS + overhead)
                };
                let ceiling = consumers
                    * (overhead
                        + latency::run_secs(latency::SATURATION_SECS)
                        + pace.client_overhead());
                saturation
                    + ceiling
                    + opts.rounds as f64
                        * consumers
                        * (overhead + LATENCY_LOADS.len() as f64 * 2.0 * run)
            }
            _ => consumers * opts.rounds as f64 * (opts.secs + overhead),
        };
    }
    secs += opts
        .soak
        .map_or(0.0, |n| 2.0 * (n as f64 / 50_000.0 + 30.0));
    secs += opts.callgrind.map_or(0.0, |n| {
        let runs = (callgrind::consumers_of(opts).len() * opts.callgrind_sizes.len()) as f64;
        match pace {
            // About 5,000 packets per second under callgrind's cache simulation.
            Pace::Typical => runs * (3.0 * n as f64 / 5_000.0 + 4.0 * overhead),
            // Every run may be tried again.
            Pace::Limit => {
                runs * f64::from(callgrind::ATTEMPTS)
                    * (callgrind::run_limit(n) + callgrind::run_limit(2 * n)).as_secs_f64()
            }
        }
    });
    Duration::from_secs_f64(secs)
}

/// Inside the namespace ([`INNER`] `OUT_DIR ARGS`): set up, measure every
/// scenario, report.
///
/// # Errors
///
/// Bad arguments, or a step of the set-up or of a measurement that failed.
pub fn inner(args: &[String]) -> Result<u8> {
    let (out, rest) = args
        .split_first()
        .ok_or_else(|| format!("usage: xtask {INNER} OUT_DIR [options]"))?;
    let opts = Options::parse(rest)?;
    let out = PathBuf::from(out);
    let programs = Programs {
        dir: out.join("bin"),
    };
    running::setup()?;

    if let Some(packets) = opts.soak {
        let text = measure::soak(&programs, packets, opts.segments)?;
        print!("{text}");
        std::fs::write(out.join("soak.md"), &text)?;
        eprintln!("bench: wrote {}", out.join("soak.md").display());
        return Ok(0);
    }
    if let Some(packets) = opts.callgrind {
        let text = callgrind::run(
            &programs,
            &callgrind::consumers_of(&opts),
            packets,
            &opts.callgrind_sizes,
            opts.segments,
        )?;
        print!("{text}");
        std::fs::write(out.join("callgrind.md"), &text)?;
        eprintln!("bench: wrote {}", out.join("callgrind.md").display());
        return Ok(0);
    }

    let mut measured: Vec<Measured> = Vec::new();
    let mut points: Vec<LatencyPoint> = Vec::new();
    for scenario in SCENARIOS.iter().filter(|s| opts.wants(s.name)) {
        let consumers: Vec<Consumer> = opts
            .consumers_of(scenario)
            .into_iter()
            .map(|c| programs.consumer(c).busy(scenario.busy_us))
            .collect();
        if scenario.traffic == Traffic::Latency {
            points = latency::run(&programs, &consumers, &opts, &measured)?;
        } else {
            measured.push(measure::throughput(&programs, scenario, &consumers, &opts)?);
        }
    }
    write_outputs(&out, &opts, &measured, &points)?;
    Ok(0)
}

fn write_outputs(
    out: &Path,
    opts: &Options,
    measured: &[Measured],
    points: &[LatencyPoint],
) -> Result<()> {
    let markdown = report::markdown(opts, measured, points);
    print!("{markdown}");
    std::fs::write(out.join("results.md"), &markdown)?;
    std::fs::write(out.join("results.csv"), report::csv(measured))?;
    std::fs::write(out.join("latency.csv"), report::latency_csv(points))?;
    std::fs::write(out.join("results.svg"), chart::chart(measured, points))?;
    eprintln!(
        "bench: wrote results.md, results.csv (one line per run), latency.csv and \
         results.svg in {}",
        out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_time_limit_covers_every_scenario_asked_for() {
        let all = Options::parse(&[]).unwrap();
        let one = Options::parse(&args(&["--scenario", "latency"])).unwrap();
        let quick = Options::parse(&args(&["--scenario", "latency", "--quick"])).unwrap();
        assert!(budget(&all, Pace::Limit) > budget(&one, Pace::Limit));
        assert!(budget(&one, Pace::Limit) > budget(&quick, Pace::Limit));
        assert!(budget(&all, Pace::Typical) < budget(&all, Pace::Limit));
        // 4 scenarios of 10 consumers and 3 of 3, 6 rounds of 2 s, at least.
        let windows = (4 * 10 + 3 * 3) as f64 * 6.0 * 2.0;
        assert!(budget(&all, Pace::Typical).as_secs_f64() > windows);
    }

    #[test]
    fn a_callgrind_run_is_timed_by_its_packets_alone() {
        let small = Options::parse(&args(&["--callgrind", "1000"])).unwrap();
        let large = Options::parse(&args(&["--callgrind", "100000"])).unwrap();
        assert!(budget(&small, Pace::Limit) < budget(&large, Pace::Limit));
        // The scenarios, which a callgrind run does not measure, add nothing.
        let scenario =
            Options::parse(&args(&["--callgrind", "100000", "--scenario", "latency"])).unwrap();
        assert_eq!(budget(&scenario, Pace::Limit), budget(&large, Pace::Limit));
        // Both runs of every consumer fit, at the slowest rate allowed.
        let runs = callgrind::consumers().len() as f64 * 3.0 * 100_000.0 / 1_000.0;
        assert!(budget(&large, Pace::Limit).as_secs_f64() > runs);
        // And at every size asked for.
        let two = Options::parse(&args(&[
            "--callgrind",
            "100000",
            "--callgrind-size",
            "64,1400",
        ]))
        .unwrap();
        assert!(budget(&two, Pace::Limit).as_secs_f64() > 2.0 * runs);
        assert!(budget(&two, Pace::Typical) > budget(&large, Pace::Typical));
        assert!(Options::parse(&args(&["--callgrind", "0"])).is_err());
        assert!(Options::parse(&args(&["--callgrind", "10", "--soak", "10"])).is_err());
    }
}
