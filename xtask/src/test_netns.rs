//! `cargo xtask test-netns`: the whole test suite against the real kernel.
//!
//! The kernel tests make their own network namespace per test, so they need
//! CAP_SYS_ADMIN and CAP_NET_ADMIN in their user namespace. As root they run as they
//! are; then, to prove the unprivileged path, the test binaries run again as user
//! `nobody` inside `unshare --user --map-root-user --net`. An ordinary user gets that
//! second kind of run only.

use crate::cmd::{self, cargo, exit_code, is_root, run_counted, workspace_root, Counts, Result};
use crate::python;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unprivileged user of the second pass.
const NOBODY: &str = "65534";

/// What the command line asked for.
struct Args {
    no_userns: bool,
    /// A user-namespace pass that cannot run fails the run, rather than being
    /// skipped with the reason.
    require_userns: bool,
    /// Arguments for `cargo test` (before a second `--`).
    cargo: Vec<String>,
    /// Arguments for the test binaries (after a second `--`).
    libtest: Vec<String>,
}

impl Args {
    /// `--workspace`, unless the user picked packages with `-p`.
    fn scope(&self) -> Option<&'static str> {
        let picked = self
            .cargo
            .iter()
            .any(|a| a.starts_with("-p") || a.starts_with("--package"));
        (!picked).then_some("--workspace")
    }
}

fn parse(args: &[String]) -> Result<Args> {
    let mut parsed = Args {
        no_userns: false,
        require_userns: false,
        cargo: Vec::new(),
        libtest: Vec::new(),
    };
    let mut it = args.iter();
    for arg in it.by_ref() {
        match arg.as_str() {
            "--no-userns" => parsed.no_userns = true,
            "--require-userns" => parsed.require_userns = true,
            "--" => break,
            other => return Err(format!("test-netns: unknown option `{other}`").into()),
        }
    }
    parsed.cargo = it.by_ref().take_while(|a| *a != "--").cloned().collect();
    parsed.libtest = it.cloned().collect();
    Ok(parsed)
}

/// One pass of the suite, for the summary.
struct Pass {
    name: &'static str,
    counts: Counts,
    code: u8,
    /// Why the pass did not run, when it was skipped.
    skipped: Option<String>,
}

/// The name of the second pass, run as root.
const NOBODY_PASS: &str = "nobody, user+net namespace";

pub fn run(args: &[String]) -> Result<u8> {
    let args = parse(args)?;
    let root = workspace_root();
    let mut passes = Vec::new();

    if is_root() {
        let mut test = cargo();
        test.current_dir(&root).arg("test").args(args.scope());
        append_args(&mut test, &args);
        let (status, counts) = run_counted(&mut test)?;
        passes.push(Pass {
            name: "root",
            counts,
            code: exit_code(status),
            skipped: None,
        });
        if args.scope().is_some() {
            let (counts, code) = python::test(&root, false);
            passes.push(Pass {
                name: "python, root",
                counts,
                code,
                skipped: None,
            });
        }
        if !args.no_userns {
            let pass = userns_pass(&root, &args);
            let ran = pass.skipped.is_none();
            passes.push(pass);
            if ran && args.scope().is_some() {
                let (counts, code) = python::test(&root, true);
                passes.push(Pass {
                    name: "python, nobody, user+net namespace",
                    counts,
                    code,
                    skipped: None,
                });
            }
        }
    } else {
        // Build (and fetch) outside the namespace, which has no network.
        let mut build = cargo();
        build
            .current_dir(&root)
            .arg("test")
            .args(args.scope())
            .arg("--no-run")
            .args(&args.cargo);
        cmd::run_ok(&mut build)?;
        check_userns(false)?;
        // Run cargo itself in the namespace so doctests get it too.
        let mut test = cmd::program("unshare");
        test.current_dir(&root)
            .args(["--user", "--map-root-user", "--net"])
            .arg(cargo().get_program())
            .arg("test")
            .args(args.scope())
            .env("CARGO_NET_OFFLINE", "true");
        append_args(&mut test, &args);
        let (status, counts) = run_counted(&mut test)?;
        passes.push(Pass {
            name: "user+net namespace",
            counts,
            code: exit_code(status),
            skipped: None,
        });
        if args.scope().is_some() {
            let (counts, code) = python::test(&root, true);
            passes.push(Pass {
                name: "python, user+net namespace",
                counts,
                code,
                skipped: None,
            });
        }
    }

    for pass in &passes {
        if let Some(why) = &pass.skipped {
            println!("test-netns ({}): SKIPPED: {why}", pass.name);
            continue;
        }
        let status = match pass.code {
            0 => String::new(),
            code => format!(" (exit status {code})"),
        };
        let skipped = match pass.counts.skipped.len() {
            0 => String::new(),
            n => format!(", {n} skipped"),
        };
        println!(
            "test-netns ({}): {} passed, {} failed{skipped}{status}",
            pass.name, pass.counts.passed, pass.counts.failed
        );
        for (reason, tests) in pass.counts.skips_by_reason() {
            println!("  {} SKIPPED: {reason}: {}", tests.len(), tests.join(", "));
        }
    }
    // One closing line over every pass, in the plain form CI logs read.
    let passed: u64 = passes.iter().map(|p| p.counts.passed).sum();
    let failed: u64 = passes.iter().map(|p| p.counts.failed).sum();
    let skipped: usize = passes.iter().map(|p| p.counts.skipped.len()).sum();
    println!("test-netns: {passed} passed, {failed} failed, {skipped} skipped");
    Ok(passes.iter().map(|p| p.code).find(|&c| c != 0).unwrap_or(0))
}

