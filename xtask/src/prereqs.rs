//! `cargo xtask prereqs`: check the system tools and libraries the workspace needs,
//! and install the missing ones on Debian/Ubuntu when running as root.
//!
//! Every program a test, the demo, the soak or the benchmark starts is checked
//! here, with the package that has it and who uses it, or is not needed: the
//! tests write `/proc/sys` themselves rather than run `sysctl` (procps), and
//! the demo pings only when `ping` is there. Programs of the Essential set
//! (`sh`, `readlink`, `echo`) are on every Debian.

use crate::cmd::{apt_install, find_program, is_root, Result};
use std::path::Path;
use std::process::Command;

/// One prerequisite: what is checked, how, the Debian package that provides
/// it, and who needs it (prereqs prints that, so that no package is a mystery).
struct Check {
    what: &'static str,
    package: &'static str,
    used_by: &'static str,
    probe: fn() -> Option<String>,
}

fn programs(names: &'static [&'static str]) -> Option<String> {
    let found: Option<Vec<_>> = names.iter().map(|n| find_program(n)).collect();
    Some(
        found?
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn pkg_config(lib: &str) -> Option<String> {
    let out = Command::new(find_program("pkg-config")?)
        .args(["--modversion", lib])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| format!("{lib} {}", String::from_utf8_lossy(&out.stdout).trim()))
}

/// The Python module's tests build it into a venv; Debian splits venv's pip
/// (ensurepip) into python3-venv.
fn python3_can(code: &str) -> Option<String> {
    let python = Path::new(crate::python::DEBIAN_PYTHON);
    let ok = Command::new(python).args(["-c", code]).output().ok()?;
    ok.status.success().then(|| python.display().to_string())
}

/// bindgen loads libclang at build time; it looks where Debian's `libclang-dev` puts it.
fn libclang() -> Option<String> {
    let mut dirs: Vec<_> = std::env::var_os("LIBCLANG_PATH")
        .map(Into::into)
        .into_iter()
        .collect();
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        let mut llvm: Vec<_> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("llvm-"))
            .map(|e| e.path().join("lib"))
            .collect();
        llvm.sort();
        dirs.extend(llvm.into_iter().rev());
    }
    dirs.extend(["/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"].map(Into::into));
    dirs.iter().find_map(|dir: &std::path::PathBuf| {
        std::fs::read_dir(dir).ok()?.flatten().find_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name.starts_with("libclang") && name.contains(".so") && !name.contains("cpp"))
                .then(|| e.path().display().to_string())
        })
    })
}

/// modprobe, where the kernel loads modules: it runs `/sbin/modprobe` itself
/// when a rule first uses a match or target built as a module (a fresh
/// Debian minbase has no kmod, and the rule then fails).
fn modprobe() -> Option<String> {
    if !Path::new("/proc/modules").exists() {
        return Some("not needed: this kernel has no loadable modules".into());
    }
    programs(&["modprobe"])
}

/// What building, the tests, the demo and the soak need; every command
/// checks these first.
const CHECKS: &[Check] = &[
    Check {
        what: "pkg-config",
        package: "pkg-config",
        used_by: "nfqueue-sys's build, to find the C libraries",
        probe: || programs(&["pkg-config"]),
    },
    Check {
        what: "libnetfilter_queue (pkg-config)",
        package: "libnetfilter-queue-dev",
        used_by: "nfqueue-sys's build; bench's C consumers",
        probe: || pkg_config("libnetfilter_queue"),
    },
    Check {
        what: "libmnl (pkg-config)",
        package: "libmnl-dev",
        used_by: "nfqueue-sys's build; bench's C consumers",
        probe: || pkg_config("libmnl"),
    },
    Check {
        what: "libclang (for bindgen)",
        package: "libclang-dev",
        used_by: "nfqueue-sys's build (bindgen), unless the feature pregenerated-bindings is on",
        probe: libclang,
    },
    Check {
        what: "C compiler (cc)",
        package: "gcc",
        used_by: "every build (the linker); bench, for its C consumers",
        probe: || programs(&["cc"]).or_else(|| programs(&["gcc"])),
    },
    Check {
        what: "iptables, ip6tables",
        package: "iptables",
        used_by: "the kernel tests, the Python tests, demo, soak and bench (NFQUEUE rules)",
        probe: || programs(&["iptables", "ip6tables"]),
    },
    Check {
        what: "ip",
        package: "iproute2",
        used_by: "the kernel tests and the Python tests (links, addresses, routes); demo, \
                  soak and bench (lo up)",
        probe: || programs(&["ip"]),
    },
    Check {
        what: "modprobe",
        package: "kmod",
        used_by: "the kernel, which runs it to load the iptables and NFQUEUE modules a rule \
                  first uses; test-netns, before its user-namespace pass",
        probe: modprobe,
    },
    Check {
        what: "unshare, nsenter, setpriv",
        package: "util-linux",
        used_by: "test-netns (unshare; setpriv for its pass as nobody), demo, soak and \
                  bench (unshare); the test kit's tests (nsenter)",
        probe: || programs(&["unshare", "nsenter", "setpriv"]),
    },
    Check {
        what: "python3 -m venv (with pip)",
        package: "python3-venv",
        used_by: "the Python tests (their venv) and bench's Python consumers",
        probe: || python3_can("import ensurepip, venv"),
    },
    Check {
        what: "Python headers (python3-config)",
        package: "python3-dev",
        used_by: "the Python tests and bench: pip builds the reference package \
                  NetfilterQueue 1.1.0 from source, to run the same programs under both",
        probe: || {
            let config = Path::new("/usr/bin/python3-config");
            config.exists().then(|| config.display().to_string())
        },
    },
];

