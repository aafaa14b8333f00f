//! The error type of every fallible operation in this crate.

use std::io;

/// Result alias with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with what to do about it where that is known.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A system call failed.
    #[error("{op} failed: {source}")]
    Sys {
        /// The operation that failed (e.g. "socket", "sendmsg").
        op: &'static str,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },

    /// The kernel refused an operation for lack of privilege.
    #[error(
        "{op} needs CAP_NET_ADMIN in the socket's network namespace \
         (run as root, or inside a user namespace: unshare --user --map-root-user --net)"
    )]
    PermissionDenied {
        /// The operation that was refused.
        op: &'static str,
    },

    /// The queue number is bound by another netlink socket (another process, or
    /// another handle in this one).
    #[error("queue {queue} is already bound by another socket (netlink port id {owner_portid})")]
    QueueTaken {
        /// The queue number.
        queue: u16,
        /// The port id of the socket that holds it, as shown in
        /// /proc/net/netfilter/nfnetlink_queue.
        owner_portid: u32,
    },

    /// This handle has already bound the queue number.
    #[error("queue {queue} is already bound by this socket")]
    AlreadyBound {
        /// The queue number.
        queue: u16,
    },

    /// The operation names a queue number that this handle has not bound.
    #[error("queue {queue} is not bound by this socket")]
    NotBound {
        /// The queue number.
        queue: u16,
    },

    /// The kernel rejected a configuration request.
    #[error(
        "configuring queue {queue} ({what}) failed: {source}{}",
        config_hint(what, source)
    )]
    Config {
        /// The queue number.
        queue: u16,
        /// What was being configured.
        what: &'static str,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },

    /// The kernel did not acknowledge a configuration request in time (its answer
    /// can be lost when the socket's receive buffer is full).
    #[error("no answer from the kernel to the request to configure queue {queue} ({what})")]
    NoAck {
        /// The queue number.
        queue: u16,
        /// What was being configured.
        what: &'static str,
    },

    /// The kernel rejected a verdict it received earlier; it reports this later,
    /// in the receive stream. The handle stays usable.
    #[error("verdict for packet {packet_id} on queue {queue} was rejected: {source}{}", hint(.source))]
    VerdictRejected {
        /// The queue number named in the rejected verdict.
        queue: u16,
        /// The packet id named in the rejected verdict.
        packet_id: u32,
        /// The error the kernel returned.
        #[source]
        source: io::Error,
    },

    /// The socket's receive buffer overflowed: the kernel dropped packets
    /// (counted as user drops in /proc/net/netfilter/nfnetlink_queue, or accepted
    /// under fail-open). The handle stays usable.
    #[error(
        "receive buffer overflow: the kernel dropped packets for this socket \
         (enlarge it with Queue::set_recv_buffer_size, or read faster)"
    )]
    ReceiveOverflow,

    /// A replacement payload is longer than a netlink attribute can carry.
    #[error("replacement payload of {len} bytes is longer than the maximum of {max} bytes")]
    PayloadTooLarge {
        /// The length given.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },

    /// A replacement payload is empty. The kernel would take it without an error
    /// and drop the packet silently; give a drop verdict instead.
    #[error("replacement payload is empty (the kernel would drop the packet silently; give a drop verdict instead)")]
    EmptyPayload,

    /// An argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),

    /// A number is outside the range that works.
    #[error("{name} = {value} is out of range: it must be from {min} to {max} ({why})")]
    OutOfRange {
        /// The setting or argument, as the API names it (e.g. "max_len").
        name: &'static str,
        /// The value given.
        value: u64,
        /// The smallest value that works.
        min: u64,
        /// The largest value that works.
        max: u64,
        /// What a value outside the range would do.
        why: &'static str,
    },

    /// A verdict for a packet held past its queue's deadline
    /// ([`QueueConfig::deadline`](crate::QueueConfig::deadline)): the packet
    /// got the deadline verdict then, and this verdict was not sent.
    #[error(
        "packet {packet_id} of queue {queue} was held past its deadline and got the deadline \
         verdict: this verdict was not sent"
    )]
    DeadlinePassed {
        /// The queue number.
        queue: u16,
        /// The packet id.
        packet_id: u32,
    },

    /// The same queue number was given twice.
    #[error("queue {queue} is given twice (each queue number has one socket)")]
    DuplicateQueue {
        /// The queue number.
        queue: u16,
    },

    /// A verdict for a packet that came through a binding of its queue that
    /// has ended: the queue was unbound (and maybe bound again), or the packet
    /// was parsed from bytes and not received on this socket. The kernel
    /// dropped such a packet when its queue was unbound; the verdict was not
    /// sent, since a packet of a new binding may have the same id.
    #[error(
        "packet {packet_id} of queue {queue} did not come through a current binding of this \
         socket (its queue was unbound since, and the kernel dropped it then): the verdict \
         was not sent"
    )]
    StaleBinding {
        /// The queue number.
        queue: u16,
        /// The packet id.
        packet_id: u32,
    },

    /// A message from the kernel is malformed.
    #[error("malformed netlink message: {0}")]
    Malformed(#[from] MalformedError),

    /// The file descriptor given is not a NETLINK_NETFILTER socket.
    #[error("file descriptor {fd} is not a netlink netfilter socket")]
    NotNetfilterSocket {
        /// The file descriptor.
        fd: i32,
    },

    /// The network namespace could not be entered.
    #[error("cannot enter network namespace {path}: {source}")]
    Netns {
        /// The namespace file that was opened.
        path: String,
        /// The error from open or setns.
        #[source]
        source: io::Error,
    },

    /// A blocking call was interrupted by its [`StopHandle`](crate::StopHandle).
    #[error("stopped by its stop handle")]
    Stopped,
}

