//! A child process in a throwaway network namespace (and, where asked or
//! needed, a new user namespace), which runs one probe and sends back its
//! answer through a pipe.
//!
//! A process: a thread can enter a new network namespace on its own, but not
//! a new user namespace (`unshare(CLONE_NEWUSER)` refuses a process with
//! more than one thread), and without `CAP_SYS_ADMIN` a network namespace
//! can only be made inside a new user namespace. The child is forked from a
//! process that may have other threads: it uses only what survives a fork
//! (glibc's allocator is reset for the child; the probes start commands and
//! open sockets), and it is killed when it takes longer than its timeout, so
//! that a lock some other thread held at the fork cannot hang the caller.

use super::host::NOBODY;
use std::ffi::CString;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Which namespaces the child makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// A network namespace (needs `CAP_SYS_ADMIN`).
    Net,
    /// A user namespace, the caller's uid mapped to root in it, and a
    /// network namespace it owns.
    UserNet,
    /// As [`UserNet`](Self::UserNet), made as user nobody when the caller is
    /// root in the initial user namespace: what an unprivileged user gets.
    UserNetAsNobody,
}

/// Runs `probe` in a child process inside new namespaces and returns what it
/// returned, or why it could not run.
pub(crate) fn run(
    isolation: Isolation,
    timeout: Duration,
    probe: impl FnOnce() -> Result<String, String>,
) -> Result<String, String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded: both are fresh descriptors owned by nothing
    // else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: these take nothing and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let as_nobody = isolation == Isolation::UserNetAsNobody
        && uid == 0
        && super::host::initial_user_namespace();
    // SAFETY: fork has no preconditions; the child below runs the probe and
    // ends with _exit, never returning into the caller's code.
    match unsafe { libc::fork() } {
        -1 => Err(format!("fork: {}", io::Error::last_os_error())),
        0 => {
            drop(read);
            let answer = panic::catch_unwind(AssertUnwindSafe(|| {
                enter(isolation, as_nobody, uid, gid)?;
                probe()
            }));
            let message = match answer {
                Ok(Ok(text)) => format!("O{text}"),
                Ok(Err(why)) => format!("E{why}"),
                Err(_) => "Ethe probe panicked".to_string(),
            };
            let mut pipe = std::fs::File::from(write);
            let _ = pipe.write_all(message.as_bytes());
            drop(pipe);
            // SAFETY: _exit ends the child at once, without running the
            // caller's exit handlers or destructors twice.
            unsafe { libc::_exit(0) }
        }
        pid => {
            drop(write);
            let answer = read_until_eof(read, timeout);
            if answer.is_err() {
                // SAFETY: `pid` is our child, not yet reaped.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let mut status = 0;
            // SAFETY: waits for our own child; `status` outlives the call.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            let text = answer?;
            if let Some(rest) = text.strip_prefix('O') {
                Ok(rest.to_string())
            } else if let Some(rest) = text.strip_prefix('E') {
                Err(rest.to_string())
            } else {
                Err(format!(
                    "the child process ended without an answer (wait status {status:#x})"
                ))
            }
        }
    }
}

/// Reads the pipe until the child closes it, for at most `timeout`.
fn read_until_eof(read: OwnedFd, timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut pipe = std::fs::File::from(read);
    let mut out = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("the probe took longer than {timeout:?}"));
        }
        let mut poll = libc::pollfd {
            fd: pipe.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
        // SAFETY: one live pollfd, and the count says one.
        if unsafe { libc::poll(&mut poll, 1, ms) } <= 0 {
            continue;
        }
        match pipe.read(&mut chunk) {
            Ok(0) => return Ok(String::from_utf8_lossy(&out).into_owned()),
            Ok(n) => out.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading the probe's answer: {e}")),
        }
    }
}

/// In the child: makes the namespaces, maps the ids, brings `lo` up.
fn enter(isolation: Isolation, as_nobody: bool, uid: u32, gid: u32) -> Result<(), String> {
    let (uid, gid) = if as_nobody {
        // SAFETY: these change only this (single-threaded) child's ids;
        // setgroups with a count of 0 reads no pointer.
        let dropped = unsafe {
            libc::setgroups(0, std::ptr::null()) == 0
                && libc::setgid(NOBODY) == 0
                && libc::setuid(NOBODY) == 0
        };
        if !dropped {
            return Err(format!(
                "becoming uid {NOBODY}: {}",
                io::Error::last_os_error()
            ));
        }
        // The change of uid made the process undumpable, which makes its
        // /proc files root's: it could not write its own uid_map. (A
        // program started as nobody, through exec, is dumpable.)
        // SAFETY: prctl with PR_SET_DUMPABLE takes plain integers.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
        (NOBODY, NOBODY)
    } else {
        (uid, gid)
    };
    let flags = match isolation {
        Isolation::Net => libc::CLONE_NEWNET,
        Isolation::UserNet | Isolation::UserNetAsNobody => libc::CLONE_NEWUSER | libc::CLONE_NEWNET,
    };
    // SAFETY: unshare takes no pointers and changes only this process.
    if unsafe { libc::unshare(flags) } != 0 {
        let err = io::Error::last_os_error();
        return Err(match isolation {
            Isolation::Net => format!("unshare(CLONE_NEWNET): {err}"),
            _ => format!("unshare(CLONE_NEWUSER | CLONE_NEWNET): {err}"),
        });
    }
    if flags & libc::CLONE_NEWUSER != 0 {
        // An unprivileged process may map its own ids only, and its gid only
        // once setgroups is denied.
        let write = |path: &str, text: String| {
            std::fs::write(path, text).map_err(|e| format!("writing {path}: {e}"))
        };
        let _ = write("/proc/self/setgroups", "deny".into());
        write("/proc/self/uid_map", format!("0 {uid} 1")).map_err(|e| {
            if uid == 0 {
                // verify_root_map (kernel/user_namespace.c): mapping the
                // parent's uid 0 needs CAP_SETFCAP when unsharing.
                format!("{e} (root without CAP_SETFCAP may not map uid 0 into a user namespace)")
            } else {
                e
            }
        })?;
        write("/proc/self/gid_map", format!("0 {gid} 1"))?;
    }
    set_link_up("lo").map_err(|e| format!("bringing lo up: {e}"))
}

/// Sets `IFF_UP` on `name` in this process's network namespace.
fn set_link_up(name: &str) -> io::Result<()> {
    // SAFETY: socket takes no pointers; a non-negative result is a new
    // descriptor that nothing else owns.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes_with_nul()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a NUL-terminated ifreq alive across the call;
    // SIOCGIFFLAGS writes only its flags.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
