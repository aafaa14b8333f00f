//! `cargo xtask wheel`: the Python module as a manylinux wheel that installs
//! with pip alone, without a compiler, Rust or any `-dev` package.
//!
//! - **Tag `manylinux_2_28`**: glibc 2.28 or later (Debian 10, Ubuntu 20.04,
//!   RHEL 8 and every later release; pip 20.3 or later). maturin links through
//!   zig (`--zig`), which links against the symbol versions of the glibc asked
//!   for, so the build machine's glibc (2.36 on Debian 12, which would make the
//!   wheel `manylinux_2_34`) does not leak into the tag. 2.28 is the baseline of
//!   PyPA's current manylinux images; what is older than it (CentOS 7, Ubuntu
//!   18.04) is past its end of life.
//! - **libnetfilter_queue and libmnl linked statically** (nfqueue-sys's
//!   `NFQUEUE_SYS_STATIC` and `NFQUEUE_SYS_LIB_DIR`), from the archives of
//!   Debian 13's `-dev` packages, fetched with apt-get into `target/wheel`:
//!   Debian 12's libmnl-dev ships no `libmnl.a`. Their objects call only
//!   long-standing glibc functions, so they fit the tag. `--lib-dir` takes the
//!   two archives from a directory instead.
//! - **No libclang**: the module builds with nfqueue-sys's checked-in bindings
//!   (the feature set in pyproject.toml).
//! - **Checked by auditwheel** (PyPA's tool, from PyPI): the tag is what was
//!   asked for and the wheel needs no shared library outside the manylinux set.
//!   Then the wheel alone is installed into a new venv, and the module imported
//!   and a queue socket opened through it.
//!
//! maturin, ziglang and auditwheel come from PyPI into a venv in `target/wheel`;
//! cargo builds into `target/wheel/cargo`, so the wheel's environment does not
//! invalidate the workspace's own builds.

use crate::cmd::{self, Result};
use crate::python::{Venv, DEBIAN_PYTHON};
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

pub const USAGE: &str = "  wheel [--out DIR] [--lib-dir DIR] [--compatibility TAG]
                               nfqueue-python as a manylinux wheel (default
                               manylinux_2_28, linked with zig) with libnetfilter_queue
                               and libmnl linked in statically, into target/wheels (or
                               DIR); checked with auditwheel and by importing it from a
                               new venv. The static archives come from Debian 13's -dev
                               packages (apt-get download), or from --lib-dir DIR
";

/// The platform tag asked for, unless `--compatibility` says otherwise.
const DEFAULT_COMPATIBILITY: &str = "manylinux_2_28";

/// What the build venv gets from PyPI. zig is pinned: a new zig release has
/// broken maturin's use of it before.
const TOOLS: &[&str] = &["maturin>=1.5,<2", "ziglang==0.17.1", "auditwheel>=6"];

/// The Debian release whose `-dev` packages ship both static archives.
const DEBIAN_SUITE: &str = "trixie";

/// The packages with the archives, and the archives.
const DEBIAN_PACKAGES: &[&str] = &["libnetfilter-queue-dev", "libmnl-dev"];
const ARCHIVES: &[&str] = &["libnetfilter_queue.a", "libmnl.a"];

#[derive(Debug, PartialEq)]
struct Options {
    out: Option<PathBuf>,
    lib_dir: Option<PathBuf>,
    compatibility: String,
}

