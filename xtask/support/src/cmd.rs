//! Running commands: echo them, find programs, wait with a deadline, count test results,
//! install Debian packages.

use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Any error a task can hit; tasks report it and `main` exits with status 1.
pub type Error = Box<dyn std::error::Error>;
/// Result of a task step.
pub type Result<T> = std::result::Result<T, Error>;

/// Directories searched after `PATH`: an ordinary user's `PATH` often lacks the
/// sbin directories where `iptables` and `ip` live.
const EXTRA_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// Finds an executable by name in `PATH` and the sbin directories.
pub fn find_program(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(EXTRA_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A `Command` for a program found by [`find_program`], or by name when it is not found
/// (so that the error names it).
pub fn program(name: &str) -> Command {
    Command::new(find_program(name).unwrap_or_else(|| name.into()))
}

/// The cargo that runs us (cargo sets `CARGO`), so nested builds use the same toolchain.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The workspace root: this crate lives in `xtask/support`, two levels below it.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("xtask/support has a grandparent directory")
        .to_path_buf()
}

/// Whether the effective uid is 0 (read from /proc to stay free of libc).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// The command line as a shell would show it, for echoing.
pub fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| {
            let arg = arg.to_string_lossy();
            let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:,+@%[]".contains(c);
            if !arg.is_empty() && arg.chars().all(plain) {
                arg.into_owned()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Spawns a command after echoing it, with a message that names it if it cannot start.
pub fn spawn(cmd: &mut Command) -> Result<Child> {
    eprintln!("$ {}", display(cmd));
    cmd.spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", display(cmd)).into())
}

/// Runs a command to completion, echoing it and inheriting stdio.
pub fn run(cmd: &mut Command) -> Result<ExitStatus> {
    Ok(spawn(cmd)?.wait()?)
}

/// Runs a command and fails unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Result<()> {
    let status = run(cmd)?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed: {status}", display(cmd)).into())
    }
}

/// The exit code to pass on for a status: its code, or 128 + signal like a shell.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code & 0xff).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(1),
        (None, None) => 1,
    }
}

/// Waits for a child until `deadline`; on timeout kills it and returns `None`.
pub fn wait_until(child: &mut Child, deadline: Instant) -> io::Result<Option<ExitStatus>> {
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGTERM so the child can exit cleanly. std only offers SIGKILL; the shell's
/// builtin `kill` needs no extra package.
pub fn terminate(child: &Child) {
    let _ = Command::new("sh")
        .args(["-c", "kill -TERM \"$0\"", &child.id().to_string()])
        .status();
}

/// Passed, failed and skipped tests, summed over libtest's `test result:` lines
/// and the skip reports of the test kit.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    /// Tests that passed, not counting the skipped ones.
    pub passed: u64,
    pub failed: u64,
    /// Tests that reported they could not run here: what and why.
    pub skipped: Vec<Skip>,
}

/// A test that reported it could not run here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skip {
    /// The test (its name, or where it is).
    pub test: String,
    pub reason: String,
}

/// What a skip report of the test kit starts with: `SKIPPED: <test>: <reason>`
/// (`nfqueue_testkit::skip::MARK`). It may follow other output on its line:
/// libtest writes `test x ... ` and `ok` separately.
const SKIP_MARK: &str = "SKIPPED: ";

impl Counts {
    /// Adds the counts of one `test result: ok. 3 passed; 0 failed; ...` line,
    /// or the skip a `SKIPPED: <test>: <reason>` line reports.
    fn add_line(&mut self, line: &str) {
        if let Some(at) = line.find(SKIP_MARK) {
            let report = &line[at + SKIP_MARK.len()..];
            if let Some((test, reason)) = report.split_once(": ") {
                self.skipped.push(Skip {
                    test: test.to_string(),
                    reason: reason.trim_end().to_string(),
                });
            }
            return;
        }
        let Some(rest) = line.trim_start().strip_prefix("test result:") else {
            return;
        };
        let number_before = |word: &str| {
            rest.split(';')
                .filter_map(|part| part.trim().strip_suffix(word))
                .filter_map(|n| n.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>()
        };
        self.passed += number_before(" passed");
        self.failed += number_before(" failed");
    }

    pub fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.skipped.extend(other.skipped);
    }

    /// The skip reasons, each once, in the order first reported, with the
    /// tests skipped for it.
    pub fn skips_by_reason(&self) -> Vec<(&str, Vec<&str>)> {
        let mut by_reason: Vec<(&str, Vec<&str>)> = Vec::new();
        for skip in &self.skipped {
            match by_reason.iter_mut().find(|(r, _)| *r == skip.reason) {
                Some((_, tests)) => tests.push(&skip.test),
                None => by_reason.push((&skip.reason, vec![&skip.test])),
            }
        }
        by_reason
    }
}

