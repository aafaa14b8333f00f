//! `cargo xtask bench`: packets per second through one NFQUEUE queue, every
//! consumer side by side in one run, in a throwaway network namespace.
//!
//! The outside builds the consumers (the C ones in `bench/` with `cc`, the Rust
//! ones as `bench_*` examples in release mode), then re-runs xtask as
//! `__bench-inner` inside `unshare --net --pid --fork`, like `demo`: the
//! namespace and its rules disappear with that process.
//!
//! Inside, a UDP sender pinned to CPU 0 sends to 127.0.0.1, port 9.
//! `mangle OUTPUT` queues the packets to queue 0; a rule in `filter OUTPUT` (a
//! later hook priority) counts what the consumer, pinned to CPU 1, accepted;
//! a `raw PREROUTING` rule drops it when it comes back in through loopback. Consumers take turns
//! round by round (A B C A B C ...), and the report pairs ratios by round.
//! The scaling scenarios give the handler CPU work and the consumer both CPUs;
//! the latency scenario paces request/response pairs through the queue instead.
//! See `bench_measure.rs` for one throughput measurement, `bench_latency.rs` for
//! the latency scenario, `bench_report.rs`, `bench_targets.rs` and
//! `bench_svg.rs` for the output.

use crate::bench_callgrind as callgrind;
use crate::bench_latency::{self as latency, LatencyPoint};
use crate::bench_measure::{self as measure, Measured, Sample};
use crate::bench_report as report;
use crate::bench_svg as svg;
use crate::cmd::{self, ChildGuard, Result};
use crate::python;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The hidden command that runs inside the namespace.
pub const INNER: &str = "__bench-inner";
const PACKAGE: &str = "nfqueue-examples";
/// The Rust consumers, built as examples of [`PACKAGE`].
const EXAMPLES: &[&str] = &[
    "bench_core",
    "bench_async",
    "bench_dispatch",
    "bench_nfq",
    "bench_latency",
];
/// The C programs in `bench/`, and the libraries each links.
const C_PROGRAMS: &[(&str, &[&str])] = &[
    ("nfq_classic", &["-lnetfilter_queue"]),
    ("nfq_batch", &["-lnetfilter_queue", "-lmnl"]),
    ("udp_sender", &[]),
];

pub const USAGE: &str =
    "  bench [--quick] [--rounds N] [--secs S] [--scenario NAME]... [--consumer NAME]...
        [--sender-gso SEGMENTS] [--soak PACKETS] [--callgrind PACKETS]
                               packets per second through NFQUEUE, nfqueue's consumers
                               side by side with C and Python ones, in a throwaway
                               network namespace; results (results.md, .csv, .svg,
                               latency.csv) in target/bench/. N rounds (default 6)
                               of S seconds (default 2) per consumer and scenario,
                               consumers interleaved; ratios are paired by round.
                               --quick is 2 rounds of 1 s. Scenarios (default: all,
                               a comma list or the option repeated picks some):
                                 udp-64, udp-1400  UDP through one queue, accept
                                 tcp-gso, tcp-nogso  iperf3 over lo, queue with and
                                                   without GSO
                                 scale-5, scale-20, scale-50  a handler with 5, 20 or
                                   50 us of CPU work per packet: 1 worker, 2 workers,
                                   and 2 queues (--queue-balance 0:1) with the handler
                                   on each receive thread; UDP from 32 source addresses,
                                   the consumer on both CPUs, the sender at nice 19
                                 latency  UDP request/response pairs at 10%, 50% and
                                   90% of each consumer's capacity (its udp-64 median
                                   in this run, else a 1 s saturation run), or of the
                                   client's own ceiling through the queue where that
                                   is lower; round-trip p50/p99 added to the same
                                   traffic without the queue
                               Consumers: c-classic c-batch core async nfq dispatch-0
                               dispatch-1 dispatch-2 dispatch-2q py-reference
                               py-nfqueue (--consumer keeps each scenario's first,
                               the baseline of its ratios). The UDP sender sends
                               SEGMENTS datagrams per UDP GSO message (default 16;
                               1: plain). --soak runs PACKETS through the Rust
                               consumers instead and reports their RSS (soak.md);
                               --callgrind counts each consumer's user-space
                               instructions per packet under valgrind instead, from
                               two runs of about PACKETS and 2 x PACKETS (callgrind.md)
