//! Retrying a send that failed for want of kernel memory.
//!
//! A netlink send to the kernel never waits for buffer space: the kernel handles
//! the messages inside the call. So a failure is either lasting (a closed or
//! wrong socket, a datagram over the socket's send buffer) or a short-lived
//! shortage of kernel memory (`ENOBUFS`, `ENOMEM`), which is worth a few more
//! tries before the verdicts are given up on.

use crate::error::{Error, Result};
use std::time::Duration;

/// The pauses before each retry: four tries in all, about 11 ms at most.
const BACKOFF: [Duration; 3] = [
    Duration::from_micros(100),
    Duration::from_millis(1),
    Duration::from_millis(10),
];

/// Whether another try of the same send may succeed.
pub(crate) fn is_transient(err: &Error) -> bool {
    match err {
        Error::Sys { source, .. } => matches!(
            source.raw_os_error(),
            Some(libc::ENOBUFS | libc::ENOMEM | libc::EAGAIN)
        ),
        _ => false,
    }
}

/// Whether the datagram was too large for the socket's send buffer: it may go
/// through split into smaller ones.
pub(crate) fn is_too_large(err: &Error) -> bool {
    matches!(err, Error::Sys { source, .. } if source.raw_os_error() == Some(libc::EMSGSIZE))
}

/// After a first try of `send` failed for want of memory: tries again, after
/// each pause of the backoff, until it succeeds or fails for good, or the
/// pauses are used up (`BACKOFF.len() + 1` tries in all); `on_retry` is called
/// before each retry.
pub(crate) fn again(
    mut send: impl FnMut() -> Result<()>,
    mut on_retry: impl FnMut(),
) -> Result<()> {
    let mut result = Ok(());
    for pause in BACKOFF {
        on_retry();
        std::thread::sleep(pause);
        result = send();
        if !matches!(&result, Err(err) if is_transient(err)) {
            break;
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn sys(errno: i32) -> Error {
        Error::Sys {
            op: "sendmsg",
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// Runs a send the way `Shared::send` does: once, then `again` when the
    /// first try failed for want of memory.
    fn send_with_retries(
        mut send: impl FnMut() -> Result<()>,
        on_retry: impl FnMut(),
    ) -> Result<()> {
        match send() {
            Err(err) if is_transient(&err) => again(send, on_retry),
            result => result,
        }
    }

    #[test]
    fn a_shortage_of_memory_is_retried_until_it_passes() {
        let (mut tries, mut retries) = (0, 0);
        let result = send_with_retries(
            || {
                tries += 1;
                if tries < 3 {
                    Err(sys(libc::ENOBUFS))
                } else {
                    Ok(())
                }
            },
            || retries += 1,
        );
        assert!(result.is_ok());
        assert_eq!((tries, retries), (3, 2));
    }

    #[test]
    fn retries_are_bounded() {
        let mut tries = 0;
        let result = send_with_retries(
            || {
                tries += 1;
                Err(sys(libc::ENOMEM))
            },
            || {},
        );
        assert!(is_transient(&result.unwrap_err()));
        assert_eq!(tries, BACKOFF.len() + 1);
    }

    #[test]
    fn a_lasting_failure_is_not_retried() {
        for errno in [libc::EBADF, libc::ENOTSOCK, libc::EMSGSIZE, libc::EPERM] {
            let mut tries = 0;
            let result = send_with_retries(
                || {
                    tries += 1;
                    Err(sys(errno))
                },
                || {},
            );
            assert!(result.is_err());
            assert_eq!(tries, 1, "errno {errno}");
        }
        assert!(is_too_large(&sys(libc::EMSGSIZE)));
        assert!(!is_too_large(&sys(libc::ENOBUFS)));
    }
}
