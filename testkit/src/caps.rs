//! Running code without capabilities, to test what an unprivileged caller gets.

use std::thread;

/// `struct __user_cap_header_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

/// `struct __user_cap_data_struct`.
#[repr(C)]
#[derive(Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// `_LINUX_CAPABILITY_VERSION_3`: 64-bit capability sets in two data structs.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// Runs `f` on a thread that has dropped every capability and returns its
/// result. Capabilities belong to a thread, and this one ends with `f`, so the
/// caller keeps its own.
///
/// # Panics
///
/// Panics when `capset(2)` fails, or passes on a panic of `f`.
pub fn without_capabilities<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    thread::scope(|s| {
        s.spawn(|| {
            let header = CapHeader {
                version: CAP_VERSION_3,
                pid: 0,
            };
            let data = [CapData::default(), CapData::default()];
            // SAFETY: capset reads a header and two data structs of the layout
            // above; pid 0 changes only the calling thread.
            let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
            assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