/// The second pass as root: the test binaries as user nobody inside a user+net
/// namespace. Where unprivileged user namespaces are refused (AppArmor on
/// Ubuntu 23.10 and later, a chroot, a sysctl), it is skipped with the reason
/// and what to change, unless `--require-userns` makes that a failure.
fn userns_pass(root: &Path, args: &Args) -> Pass {
    if let Err(why) = check_userns(true) {
        return cannot_run(why.to_string(), args.require_userns);
    }
    // A failure from here on (a build error, modules) still shows the summary.
    load_modules()
        .and_then(|()| nobody_pass(root, args))
        .unwrap_or_else(|e| failed_pass(&e.to_string()))
}

/// The user-namespace pass that cannot run for `why`: skipped, or with
/// `required`, failed.
fn cannot_run(why: String, required: bool) -> Pass {
    if required {
        return failed_pass(&format!("{why} (--require-userns: not skipped)"));
    }
    eprintln!("xtask: the user-namespace pass cannot run here: {why}");
    eprintln!("xtask: skipping it; the root pass stands (--require-userns makes this fatal)");
    Pass {
        name: NOBODY_PASS,
        counts: Counts::default(),
        code: 0,
        skipped: Some(why),
    }
}

/// The user-namespace pass, failed for `why`.
fn failed_pass(why: &str) -> Pass {
    eprintln!("xtask: error: {why}");
    Pass {
        name: NOBODY_PASS,
        counts: Counts::default(),
        code: 1,
        skipped: None,
    }
}

/// Adds the user's arguments; `--no-fail-fast` so that one failing test binary does
/// not hide the results of the others from the summary.
fn append_args(cmd: &mut Command, args: &Args) {
    cmd.arg("--no-fail-fast").args(&args.cargo);
    if !args.libtest.is_empty() {
        cmd.arg("--").args(&args.libtest);
    }
}