fn parse(args: &[String]) -> std::result::Result<Options, String> {
    let mut options = Options {
        out: None,
        lib_dir: None,
        compatibility: DEFAULT_COMPATIBILITY.to_string(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = || {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{arg} needs a value"))
        };
        match arg.as_str() {
            "--out" | "-o" => options.out = Some(value()?.into()),
            "--lib-dir" => options.lib_dir = Some(value()?.into()),
            "--compatibility" => options.compatibility = value()?,
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(options)
}

pub fn run(args: &[String]) -> Result<u8> {
    let options =
        parse(args).map_err(|e| format!("{e}\nusage: cargo xtask {}", USAGE.trim_start()))?;
    let cwd = std::env::current_dir()?;
    let root = cmd::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));
    let work = target.join("wheel");
    let out = options
        .out
        .map_or_else(|| target.join("wheels"), |dir| cwd.join(dir));
    fs::create_dir_all(&work)?;
    fs::create_dir_all(&out)?;

    ensure_venv_module()?;
    let venv = Venv::ensure(&work.join("venv"), TOOLS)?;
    let bin = venv
        .python()
        .parent()
        .expect("a venv's python is in bin/")
        .to_path_buf();
    let lib_dir = match options.lib_dir {
        Some(dir) => cwd.join(dir),
        None => debian_archives(&work)?,
    };
    for archive in ARCHIVES {
        if !lib_dir.join(archive).is_file() {
            return Err(format!("{} has no {archive}", lib_dir.display()).into());
        }
    }

    let started = SystemTime::now();
    let mut path = OsString::from(&bin);
    path.push(":");
    path.push(std::env::var_os("PATH").unwrap_or_default());
    let mut build = Command::new(bin.join("maturin"));
    build
        .current_dir(root.join("nfqueue-python"))
        .args(["build", "--release", "--zig", "--compatibility"])
        .arg(&options.compatibility)
        // Fail, rather than graft, if the module needs any other library.
        .args(["--auditwheel", "check", "--out"])
        .arg(&out)
        .arg("--target-dir")
        .arg(work.join("cargo"))
        // maturin runs `python -m ziglang`: the venv's python.
        .env("PATH", path)
        // pyproject.toml names our wrapper of maturin's backend, which maturin
        // would warn pip does not use maturin.
        .env("MATURIN_NO_MISSING_BUILD_BACKEND_WARNING", "1")
        .env("NFQUEUE_SYS_STATIC", "1")
        .env("NFQUEUE_SYS_LIB_DIR", &lib_dir);
    cmd::run_ok(&mut build)?;
    let wheel = newest_wheel(&out, started)?;

    let mut show = Command::new(bin.join("auditwheel"));
    show.arg("show").arg(&wheel);
    eprintln!("$ {}", cmd::display(&show));
    let report = show.output()?;
    let text = String::from_utf8_lossy(&report.stdout);
    print!("{text}");
    if !report.status.success() {
        eprint!("{}", String::from_utf8_lossy(&report.stderr));
        return Err(format!("auditwheel show failed: {}", report.status).into());
    }
    audit(&text, &options.compatibility)?;
    smoke_test(&work.join("smoke-venv"), &wheel)?;
    let size = fs::metadata(&wheel)?.len();
    println!(
        "wheel: {} ({} KiB): tag {}, libnetfilter_queue and libmnl linked in; install with\n  pip install {}",
        wheel.display(),
        size.div_ceil(1024),
        options.compatibility,
        wheel.display()
    );
    Ok(0)
}

/// Installs the wheel, and nothing else, into a new venv, and opens a queue
/// socket through it: the module loads with its libraries linked in.
fn smoke_test(dir: &Path, wheel: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(dir);
    let venv = Venv::ensure(dir, &[])?;
    let pip = venv.python().with_file_name("pip");
    cmd::run_ok(
        Command::new(pip)
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(["--no-index", "--only-binary", ":all:"])
            .arg(wheel),
    )?;
    let code = "import netfilterqueue as n; n.NetfilterQueue().get_fd(); \
                print('wheel: imported netfilterqueue', n.NFQUEUE_VERSION, 'from', n.__file__)";
    cmd::run_ok(
        Command::new(venv.python())
            .args(["-c", code])
            // Not from the source tree's python/ (a cwd on sys.path).
            .current_dir(dir)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
    )?;
    let _ = fs::remove_dir_all(dir);
    Ok(())
}

/// Debian's python3 has `venv` without pip until python3-venv is installed:
/// install it as root on Debian, or say which package is missing.
fn ensure_venv_module() -> Result<()> {
    let can = || {
        Command::new(DEBIAN_PYTHON)
            .args(["-c", "import ensurepip, venv"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if can() {
        return Ok(());
    }
    if cmd::is_root() && cmd::find_program("apt-get").is_some() {
        crate::cmd::apt_install(&["python3-venv"])?;
        if can() {
            return Ok(());
        }
    }
    Err(format!("{DEBIAN_PYTHON} -m venv is not usable: install python3-venv").into())
}

/// The directory with the two static archives from Debian's `-dev` packages of
/// [`DEBIAN_SUITE`], fetched with apt-get unless an earlier run left them there.
/// apt works in a directory of its own (sources, lists, cache), with the mirror
/// and keyring of the host's Debian sources: the host's apt state is untouched.
fn debian_archives(work: &Path) -> Result<PathBuf> {
    let lib = work.join("lib");
    if ARCHIVES.iter().all(|a| lib.join(a).is_file()) {
        eprintln!(
            "wheel: static archives from an earlier run in {} (remove it to fetch them again)",
            lib.display()
        );
        return Ok(lib);
    }
    let no_apt = |why: String| -> cmd::Error {
        format!(
            "{why}; give the directory of libnetfilter_queue.a and libmnl.a with --lib-dir instead"
        )
        .into()
    };
    let os_release = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let codename = os_release_field(&os_release, "VERSION_CODENAME")
        .filter(|_| os_release_field(&os_release, "ID").as_deref() == Some("debian"))
        .ok_or_else(|| {
            no_apt("not Debian: the static archives come from Debian's packages".into())
        })?;
    let mut lists = Vec::new();
    let mut stanzas = Vec::new();
    for file in apt_source_files() {
        let text = fs::read_to_string(&file).unwrap_or_default();
        if file.extension().is_some_and(|e| e == "sources") {
            stanzas.extend(deb822_sources(&text, &codename, DEBIAN_SUITE));
        } else {
            lists.extend(one_line_sources(&text, &codename, DEBIAN_SUITE));
        }
    }
    lists.dedup();
    stanzas.dedup();
    if lists.is_empty() && stanzas.is_empty() {
        return Err(no_apt(format!(
            "no apt source names Debian's {codename}, whose mirror would serve {DEBIAN_SUITE}"
        )));
    }

    let apt_dir = work.join("apt");
    let _ = fs::remove_dir_all(&apt_dir);
    for dir in [
        "sources.list.d",
        "lists/partial",
        "cache/archives/partial",
        "debs",
    ] {
        fs::create_dir_all(apt_dir.join(dir))?;
    }
    fs::write(apt_dir.join("sources.list"), "")?;
    if !lists.is_empty() {
        fs::write(apt_dir.join("sources.list.d/debian.list"), lists.join(""))?;
    }
    if !stanzas.is_empty() {
        fs::write(
            apt_dir.join("sources.list.d/debian.sources"),
            stanzas.join("\n"),
        )?;
    }
    let apt = |args: &[&str]| {
        let mut c = cmd::program("apt-get");
        c.arg("-q");
        for (key, value) in [
            ("Dir::Etc::SourceList", apt_dir.join("sources.list")),
            ("Dir::Etc::SourceParts", apt_dir.join("sources.list.d")),
            ("Dir::State::Lists", apt_dir.join("lists")),
            ("Dir::Cache", apt_dir.join("cache")),
        ] {
            c.arg("-o").arg(format!("{key}={}", value.display()));
        }
        // No translations; downloads as the calling user (a sandbox user could
        // not write into target/).
        c.args([
            "-o",
            "Acquire::Languages=none",
            "-o",
            "APT::Sandbox::User=root",
        ]);
        c.args(args);
        c
    };
    cmd::run_ok(&mut apt(&["update"])).map_err(|e| no_apt(e.to_string()))?;
    let debs = apt_dir.join("debs");
    cmd::run_ok(apt(&["download"]).args(DEBIAN_PACKAGES).current_dir(&debs))
        .map_err(|e| no_apt(e.to_string()))?;

    let unpacked = apt_dir.join("root");
    for deb in fs::read_dir(&debs)?.flatten() {
        eprintln!(
            "wheel: static archives from {}",
            deb.file_name().to_string_lossy()
        );
        cmd::run_ok(
            cmd::program("dpkg-deb")
                .arg("-x")
                .arg(deb.path())
                .arg(&unpacked),
        )?;
    }
    let _ = fs::remove_dir_all(&lib);
    fs::create_dir_all(&lib)?;
    for archive in ARCHIVES {
        let found = find_file(&unpacked, archive)
            .ok_or_else(|| format!("{DEBIAN_SUITE}'s packages hold no {archive}"))?;
        fs::copy(found, lib.join(archive))?;
    }
    Ok(lib)
}

/// apt's source files, in the places and with the names apt reads.
fn apt_source_files() -> Vec<PathBuf> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut more: Vec<PathBuf> = dir
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources"))
            .collect();
        more.sort();
        files.extend(more);
    }
    files
}

/// A field of /etc/os-release, unquoted.
fn os_release_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The one-line sources (`deb [options] URI SUITE COMPONENT...`) for
/// `suite`, from the lines of the host's `codename` itself (not -updates or
/// -security): same options (keyring), same mirror, component main.
fn one_line_sources(text: &str, codename: &str, suite: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.trim().strip_prefix("deb ") else {
            continue;
        };
        let rest = rest.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(inner) => match inner.split_once(']') {
                Some((options, rest)) => (format!("[{options}] "), rest),
                None => continue,
            },
            None => (String::new(), rest),
        };
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(line_suite)) = (words.next(), words.next()) else {
            continue;
        };
        if line_suite == codename {
            found.push(format!("deb {options}{uri} {suite} main\n"));
        }
    }
    found
}

