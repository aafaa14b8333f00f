//! What the doctor reads of the calling process and the system: identity,
//! capabilities, sysctls, installed programs, the kernel's config.

use super::sandbox::{self, Isolation};
use super::{Check, Feature, Status};
use crate::error::Error;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` (include/uapi/linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// The user that probes run as when the caller is root and the question is
/// what an unprivileged user may do.
pub(super) const NOBODY: u32 = 65534;

/// The facts read once at the start.
#[derive(Debug, Clone)]
pub(super) struct Host {
    pub(super) release: String,
    pub(super) uid: u32,
    /// Effective capabilities of the calling thread.
    caps: u64,
    pub(super) initial_userns: bool,
    pub(super) iptables: Option<PathBuf>,
    pub(super) nft: Option<PathBuf>,
    /// The kernel's config (`/boot/config-RELEASE` or `/proc/config.gz`).
    config: Option<String>,
}

impl Host {
    pub(super) fn read() -> Host {
        // SAFETY: uname writes into the struct it is given, which lives
        // across the call; all zeroes is a valid utsname.
        let release = unsafe {
            let mut uts: libc::utsname = std::mem::zeroed();
            if libc::uname(&mut uts) == 0 {
                std::ffi::CStr::from_ptr(uts.release.as_ptr())
                    .to_string_lossy()
                    .into_owned()
            } else {
                "unknown".into()
            }
        };
        // SAFETY: geteuid takes nothing and cannot fail.
        let uid = unsafe { libc::geteuid() };
        Host {
            config: kernel_config(&release),
            release,
            uid,
            caps: effective_caps(),
            initial_userns: initial_user_namespace(),
            iptables: find_program("iptables"),
            nft: find_program("nft"),
        }
    }

    pub(super) fn has_cap(&self, cap: u32) -> bool {
        self.caps & (1 << cap) != 0
    }

    /// How a throwaway network namespace can be made: directly with
    /// `CAP_SYS_ADMIN`, else inside a new user namespace.
    pub(super) fn isolation(&self) -> Isolation {
        if self.has_cap(CAP_SYS_ADMIN) {
            Isolation::Net
        } else {
            Isolation::UserNet
        }
    }

    pub(super) fn context(&self) -> String {
        format!(
            "Linux {}, uid {}{}, {} user namespace",
            self.release,
            self.uid,
            if self.uid == 0 { " (root)" } else { "" },
            if self.initial_userns {
                "initial"
            } else {
                "a non-initial"
            },
        )
    }

    /// `CAP_NET_ADMIN` in the caller's user namespace: binding a queue needs
    /// it over the socket's network namespace.
    pub(super) fn net_admin(&self) -> Check {
        if self.has_cap(CAP_NET_ADMIN) {
            return Check::ok(
                Feature::NetAdmin,
                "the process has it (effective), so it may bind queues in the network \
                 namespaces its user namespace owns",
            );
        }
        let needs = Error::PermissionDenied {
            op: "binding a queue",
        };
        Check::with(
            Feature::NetAdmin,
            Status::Missing,
            "the process lacks it: binding a queue here fails with EPERM",
            needs.to_string(),
        )
    }

    /// Whether an unprivileged user may make a user namespace: the sysctls
    /// that refuse it, and a try, as user nobody when the caller is root.
    pub(super) fn user_namespaces(&self, timeout: Duration) -> Check {
        let read = |p: &str| fs::read_to_string(p).ok().map(|s| s.trim().to_string());
        let clone = read("/proc/sys/kernel/unprivileged_userns_clone");
        let max = read("/proc/sys/user/max_user_namespaces");
        let apparmor = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
        let settings = format!(
            "kernel.unprivileged_userns_clone={}, user.max_user_namespaces={}, \
             kernel.apparmor_restrict_unprivileged_userns={}",
            clone.as_deref().unwrap_or("(absent)"),
            max.as_deref().unwrap_or("(absent)"),
            apparmor.as_deref().unwrap_or("(absent)"),
        );
        let who = if self.uid == 0 {
            format!("as uid {NOBODY}")
        } else {
            format!("as uid {}", self.uid)
        };
        let tried = sandbox::run(Isolation::UserNetAsNobody, timeout, || Ok(String::new()));
        let why_refused = || -> (String, String) {
            if clone.as_deref() == Some("0") {
                (
                    "refused by kernel.unprivileged_userns_clone=0".into(),
                    "sysctl -w kernel.unprivileged_userns_clone=1".into(),
                )
            } else if max.as_deref() == Some("0") {
                (
                    "refused by user.max_user_namespaces=0".into(),
                    "sysctl -w user.max_user_namespaces=15000".into(),
                )
            } else if apparmor.as_deref() == Some("1") {
                (
                    "AppArmor restricts unprivileged user namespaces \
                     (kernel.apparmor_restrict_unprivileged_userns=1)"
                        .into(),
                    "sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or give the \
                     program an AppArmor profile that allows userns"
                        .into(),
                )
            } else {
                (
                    "refused".into(),
                    "run as root, or allow user namespaces (a chroot or a seccomp filter \
                     may refuse them)"
                        .into(),
                )
            }
        };
        match tried {
            Ok(_) => Check::ok(
                Feature::UserNamespaces,
                format!("a user and network namespace was created {who} ({settings})"),
            ),
            Err(err) => {
                let (why, fix) = why_refused();
                Check::with(
                    Feature::UserNamespaces,
                    Status::Missing,
                    format!("creating a user namespace {who} failed: {err}; {why} ({settings})"),
                    fix,
                )
            }
        }
    }

    /// `iptables -V`: `(nf_tables)` or `(legacy)`.
    pub(super) fn iptables_backend(&self) -> Check {
        let Some(iptables) = &self.iptables else {
            return Check::with(
                Feature::IptablesBackend,
                Status::Warning,
                "iptables is not installed",
                "apt-get install iptables (its -j NFQUEUE target works on every kernel with \
                 xt_NFQUEUE; nft's queue statement needs CONFIG_NFT_QUEUE)",
            );
        };
        match run(iptables, &["-V"], None) {
            Ok(out) if out.contains("nf_tables") => Check::ok(
                Feature::IptablesBackend,
                format!("iptables-nft: {out} (its rules are nftables rules that nft list ruleset shows)"),
            ),
            Ok(out) if out.contains("legacy") => Check::ok(
                Feature::IptablesBackend,
                format!("iptables-legacy: {out} (x_tables rules, which nft does not show)"),
            ),
            Ok(out) => Check::ok(Feature::IptablesBackend, out),
            Err(err) => Check::with(
                Feature::IptablesBackend,
                Status::Warning,
                format!("iptables -V failed: {err}"),
                "reinstall iptables",
            ),
        }
    }

    /// `net.core.rmem_max` against the buffer asked for: without
    /// `CAP_NET_ADMIN` in the initial user namespace (`SO_RCVBUFFORCE`) a
    /// socket's receive buffer is capped there.
    pub(super) fn receive_buffer(&self, wanted: usize) -> Check {
        let path = "/proc/sys/net/core/rmem_max";
        let Some(max) = fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
        else {
            return Check::with(
                Feature::ReceiveBuffer,
                Status::Unchecked,
                format!("{path} could not be read"),
                "check net.core.rmem_max with sysctl",
            );
        };
        let can_force = self.initial_userns && self.has_cap(CAP_NET_ADMIN);
        let sizes = format!("net.core.rmem_max is {max} bytes, {wanted} asked for");
        if max >= wanted {
            Check::ok(Feature::ReceiveBuffer, sizes)
        } else if can_force {
            Check::ok(
                Feature::ReceiveBuffer,
                format!("{sizes}: this process may exceed it (SO_RCVBUFFORCE, CAP_NET_ADMIN)"),
            )
        } else {
            Check::with(
                Feature::ReceiveBuffer,
                Status::Warning,
                format!(
                    "{sizes}: without CAP_NET_ADMIN in the initial user namespace the buffer \
                     is capped at {max}, and bursts overflow sooner (ENOBUFS)"
                ),
                format!("sysctl -w net.core.rmem_max={wanted}"),
            )
        }
    }

    /// Adds what the kernel's config says of a missing or unchecked kernel
    /// piece to its detail.
    pub(super) fn add_config_evidence(&self, check: &mut Check) {
        if !matches!(check.status, Status::Missing | Status::Unchecked) {
            return;
        }
        let (Some(option), Some(config)) = (check.feature.config_option(), &self.config) else {
            return;
        };
        if let Some(line) = config_line(config, option) {
            check.detail.push_str(&format!(" (kernel config: {line})"));
        }
    }
}

/// What the kernel's config says of `option`: `CONFIG_X=y`, `=m`, or
/// `CONFIG_X is not set` (also when the config does not name it).
pub(super) fn config_line(config: &str, option: &str) -> Option<String> {
    for line in config.lines() {
        let line = line.trim();
        if line
            .strip_prefix(option)
            .is_some_and(|rest| rest.starts_with('='))
            || line == format!("# {option} is not set")
        {
            return Some(line.trim_start_matches("# ").to_string());
        }
    }
    (!config.is_empty()).then(|| format!("{option} is not set"))
}

/// The kernel's config, where the system keeps one: `/boot/config-RELEASE`,
/// or `/proc/config.gz` unpacked by `gzip` (present on every Debian system).
fn kernel_config(release: &str) -> Option<String> {
    if let Ok(text) = fs::read_to_string(format!("/boot/config-{release}")) {
        return Some(text);
    }
    let gz = Path::new("/proc/config.gz");
    if !gz.exists() {
        return None;
    }
    let gzip = find_program("gzip")?;
    let out = Command::new(gzip).args(["-dc"]).arg(gz).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The effective capabilities of the calling thread (`CapEff` of
/// /proc/thread-self/status: a thread can drop its own).
fn effective_caps() -> u64 {
    let status = fs::read_to_string("/proc/thread-self/status")
        .or_else(|_| fs::read_to_string("/proc/self/status"))
        .unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0)
}

/// Whether this process runs in the initial user namespace: there, and only
/// there, `/proc/self/uid_map` maps every uid to itself.
pub(super) fn initial_user_namespace() -> bool {
    let map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| !f.is_empty())
        .collect();
    matches!(lines.as_slice(), [only] if only.as_slice() == ["0", "0", "4294967295"])
}

/// `name` in `PATH`, or in the sbin directories an ordinary user's `PATH`
/// often lacks.
pub(super) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/local/sbin", "/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs `program` with `args` (and `stdin`), and returns its output, or its
/// error output when it fails.
pub(super) fn run(program: &Path, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write;
    use std::process::Stdio;
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let name = program.file_name().unwrap_or_default().to_string_lossy();
    let mut child = command.spawn().map_err(|e| format!("{name}: {e}"))?;
    if let (Some(text), Some(mut input)) = (stdin, child.stdin.take()) {
        let _ = input.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{name}: {e}"))?;
    let text = |bytes: &[u8]| {
        String::from_utf8_lossy(bytes)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" ")
    };
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        // The first line says what failed; nft goes on to echo the command
        // and underline the part it refused.
        let err = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or_default()
            .to_string();
        Err(if err.is_empty() {
            format!("{name} exited with {}", out.status)
        } else {
            err
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lines_are_found_or_reported_unset() {
        let config =
            "CONFIG_A=y\n# CONFIG_NFT_QUEUE is not set\nCONFIG_NFT_QUEUE_X=m\nCONFIG_B=m\n";
        assert_eq!(config_line(config, "CONFIG_A").unwrap(), "CONFIG_A=y");
        assert_eq!(config_line(config, "CONFIG_B").unwrap(), "CONFIG_B=m");
        assert_eq!(
            config_line(config, "CONFIG_NFT_QUEUE").unwrap(),
            "CONFIG_NFT_QUEUE is not set"
        );
        assert_eq!(
            config_line(config, "CONFIG_C").unwrap(),
            "CONFIG_C is not set",
            "an option the config does not name"
        );
        assert_eq!(config_line("", "CONFIG_A"), None);
    }

    #[test]
    fn missing_pieces_get_the_configs_word() {
        let host = Host {
            release: "x".into(),
            uid: 0,
            caps: 0,
            initial_userns: true,
            iptables: None,
            nft: None,
            config: Some("# CONFIG_NETFILTER_NETLINK_GLUE_CT is not set\n".into()),
        };
        let mut check = Check::with(
            Feature::ConntrackPackets,
            Status::Missing,
            "EOPNOTSUPP",
            "x",
        );
        host.add_config_evidence(&mut check);
        assert_eq!(
            check.detail,
            "EOPNOTSUPP (kernel config: CONFIG_NETFILTER_NETLINK_GLUE_CT is not set)"
        );
        let mut ok = Check::ok(Feature::NftQueue, "works");
        host.add_config_evidence(&mut ok);
        assert_eq!(ok.detail, "works");
        // Without privilege, the fix is the bind error's own words.
        let fix = host.net_admin().fix.unwrap();
        assert!(fix.contains("needs CAP_NET_ADMIN"), "{fix}");
        assert!(
            fix.contains("unshare --user --map-root-user --net"),
            "{fix}"
        );
        let small = host.receive_buffer(usize::MAX);
        assert_eq!(small.status, Status::Warning);
        assert!(small
            .fix
            .unwrap()
            .starts_with("sysctl -w net.core.rmem_max="));
    }
}
