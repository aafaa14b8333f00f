//! Throwaway network namespaces, held by a file descriptor.
//!
//! A network namespace belongs to a thread, not to a process: `unshare(2)` and
//! `setns(2)` with `CLONE_NEWNET` change only the calling thread. Sockets keep the
//! namespace they were created in, and threads and child processes start in the
//! namespace of the thread that spawned them. A test therefore calls
//! [`Netns::enter`] on its own thread (libtest gives every test one) and everything
//! it does from then on happens inside.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// The message of the panic when the kernel refuses to create a namespace.
const NEEDS_CAP: &str = "creating a network namespace needs CAP_SYS_ADMIN: run the kernel \
     tests with `cargo xtask test-netns` (as root, or it wraps them in \
     `unshare --user --map-root-user --net`)";

/// A new, anonymous network namespace.
///
/// The namespace lives as long as this handle, or any socket, thread or process
/// inside it: nothing is left behind when a test ends, also when it panics. It has
/// only the loopback interface, which is up.
#[derive(Debug)]
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// Creates a new network namespace with `lo` up.
    ///
    /// The calling thread stays where it is: a short-lived helper thread unshares
    /// its own namespace and hands back a descriptor of it.
    ///
    /// # Panics
    ///
    /// Panics when the process may not create namespaces (`EPERM`, no
    /// `CAP_SYS_ADMIN`), with a message that says how to run the tests, or when
    /// the helper thread fails otherwise.
    // No `Default`: creating kernel objects (and panicking) is not a default value.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Netns {
        match Netns::try_new() {
            Ok(ns) => ns,
            Err(e) if e.raw_os_error() == Some(libc::EPERM) => panic!("{NEEDS_CAP}"),
            Err(e) => panic!("creating a network namespace failed: {e}"),
        }
    }

    /// Creates a new network namespace with `lo` up, returning the error instead of
    /// panicking.
    ///
    /// # Errors
    ///
    /// `EPERM` without `CAP_SYS_ADMIN`; any error of `unshare(2)`, opening
    /// `/proc/thread-self/ns/net`, or bringing `lo` up.
    pub fn try_new() -> io::Result<Netns> {
        thread::Builder::new()
            .name("netns-new".into())
            .spawn(|| {
                // SAFETY: unshare takes no pointers; CLONE_NEWNET changes only this
                // thread's namespace, and this thread ends right after.
                if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                    return Err(io::Error::last_os_error());
                }
                set_link_up("lo")?;
                let file = File::open("/proc/thread-self/ns/net")?;
                Ok(Netns {
                    fd: OwnedFd::from(file),
                })
            })?
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }

    /// Moves the current thread into this namespace, for the rest of its life.
    ///
    /// Sockets created afterwards, and threads and processes spawned afterwards,
    /// are inside. Sockets created before stay where they were.
    ///
    /// # Panics
    ///
    /// Panics when `setns(2)` fails.
    pub fn enter(&self) {
        // SAFETY: the descriptor is open for as long as `self.fd` lives, and
        // setns only reads it; CLONE_NEWNET touches only the current thread.
        if unsafe { libc::setns(self.fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            panic!(
                "setns into network namespace {} failed: {}",
                self.path().display(),
                io::Error::last_os_error()
            );
        }
    }

    /// Runs `f` on a scoped thread inside this namespace and returns its result.
    ///
    /// The calling thread stays where it is. A panic in `f` is passed on.
    pub fn run<R, F>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        thread::scope(|s| {
            thread::Builder::new()
                .name("netns-run".into())
                .spawn_scoped(s, || {
                    self.enter();
                    f()
                })
                .expect("spawning a thread failed")
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// A path naming this namespace while the handle lives: `/proc/<pid>/fd/<n>`.
    ///
    /// Other processes of the same user can open it, so it works with
    /// `ip link set X netns <path>` (iproute2 opens a name containing `/` as a
    /// path) and `nsenter --net=<path>`.
    pub fn path(&self) -> PathBuf {
        PathBuf::from(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            self.fd.as_raw_fd()
        ))
    }

    /// The inode number of this namespace, as `stat` shows for
    /// `/proc/thread-self/ns/net` of a thread inside it.
    ///
    /// # Panics
    ///
    /// Panics when `fstat` fails, which needs a broken descriptor.
    pub fn inode(&self) -> u64 {
        let file = File::from(self.fd.try_clone().expect("dup of a namespace fd failed"));
        file.metadata()
            .expect("fstat of a namespace fd failed")
            .ino()
    }

    /// The inode number of the current thread's network namespace: two threads
    /// are in the same namespace exactly when their numbers are equal.
    ///
    /// # Panics
    ///
    /// Panics when `/proc/thread-self/ns/net` cannot be read (Linux < 3.17 or no
    /// `/proc`).
    pub fn current_thread_inode() -> u64 {
        std::fs::metadata("/proc/thread-self/ns/net")
            .expect("stat /proc/thread-self/ns/net failed")
            .ino()
    }

    /// The inode number of the network namespace that `sock` belongs to (the one
    /// it was created in), to compare with [`Netns::inode`].
    ///
    /// # Panics
    ///
    /// Panics when `ioctl(SIOCGSKNS)` fails: not a socket, or no
    /// `CAP_NET_ADMIN` over that namespace.
    pub fn socket_inode(sock: &impl AsFd) -> u64 {
        // SAFETY: SIOCGSKNS takes no argument; the descriptor is borrowed, so
        // open during the call. A non-negative result is a new descriptor that
        // nothing else owns.
        let fd = unsafe { libc::ioctl(sock.as_fd().as_raw_fd(), libc::SIOCGSKNS as _) };
        assert!(fd >= 0, "ioctl SIOCGSKNS: {}", io::Error::last_os_error());
        // SAFETY: see above, `fd` is fresh and owned by no one else.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        file.metadata()
            .expect("fstat of a namespace fd failed")
            .ino()
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// An `AF_INET` datagram socket in the current thread's namespace, for interface
/// ioctls.
fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket takes no pointers; a non-negative result is a new descriptor
    // that nothing else owns, so OwnedFd may take it.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: see above, `fd` is a fresh descriptor owned by no one else.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// An `ifreq` naming `name`.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    let c = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let bytes = c.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("interface name {name:?} is longer than IFNAMSIZ"),
        ));
    }
    // SAFETY: ifreq is plain old data (a name array and a union of integers and
    // sockaddrs) for which all-zero bytes are a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// The interface flags (`IFF_*`) of `name` in the current thread's namespace.