";

/// What the command line asked for; passed on to the inner run as arguments.
#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    pub secs: f64,
    pub scenarios: Vec<String>,
    pub consumers: Vec<String>,
    pub soak: Option<u64>,
    pub callgrind: Option<u64>,
    /// Datagrams per UDP GSO message of the sender (1: no GSO).
    pub segments: u32,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut opts = Options {
            rounds: 6,
            secs: 2.0,
            scenarios: Vec::new(),
            consumers: Vec::new(),
            soak: None,
            callgrind: None,
            segments: 16,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("bench: {name} needs a value"))
            };
            match arg.as_str() {
                "--quick" => {
                    opts.rounds = 2;
                    opts.secs = 1.0;
                }
                "--rounds" => opts.rounds = value("--rounds")?.parse()?,
                "--secs" => opts.secs = value("--secs")?.parse()?,
                "--scenario" => opts
                    .scenarios
                    .extend(value("--scenario")?.split(',').map(String::from)),
                "--consumer" => opts
                    .consumers
                    .extend(value("--consumer")?.split(',').map(String::from)),
                "--soak" => opts.soak = Some(value("--soak")?.parse()?),
                "--callgrind" => opts.callgrind = Some(value("--callgrind")?.parse()?),
                "--sender-gso" => opts.segments = value("--sender-gso")?.parse()?,
                other => return Err(format!("bench: unknown argument `{other}`").into()),
            }
        }
        if !(1..=100).contains(&opts.rounds) || !(0.2..=60.0).contains(&opts.secs) {
            return Err("bench: --rounds is 1..=100 and --secs 0.2..=60".into());
        }
        if !(1..=64).contains(&opts.segments) {
            return Err("bench: --sender-gso is 1..=64 datagrams per message".into());
        }
        if opts.soak.is_some_and(|n| n == 0 || n > 1_000_000_000) {
            return Err("bench: --soak is 1..=1000000000 packets".into());
        }
        if opts.callgrind.is_some_and(|n| n == 0 || n > 10_000_000) {
            return Err("bench: --callgrind is 1..=10000000 packets".into());
        }
        if opts.soak.is_some() && opts.callgrind.is_some() {
            return Err("bench: --soak and --callgrind are separate runs".into());
        }
        for name in &opts.scenarios {
            if !SCENARIOS.iter().any(|s| s.name == name) {
                let known: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
                return Err(
                    format!("bench: no scenario `{name}` (known: {})", known.join(" ")).into(),
                );
            }
        }
        for name in &opts.consumers {
            if !known_consumers().contains(&name.as_str()) {
                return Err(format!(
                    "bench: no consumer `{name}` (known: {})",
                    known_consumers().join(" ")
                )
                .into());
            }
        }
        Ok(opts)
    }

    fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--rounds".into(),
            self.rounds.to_string(),
            "--secs".into(),
            self.secs.to_string(),
            "--sender-gso".into(),
            self.segments.to_string(),
        ];
        for s in &self.scenarios {
            args.extend(["--scenario".into(), s.clone()]);
        }
        for c in &self.consumers {
            args.extend(["--consumer".into(), c.clone()]);
        }
        if let Some(n) = self.soak {
            args.extend(["--soak".into(), n.to_string()]);
        }
        if let Some(n) = self.callgrind {
            args.extend(["--callgrind".into(), n.to_string()]);
        }
        args
    }

    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|s| s == scenario)
    }

    /// The consumers of `scenario` to run: those asked for, and always the
    /// first, the baseline of the scenario's ratios.
    pub fn consumers_of(&self, scenario: &Scenario) -> Vec<&'static str> {
        scenario
            .consumers
            .iter()
            .enumerate()
            .filter(|(i, c)| {
                *i == 0 || self.consumers.is_empty() || self.consumers.iter().any(|w| w == *c)
            })
            .map(|(_, c)| *c)
            .collect()
    }
}