fn hint(err: &io::Error) -> &'static str {
    match err.raw_os_error() {
        Some(libc::ENOENT) => {
            " (no such packet waiting: the id is stale, was given a verdict already, or its queue was unbound)"
        }
        Some(libc::EINVAL) => " (the verdict is invalid)",
        _ => "",
    }
}

/// What to do when the kernel has no queue subsystem, in the words of both
/// the bind error and `nfq-doctor`.
pub(crate) const NFNETLINK_QUEUE_FIX: &str =
    "load nfnetlink_queue (modprobe nfnetlink_queue; CONFIG_NETFILTER_NETLINK_QUEUE)";

/// What a refused configuration most likely means, in the words `nfq-doctor`
/// uses for the same finding.
fn config_hint(what: &str, err: &io::Error) -> &'static str {
    match (what, err.raw_os_error()) {
        // nfnetlink_rcv_msg answers EINVAL for a subsystem it does not have
        // (after trying to load it), and a bind sends nothing else it could
        // refuse that way.
        ("bind", Some(libc::EINVAL)) => {
            " (the kernel has no queue subsystem: load nfnetlink_queue (modprobe \
             nfnetlink_queue; CONFIG_NETFILTER_NETLINK_QUEUE))"
        }
        ("flags", Some(libc::EOPNOTSUPP)) => {
            " (this kernel lacks a queue flag: CONNTRACK needs the conntrack glue, \
             CONFIG_NETFILTER_NETLINK_GLUE_CT in nf_conntrack_netlink; SECCTX needs \
             CONFIG_NETWORK_SECMARK; nfq-doctor tells which)"
        }
        _ => "",
    }
}

impl Error {
    /// An [`Error::Sys`] from the current `errno`.
    pub(crate) fn last_os(op: &'static str) -> Self {
        Error::Sys {
            op,
            source: io::Error::last_os_error(),
        }
    }

    /// True for errors after which the handle can go on receiving: a rejected
    /// verdict, a receive buffer overflow, a malformed message.
    pub fn is_recoverable(&self) -> bool {
        matches!(
            self,
            Error::VerdictRejected { .. } | Error::ReceiveOverflow | Error::Malformed(_)
        )
    }
}

