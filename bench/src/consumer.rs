//! The consumers: what each name of the scenarios runs (program and
//! arguments), what it is (for the report), and building them: the C programs
//! of `bench/` with `cc`, the Rust ones as release examples of
//! `nfqueue-examples`, the Python ones into their virtualenvs.

use std::fs;
use std::path::{Path, PathBuf};
use xtask_support::cmd::{self, Result};
use xtask_support::venv::Venv;

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

/// A Python consumer: the same script (`bench/nfq_python.py`) for all, each
/// from a venv (under the bench's output directory) that holds one of the two
/// modules named `netfilterqueue`.
struct PythonConsumer {
    name: &'static str,
    venv: &'static str,
    /// Arguments for the script before the queue number.
    args: &'static [&'static str],
    description: &'static str,
}

const PYTHON: &[PythonConsumer] = &[
    PythonConsumer {
        name: "py-reference",
        venv: "venv-reference",
        args: &[],
        description:
            "Python, the reference package NetfilterQueue 1.1.0 from PyPI (bench/nfq_python.py)",
    },
    PythonConsumer {
        name: "py-nfqueue",
        venv: "venv-nfqueue",
        args: &[],
        description: "Python, nfqueue-python: the same script on our module, by default each \
                      verdict sent within 200 us (bench/nfq_python.py)",
    },
    PythonConsumer {
        name: "py-nfqueue-batch",
        venv: "venv-nfqueue",
        args: &["--batch"],
        description: "Python, nfqueue-python: the same script with run(batch=True), the \
                      verdicts of a burst sent after its last callback (bench/nfq_python.py --batch)",
    },
];

/// Whether `name` is one of the Python consumers.
pub fn is_python(name: &str) -> bool {
    PYTHON.iter().any(|c| c.name == name)
}

/// A consumer: its program and arguments (the queue number comes last).
#[derive(Debug, Clone)]
pub struct Consumer {
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Understands `--gso`.
    pub gso: bool,
    /// Queues it binds, from `running::QUEUE` on (the rule spreads packets
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
        if let Some(python) = PYTHON.iter().find(|c| c.name == name) {
            let script = self.path("nfq_python.py").display().to_string();
            return Consumer {
                name,
                program: self.dir.join("..").join(python.venv).join("bin/python"),
                args: std::iter::once(script)
                    .chain(python.args.iter().map(|a| a.to_string()))
                    .collect(),
                gso: false,
                queues: 1,
            };
        }
        let (program, args): (&str, &[&str]) = match name {
            "c-classic" => ("nfq_classic", &[]),
            "c-batch" => ("nfq_batch", &[]),
            "core" => ("bench_core", &[]),
            "core-at16" => ("bench_core", &["--recv-offset", "16"]),
            "core-noenobufs" => ("bench_core", &["--no-enobufs"]),
            "core-deadline" => ("bench_core", &["--deadline-us", "1000000"]),
            "c-classic-at16" => ("nfq_classic", &["--recv-offset", "16"]),
            "c-classic-at256" => ("nfq_classic", &["--recv-offset", "256"]),
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
pub fn description(name: &str) -> &'static str {
    match name {
        "c-classic" => "C, libnetfilter_queue classic API, nfq_set_verdict per packet (bench/nfq_classic.c)",
        "c-batch" => "C, libmnl API, NFQNL_MSG_VERDICT_BATCH every 64 packets or when idle (bench/nfq_batch.c)",
        "core" => "nfqueue-core, recv -> accept per packet (examples/bench_core)",
        "core-at16" => "core, each datagram received 16 bytes into a page, where malloc put the buffer before (bench_core --recv-offset 16)",
        "core-noenobufs" => "core with NETLINK_NO_ENOBUFS set, as the nfq crate sets it (bench_core --no-enobufs)",
        "core-deadline" => "core with a verdict deadline of 1 s, which no packet reaches: what watching the packets costs (bench_core --deadline-us 1000000)",
        "c-classic-at16" => "c-classic, receiving 16 bytes into a page (nfq_classic --recv-offset 16)",
        "c-classic-at256" => "c-classic, receiving 256 bytes into a page, where nfqueue-core receives (nfq_classic --recv-offset 256)",
        "async" => "nfqueue-core AsyncQueue on a current-thread tokio runtime, recv().await -> accept per packet (examples/bench_async)",
        "nfq" => "nfq crate 0.2 (pure Rust), recv -> verdict per packet (examples/bench_nfq)",
        "dispatch-0" => "nfqueue Dispatcher, handler on the receive thread, coalesced verdicts (examples/bench_dispatch --workers 0)",
        "dispatch-1" => "nfqueue Dispatcher, 1 worker, coalesced verdicts (examples/bench_dispatch --workers 1)",
        "dispatch-2" => "nfqueue Dispatcher, 2 workers, coalesced verdicts (examples/bench_dispatch --workers 2)",
        "dispatch-2q" => "nfqueue Dispatcher, 2 queues (rule: --queue-balance 0:1), handler on each receive thread (examples/bench_dispatch --workers 0 --queues 2)",
        other => PYTHON
            .iter()
            .find(|c| c.name == other)
            .map_or("", |c| c.description),
    }
}

/// Compiles the C programs of `bench/` into `bin`.
pub fn build_c(bin: &Path) -> Result<()> {
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
pub fn build_examples(bin: &Path) -> Result<()> {
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

/// Makes the bench's venvs in `out` (the reference from PyPI, ours built by
/// maturin in release mode) and copies the script into `bin`.
pub fn prepare_python(root: &Path, out: &Path, bin: &Path) -> Result<()> {
    Venv::ensure(&out.join("venv-reference"), &["NetfilterQueue==1.1.0"])?;
    Venv::ensure(&out.join("venv-nfqueue"), &["maturin>=1.5,<2"])?.install_module(root)?;
    fs::copy(root.join("bench/nfq_python.py"), bin.join("nfq_python.py"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::known_consumers;

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
        assert_eq!(programs.consumer("core").busy(0).args, Vec::<String>::new());
    }

    #[test]
    fn every_consumer_is_described() {
        for consumer in known_consumers() {
            assert!(!description(consumer).is_empty(), "{consumer}");
        }
        assert!(is_python("py-nfqueue") && !is_python("core"));
    }

    #[test]
    fn the_python_consumers_run_one_script() {
        let programs = Programs {
            dir: PathBuf::from("bin"),
        };
        let script = |name| programs.consumer(name).args[0].clone();
        assert_eq!(script("py-reference"), script("py-nfqueue"));
        assert_eq!(script("py-nfqueue"), script("py-nfqueue-batch"));
        assert!(script("py-nfqueue").ends_with("nfq_python.py"));
        assert_eq!(programs.consumer("py-nfqueue-batch").args[1..], ["--batch"]);
    }
}
