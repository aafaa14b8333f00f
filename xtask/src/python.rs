//! The Python module in `cargo xtask test-netns` and `cargo xtask bench`: a
//! virtualenv made with Debian's `python3 -m venv`, maturin, pytest and mypy
//! from PyPI, the module built with maturin and installed into it, and the
//! pytest suite of `nfqueue-python/tests` run against the kernel, as root and
//! as user `nobody` inside `unshare --user --map-root-user --net`.

use crate::cmd::{self, Counts, Result};
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Debian's interpreter, whatever else PATH finds first: the user-namespace
/// pass runs the venv as user nobody, who must reach its interpreter.
pub const DEBIAN_PYTHON: &str = "/usr/bin/python3";

/// What the test virtualenv gets from PyPI.
const TEST_PACKAGES: &[&str] = &["maturin>=1.5,<2", "pytest>=7", "mypy>=1.5"];

/// The Python consumers of `cargo xtask bench`: the same script
/// (`bench/nfq_python.py`), each from a venv (under the bench's output
/// directory) that holds one of the two modules named `netfilterqueue`.
pub const BENCH_CONSUMERS: &[(&str, &str, &str)] = &[
    (
        "py-reference",
        "venv-reference",
        "Python, the reference package NetfilterQueue 1.1.0 from PyPI (bench/nfq_python.py)",
    ),
    (
        "py-nfqueue",
        "venv-nfqueue",
        "Python, nfqueue-python: the same script on our module (bench/nfq_python.py)",
    ),
];

/// Makes the bench's venvs in `out` (the reference from PyPI, ours built by
/// maturin in release mode) and copies the script into `bin`.
pub fn prepare_bench(root: &Path, out: &Path, bin: &Path) -> Result<()> {
    Venv::ensure(&out.join("venv-reference"), &["NetfilterQueue==1.1.0"])?;
    Venv::ensure(&out.join("venv-nfqueue"), &["maturin>=1.5,<2"])?.install_module(root)?;
    fs::copy(root.join("bench/nfq_python.py"), bin.join("nfq_python.py"))?;
    Ok(())
}

/// A virtualenv.
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    /// The virtualenv at `dir`, made with Debian's python3 when it is not
    /// there yet, with `packages` installed (pip skips what is present).
    pub fn ensure(dir: &Path, packages: &[&str]) -> Result<Venv> {
        let venv = Venv {
            dir: dir.to_path_buf(),
        };
        if !venv.python().exists() {
            cmd::run_ok(Command::new(DEBIAN_PYTHON).args(["-m", "venv"]).arg(dir))?;
        }
        if !packages.is_empty() {
            let mut pip = venv.command("pip");
            pip.args(["install", "--quiet", "--disable-pip-version-check"])
                .args(packages);
            cmd::run_ok(&mut pip)?;
        }
        Ok(venv)
    }

    /// The venv's interpreter.
    pub fn python(&self) -> PathBuf {
        self.dir.join("bin/python")
    }

    /// A program of the venv's `bin`.
    fn command(&self, name: &str) -> Command {
        Command::new(self.dir.join("bin").join(name))
    }

    /// Builds `nfqueue-python` (release) with maturin and installs the wheel.
    pub fn install_module(&self, root: &Path) -> Result<()> {
        let wheels = root.join("target/python/wheels");
        let _ = fs::remove_dir_all(&wheels);
        let mut build = self.command("maturin");
        build
            .current_dir(root.join("nfqueue-python"))
            // A wheel for this machine: linked to its libnetfilter_queue, not repaired
            // into a manylinux one (which would need patchelf).
            .args([
                "build",
                "--release",
                "--quiet",
                "--auditwheel",
                "skip",
                "--out",
            ])
            .arg(&wheels)
            // pyproject.toml's backend wraps maturin's; maturin would warn that
            // pip does not use maturin.
            .env("MATURIN_NO_MISSING_BUILD_BACKEND_WARNING", "1");
        cmd::run_ok(&mut build)?;
        let wheel = fs::read_dir(&wheels)?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or("maturin built no wheel")?;
        let mut pip = self.command("pip");
        pip.args(["install", "--quiet", "--disable-pip-version-check"])
            .args(["--force-reinstall", "--no-deps"])
            .arg(wheel);
        cmd::run_ok(&mut pip)
    }
}