impl Error {
    /// The errno behind this error, where the kernel gave one: the error of a
    /// failed system call or of a request or verdict the kernel refused, and
    /// `EPERM`, `EBUSY` or `ENOBUFS` for the errors made from them.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Sys { source, .. }
            | Error::Config { source, .. }
            | Error::VerdictRejected { source, .. }
            | Error::Netns { source, .. } => source.raw_os_error(),
            Error::PermissionDenied { .. } | Error::QueueTaken { .. } => Some(libc::EPERM),
            Error::AlreadyBound { .. } => Some(libc::EBUSY),
            Error::ReceiveOverflow => Some(libc::ENOBUFS),
            _ => None,
        }
    }

    /// The [`io::ErrorKind`] that fits this error.
    pub fn kind(&self) -> io::ErrorKind {
        use io::ErrorKind as Kind;
        match self {
            Error::Sys { source, .. }
            | Error::Config { source, .. }
            | Error::VerdictRejected { source, .. }
            | Error::Netns { source, .. } => source.kind(),
            Error::PermissionDenied { .. } => Kind::PermissionDenied,
            Error::QueueTaken { .. } => Kind::AddrInUse,
            Error::AlreadyBound { .. } => Kind::AlreadyExists,
            Error::NotBound { .. } | Error::StaleBinding { .. } => Kind::NotFound,
            Error::DeadlinePassed { .. } => Kind::TimedOut,
            Error::NoAck { .. } => Kind::TimedOut,
            Error::ReceiveOverflow => Kind::OutOfMemory,
            Error::PayloadTooLarge { .. }
            | Error::EmptyPayload
            | Error::InvalidArgument(_)
            | Error::OutOfRange { .. }
            | Error::DuplicateQueue { .. }
            | Error::NotNetfilterSocket { .. } => Kind::InvalidInput,
            Error::Malformed(_) => Kind::InvalidData,
            Error::Stopped => Kind::Interrupted,
        }
    }
}

/// Lets `?` pass an [`Error`] up through functions that return `io::Result`,
/// with the [`kind`](Error::kind) that fits it; a failed system call becomes
/// its own `io::Error`, errno included.
impl From<Error> for io::Error {
    fn from(err: Error) -> Self {
        match err {
            Error::Sys { source, .. } => source,
            other => io::Error::new(other.kind(), other),
        }
    }
}

/// Why bytes from the kernel could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedError {
    /// A structure is cut short.
    #[error("{what} truncated: needs {needed} bytes, got {got}")]
    Truncated {
        /// The structure that is cut short.
        what: &'static str,
        /// Bytes it needs.
        needed: usize,
        /// Bytes there are.
        got: usize,
    },
    /// A value has a length other than the one its attribute has.
    #[error("{what} has {got} bytes, expected {expected}")]
    Length {
        /// The attribute.
        what: &'static str,
        /// Bytes it has when well formed.
        expected: usize,
        /// Bytes there are.
        got: usize,
    },
    /// A packet message lacks its `NFQA_PACKET_HDR` attribute.
    #[error("packet message without NFQA_PACKET_HDR")]
    MissingPacketHeader,
    /// A datagram was longer than the receive buffer; its tail was cut off.
    #[error("datagram of {len} bytes did not fit the receive buffer of {capacity} bytes")]
    DatagramTooLarge {
        /// The datagram's length.
        len: usize,
        /// The buffer's capacity.
        capacity: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refused configuration names its likely cause in the doctor's words.
    #[test]
    fn refused_configurations_name_the_missing_piece() {
        let config = |what, errno| {
            Error::Config {
                queue: 2,
                what,
                source: io::Error::from_raw_os_error(errno),
            }
            .to_string()
        };
        let flags = config("flags", libc::EOPNOTSUPP);
        assert!(
            flags.contains("CONFIG_NETFILTER_NETLINK_GLUE_CT"),
            "{flags}"
        );
        let bind = config("bind", libc::EINVAL);
        assert!(bind.contains(NFNETLINK_QUEUE_FIX), "{bind}");
        assert_eq!(
            config("configure", libc::EINVAL),
            "configuring queue 2 (configure) failed: Invalid argument (os error 22)"
        );
    }

    #[test]
    fn io_errors_keep_the_kind_and_the_errno() {
        let denied: io::Error = Error::PermissionDenied {
            op: "binding a queue",
        }
        .into();
        assert_eq!(denied.kind(), io::ErrorKind::PermissionDenied);
        let taken = Error::QueueTaken {
            queue: 3,
            owner_portid: 7,
        };
        assert_eq!(taken.raw_os_error(), Some(libc::EPERM));
        assert_eq!(io::Error::from(taken).kind(), io::ErrorKind::AddrInUse);
        let sys = Error::Sys {
            op: "recv",
            source: io::Error::from_raw_os_error(libc::EBADF),
        };
        assert_eq!(sys.raw_os_error(), Some(libc::EBADF));
        assert_eq!(io::Error::from(sys).raw_os_error(), Some(libc::EBADF));
        assert_eq!(Error::EmptyPayload.raw_os_error(), None);
        assert_eq!(
            io::Error::from(Error::EmptyPayload).kind(),
            io::ErrorKind::InvalidInput
        );
    }
}