/// What `cargo xtask bench` needs beyond [`CHECKS`]; it checks these itself,
/// and `cargo xtask prereqs --bench` does too.
const BENCH: &[Check] = &[
    Check {
        what: "iperf3",
        package: "iperf3",
        used_by: "bench (its TCP scenarios)",
        probe: || programs(&["iperf3"]),
    },
    Check {
        what: "taskset",
        package: "util-linux",
        used_by: "bench (it pins senders and consumers to CPUs)",
        probe: || programs(&["taskset"]),
    },
];

/// What `cargo xtask bench --callgrind` needs beyond [`BENCH`].
const CALLGRIND: &[Check] = &[Check {
    what: "valgrind",
    package: "valgrind",
    used_by: "bench --callgrind",
    probe: || programs(&["valgrind"]),
}];

/// Runs every check of `groups` once and returns the packages still
/// missing. It prints a line for each check that failed (for every check when
/// `verbose`), naming the package and who needs it, and one line in all when
/// nothing is missing.
fn check_all(groups: &[&[Check]], verbose: bool) -> Vec<&'static str> {
    let mut missing = Vec::new();
    let checks = || groups.iter().flat_map(|g| g.iter());
    for check in checks() {
        let line = |status: &str| {
            format!(
                "prereqs: {status:<7} {}: {}, used by {}",
                check.package, check.what, check.used_by
            )
        };
        match (check.probe)() {
            Some(found) if verbose => eprintln!("{} ({found})", line("ok")),
            Some(_) => {}
            None => {
                eprintln!("{}", line("MISSING"));
                // pkg-config missing also fails the library probes: install it once.
                if !missing.contains(&check.package) {
                    missing.push(check.package);
                }
            }
        }
    }
    if missing.is_empty() {
        eprintln!("prereqs: all {} present", checks().count());
    }
    missing
}

/// `cargo xtask prereqs [-v] [--bench]`.
pub fn main(args: &[String]) -> Result<u8> {
    let (mut verbose, mut bench) = (false, false);
    for arg in args {
        match arg.as_str() {
            "-v" | "--verbose" => verbose = true,
            "--bench" => bench = true,
            _ => return Err("usage: cargo xtask prereqs [-v] [--bench]".into()),
        }
    }
    let groups: &[&[Check]] = if bench {
        &[CHECKS, BENCH, CALLGRIND]
    } else {
        &[CHECKS]
    };
    check(groups, verbose).map(|()| 0)
}

/// Checks prerequisites quietly (one line when all are present),
/// installing what is missing with apt-get when root on Debian.
pub fn run() -> Result<()> {
    check(&[CHECKS], false)
}

/// Checks what `cargo xtask bench` needs beyond [`run`] (with `callgrind`,
/// valgrind too), installing what is missing as [`run`] does.
pub fn run_bench(callgrind: bool) -> Result<()> {
    if callgrind {
        check(&[BENCH, CALLGRIND], false)
    } else {
        check(&[BENCH], false)
    }
}

/// Checks prerequisites, installing what is missing with apt-get when root on Debian.
fn check(groups: &[&[Check]], verbose: bool) -> Result<()> {
    let missing = check_all(groups, verbose);
    if missing.is_empty() {
        return Ok(());
    }
    let debian = Path::new("/etc/debian_version").exists() || find_program("apt-get").is_some();
    if !(debian && is_root()) {
        let why = if debian {
            "not root"
        } else {
            "not Debian/Ubuntu: the names are Debian's"
        };
        return Err(format!(
            "missing prerequisites ({why}); install them with:\n  sudo apt-get install -y {}",
            missing.join(" ")
        )
        .into());
    }
    apt_install(&missing)?;
    let still = check_all(groups, verbose);
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!("still missing after apt-get install: {}", still.join(" ")).into())
    }
}
