//! The Python module in `cargo xtask test-netns`: a virtualenv made with
//! Debian's `python3 -m venv`, maturin, pytest and mypy from PyPI, the module
//! built with maturin and installed into it (and the reference package
//! NetfilterQueue 1.1.0 beside it, for the tests that compare), and the pytest
//! suite of `nfqueue-python/tests` run against the kernel, as root and as user
//! `nobody` inside `unshare --user --map-root-user --net`.

use crate::cmd::{self, Counts, Result};
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
pub use xtask_support::venv::{Venv, DEBIAN_PYTHON};

/// What the test virtualenv gets from PyPI.
const TEST_PACKAGES: &[&str] = &["maturin>=1.5,<2", "pytest>=7", "mypy>=1.5"];
/// The reference package, which some tests run the same program under. Its
/// import name is ours too, so it goes beside the venv's packages, in
/// `<venv>/reference`, where the tests find it (nfqueue-python/tests/scripts.py).
const REFERENCE: &str = "NetfilterQueue==1.1.0";

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
    if let Err(e) = install_reference(&venv) {
        // The tests that compare with it say so and skip; the others run.
        eprintln!("xtask: python: the reference package could not be installed: {e}");
    }
    let tests = root.join("nfqueue-python/tests");
    let mut pytest = if in_userns {
        for path in [tests.as_path(), venv.dir()] {
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

/// Installs the reference package into `<venv>/reference`, once (outside any
/// namespace: the user-namespace pass has no network).
fn install_reference(venv: &Venv) -> Result<()> {
    let dir = venv.dir().join("reference");
    if dir.join("netfilterqueue").is_dir() {
        return Ok(());
    }
    let mut pip = venv.command("pip");
    pip.args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
    ])
    .arg(&dir)
    .arg(REFERENCE);
    cmd::run_ok(&mut pip)
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
            (counts.passed, counts.failed) = (found.passed, found.failed);
        }
        counts.skipped.extend(skips(&line));
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

/// The skips of one line of pytest's `-rs` summary,
/// `SKIPPED [2] test_forward.py:63: reason` (N tests at one place for one reason).
fn skips(line: &str) -> Vec<cmd::Skip> {
    let Some(rest) = line.strip_prefix("SKIPPED [") else {
        return Vec::new();
    };
    let Some((n, rest)) = rest.split_once("] ") else {
        return Vec::new();
    };
    let (Ok(n), Some((test, reason))) = (n.parse::<usize>(), rest.split_once(": ")) else {
        return Vec::new();
    };
    let skip = cmd::Skip {
        test: test.to_string(),
        reason: reason.trim_end().to_string(),
    };
    vec![skip; n]
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

    #[test]
    fn reads_pytest_skip_lines() {
        let got = skips("SKIPPED [2] test_forward.py:63: the kernel drops it: here");
        assert_eq!(got.len(), 2);
        assert_eq!(
            (got[1].test.as_str(), got[1].reason.as_str()),
            ("test_forward.py:63", "the kernel drops it: here")
        );
        assert!(skips("test_forward.py ..s.  [ 40%]").is_empty());
    }
}