/// Every consumer name of every scenario, once each.
fn known_consumers() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    for name in SCENARIOS.iter().flat_map(|s| s.consumers.iter()) {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names
}

/// How traffic is made in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// The UDP sender with this payload size, from this many source addresses
    /// (0: one socket, the kernel's choice of address).
    Udp { size: usize, sources: u32 },
    /// iperf3 over TCP through loopback, consumers with or without GSO.
    Tcp { gso: bool },
    /// Paced UDP request/response pairs through the queue (`bench_latency`), at
    /// [`LATENCY_LOADS`] of each consumer's capacity.
    Latency,
}

/// One benchmark scenario: traffic, consumers, where the consumer runs.
#[derive(Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub traffic: Traffic,
    /// Consumer names (see [`Programs::consumer`]); the first is the baseline of the ratios.
    pub consumers: &'static [&'static str],
    /// CPUs the consumer may use (the sender always runs on CPU 0).
    pub consumer_cpus: &'static str,
    /// Microseconds of CPU work the handler does per packet (0: none).
    pub busy_us: u32,
    pub description: &'static str,
}

impl Scenario {
    /// A scenario whose consumer shares the sender's CPU (and so the sender
    /// yields it, at nice 19).
    pub fn shares_sender_cpu(&self) -> bool {
        self.consumer_cpus
            .split(',')
            .any(|c| c == measure::SENDER_CPU)
    }
}

/// Every consumer of the UDP scenarios.
pub const ALL: &[&str] = &[
    "c-classic",
    "c-batch",
    "core",
    "async",
    "nfq",
    "dispatch-0",
    "dispatch-1",
    "dispatch-2",
    "py-reference",
    "py-nfqueue",
];

/// The consumers of the scaling scenarios: 1 worker (the baseline), 2 workers,
/// and 2 queues with the handler on each receive thread.
const SCALING: &[&str] = &["dispatch-1", "dispatch-2", "dispatch-2q"];

/// Source addresses of the scaling scenarios' sender: `--queue-balance` hashes
/// addresses, so enough of them spread the packets about evenly over 2 queues.
const SCALING_SOURCES: u32 = 32;

/// Loads of the latency scenario, in percent of each consumer's capacity.
pub const LATENCY_LOADS: &[u32] = &[10, 50, 90];

const fn scaling(name: &'static str, busy_us: u32, description: &'static str) -> Scenario {
    Scenario {
        name,
        traffic: Traffic::Udp {
            size: 64,
            sources: SCALING_SOURCES,
        },
        consumers: SCALING,
        consumer_cpus: "0,1",
        busy_us,
        description,
    }
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "udp-64",
        traffic: Traffic::Udp {
            size: 64,
            sources: 0,
        },
        consumers: ALL,
        consumer_cpus: "1",
        busy_us: 0,
        description: "UDP, 64-byte payload, accept",
    },
    Scenario {
        name: "udp-1400",
        traffic: Traffic::Udp {
            size: 1400,
            sources: 0,
        },
        consumers: ALL,
        consumer_cpus: "1",
        busy_us: 0,
        description: "UDP, 1400-byte payload, accept",
    },
    Scenario {
        name: "tcp-gso",
        traffic: Traffic::Tcp { gso: true },
        consumers: ALL,
        consumer_cpus: "1",
        busy_us: 0,
        description: "iperf3 TCP over lo (MTU 1500), queue with GSO (super-packets whole)",
    },
    Scenario {
        name: "tcp-nogso",
        traffic: Traffic::Tcp { gso: false },
        consumers: ALL,
        consumer_cpus: "1",
        busy_us: 0,
        description: "iperf3 TCP over lo (MTU 1500), queue without GSO (kernel segments first)",
    },
    scaling(
        "scale-5",
        5,
        "UDP 64 B from 32 source addresses, handler busy 5 us per packet; consumer on both CPUs, sender at nice 19 on CPU 0",
    ),
    scaling(
        "scale-20",
        20,
        "UDP 64 B from 32 source addresses, handler busy 20 us per packet; consumer on both CPUs, sender at nice 19 on CPU 0",
    ),
    scaling(
        "scale-50",
        50,
        "UDP 64 B from 32 source addresses, handler busy 50 us per packet; consumer on both CPUs, sender at nice 19 on CPU 0",
    ),
    Scenario {
        name: "latency",
        traffic: Traffic::Latency,
        consumers: &["core", "dispatch-0", "dispatch-2"],
        consumer_cpus: "1",
        busy_us: 0,
        description: "UDP request/response pairs (64 B) at a fixed rate, 10%, 50% and 90% of each consumer's capacity (or of the client's ceiling where lower); round-trip time added to the same traffic without the queue rule",
    },
];