/// The deb822 stanzas for `suite`, from the enabled stanzas of the host's
/// `codename` itself: same URIs and Signed-By, component main.
fn deb822_sources(text: &str, codename: &str, suite: &str) -> Vec<String> {
    let mut found = Vec::new();
    for stanza in text.split("\n\n") {
        // Fields, with continuation lines (an inline Signed-By key) kept.
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines() {
            if line.starts_with('#') {
                continue;
            }
            if line.starts_with([' ', '\t']) {
                if let Some((_, value)) = fields.last_mut() {
                    value.push('\n');
                    value.push_str(line);
                }
            } else if let Some((key, value)) = line.split_once(':') {
                fields.push((key.trim().to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        let field = |name: &str| {
            fields
                .iter()
                .find(|(key, _)| key == name)
                .map(|(_, v)| v.as_str())
        };
        let words = |name: &str| field(name).unwrap_or("").split_whitespace();
        let deb = words("types").any(|t| t == "deb");
        let ours = words("suites").any(|s| s == codename);
        let enabled = field("enabled") != Some("no");
        let Some(uris) = field("uris").filter(|_| deb && ours && enabled) else {
            continue;
        };
        let mut out = format!("Types: deb\nURIs: {uris}\nSuites: {suite}\nComponents: main\n");
        if let Some(keys) = field("signed-by") {
            out.push_str(&format!("Signed-By: {keys}\n"));
        }
        found.push(out);
    }
    found
}

/// The first file named `name` below `dir`.
fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() && !path.is_symlink() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if path.file_name().is_some_and(|n| n == name) && path.is_file() {
            return Some(path);
        }
    }
    None
}

/// The nfqueue-python wheel in `dir` written since `since`.
fn newest_wheel(dir: &Path, since: SystemTime) -> Result<PathBuf> {
    fs::read_dir(dir)?
        .flatten()
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with("nfqueue_python-") && name.ends_with(".whl")
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(modified, _)| *modified >= since)
        .max()
        .map(|(_, path)| path)
        .ok_or_else(|| format!("maturin wrote no wheel into {}", dir.display()).into())
}

/// Checks `auditwheel show`'s report: the wheel is consistent with the tag
/// asked for, and neither C library is left as a shared library to find.
fn audit(report: &str, compatibility: &str) -> Result<()> {
    // auditwheel wraps its lines: read the report as one line.
    let report = report.split_whitespace().collect::<Vec<_>>().join(" ");
    let consistent = report
        .split("consistent with the following platform tag: \"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .ok_or("auditwheel found the wheel consistent with no platform tag")?;
    if !consistent.starts_with(&format!("{compatibility}_")) {
        return Err(format!("auditwheel: the wheel is {consistent}, not {compatibility}").into());
    }
    for library in ["libnetfilter_queue", "libmnl"] {
        if report.contains(library) {
            return Err(format!("auditwheel: the wheel still needs {library} at run time").into());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_options() {
        let o = parse(&[]).unwrap();
        assert_eq!(
            o,
            Options {
                out: None,
                lib_dir: None,
                compatibility: "manylinux_2_28".into()
            }
        );
        let o = parse(&args(&[
            "--out",
            "dist",
            "--lib-dir",
            "/l",
            "--compatibility",
            "manylinux2014",
        ]))
        .unwrap();
        assert_eq!(o.out, Some("dist".into()));
        assert_eq!(o.lib_dir, Some("/l".into()));
        assert_eq!(o.compatibility, "manylinux2014");
        assert!(parse(&args(&["--out"]))
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&args(&["--zig"])).unwrap_err().contains("`--zig`"));
    }

    #[test]
    fn derives_one_line_sources() {
        let text = "# comment\n\
            deb http://mirror.example/debian bookworm main contrib\n\
            deb [signed-by=/k.gpg arch=amd64] http://mirror.example/debian bookworm main\n\
            deb http://mirror.example/debian bookworm-updates main\n\
            deb-src http://mirror.example/debian bookworm main\n\
            deb http://other.example/apt stable main\n";
        assert_eq!(
            one_line_sources(text, "bookworm", "trixie"),
            [
                "deb http://mirror.example/debian trixie main\n",
                "deb [signed-by=/k.gpg arch=amd64] http://mirror.example/debian trixie main\n",
            ]
        );
    }

    #[test]
    fn derives_deb822_sources() {
        let text = "Types: deb\n\
            # a comment\n\
            URIs: http://mirror.example/debian\n\
            Suites: bookworm bookworm-updates\n\
            Components: main\n\
            Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\
            \n\
            Types: deb\n\
            URIs: http://mirror.example/debian-security\n\
            Suites: bookworm-security\n\
            Components: main\n\
            \n\
            Types: deb deb-src\n\
            URIs: http://disabled.example/debian\n\
            Suites: bookworm\n\
            Enabled: no\n\
            \n\
            Types: deb\n\
            URIs: http://inline.example/debian\n\
            Suites: bookworm\n\
            Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n -----END PGP PUBLIC KEY BLOCK-----\n";
        assert_eq!(
            deb822_sources(text, "bookworm", "trixie"),
            [
                "Types: deb\nURIs: http://mirror.example/debian\nSuites: trixie\nComponents: main\n\
                 Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
                "Types: deb\nURIs: http://inline.example/debian\nSuites: trixie\nComponents: main\n\
                 Signed-By: \n -----BEGIN PGP PUBLIC KEY BLOCK-----\n .\n -----END PGP PUBLIC KEY BLOCK-----\n",
            ]
        );
    }

    #[test]
    fn reads_os_release() {
        let text = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(os_release_field(text, "ID").as_deref(), Some("debian"));
        assert_eq!(
            os_release_field(text, "VERSION_CODENAME").as_deref(),
            Some("bookworm")
        );
        assert_eq!(os_release_field(text, "VERSION_ID"), None);
    }

    #[test]
    fn audits_auditwheel_reports() {
        let good = "\nnfqueue_python-0.1.0-cp38-abi3-manylinux_2_28_x86_64.whl is consistent\n\
            with the following platform tag: \"manylinux_2_28_x86_64\".\n\n\
            The wheel references external versioned symbols in these\n\
            system-provided shared libraries: libc.so.6 with versions\n\
            {'GLIBC_2.28', 'GLIBC_2.2.5'}\n";
        audit(good, "manylinux_2_28").unwrap();
        let newer = good.replace(
            "platform tag: \"manylinux_2_28",
            "platform tag: \"manylinux_2_34",
        );
        assert!(audit(&newer, "manylinux_2_28")
            .unwrap_err()
            .to_string()
            .contains("manylinux_2_34"));
        let linked = format!(
            "{good}\nThe following external shared libraries are required by the wheel:\n\
             {{\"libmnl.so.0\": \"/usr/lib/x86_64-linux-gnu/libmnl.so.0\"}}\n"
        );
        assert!(audit(&linked, "manylinux_2_28")
            .unwrap_err()
            .to_string()
            .contains("libmnl"));
        assert!(audit("nothing", "manylinux_2_28").is_err());
    }
}
