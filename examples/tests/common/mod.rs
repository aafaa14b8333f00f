//! Running the example programs from tests: finding the binaries cargo built,
//! and a child process that is stopped (or killed) whatever the test does.

#![allow(dead_code)] // each test binary uses a part

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long a program may take to start, or to stop after SIGTERM.
pub const PROGRAM_TIMEOUT: Duration = Duration::from_secs(15);

/// The path of the example `name` as cargo built it: beside the test binary's
/// directory (`target/debug/examples/`), or under the target directory when
/// the test binary was copied elsewhere (as `cargo xtask test-netns` does for
/// its unprivileged pass).
///
/// # Panics
/// When it was not built (a `cargo test --test` filter builds no examples).
pub fn example(name: &str) -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples").join(name)));
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target = option_env!("CARGO_TARGET_DIR")
        .map(|dir| workspace.join(dir))
        .unwrap_or_else(|| workspace.join("target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let under_target = target.join(profile).join("examples").join(name);
    beside
        .into_iter()
        .chain([under_target])
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "the example {name} is not built: run `cargo build -p nfqueue-examples --examples` \
                 (cargo test builds the examples unless told which test to build)"
            )
        })
}

/// An example running in the test thread's network namespace, with its
/// output collected. Dropping it kills the process.
pub struct Running {
    name: String,
    child: Child,
    stderr_lines: Receiver<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
    stdout_reader: Option<JoinHandle<Vec<u8>>>,
}

/// What a stopped program left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

impl Running {
    /// Starts example `name` with `args`.
    pub fn start(name: &str, args: &[&str]) -> Running {
        let mut child = Command::new(example(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        let mut stdout = child.stdout.take().expect("stdout is piped");
        let stderr = child.stderr.take().expect("stderr is piped");
        let (line_tx, stderr_lines) = mpsc::channel();
        let all = Arc::new(Mutex::new(String::new()));
        let collected = Arc::clone(&all);
        let stderr_reader = thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut text = collected.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
                let _ = line_tx.send(line);
            }
        });
        let stdout_reader = thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stdout.read_to_end(&mut bytes);
            bytes
        });
        Running {
            name: name.into(),
            child,
            stderr_lines,
            stderr: all,
            stderr_reader: Some(stderr_reader),
            stdout_reader: Some(stdout_reader),
        }
    }

    /// Waits for a line of stderr that contains `needle` and returns it.
    ///
    /// # Panics
    /// When the program exits or says nothing of the kind within
    /// [`PROGRAM_TIMEOUT`].
    pub fn wait_for_stderr(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + PROGRAM_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "{} did not print {needle:?} within {PROGRAM_TIMEOUT:?} (exit: {:?}); stderr:\n{}",
                    self.name,
                    self.child.try_wait(),
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Sends SIGTERM and waits for the program to exit.
    ///
    /// # Panics
    /// When it does not exit within [`PROGRAM_TIMEOUT`] (it is killed then).
    pub fn stop(self) -> Finished {
        let pid = libc::pid_t::try_from(self.child.id()).expect("a pid fits pid_t");
        // SAFETY: kill(2) with the pid of our own child, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.wait()
    }

    /// Waits for the program to exit by itself.
    ///
    /// # Panics
    /// When it does not exit within [`PROGRAM_TIMEOUT`] (it is killed then).
    pub fn wait(mut self) -> Finished {
        let deadline = Instant::now() + PROGRAM_TIMEOUT;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("waitpid") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "{} did not exit within {PROGRAM_TIMEOUT:?}; stderr:\n{}",
                    self.name,
                    self.stderr.lock().unwrap()
                );
            }
            thread::sleep(Duration::from_millis(10));
        };
        let stdout = self
            .stdout_reader
            .take()
            .map(|r| r.join().expect("the stdout reader does not panic"))
            .unwrap_or_default();
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        let stderr = self.stderr.lock().unwrap().clone();
        Finished {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of the `name:` line of aligned closing statistics.
pub fn stat_line(stderr: &str, name: &str) -> Option<u64> {
    stderr.lines().find_map(|line| {
        let value = line.strip_prefix(&format!("{name}:"))?;
        value.trim().parse().ok()
    })
}

/// A file name under the temporary directory, removed when dropped.
pub struct TempFile(pub PathBuf);

impl TempFile {
    pub fn new(name: &str) -> TempFile {
        TempFile(
            std::env::temp_dir().join(format!("nfqueue-examples-{}-{name}", std::process::id())),
        )
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