/// Checks that an unprivileged user may create a user namespace, and says why not.
fn check_userns(as_nobody: bool) -> Result<()> {
    let read = |p: &str| fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    let clone = read("/proc/sys/kernel/unprivileged_userns_clone");
    let max = read("/proc/sys/user/max_user_namespaces");
    let apparmor = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    eprintln!(
        "userns: kernel.unprivileged_userns_clone={} user.max_user_namespaces={}{}",
        clone.as_deref().unwrap_or("(absent)"),
        max.as_deref().unwrap_or("(absent)"),
        apparmor
            .as_deref()
            .map(|a| format!(" kernel.apparmor_restrict_unprivileged_userns={a}"))
            .unwrap_or_default(),
    );
    if clone.as_deref() == Some("0") {
        return Err("unprivileged user namespaces are disabled \
                    (sysctl kernel.unprivileged_userns_clone=0; enable with =1)"
            .into());
    }
    if max.as_deref() == Some("0") {
        return Err(
            "user namespaces are disabled (sysctl user.max_user_namespaces=0; \
                    allow them with sysctl -w user.max_user_namespaces=15000)"
                .into(),
        );
    }
    let mut probe = unprivileged(as_nobody);
    probe.args(["--user", "--map-root-user", "--net", "true"]);
    if !cmd::run(&mut probe)?.success() {
        let hint = if apparmor.as_deref() == Some("1") {
            " (AppArmor restricts unprivileged user namespaces: \
             sysctl kernel.apparmor_restrict_unprivileged_userns=0)"
        } else if in_chroot() {
            " (the kernel refuses user namespaces inside a chroot: run outside it)"
        } else {
            ""
        };
        return Err(format!("cannot create a user+net namespace unprivileged{hint}").into());
    }
    Ok(())
}

/// Whether this process runs inside a chroot: its root is not that of PID 1.
fn in_chroot() -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &str| fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    matches!((id("/"), id("/proc/1/root/")), (Some(ours), Some(init)) if ours != init)
}

/// `unshare`, run as nobody when asked (setpriv drops uid, gid and groups; its
/// `--reuid`/`--regid` set real and effective ids, and it needs one of the
/// `--*-groups` options when changing the gid).
fn unprivileged(as_nobody: bool) -> Command {
    if !as_nobody {
        return cmd::program("unshare");
    }
    let mut c = cmd::program("setpriv");
    c.args([
        &format!("--reuid={NOBODY}"),
        &format!("--regid={NOBODY}"),
        "--clear-groups",
    ])
    .arg(cmd::find_program("unshare").unwrap_or_else(|| "unshare".into()));
    c
}

/// A user namespace cannot load kernel modules, so load them as root first: the
/// first use of each target, match and table makes the kernel load its module.
fn load_modules() -> Result<()> {
    if let Some(modprobe) = cmd::find_program("modprobe") {
        let _ = cmd::run(Command::new(modprobe).args([
            "-a",
            "nfnetlink_queue",
            "xt_NFQUEUE",
            "xt_mark",
            "veth",
        ]));
    }
    let script = "\
        iptables -A OUTPUT -j NFQUEUE --queue-num 0; \
        ip6tables -A OUTPUT -j NFQUEUE --queue-num 0; \
        iptables -t mangle -A OUTPUT -m mark --mark 1 -j MARK --set-mark 2; \
        iptables -A OUTPUT -m conntrack --ctdir REPLY -m connbytes --connbytes 0:1 \
            --connbytes-dir reply --connbytes-mode packets -j ACCEPT; \
        ip6tables -t mangle -A OUTPUT -m mark --mark 1 -j MARK --set-mark 2; \
        ip link add nfq-warm0 type veth peer name nfq-warm1; \
        true";
    // A PATH with the sbin directories, for a root shell started without them.
    let path = format!(
        "/usr/local/sbin:/usr/sbin:/sbin:{}",
        std::env::var("PATH").unwrap_or_default()
    );
    cmd::run_ok(
        cmd::program("unshare")
            .args(["--net", "sh", "-c", script])
            .env("PATH", path),
    )
}