/// The scenario named `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// A consumer: its program and arguments (the queue number comes last).
#[derive(Debug, Clone)]
pub struct Consumer {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Understands `--gso`.
    pub gso: bool,
    /// Queues it binds, from [`measure::QUEUE`] on (the rule spreads packets
    /// over them when more than 1).
    pub queues: u16,
}

impl Consumer {
    /// The consumer with `busy_us` microseconds of handler work per packet (the
    /// dispatcher consumers only).
    pub fn busy(mut self, busy_us: u32) -> Self {
        if busy_us > 0 {
            assert!(
                self.program.ends_with("bench_dispatch"),
                "{} has no --busy-us",
                self.name
            );
            self.args.extend(["--busy-us".into(), busy_us.to_string()]);
        }
        self
    }
}

/// Where the built programs are.
#[derive(Debug, Clone)]
pub struct Programs {
    pub dir: PathBuf,
}

impl Programs {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    pub fn consumer(&self, name: &'static str) -> Consumer {
        if let Some((_, venv, _)) = python::BENCH_CONSUMERS.iter().find(|c| c.0 == name) {
            return Consumer {
                name,
                program: self.dir.join("..").join(venv).join("bin/python"),
                args: vec![self.path("nfq_python.py").display().to_string()],
                gso: false,
                queues: 1,
            };
        }
        let (program, args): (&str, &[&str]) = match name {
            "c-classic" => ("nfq_classic", &[]),
            "c-batch" => ("nfq_batch", &[]),
            "core" => ("bench_core", &[]),
            "async" => ("bench_async", &[]),
            "nfq" => ("bench_nfq", &[]),
            "dispatch-0" => ("bench_dispatch", &["--workers", "0"]),
            "dispatch-1" => ("bench_dispatch", &["--workers", "1"]),
            "dispatch-2" => ("bench_dispatch", &["--workers", "2"]),
            "dispatch-2q" => ("bench_dispatch", &["--workers", "0", "--queues", "2"]),
            other => unreachable!("unknown consumer {other}"),
        };
        Consumer {
            name,
            program: self.path(program),
            args: args.iter().map(|s| s.to_string()).collect(),
            gso: true,
            queues: if name == "dispatch-2q" { 2 } else { 1 },
        }
    }
}

/// What each consumer is, for the report.
pub fn consumer_description(name: &str) -> &'static str {
    match name {
        "c-classic" => "C, libnetfilter_queue classic API, nfq_set_verdict per packet (bench/nfq_classic.c)",
        "c-batch" => "C, libmnl API, NFQNL_MSG_VERDICT_BATCH every 64 packets or when idle (bench/nfq_batch.c)",
        "core" => "nfqueue-core, recv -> accept per packet (examples/bench_core)",
        "async" => "nfqueue-core AsyncQueue on a current-thread tokio runtime, recv().await -> accept per packet (examples/bench_async)",
        "nfq" => "nfq crate 0.2 (pure Rust), recv -> verdict per packet (examples/bench_nfq)",
        "dispatch-0" => "nfqueue Dispatcher, handler on the receive thread, coalesced verdicts (examples/bench_dispatch --workers 0)",
        "dispatch-1" => "nfqueue Dispatcher, 1 worker, coalesced verdicts (examples/bench_dispatch --workers 1)",
        "dispatch-2" => "nfqueue Dispatcher, 2 workers, coalesced verdicts (examples/bench_dispatch --workers 2)",
        "dispatch-2q" => "nfqueue Dispatcher, 2 queues (rule: --queue-balance 0:1), handler on each receive thread (examples/bench_dispatch --workers 0 --queues 2)",
        other => python::BENCH_CONSUMERS
            .iter()
            .find(|c| c.0 == other)
            .map_or("", |c| c.2),
    }
}

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