pub(crate) fn link_flags(name: &str) -> io::Result<libc::c_int> {
    let sock = ioctl_socket()?;
    let mut req = ifreq(name)?;
    // SAFETY: `req` is a valid, NUL-terminated ifreq that lives across the call;
    // SIOCGIFFLAGS writes only its ifru_flags member.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so ifru_flags is the member it wrote.
    Ok(libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags }) & 0xffff)
}

/// Sets `IFF_UP` on `name` in the current thread's namespace.
pub(crate) fn set_link_up(name: &str) -> io::Result<()> {
    let flags = link_flags(name)?;
    let sock = ioctl_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_flags = (flags | libc::IFF_UP) as libc::c_short;
    // SAFETY: `req` is a valid, NUL-terminated ifreq with ifru_flags set, alive
    // across the call; SIOCSIFFLAGS only reads it.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Waits until `name` in the current thread's namespace is `IFF_RUNNING`, which
/// the kernel sets once the link has carrier and its queueing discipline is
/// active (before that, sent packets are silently dropped).
///
/// # Panics
///
/// Panics when the link is not running after `timeout`.
pub(crate) fn wait_link_running(name: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let flags = link_flags(name).unwrap_or(0);
        if flags & libc::IFF_RUNNING != 0 {
            return;
        }
        if Instant::now() >= deadline {
            panic!("link {name} is not running after {timeout:?} (flags {flags:#x})");
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// Enters a new network namespace for the rest of the calling thread's life and
/// returns its handle (keep it: the namespace outlives the thread only through
/// it or what lives inside).
///
/// # Panics
///
/// As [`Netns::new`] and [`Netns::enter`].
pub fn enter_new_netns() -> Netns {
    let ns = Netns::new();
    ns.enter();
    ns
}
