//! `cargo xtask fuzz`: run the cargo-fuzz targets of `fuzz/` for a while each,
//! optimized and with debug assertions (overflow checks) on.
//!
//! cargo-fuzz needs nightly compiler flags; on a stable toolchain
//! `RUSTC_BOOTSTRAP=1` unlocks them, and it is set here. cargo-fuzz itself is
//! installed from crates.io when missing. Each target starts from its committed
//! seeds in `fuzz/corpus/<target>/` (inputs libFuzzer adds there are ignored by
//! git); a crash leaves its input in `fuzz/artifacts/<target>/` and makes the
//! command fail. The full libFuzzer output of a target is in
//! `fuzz/artifacts/<target>/fuzz.log`.
//!
//! `net_parse` and `mangle` build on nfqueue-net alone; `message` and `verdict`
//! need the fuzz crate's `core` feature (nfqueue-core, and so
//! libnetfilter_queue), turned on only when one of them is picked.

use crate::cmd::{self, Result};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// The targets, in the order they run.
pub const TARGETS: &[&str] = &["message", "net_parse", "mangle", "verdict"];

/// The targets that need nfqueue-core, and so libnetfilter_queue: they require
/// the fuzz crate's `core` feature. The others build on nfqueue-net alone.
const CORE_TARGETS: &[&str] = &["message", "verdict"];

const USAGE: &str = "usage: cargo xtask fuzz [--secs N] [--runs N] [--jobs N] \
[--sanitizer address|none] [TARGET...]";