pub fn run(args: &[String]) -> Result<u8> {
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
    build_c(&bin)?;
    build_examples(&bin)?;
    let python_wanted = opts.soak.is_none()
        && opts.callgrind.is_none()
        && SCENARIOS
            .iter()
            .filter(|s| opts.wants(s.name))
            .flat_map(|s| opts.consumers_of(s))
            .any(|c| python::BENCH_CONSUMERS.iter().any(|p| p.0 == c));
    if python_wanted {
        python::prepare_bench(&cmd::workspace_root(), &out, &bin)?;
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
        let consumers = callgrind::consumers().len() as f64;
        match pace {
            // About 10,000 packets per second under callgrind.
            Pace::Typical => consumers * (3.0 * n as f64 / 10_000.0 + 4.0 * overhead),
            Pace::Limit => {
                consumers * (callgrind::run_limit(n) + callgrind::run_limit(2 * n)).as_secs_f64()
            }
        }
    });
    Duration::from_secs_f64(secs)
}

/// The tools the benchmark runs, beyond `cargo xtask prereqs`: installed with
/// apt-get as root on Debian, else named (`cargo xtask prereqs --bench`).
fn ensure_tools(callgrind: bool) -> Result<()> {
    crate::prereqs::run_bench(callgrind)
}

/// Compiles the C programs of `bench/` into `bin`.
fn build_c(bin: &Path) -> Result<()> {
    let src = cmd::workspace_root().join("bench");
    for (name, libs) in C_PROGRAMS {
        cmd::run_ok(
            cmd::program("cc")
                .args(["-O2", "-Wall", "-Wextra", "-o"])
                .arg(bin.join(name))
                .arg(src.join(format!("{name}.c")))
                .args(*libs),
        )?;
    }
    Ok(())
}

/// Builds the Rust consumers in release mode and links them into `bin`.
fn build_examples(bin: &Path) -> Result<()> {
    let mut build = cmd::cargo();
    build
        .current_dir(cmd::workspace_root())
        .args(["build", "--release", "--package", PACKAGE]);
    for example in EXAMPLES {
        build.args(["--example", example]);
    }
    let artifacts = cmd::cargo_artifacts(&mut build)?;
    for example in EXAMPLES {
        let artifact = artifacts
            .iter()
            .find(|a| a.name == *example)
            .ok_or_else(|| format!("bench: cargo built no example `{example}`"))?;
        let link = bin.join(example);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&artifact.executable, &link)?;
    }
    Ok(())
}

/// Inside the namespace: set up, measure every scenario, report.
pub fn inner(args: &[String]) -> Result<u8> {
    let (out, rest) = args
        .split_first()
        .ok_or_else(|| format!("usage: xtask {INNER} OUT_DIR [options]"))?;
    let opts = Options::parse(rest)?;
    let out = PathBuf::from(out);
    let programs = Programs {
        dir: out.join("bin"),
    };
    measure::setup()?;

    if let Some(packets) = opts.soak {
        let text = measure::soak(&programs, packets, opts.segments)?;
        print!("{text}");
        std::fs::write(out.join("soak.md"), &text)?;
        eprintln!("bench: wrote {}", out.join("soak.md").display());
        return Ok(0);
    }
    if let Some(packets) = opts.callgrind {
        let text = callgrind::run(&programs, packets, opts.segments)?;
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
            measured.push(throughput(&programs, scenario, &consumers, &opts)?);
        }
    }
    write_outputs(&out, &opts, &measured, &points)?;
    Ok(0)
}

