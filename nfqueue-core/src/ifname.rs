//! Interface names, looked up by index in the network namespace of a socket.

use std::fmt;
use std::io;
use std::mem;
use std::os::fd::RawFd;

/// An interface name (at most 15 bytes), stored inline: looking one up does not
/// allocate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct InterfaceName {
    bytes: [u8; libc::IFNAMSIZ],
    len: u8,
}

impl InterfaceName {
    /// The name as a string (interface names are ASCII in practice; other bytes
    /// are shown as U+FFFD by `Display`, and make this return an empty string).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The name's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl fmt::Display for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl fmt::Debug for InterfaceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self.as_bytes()))
    }
}

impl PartialEq<str> for InterfaceName {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl PartialEq<&str> for InterfaceName {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// Looks up the name of interface `index` with `SIOCGIFNAME` on `fd`: the kernel
/// answers in the network namespace of the socket, not of the calling thread, so
/// a queue opened in another namespace gets that namespace's names.
pub(crate) fn lookup(fd: RawFd, index: u32) -> io::Result<InterfaceName> {
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { mem::zeroed() };
    request.ifr_ifru.ifru_ifindex =
        i32::try_from(index).map_err(|_| io::Error::from_raw_os_error(libc::ENODEV))?;
    // SAFETY: SIOCGIFNAME reads ifr_ifindex and writes ifr_name of the ifreq we
    // pass, which lives across the call.
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFNAME as _, &mut request) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut name = InterfaceName {
        bytes: [0; libc::IFNAMSIZ],
        len: 0,
    };
    for (slot, &c) in name.bytes.iter_mut().zip(request.ifr_name.iter()) {
        if c == 0 {
            break;
        }
        *slot = c as u8;
        name.len += 1;
    }
    Ok(name)
}
