//! Network namespaces: opening a socket in another one, and telling which one a
//! socket lives in.

use crate::error::{Error, Result};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::thread;

/// Runs `f` on a short-lived thread that has entered the network namespace of
/// `ns` (setns affects only the calling thread, so this one is left as it was).
pub(crate) fn run_in<T: Send>(
    ns: &File,
    path: &Path,
    f: impl FnOnce() -> Result<T> + Send,
) -> Result<T> {
    thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: `ns` is an open namespace file; setns only changes this
                // thread's namespace.
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
                    return Err(Error::Netns {
                        path: path.display().to_string(),
                        source: io::Error::last_os_error(),
                    });
                }
                f()
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// Opens the namespace file at `path` (e.g. `/run/netns/NAME`).
pub(crate) fn open(path: &Path) -> Result<File> {
    File::open(path).map_err(|source| Error::Netns {
        path: path.display().to_string(),
        source,
    })
}

/// The network namespace the socket `fd` lives in (`SIOCGSKNS`).
pub(crate) fn of_socket(fd: RawFd) -> io::Result<File> {
    // SAFETY: SIOCGSKNS takes no argument and returns a new fd or -1.
    let ns = unsafe { libc::ioctl(fd, libc::SIOCGSKNS as _) };
    if ns < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `ns` is a new fd that nothing else owns.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(ns) }))
}

/// True when `ns` is the calling thread's network namespace.
pub(crate) fn is_current(ns: &File) -> io::Result<bool> {
    let ours = std::fs::metadata("/proc/thread-self/ns/net")?;
    let theirs = ns.metadata()?;
    Ok(ours.ino() == theirs.ino() && ours.dev() == theirs.dev())
}
