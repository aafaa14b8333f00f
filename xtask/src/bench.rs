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
//! See `bench_measure.rs` for one measurement, `bench_report.rs` for the output.

use crate::bench_measure::{self as measure, Sample};
use crate::bench_report::{self as report, Row};
use crate::cmd::{self, find_program, ChildGuard, Result};
use crate::python;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The hidden command that runs inside the namespace.
pub const INNER: &str = "__bench-inner";
const PACKAGE: &str = "nfqueue-examples";
/// The Rust consumers, built as examples of [`PACKAGE`].
const EXAMPLES: &[&str] = &["bench_core", "bench_dispatch", "bench_nfq"];
/// The C programs in `bench/`, and the libraries each links.
const C_PROGRAMS: &[(&str, &[&str])] = &[
    ("nfq_classic", &["-lnetfilter_queue"]),
    ("nfq_batch", &["-lnetfilter_queue", "-lmnl"]),
    ("udp_sender", &[]),
];

pub const USAGE: &str =
    "  bench [--quick] [--rounds N] [--secs S] [--scenario NAME]... [--consumer NAME]...
        [--sender-gso SEGMENTS] [--soak PACKETS]
                               packets per second through one queue, nfqueue's consumers
                               side by side with C ones (libnetfilter_queue); results in
                               target/bench/. Scenarios: udp-64 udp-1400 tcp-gso tcp-nogso
                               heavy (default: all). The UDP sender sends SEGMENTS
                               datagrams per UDP GSO message (default 16; 1: plain).
                               --soak runs PACKETS through the Rust consumers instead
                               and reports their RSS
";

/// What the command line asked for; passed on to the inner run as arguments.
#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    pub secs: f64,
    pub scenarios: Vec<String>,
    pub consumers: Vec<String>,
    pub soak: Option<u64>,
    /// Datagrams per UDP GSO message of the sender (1: no GSO).
    pub segments: u32,
}

impl Options {
    fn parse(args: &[String]) -> Result<Self> {
        let mut opts = Options {
            rounds: 5,
            secs: 2.0,
            scenarios: Vec::new(),
            consumers: Vec::new(),
            soak: None,
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
        for name in &opts.scenarios {
            if !SCENARIOS.iter().any(|s| s.name == name) {
                let known: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
                return Err(
                    format!("bench: no scenario `{name}` (known: {})", known.join(" ")).into(),
                );
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
        args
    }

    fn wants(&self, scenario: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|s| s == scenario)
    }
}

/// How traffic is made in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// The UDP sender with this payload size.
    Udp(usize),
    /// iperf3 over TCP through loopback, consumers with or without GSO.
    Tcp { gso: bool },
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
    pub description: &'static str,
}

const ALL: &[&str] = &[
    "c-classic",
    "c-batch",
    "core",
    "nfq",
    "dispatch-0",
    "dispatch-1",
    "dispatch-2",
    "py-reference",
    "py-nfqueue",
];

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "udp-64",
        traffic: Traffic::Udp(64),
        consumers: ALL,
        consumer_cpus: "1",
        description: "UDP, 64-byte payload, accept",
    },
    Scenario {
        name: "udp-1400",
        traffic: Traffic::Udp(1400),
        consumers: ALL,
        consumer_cpus: "1",
        description: "UDP, 1400-byte payload, accept",
    },
    Scenario {
        name: "tcp-gso",
        traffic: Traffic::Tcp { gso: true },
        consumers: ALL,
        consumer_cpus: "1",
        description: "iperf3 TCP over lo (MTU 1500), queue with GSO (super-packets whole)",
    },
    Scenario {
        name: "tcp-nogso",
        traffic: Traffic::Tcp { gso: false },
        consumers: ALL,
        consumer_cpus: "1",
        description: "iperf3 TCP over lo (MTU 1500), queue without GSO (kernel segments first)",
    },
    Scenario {
        name: "heavy",
        traffic: Traffic::Udp(64),
        consumers: &["heavy-1", "heavy-2"],
        consumer_cpus: "0,1",
        description: "UDP 64 B, handler busy 5 us per packet; consumer on both CPUs, sender at nice 19 on CPU 0",
    },
];

/// A consumer: its program and arguments (the queue number comes last).
#[derive(Debug, Clone)]
pub struct Consumer {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Understands `--gso`.
    pub gso: bool,
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
            };
        }
        let (program, args): (&str, &[&str]) = match name {
            "c-classic" => ("nfq_classic", &[]),
            "c-batch" => ("nfq_batch", &[]),
            "core" => ("bench_core", &[]),
            "nfq" => ("bench_nfq", &[]),
            "dispatch-0" => ("bench_dispatch", &["--workers", "0"]),
            "dispatch-1" => ("bench_dispatch", &["--workers", "1"]),
            "dispatch-2" => ("bench_dispatch", &["--workers", "2"]),
            "heavy-1" => ("bench_dispatch", &["--workers", "1", "--busy-us", "5"]),
            "heavy-2" => ("bench_dispatch", &["--workers", "2", "--busy-us", "5"]),
            other => unreachable!("unknown consumer {other}"),
        };
        Consumer {
            name,
            program: self.path(program),
            args: args.iter().map(|s| s.to_string()).collect(),
            gso: true,
        }
    }
}