#[derive(Debug)]
struct Options {
    secs: u64,
    runs: Option<u64>,
    jobs: usize,
    sanitizer: String,
    targets: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut options = Options {
        secs: 60,
        runs: None,
        jobs: 1,
        sanitizer: "address".into(),
        targets: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .ok_or_else(|| format!("fuzz: {arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--secs" => options.secs = value()?.parse()?,
            "--runs" => options.runs = Some(value()?.parse()?),
            "--jobs" => options.jobs = value()?.parse::<usize>()?.max(1),
            "--sanitizer" => options.sanitizer = value()?.clone(),
            t if TARGETS.contains(&t) => options.targets.push(t.to_string()),
            other => return Err(format!("fuzz: unknown argument `{other}`\n{USAGE}").into()),
        }
    }
    if options.targets.is_empty() {
        options.targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    Ok(options)
}

/// What one target's run came to.
#[derive(Debug, Default)]
struct Outcome {
    target: String,
    execs: Option<u64>,
    execs_per_sec: Option<u64>,
    peak_rss_mb: Option<u64>,
    corpus: usize,
    secs: f64,
    crashed: bool,
    artifact: Option<String>,
}

pub fn run(args: &[String]) -> Result<u8> {
    let options = parse(args)?;
    let fuzz_dir = cmd::workspace_root().join("fuzz");
    ensure_cargo_fuzz()?;
    // One feature set for the build and every run, so nothing is built twice.
    let core = options
        .targets
        .iter()
        .any(|t| CORE_TARGETS.contains(&t.as_str()));
    let mut build = fuzz_command(&fuzz_dir, "build", &options.sanitizer, core);
    cmd::run_ok(&mut build)?;

    let mut outcomes = Vec::new();
    for chunk in options.targets.chunks(options.jobs) {
        let handles: Vec<_> = chunk
            .iter()
            .map(|target| {
                let mut run = fuzz_command(&fuzz_dir, "run", &options.sanitizer, core);
                run.arg(target)
                    .arg(fuzz_dir.join("corpus").join(target))
                    .arg("--")
                    .arg(format!("-max_total_time={}", options.secs))
                    .args(["-print_final_stats=1", "-timeout=10", "-rss_limit_mb=2048"]);
                if let Some(runs) = options.runs {
                    run.arg(format!("-runs={runs}"));
                }
                let (target, dir) = (target.clone(), fuzz_dir.clone());
                thread::spawn(move || {
                    run_target(&dir, &target, &mut run).map_err(|e| e.to_string())
                })
            })
            .collect();
        for handle in handles {
            outcomes.push(
                handle
                    .join()
                    .map_err(|_| "fuzz: a runner thread panicked")??,
            );
        }
    }

    println!("\nfuzz summary ({} sanitizer):", options.sanitizer);
    println!(
        "{:<10} {:>13} {:>10} {:>8} {:>8} {:>8}  result",
        "target", "execs", "execs/s", "corpus", "rss MiB", "secs"
    );
    let show = |n: Option<u64>| n.map_or_else(|| "?".to_string(), |n| n.to_string());
    for o in &outcomes {
        println!(
            "{:<10} {:>13} {:>10} {:>8} {:>8} {:>8.0}  {}",
            o.target,
            show(o.execs),
            show(o.execs_per_sec),
            o.corpus,
            show(o.peak_rss_mb),
            o.secs,
            match (&o.crashed, &o.artifact) {
                (false, _) => "ok".to_string(),
                (true, Some(a)) => format!("CRASH: {a}"),
                (true, None) => "CRASH (see its fuzz.log)".to_string(),
            }
        );
    }
    Ok(if outcomes.iter().any(|o| o.crashed) {
        1
    } else {
        0
    })
}

/// `cargo fuzz <sub> -O` in `fuzz/`, with the nightly flags unlocked on stable,
/// and with the targets that need nfqueue-core when `core`.
fn fuzz_command(fuzz_dir: &Path, sub: &str, sanitizer: &str, core: bool) -> Command {
    let mut c = cmd::cargo();
    c.current_dir(fuzz_dir).env("RUSTC_BOOTSTRAP", "1").args([
        "fuzz",
        sub,
        "-O",
        "--debug-assertions",
        "--sanitizer",
        sanitizer,
    ]);
    if core {
        c.args(["--features", "core"]);
    }
    c
}

fn ensure_cargo_fuzz() -> Result<()> {
    let found = cmd::cargo()
        .args(["fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        cmd::run_ok(cmd::cargo().args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Runs one target, writing its output to its log and picking out the numbers.
fn run_target(fuzz_dir: &Path, target: &str, run: &mut Command) -> Result<Outcome> {
    std::fs::create_dir_all(fuzz_dir.join("corpus").join(target))?;
    let artifacts = fuzz_dir.join("artifacts").join(target);
    std::fs::create_dir_all(&artifacts)?;
    let log_path = artifacts.join("fuzz.log");
    let mut log = std::fs::File::create(&log_path)?;
    let start = Instant::now();
    let mut child = cmd::ChildGuard(cmd::spawn(
        run.stdout(Stdio::piped()).stderr(Stdio::piped()),
    )?);
    let stdout = child.0.stdout.take().expect("stdout is piped");
    // libFuzzer writes to stderr; cargo's own lines may go to stdout.
    let out_thread = thread::spawn(move || {
        BufReader::new(stdout)
            .lines()
            .map_while(std::result::Result::ok)
            .collect::<Vec<_>>()
    });
    let mut outcome = Outcome {
        target: target.to_string(),
        ..Outcome::default()
    };
    let stat = |line: &str, key: &str| {
        line.strip_prefix(key)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let mut last_progress = Instant::now();
    let stderr = child.0.stderr.take().expect("stderr is piped");
    for line in BufReader::new(stderr)
        .lines()
        .map_while(std::result::Result::ok)
    {
        writeln!(log, "{line}")?;
        let progress = line.starts_with('#') && line.contains("exec/s");
        if let Some(n) = stat(&line, "stat::number_of_executed_units:") {
            outcome.execs = Some(n);
        } else if let Some(n) = stat(&line, "stat::average_exec_per_sec:") {
            outcome.execs_per_sec = Some(n);
        } else if let Some(n) = stat(&line, "stat::peak_rss_mb:") {
            outcome.peak_rss_mb = Some(n);
        } else if line.contains("Test unit written to") {
            outcome.artifact = line.rsplit(' ').next().map(str::to_string);
            eprintln!("[{target}] {line}");
        } else if line.contains("panicked at")
            || line.contains("ERROR: libFuzzer")
            || line.contains("SUMMARY:")
        {
            eprintln!("[{target}] {line}");
        } else if progress && last_progress.elapsed() >= Duration::from_secs(30) {
            // A line every 30 s shows a long run is alive.
            last_progress = Instant::now();
            eprintln!("[{target}] {line}");
        }
    }
    let status = child.0.wait()?;
    for line in out_thread.join().unwrap_or_default() {
        writeln!(log, "{line}")?;
    }
    outcome.secs = start.elapsed().as_secs_f64();
    outcome.crashed = !status.success();
    outcome.corpus = count_files(&fuzz_dir.join("corpus").join(target));
    if outcome.crashed {
        eprintln!(
            "[{target}] failed ({status}); full output: {}",
            log_path.display()
        );
    }
    Ok(outcome)
}

fn count_files(dir: &PathBuf) -> usize {
    std::fs::read_dir(dir).map_or(0, |d| d.filter_map(std::result::Result::ok).count())
}