/// Runs the pytest suite: as root, or as `nobody` in a user+net namespace
/// (`in_userns`; as an ordinary user, as that user there). Returns the counts
/// and the exit code; a failure to set up counts as a failed pass.
pub fn test(root: &Path, in_userns: bool) -> (Counts, u8) {
    match run_suite(root, in_userns) {
        Ok(result) => result,
        Err(e) => {
            eprintln!("xtask: python: {e}");
            (Counts::default(), 1)
        }
    }
}

fn run_suite(root: &Path, in_userns: bool) -> Result<(Counts, u8)> {
    let venv = Venv::ensure(&root.join("target/python/venv"), TEST_PACKAGES)?;
    venv.install_module(root)?;
    let tests = root.join("nfqueue-python/tests");
    let mut pytest = if in_userns {
        for path in [&tests, &venv.dir] {
            if !reachable_by_others(path) {
                return Err(format!(
                    "{} is not readable by user nobody; the user-namespace pass needs it",
                    path.display()
                )
                .into());
            }
        }
        let mut c = if cmd::is_root() {
            let mut c = cmd::program("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(cmd::find_program("unshare").unwrap_or_else(|| "unshare".into()));
            c
        } else {
            cmd::program("unshare")
        };
        c.args(["--user", "--map-root-user", "--net"])
            .arg(venv.python());
        c
    } else {
        Command::new(venv.python())
    };
    pytest
        .args(["-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs"])
        .arg(&tests)
        .current_dir(&tests)
        // Nothing written into the source tree, and nobody could not anyway.
        .env("PYTHONDONTWRITEBYTECODE", "1");
    let (status, counts) = run_pytest(&mut pytest)?;
    Ok((counts, cmd::exit_code(status)))
}

/// Runs pytest, copying its output through and reading its closing line
/// (`== 3 failed, 40 passed, 1 skipped in 9.1s ==`).
fn run_pytest(pytest: &mut Command) -> Result<(std::process::ExitStatus, Counts)> {
    let mut child = cmd::spawn(pytest.stdout(Stdio::piped()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut counts = Counts::default();
    let mut out = io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(found) = summary_counts(&line) {
            counts = found;
        }
        writeln!(out, "{line}")?;
    }
    drop(out);
    Ok((child.wait()?, counts))
}

/// The passed and failed (and error) counts of pytest's closing line.
fn summary_counts(line: &str) -> Option<Counts> {
    let line = line.trim().trim_matches('=').trim();
    if !line.contains(" in ") {
        return None;
    }
    let mut counts = Counts::default();
    let mut any = false;
    for part in line.split(" in ").next()?.split(", ") {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            return None;
        };
        let n: u64 = n.parse().ok()?;
        match what {
            "passed" => counts.passed += n,
            "failed" | "error" | "errors" => counts.failed += n,
            _ => {}
        }
        any = true;
    }
    any.then_some(counts)
}

/// Whether others may enter every directory down to `path` and read it.
fn reachable_by_others(path: &Path) -> bool {
    let mode = |p: &Path| p.metadata().map(|m| m.permissions().mode()).unwrap_or(0);
    mode(path) & 0o005 == 0o005 && path.ancestors().skip(1).all(|p| mode(p) & 0o001 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pytest_closing_lines() {
        let c = summary_counts("==== 2 failed, 40 passed, 1 skipped in 9.12s ====").unwrap();
        assert_eq!((c.passed, c.failed), (40, 2));
        let c = summary_counts("41 passed in 3.00s").unwrap();
        assert_eq!((c.passed, c.failed), (41, 0));
        let c = summary_counts("1 passed, 1 error in 0.1s").unwrap();
        assert_eq!((c.passed, c.failed), (1, 1));
        assert!(summary_counts("test_x.py ....  [100%]").is_none());
        assert!(summary_counts("the answer came in time").is_none());
    }
}