/// What each consumer is, for the report.
pub fn consumer_description(name: &str) -> &'static str {
    match name {
        "c-classic" => "C, libnetfilter_queue classic API, nfq_set_verdict per packet (bench/nfq_classic.c)",
        "c-batch" => "C, libmnl API, NFQNL_MSG_VERDICT_BATCH every 64 packets or when idle (bench/nfq_batch.c)",
        "core" => "nfqueue-core, recv -> accept per packet (examples/bench_core)",
        "nfq" => "nfq crate 0.2 (pure Rust), recv -> verdict per packet (examples/bench_nfq)",
        "dispatch-0" => "nfqueue Dispatcher, handler on the receive thread, coalesced verdicts (examples/bench_dispatch --workers 0)",
        "dispatch-1" => "nfqueue Dispatcher, 1 worker, coalesced verdicts (examples/bench_dispatch --workers 1)",
        "dispatch-2" => "nfqueue Dispatcher, 2 workers, coalesced verdicts (examples/bench_dispatch --workers 2)",
        "heavy-1" => "nfqueue Dispatcher, 1 worker, 5 us busy handler",
        "heavy-2" => "nfqueue Dispatcher, 2 workers, 5 us busy handler",
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
    ensure_tools()?;
    let out = out_dir();
    let bin = out.join("bin");
    std::fs::create_dir_all(&bin)?;
    build_c(&bin)?;
    build_examples(&bin)?;
    let python_wanted = opts.consumers.is_empty()
        || python::BENCH_CONSUMERS
            .iter()
            .any(|c| opts.consumers.iter().any(|w| w == c.0));
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
    let budget = budget(&opts);
    let mut child = ChildGuard(cmd::spawn(&mut unshare)?);
    match cmd::wait_until(&mut child.0, Instant::now() + budget)? {
        Some(status) => Ok(cmd::exit_code(status)),
        None => Err(format!("bench: timed out after {}s", budget.as_secs()).into()),
    }
}

/// An upper bound on the whole run, with room for starting and stopping.
fn budget(opts: &Options) -> Duration {
    let runs: usize = SCENARIOS
        .iter()
        .filter(|s| opts.wants(s.name))
        .map(|s| s.consumers.len() * opts.rounds)
        .sum();
    let soak = opts
        .soak
        .map_or(0.0, |n| 2.0 * (n as f64 / 50_000.0 + 30.0));
    Duration::from_secs_f64(60.0 + runs as f64 * (opts.secs + 8.0) + soak)
}

/// The tools the benchmark runs, beyond `cargo xtask prereqs`: installed with
/// apt-get as root on Debian, else named.
fn ensure_tools() -> Result<()> {
    let tools = [("iperf3", "iperf3"), ("taskset", "util-linux")];
    let missing: Vec<_> = tools
        .iter()
        .filter(|(program, _)| find_program(program).is_none())
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("bench: missing {}", missing.join(" "));
    if find_program("apt-get").is_none() {
        return Err(format!(
            "bench: install these packages (Debian names): {}",
            missing.join(" ")
        )
        .into());
    }
    crate::prereqs::apt_install(&missing)
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

    let mut rows = Vec::new();
    let mut samples: Vec<(String, Sample)> = Vec::new();
    for scenario in SCENARIOS.iter().filter(|s| opts.wants(s.name)) {
        let consumers: Vec<Consumer> = scenario
            .consumers
            .iter()
            .filter(|c| {
                opts.consumers.is_empty()
                    || opts.consumers.iter().any(|w| w == *c)
                    || c == &&scenario.consumers[0]
            })
            .map(|c| programs.consumer(c))
            .collect();
        let mut per_consumer: Vec<Vec<Sample>> = vec![Vec::new(); consumers.len()];
        for round in 0..opts.rounds {
            for (i, consumer) in consumers.iter().enumerate() {
                eprintln!(
                    "bench: {} round {}/{}: {}",
                    scenario.name,
                    round + 1,
                    opts.rounds,
                    consumer.name
                );
                let mut sample = measure::one(&programs, scenario, consumer, &opts)?;
                sample.round = round + 1;
                eprintln!("bench:   {}", sample.summary(scenario.traffic));
                samples.push((scenario.name.to_string(), sample.clone()));
                per_consumer[i].push(sample);
            }
        }
        rows.extend(report::rows(scenario, &consumers, &per_consumer));
    }
    write_outputs(&out, &opts, &rows, &samples)?;
    Ok(0)
}

fn write_outputs(
    out: &Path,
    opts: &Options,
    rows: &[Row],
    samples: &[(String, Sample)],
) -> Result<()> {
    let markdown = report::markdown(opts, rows);
    print!("{markdown}");
    std::fs::write(out.join("results.md"), &markdown)?;
    std::fs::write(out.join("results.csv"), report::csv(samples))?;
    std::fs::write(out.join("results.svg"), report::svg(rows))?;
    eprintln!(
        "bench: wrote results.md, results.csv (one line per run) and results.svg in {}",
        out.display()
    );
    Ok(())
}
