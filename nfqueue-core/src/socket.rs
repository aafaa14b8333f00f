//! The netlink socket under a queue handle, opened through libmnl.

use crate::error::{Error, Result};
use nfqueue_sys as sys;
use std::io::{self, IoSlice};
use std::mem;
use std::os::fd::{AsRawFd, IntoRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;

/// A bound `NETLINK_NETFILTER` socket. Sending is safe from any thread; the
/// receive buffer belongs to whoever owns the [`Queue`](crate::Queue).
#[derive(Debug)]
pub(crate) struct NetlinkSocket {
    nl: NonNull<sys::mnl_socket>,
    fd: RawFd,
    portid: u32,
}

// SAFETY: `struct mnl_socket` is an fd plus the address it was bound to, both
// written once in `open`/`from_fd` and only read afterwards; the socket system
// calls we make on the fd (sendmsg, recv, setsockopt, ioctl) are thread-safe.
unsafe impl Send for NetlinkSocket {}
// SAFETY: as for Send: shared use only reads the struct and makes thread-safe
// system calls on the fd.
unsafe impl Sync for NetlinkSocket {}

impl NetlinkSocket {
    /// Opens and binds a new socket in the calling thread's network namespace.
    pub(crate) fn open() -> Result<Self> {
        // SAFETY: plain constructor; a null return is handled below.
        let raw = unsafe { sys::mnl_socket_open2(libc::NETLINK_NETFILTER, libc::SOCK_CLOEXEC) };
        let nl = NonNull::new(raw).ok_or_else(|| Error::last_os("socket(AF_NETLINK)"))?;
        Self::bind(nl)
    }

    /// Adopts an existing `AF_NETLINK`/`NETLINK_NETFILTER` socket, binding it when
    /// it is not bound yet. It keeps the network namespace it was created in.
    pub(crate) fn from_fd(fd: OwnedFd) -> Result<Self> {
        let raw_fd = fd.as_raw_fd();
        let domain = getsockopt_int(raw_fd, libc::SO_DOMAIN);
        let protocol = getsockopt_int(raw_fd, libc::SO_PROTOCOL);
        if domain.ok() != Some(libc::AF_NETLINK) || protocol.ok() != Some(libc::NETLINK_NETFILTER) {
            return Err(Error::NotNetfilterSocket { fd: raw_fd });
        }
        let raw_fd = fd.into_raw_fd();
        // SAFETY: `raw_fd` is an open netlink socket whose ownership we just took
        // from the OwnedFd; on success libmnl owns it and closes it in
        // mnl_socket_close.
        let raw = unsafe { sys::mnl_socket_fdopen(raw_fd) };
        let Some(nl) = NonNull::new(raw) else {
            let err = Error::last_os("mnl_socket_fdopen");
            // SAFETY: libmnl failed, so the fd is still ours to close.
            unsafe { libc::close(raw_fd) };
            return Err(err);
        };
        // SAFETY: `nl` is a valid socket from mnl_socket_fdopen.
        let portid = unsafe { sys::mnl_socket_get_portid(nl.as_ptr()) };
        if portid == 0 {
            return Self::bind(nl);
        }
        Ok(NetlinkSocket {
            nl,
            fd: raw_fd,
            portid,
        })
    }

    /// Binds `nl` to a port id chosen by the kernel.
    fn bind(nl: NonNull<sys::mnl_socket>) -> Result<Self> {
        // SAFETY: `nl` is a valid, unbound socket; on failure we close it.
        let rc = unsafe { sys::mnl_socket_bind(nl.as_ptr(), 0, sys::MNL_SOCKET_AUTOPID as _) };
        if rc < 0 {
            let err = Error::last_os("bind(AF_NETLINK)");
            // SAFETY: `nl` is valid and not used after this.
            unsafe { sys::mnl_socket_close(nl.as_ptr()) };
            return Err(err);
        }
        // SAFETY: `nl` is valid and bound.
        let (fd, portid) = unsafe {
            (
                sys::mnl_socket_get_fd(nl.as_ptr()),
                sys::mnl_socket_get_portid(nl.as_ptr()),
            )
        };
        Ok(NetlinkSocket { nl, fd, portid })
    }

    /// The port id the kernel assigned; /proc/net/netfilter/nfnetlink_queue shows
    /// it as the queue's peer.
    pub(crate) fn portid(&self) -> u32 {
        self.portid
    }

    /// The raw file descriptor.
    pub(crate) fn fd(&self) -> RawFd {
        self.fd
    }

    /// Sends one datagram made of `parts` to the kernel, once. A netlink send to
    /// the kernel never waits for buffer space: the kernel handles the messages
    /// during the call, so a failure means none of them was taken.
    pub(crate) fn send(&self, parts: &[IoSlice<'_>]) -> Result<()> {
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value.
        let mut kernel: libc::sockaddr_nl = unsafe { mem::zeroed() };
        kernel.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        if let [only] = parts {
            // One buffer (a verdict without payload, a request): sendto, which
            // spares the kernel copying in a msghdr and an iovec array.
            return self.send_one(only, &kernel);
        }
        // SAFETY: msghdr is plain data; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_name = (&mut kernel as *mut libc::sockaddr_nl).cast();
        msg.msg_namelen = mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
        // IoSlice is guaranteed ABI-compatible with struct iovec.
        msg.msg_iov = parts.as_ptr() as *mut libc::iovec;
        msg.msg_iovlen = parts.len();
        loop {
            // SAFETY: `msg` points at `kernel` and `parts`, which outlive the call.
            let rc = unsafe { libc::sendmsg(self.fd, &msg, 0) };
            if rc >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(Error::Sys {
                    op: "sendmsg",
                    source: err,
                });
            }
        }
    }

    /// Sends one buffer as one datagram to `to`, with `sendto`.
    fn send_one(&self, buf: &[u8], to: &libc::sockaddr_nl) -> Result<()> {
        loop {
            // SAFETY: `buf` is valid for reads of its length and `to` is a
            // sockaddr_nl of the size passed; both outlive the call.
            let rc = unsafe {
                libc::sendto(
                    self.fd,
                    buf.as_ptr().cast(),
                    buf.len(),
                    0,
                    (to as *const libc::sockaddr_nl).cast(),
                    mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            if rc >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(Error::Sys {
                    op: "sendto",
                    source: err,
                });
            }
        }
    }

    /// Receives one datagram into `buf`, returning its full length (which may be
    /// more than `buf.len()` when it was cut), or `None` when nothing came:
    /// at once when `nonblocking`, else when a receive timeout set on the
    /// socket ran out.
    pub(crate) fn recv(&self, buf: &mut [u8], nonblocking: bool) -> Result<Option<usize>> {
        let flags = libc::MSG_TRUNC | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let rc = unsafe { libc::recv(self.fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
            if rc >= 0 {
                return Ok(Some(rc as usize));
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(None),
                Some(libc::ENOBUFS) => return Err(Error::ReceiveOverflow),
                _ => {
                    return Err(Error::Sys {
                        op: "recv",
                        source: err,
                    })
                }
            }
        }
    }

    /// Sets an integer socket option.
    pub(crate) fn set_option(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
        op: &'static str,
    ) -> Result<()> {
        // SAFETY: the option value is a valid c_int of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd,
                level,
                name,
                (&value as *const libc::c_int).cast(),
                mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            let source = io::Error::last_os_error();
            if source.raw_os_error() == Some(libc::EPERM) {
                return Err(Error::PermissionDenied { op });
            }
            return Err(Error::Sys { op, source });
        }
        Ok(())
    }

    /// Reads an integer socket option.
    pub(crate) fn option(&self, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
        getsockopt_int_at(self.fd, level, name)
    }
}

impl Drop for NetlinkSocket {
    fn drop(&mut self) {
        // SAFETY: `nl` is valid and dropped only once; closing it makes the
        // kernel destroy every queue this socket bound.
        unsafe { sys::mnl_socket_close(self.nl.as_ptr()) };
    }
}

fn getsockopt_int(fd: RawFd, name: libc::c_int) -> io::Result<libc::c_int> {
    getsockopt_int_at(fd, libc::SOL_SOCKET, name)
}

fn getsockopt_int_at(fd: RawFd, level: libc::c_int, name: libc::c_int) -> io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes and describe a c_int.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(value)
}