/// Builds the test binaries, copies them where `nobody` can read them, and runs each
/// as `nobody` in a fresh user+net namespace.
fn nobody_pass(root: &Path, args: &Args) -> Result<Pass> {
    let mut build = cargo();
    build
        .current_dir(root)
        .arg("test")
        .args(args.scope())
        .arg("--no-run")
        .args(&args.cargo);
    let tests: Vec<_> = cmd::cargo_artifacts(&mut build)?
        .into_iter()
        .filter(|a| a.test)
        .collect();

    let tmp = TempDir::new("xtask-test-netns")?;
    let mut crate_dirs: HashMap<PathBuf, PathBuf> = HashMap::new();
    let mut counts = Counts::default();
    let mut code = 0;
    for test in &tests {
        let file_name = test
            .executable
            .file_name()
            .ok_or("test binary without a name")?;
        let binary = tmp.path.join(file_name);
        fs::copy(&test.executable, &binary)?;
        fs::set_permissions(&binary, fs::Permissions::from_mode(0o755))?;
        // libtest runs tests with the crate directory as cwd; nobody must reach it.
        let cwd = match crate_dirs.get(&test.crate_dir) {
            Some(dir) => dir.clone(),
            None => {
                let dir = if readable_by_others(&test.crate_dir) {
                    test.crate_dir.clone()
                } else {
                    let name = test.crate_dir.file_name().unwrap_or_default();
                    let copy = tmp
                        .path
                        .join(format!("src-{}", crate_dirs.len()))
                        .join(name);
                    eprintln!(
                        "note: {} is not reachable by nobody; running in a copy at {} \
                         (absolute paths compiled into the tests still point to the original)",
                        test.crate_dir.display(),
                        copy.display()
                    );
                    copy_tree(&test.crate_dir, &copy)?;
                    copy
                };
                crate_dirs.insert(test.crate_dir.clone(), dir.clone());
                dir
            }
        };
        let mut run = unprivileged(true);
        run.args(["--user", "--map-root-user", "--net"])
            .arg(&binary)
            .arg("--test-threads=2")
            .args(&args.libtest)
            .current_dir(&cwd)
            .env("CARGO_MANIFEST_DIR", &cwd);
        let (status, c) = run_counted(&mut run)?;
        counts.add(c);
        if code == 0 {
            code = exit_code(status);
        }
    }
    Ok(Pass {
        name: NOBODY_PASS,
        counts,
        code,
        skipped: None,
    })
}

/// Whether others may enter `dir` and every directory above it, and list `dir`.
fn readable_by_others(dir: &Path) -> bool {
    let mode = |p: &Path| p.metadata().map(|m| m.permissions().mode()).unwrap_or(0);
    mode(dir) & 0o005 == 0o005 && dir.ancestors().skip(1).all(|p| mode(p) & 0o001 != 0)
}

/// Copies a crate's sources (not `target/` or hidden entries), readable by all.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to)?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') || name == "target" {
            continue;
        }
        let kind = entry.file_type()?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &to.join(&name))?;
        } else if kind.is_file() {
            let dest = to.join(&name);
            fs::copy(entry.path(), &dest)?;
            let exec = entry.metadata()?.permissions().mode() & 0o100 != 0;
            fs::set_permissions(
                &dest,
                fs::Permissions::from_mode(if exec { 0o755 } else { 0o644 }),
            )?;
        }
    }
    Ok(())
}

/// A directory under the system temp dir, world-readable, removed when dropped
/// (on success, error or panic alike).
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new(prefix: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path)?;
        // Set after creation: the umask may have masked the mode.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cargo_and_libtest_args() {
        let args: Vec<String> = [
            "--no-userns",
            "--require-userns",
            "--",
            "-p",
            "x",
            "--",
            "--nocapture",
        ]
        .map(String::from)
        .into();
        let a = parse(&args).unwrap();
        assert!(a.no_userns && a.require_userns);
        assert_eq!(a.cargo, ["-p", "x"]);
        assert_eq!(a.libtest, ["--nocapture"]);
        assert!(parse(&["--bogus".to_string()]).is_err());
    }

    #[test]
    fn a_user_namespace_pass_that_cannot_run_is_skipped_unless_required() {
        let skipped = cannot_run("refused".into(), false);
        assert_eq!(
            (skipped.code, skipped.skipped.as_deref()),
            (0, Some("refused"))
        );
        let failed = cannot_run("refused".into(), true);
        assert_eq!((failed.code, failed.skipped), (1, None));
    }
}
