//! Running `ip`, `iptables` and friends in the current thread's namespace.
//!
//! A child process starts in the network namespace of the thread that spawns it,
//! so after [`Netns::enter`](crate::Netns::enter) these commands act inside it.
//!
//! No `-w` is passed to iptables: with the nf_tables backend there is no xtables
//! lock, and concurrent changes in separate namespaces never conflict.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the system administration programs live when `PATH` lacks them, as an
/// ordinary user's `PATH` on Debian does.
const SBIN_DIRS: &[&str] = &["/usr/local/sbin", "/usr/sbin", "/sbin"];

/// `program` as found on `PATH`, else in the sbin directories, else as given
/// (so that starting it reports the error).
fn locate(program: &str) -> PathBuf {
    if program.contains('/') {
        return PathBuf::from(program);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(SBIN_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
        .unwrap_or_else(|| PathBuf::from(program))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `program` with `args` and returns its standard output.
///
/// # Errors
///
/// A message with the full command line, the exit status and the standard error
/// when the program cannot be started or exits with a failure.
pub fn try_run<I, S>(program: &str, args: I) -> Result<String, String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<_> = args.into_iter().map(|a| a.as_ref().to_owned()).collect();
    let line = std::iter::once(program.to_owned())
        .chain(args.iter().map(|a| shell_word(&a.to_string_lossy())))
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(locate(program))
        .args(&args)
        .output()
        .map_err(|e| format!("`{line}` could not be started: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{line}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        ))
    }
}

/// Runs `program` with `args` and returns its standard output.
///
/// # Panics
///
/// Panics with the full command line and its standard error when the program
/// cannot be started or exits with a failure.
#[track_caller]
pub fn run<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    try_run(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `ip` with `args`; see [`run`].
///
/// # Panics
///
/// Panics when `ip` fails, with its command line and standard error.
#[track_caller]
pub fn ip<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run("ip", args)
}

/// Runs `iptables` with `args`; see [`run`].
///
/// # Panics
///
/// Panics when `iptables` fails, with its command line and standard error.
#[track_caller]
pub fn iptables<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run("iptables", args)
}

/// Runs `ip6tables` with `args`; see [`run`].
///
/// # Panics
///
/// Panics when `ip6tables` fails, with its command line and standard error.
#[track_caller]
pub fn ip6tables<I, S>(args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run("ip6tables", args)
}

/// `word` quoted for a shell when it needs it, so a failing command line can be
/// pasted back.
fn shell_word(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        assert_eq!(shell_word("-A"), "-A");
        assert_eq!(shell_word("10.0.0.1/24"), "10.0.0.1/24");
        assert_eq!(shell_word("a b"), "'a b'");
        assert_eq!(shell_word("it's"), r"'it'\''s'");
        assert_eq!(shell_word(""), "''");
    }

    #[test]
    fn failure_names_the_command_and_its_stderr() {
        let err = try_run("sh", ["-c", "echo oops >&2; exit 3"]).unwrap_err();
        assert!(err.contains("sh -c 'echo oops >&2; exit 3'"), "{err}");
        assert!(err.contains("oops"), "{err}");
        assert_eq!(try_run("echo", ["hi"]).unwrap(), "hi\n");
    }
}
