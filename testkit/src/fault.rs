//! Send failures on demand: an `LD_PRELOAD` library that makes chosen verdict
//! sends (`sendmsg`/`sendto` on a netfilter netlink socket) fail with `ENOBUFS`
//! or `EMSGSIZE`, can log every verdict datagram the kernel took, and can
//! damage chosen packet messages as they are received, so that they cannot be
//! parsed ([`FaultPlan::corrupt_packets`]).
//!
//! `LD_PRELOAD` takes effect when a process starts, so the code under test runs
//! in a child: the test binary itself, started again with `--exact <test>` and
//! the plan in its environment. [`isolated`] does both halves: in the test
//! process it builds the library (from C source compiled with `cc` into a
//! temporary directory, removed afterwards), starts the child and checks that
//! it passed; in the child it runs the body.
//!
//! ```no_run
//! use nfqueue_testkit::fault::{self, FaultPlan};
//!
//! #[test]
//! fn retries_keep_order() {
//!     fault::isolated("retries_keep_order", &FaultPlan::enobufs().every(16, 2), || {
//!         // In the child: a namespace, a consumer, traffic, the far end...
//!         assert!(fault::injected() > 0, "the fault happened");
//!     });
//! }
//! ```

use std::ffi::{CStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The C source of the library.
const SOURCE: &str = include_str!("../shim/sendfault.c");
/// Set in the child: the name of the test it runs.
const CHILD_ENV: &str = "NFQUEUE_TESTKIT_FAULT_CHILD";
/// The line the child prints when its body returned.
const DONE: &str = "NFQUEUE-TESTKIT-FAULT-CHILD-DONE";
/// Longest a child may run.
const CHILD_TIMEOUT: Duration = Duration::from_secs(90);

/// Which verdict sends fail, and how. Calls are counted from 1, over verdict
/// datagrams of at least [`min_len`](Self::min_len) bytes only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FaultPlan {
    /// The errno of a failing call; 0 for none.
    pub errno: i32,
    /// Only datagrams this long or longer count.
    pub min_len: usize,
    /// The first counted call that fails.
    pub from: u64,
    /// The last counted call that fails.
    pub to: u64,
    /// With `burst`: from `from` on, fail `burst` calls out of every `every`.
    pub every: u64,
    /// See `every`.
    pub burst: u64,
    /// Log every verdict datagram the kernel took (read it with [`verdict_log`]).
    pub log: bool,
    /// Damage every `corrupt_every`th packet message received (0: none).
    pub corrupt_every: u64,
    /// With `corrupt_every`: damage the packet header itself, so that not
    /// even the packet's id can be read.
    pub corrupt_id: bool,
}

impl FaultPlan {
    /// No failures (for a log only).
    pub fn none() -> FaultPlan {
        FaultPlan {
            errno: 0,
            min_len: 0,
            from: 1,
            to: u64::MAX,
            every: 0,
            burst: 0,
            log: false,
            corrupt_every: 0,
            corrupt_id: false,
        }
    }

    /// Every counted call fails with `ENOBUFS` (narrow it down with the other
    /// methods).
    pub fn enobufs() -> FaultPlan {
        FaultPlan {
            errno: libc::ENOBUFS,
            ..FaultPlan::none()
        }
    }

    /// Datagrams of `min_len` bytes or more fail with `EMSGSIZE`, as the kernel
    /// refuses one larger than the socket's send buffer.
    pub fn emsgsize_from(min_len: usize) -> FaultPlan {
        FaultPlan {
            errno: libc::EMSGSIZE,
            min_len,
            ..FaultPlan::none()
        }
    }

    /// Calls `from..=to` fail.
    pub fn calls(mut self, from: u64, to: u64) -> FaultPlan {
        self.from = from;
        self.to = to;
        self
    }

    /// `burst` calls of every `every` fail (from `from` on).
    pub fn every(mut self, every: u64, burst: u64) -> FaultPlan {
        self.every = every;
        self.burst = burst;
        self
    }

    /// Logs the verdict datagrams the kernel took.
    pub fn logged(mut self) -> FaultPlan {
        self.log = true;
        self
    }

    /// Damages every `every`th packet message as it is received (by `recv` or
    /// `recvmmsg`): the attribute after its `NFQA_PACKET_HDR` gets a length
    /// too short for an attribute, so the message cannot be parsed, though
    /// the packet's id can still be read.
    pub fn corrupt_packets(mut self, every: u64) -> FaultPlan {
        self.corrupt_every = every;
        self
    }

    /// With [`corrupt_packets`](Self::corrupt_packets): damages the
    /// `NFQA_PACKET_HDR` itself, so that the packet's id cannot be read.
    pub fn without_ids(mut self) -> FaultPlan {
        self.corrupt_id = true;
        self
    }

    fn env(&self, dir: &Path) -> Vec<(&'static str, OsString)> {
        let mut env = vec![
            ("NFQ_FAULT_ERRNO", self.errno.to_string().into()),
            ("NFQ_FAULT_MIN_LEN", self.min_len.to_string().into()),
            ("NFQ_FAULT_FROM", self.from.to_string().into()),
            ("NFQ_FAULT_TO", self.to.to_string().into()),
            ("NFQ_FAULT_EVERY", self.every.to_string().into()),
            ("NFQ_FAULT_BURST", self.burst.to_string().into()),
            (
                "NFQ_FAULT_CORRUPT_EVERY",
                self.corrupt_every.to_string().into(),
            ),
            (
                "NFQ_FAULT_CORRUPT_ID",
                u8::from(self.corrupt_id).to_string().into(),
            ),
        ];
        if self.log {
            env.push(("NFQ_FAULT_LOG", dir.join("verdicts.log").into()));
        }
        env
    }
}

