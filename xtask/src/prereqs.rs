//! `cargo xtask prereqs`: check the system tools and libraries the workspace needs,
//! and install the missing ones on Debian/Ubuntu when running as root.

use crate::cmd::{apt_install, find_program, is_root, Result};
use std::path::Path;
use std::process::Command;

/// One prerequisite: what is checked, how, and the Debian package that provides it.
struct Check {
    what: &'static str,
    package: &'static str,
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

const CHECKS: &[Check] = &[
    Check {
        what: "pkg-config",
        package: "pkg-config",
        probe: || programs(&["pkg-config"]),
    },
    Check {
        what: "libnetfilter_queue (pkg-config)",
        package: "libnetfilter-queue-dev",
        probe: || pkg_config("libnetfilter_queue"),
    },
    Check {
        what: "libmnl (pkg-config)",
        package: "libmnl-dev",
        probe: || pkg_config("libmnl"),
    },
    Check {
        what: "libclang (for bindgen)",
        package: "libclang-dev",
        probe: libclang,
    },
    Check {
        what: "C compiler",
        package: "gcc",
        probe: || programs(&["cc"]).or_else(|| programs(&["gcc"])),
    },
    Check {
        what: "iptables, ip6tables",
        package: "iptables",
        probe: || programs(&["iptables", "ip6tables"]),
    },
    Check {
        what: "ip",
        package: "iproute2",
        probe: || programs(&["ip"]),
    },
    Check {
        what: "python3 -m venv (with pip)",
        package: "python3-venv",
        probe: || python3_can("import ensurepip, venv"),
    },
    Check {
        what: "Python headers (python3-config)",
        package: "python3-dev",
        probe: || {
            let config = Path::new("/usr/bin/python3-config");
            config.exists().then(|| config.display().to_string())
        },
    },
    Check {
        what: "unshare, nsenter, setpriv",
        package: "util-linux",
        probe: || programs(&["unshare", "nsenter", "setpriv"]),
    },
];

/// Runs every check once and returns the packages still missing. It prints a
/// line for each check that failed (for every check when `verbose`), and one
/// line in all when nothing is missing.
fn check_all(verbose: bool) -> Vec<&'static str> {
    let mut missing = Vec::new();
    for check in CHECKS {
        match (check.probe)() {
            Some(found) if verbose => eprintln!("prereqs: {:<32} ok ({found})", check.what),
            Some(_) => {}
            None => {
                eprintln!(
                    "prereqs: {:<32} MISSING (package {})",
                    check.what, check.package
                );
                // pkg-config missing also fails the library probes: install it once.
                if !missing.contains(&check.package) {
                    missing.push(check.package);
                }
            }
        }
    }
    if missing.is_empty() {
        eprintln!("prereqs: all {} present", CHECKS.len());
    }
    missing
}

/// `cargo xtask prereqs [-v]`.
pub fn main(args: &[String]) -> Result<u8> {
    let verbose = match args {
        [] => false,
        [flag] if flag == "-v" || flag == "--verbose" => true,
        _ => return Err("usage: cargo xtask prereqs [-v]".into()),
    };
    check(verbose).map(|()| 0)
}

/// Checks prerequisites quietly (one line when all are present),
/// installing what is missing with apt-get when root on Debian.
pub fn run() -> Result<()> {
    check(false)
}

/// Checks prerequisites, installing what is missing with apt-get when root on Debian.
fn check(verbose: bool) -> Result<()> {
    let missing = check_all(verbose);
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
    let still = check_all(verbose);
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!("still missing after apt-get install: {}", still.join(" ")).into())
    }
}