/// Runs a command, copying its stdout through line by line while counting test results.
/// stderr is inherited (cargo's progress and libtest's panics stay visible).
pub fn run_counted(cmd: &mut Command) -> Result<(ExitStatus, Counts)> {
    let mut child = spawn(cmd.stdout(Stdio::piped()))?;
    let mut counts = Counts::default();
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut out = io::stdout().lock();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        counts.add_line(&line);
        writeln!(out, "{line}")?;
    }
    drop(out);
    // libtest counts a test that reported a skip and returned as passed.
    counts.passed = counts.passed.saturating_sub(counts.skipped.len() as u64);
    Ok((child.wait()?, counts))
}

/// Installs Debian packages with apt-get, without questions (needs root).
pub fn apt_install(packages: &[&str]) -> Result<()> {
    run_ok(program("apt-get").arg("update"))?;
    run_ok(
        program("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y"])
            .args(packages),
    )
}

/// Kills and reaps a child when dropped, so no helper outlives a failed step.
#[derive(Debug)]
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Reads the string value of `"key":"..."` from one line of cargo's JSON output.
/// Enough for cargo's messages (paths and names); not a general JSON parser.
pub fn json_str(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut value = String::new();
    let mut chars = line[start..].chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => match chars.next()? {
                'n' => value.push('\n'),
                't' => value.push('\t'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

/// An artifact cargo built, from a `compiler-artifact` JSON message.
#[derive(Debug)]
pub struct Artifact {
    /// The target's name (`print_and_accept`, `nfqueue_core`, ...).
    pub name: String,
    /// The crate's directory (where cargo runs its tests).
    pub crate_dir: PathBuf,
    pub executable: PathBuf,
    /// Built with `profile.test` (unit or integration test binaries).
    pub test: bool,
}

/// Runs cargo with `--message-format=json` and returns the artifacts with an executable.
/// JSON output replaces cargo's diagnostics on stdout, so their rendered text is
/// printed here to stderr.
pub fn cargo_artifacts(cmd: &mut Command) -> Result<Vec<Artifact>> {
    let mut child = spawn(cmd.arg("--message-format=json").stdout(Stdio::piped()))?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut artifacts = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.contains("\"reason\":\"compiler-message\"") {
            if let Some(rendered) = json_str(&line, "rendered") {
                eprint!("{rendered}");
            }
        }
        if !line.contains("\"reason\":\"compiler-artifact\"") {
            continue;
        }
        let (Some(executable), Some(manifest)) = (
            json_str(&line, "executable"),
            json_str(&line, "manifest_path"),
        ) else {
            continue;
        };
        // The target object comes first, so the first "name" is the target's name.
        let name = json_str(&line, "name").unwrap_or_default();
        let test = line
            .find("\"profile\":{")
            .and_then(|i| line[i..].find('}').map(|j| &line[i..i + j]))
            .is_some_and(|profile| profile.contains("\"test\":true"));
        artifacts.push(Artifact {
            name,
            crate_dir: Path::new(&manifest)
                .parent()
                .unwrap_or(Path::new("."))
                .into(),
            executable: executable.into(),
            test,
        });
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("`{}` failed: {status}", display(cmd)).into());
    }
    Ok(artifacts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_libtest_summary_lines() {
        let mut c = Counts::default();
        c.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.add_line(
            "test result: FAILED. 2 passed; 4 failed; 0 ignored; 0 measured; 0 filtered out",
        );
        c.add_line("test foo ... ok");
        assert_eq!((c.passed, c.failed), (5, 4));
        assert!(c.skipped.is_empty());
    }

    #[test]
    fn reads_skip_reports_also_after_other_output_on_the_line() {
        let mut c = Counts::default();
        c.add_line("SKIPPED: a_v4: the kernel drops it: here");
        c.add_line("test x ... okSKIPPED: a_v6: the kernel drops it: here");
        c.add_line("SKIPPED: b: another reason");
        let reasons = c.skips_by_reason();
        assert_eq!(
            reasons,
            [
                ("the kernel drops it: here", vec!["a_v4", "a_v6"]),
                ("another reason", vec!["b"])
            ]
        );
    }

    #[test]
    fn reads_json_strings() {
        let line = r#"{"reason":"compiler-artifact","target":{"kind":["example"],"name":"print_and_accept"},"executable":"/t/a\"b","manifest_path":"/w/examples/Cargo.toml"}"#;
        assert_eq!(json_str(line, "name").as_deref(), Some("print_and_accept"));
        assert_eq!(json_str(line, "executable").as_deref(), Some("/t/a\"b"));
        assert_eq!(json_str(line, "missing"), None);
    }
}