/// Whether this process is the child [`isolated`] started for `test`.
pub fn in_child(test: &str) -> bool {
    std::env::var(CHILD_ENV).is_ok_and(|t| t == test)
}

/// Runs `body` in a child process with the send failures of `plan`, and checks
/// that it passed. `test` is the name of the calling test function (at the root
/// of its test binary), which the child runs with `--exact`.
///
/// # Panics
///
/// In the test process: when the library cannot be built, the child cannot be
/// started, fails, does not run the body, or runs longer than 90 s (it is
/// killed); the child's output is in the message. In the child: as `body`.
pub fn isolated(test: &str, plan: &FaultPlan, body: impl FnOnce()) {
    if in_child(test) {
        // Commands the child starts (iptables, ip) need no failures.
        std::env::remove_var("LD_PRELOAD");
        body();
        println!("{DONE}");
        return;
    }
    let dir = TempDir::new();
    let lib = build(&dir.0);
    let mut child = Command::new(std::env::current_exe().expect("current_exe"));
    child
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, test)
        .env("LD_PRELOAD", &lib)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in plan.env(&dir.0) {
        child.env(k, v);
    }
    let mut child = child.spawn().expect("starting the test binary again");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let readers = (
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = out.read_to_string(&mut s);
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s);
            s
        }),
    );
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = readers.0.join().unwrap_or_default();
    let stderr = readers.1.join().unwrap_or_default();
    // With --nocapture a body that printed nothing has its line follow
    // libtest's "test NAME ... ".
    let ran = stdout.lines().any(|l| l.trim().ends_with(DONE));
    match status {
        Some(s) if s.success() && ran => {
            // Pass the child's notes on (libtest shows them on failure or with
            // --nocapture).
            print!("{}", child_notes(&stdout));
        }
        other => panic!(
            "the child running {test} with send failures {plan:?} {}:\n\
             --- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            match other {
                None => format!("ran longer than {CHILD_TIMEOUT:?} and was killed"),
                Some(s) if s.success() => "exited without running the test body".to_string(),
                Some(s) => format!("failed ({s})"),
            }
        ),
    }
}

/// The child's own lines, without libtest's.
fn child_notes(stdout: &str) -> String {
    stdout
        .lines()
        .map(|l| match l.find(" ... ") {
            // With --nocapture the first line printed follows libtest's
            // "test NAME ... ", and its "ok" comes on a line of its own.
            Some(at) if l.starts_with("test ") => &l[at + 5..],
            _ => l,
        })
        .filter(|l| {
            let l = l.trim();
            !(l.is_empty()
                || l.ends_with(DONE)
                || l == "ok"
                || l.starts_with("running ")
                || l.starts_with("test result"))
        })
        .map(|l| format!("child: {l}\n"))
        .collect()
}

/// Compiles the library into `dir` and returns its path.
fn build(dir: &Path) -> PathBuf {
    let src = dir.join("sendfault.c");
    let lib = dir.join("libsendfault.so");
    std::fs::write(&src, SOURCE).expect("writing the shim's source");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let out = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-Wall", "-o"])
        .arg(&lib)
        .arg(&src)
        .args(["-ldl", "-lpthread"])
        .output()
        .unwrap_or_else(|e| panic!("starting {cc:?} to build the send-failure shim: {e}"));
    assert!(
        out.status.success(),
        "building the send-failure shim failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    lib
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "nfqueue-testkit-fault-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("creating a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Calls an `unsigned long (void)` function of the shim, in the child.
fn shim_counter(name: &CStr) -> u64 {
    // SAFETY: dlsym only reads the NUL-terminated name; RTLD_DEFAULT searches
    // the objects already loaded, the preloaded shim first.
    let f = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    assert!(
        !f.is_null(),
        "the send-failure shim is not loaded: call this inside fault::isolated"
    );
    // SAFETY: the shim defines this symbol as `unsigned long name(void)`.
    let f: extern "C" fn() -> libc::c_ulong = unsafe { std::mem::transmute(f) };
    f() as u64
}

/// In the child: verdict sends that counted (see [`FaultPlan`]).
///
/// # Panics
///
/// Outside a child of [`isolated`].
pub fn counted() -> u64 {
    shim_counter(c"nfq_fault_calls")
}

/// In the child: packet messages damaged as they were received.
///
/// # Panics
///
/// Outside a child of [`isolated`].
pub fn corrupted() -> u64 {
    shim_counter(c"nfq_fault_corrupted")
}

/// In the child: verdict sends made to fail.
///
/// # Panics
///
/// Outside a child of [`isolated`].
pub fn injected() -> u64 {
    shim_counter(c"nfq_fault_injected")
}

/// In the child of a [`FaultPlan::logged`] plan: every verdict datagram the
/// kernel took so far, in the order sent.
///
/// # Panics
///
/// When the plan logs nothing, or the log cannot be read or is cut short.
pub fn verdict_log() -> Vec<Vec<u8>> {
    let path = std::env::var_os("NFQ_FAULT_LOG").expect("the plan logs verdicts");
    let bytes = std::fs::read(&path).unwrap_or_default();
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("4 bytes")) as usize;
        at += 4;
        assert!(at + len <= bytes.len(), "the verdict log is cut short");
        out.push(bytes[at..at + len].to_vec());
        at += len;
    }
    out
}