/// Every consumer of a throughput scenario, round by round.
fn throughput(
    programs: &Programs,
    scenario: &'static Scenario,
    consumers: &[Consumer],
    opts: &Options,
) -> Result<Measured> {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); consumers.len()];
    for round in 0..opts.rounds {
        for (i, consumer) in consumers.iter().enumerate() {
            eprintln!(
                "bench: {} round {}/{}: {}",
                scenario.name,
                round + 1,
                opts.rounds,
                consumer.name
            );
            let mut sample = measure::one(programs, scenario, consumer, opts.secs, opts.segments)?;
            sample.round = round + 1;
            eprintln!("bench:   {}", sample.summary(scenario.traffic));
            samples[i].push(sample);
        }
    }
    Ok(Measured {
        scenario,
        consumers: consumers.iter().map(|c| c.name).collect(),
        samples,
    })
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
    std::fs::write(out.join("latency.csv"), latency::csv(points))?;
    std::fs::write(out.join("results.svg"), svg::chart(measured, points))?;
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
    fn the_usage_names_every_scenario_and_consumer() {
        for scenario in SCENARIOS {
            assert!(
                USAGE.contains(scenario.name),
                "{} is not in the usage",
                scenario.name
            );
        }
        for consumer in known_consumers() {
            assert!(USAGE.contains(consumer), "{consumer} is not in the usage");
            assert!(!consumer_description(consumer).is_empty(), "{consumer}");
        }
    }

    #[test]
    fn every_scenario_name_parses_and_unknown_names_fail() {
        for scenario in SCENARIOS {
            let opts = Options::parse(&args(&["--scenario", scenario.name])).unwrap();
            assert!(opts.wants(scenario.name));
            assert_eq!(
                SCENARIOS.iter().filter(|s| opts.wants(s.name)).count(),
                1,
                "{}",
                scenario.name
            );
        }
        let opts = Options::parse(&args(&["--scenario", "scale-5,latency"])).unwrap();
        assert!(opts.wants("latency") && opts.wants("scale-5") && !opts.wants("udp-64"));
        let err = Options::parse(&args(&["--scenario", "heavy"])).unwrap_err();
        assert!(err.to_string().contains("no scenario `heavy`"), "{err}");
        let err = Options::parse(&args(&["--consumer", "dispatch-9"])).unwrap_err();
        assert!(
            err.to_string().contains("no consumer `dispatch-9`"),
            "{err}"
        );
    }

    #[test]
    fn a_consumer_filter_keeps_each_scenarios_baseline() {
        let opts = Options::parse(&args(&["--consumer", "dispatch-2q,async"])).unwrap();
        let scale = scenario("scale-20").unwrap();
        assert_eq!(opts.consumers_of(scale), ["dispatch-1", "dispatch-2q"]);
        let udp = scenario("udp-64").unwrap();
        assert_eq!(opts.consumers_of(udp), ["c-classic", "async"]);
        let latency = scenario("latency").unwrap();
        assert_eq!(opts.consumers_of(latency), ["core"]);
    }

    #[test]
    fn the_scaling_consumers_get_the_work_and_the_queues() {
        let programs = Programs {
            dir: PathBuf::from("bin"),
        };
        let two_queues = programs.consumer("dispatch-2q").busy(20);
        assert_eq!(two_queues.queues, 2);
        assert_eq!(
            two_queues.args,
            ["--workers", "0", "--queues", "2", "--busy-us", "20"]
        );
        assert_eq!(
            measure::nfqueue_target(2),
            ["-j", "NFQUEUE", "--queue-balance", "0:1"]
        );
        assert_eq!(
            measure::nfqueue_target(1),
            ["-j", "NFQUEUE", "--queue-num", "0"]
        );
        assert_eq!(programs.consumer("core").busy(0).args, Vec::<String>::new());
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
        assert!(budget(&large, Pace::Limit) < budget(&Options::parse(&[]).unwrap(), Pace::Limit));
        // Both runs of every consumer fit, at the slowest rate allowed.
        let runs = callgrind::consumers().len() as f64 * 3.0 * 100_000.0 / 1_000.0;
        assert!(budget(&large, Pace::Limit).as_secs_f64() > runs);
        assert!(Options::parse(&args(&["--callgrind", "0"])).is_err());
        assert!(Options::parse(&args(&["--callgrind", "10", "--soak", "10"])).is_err());
    }
}
