//! Verdicts by packet id, from any thread.

use crate::error::Result;
use crate::ifname::{self, InterfaceName};
use crate::kernel_stats::KernelStatsReader;
use crate::retry;
use crate::socket::NetlinkSocket;
use crate::stats::{Counters, Stats};
use crate::verdict::{self, Verdict, VerdictKind, PADDING};
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;

/// What a queue handle shares with its verdict handles and deferred packets:
/// the socket stays open (and its queues bound) until the last of them is gone.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) socket: NetlinkSocket,
    pub(crate) counters: Counters,
}

impl Shared {
    /// Sends one datagram, counting the system calls, and trying again a few
    /// times while the kernel is short of memory.
    #[inline]
    pub(crate) fn send(&self, parts: &[IoSlice<'_>]) -> Result<()> {
        Counters::bump(&self.counters.send_calls);
        match self.socket.send(parts) {
            Err(err) if retry::is_transient(&err) => self.send_again(parts),
            result => result,
        }
    }

    /// The retries of [`send`](Self::send), off its fast path.
    #[cold]
    fn send_again(&self, parts: &[IoSlice<'_>]) -> Result<()> {
        retry::again(
            || {
                Counters::bump(&self.counters.send_calls);
                self.socket.send(parts)
            },
            || Counters::bump(&self.counters.send_retries),
        )
    }
}

/// Sends verdicts by queue number and packet id on the socket that bound the
/// queue (the kernel accepts them from no other). Cheap to clone; `Send` and
/// `Sync`, so worker threads can give verdicts while another thread receives.
///
/// ```no_run
/// use nfqueue_core::{Queue, QueueConfig, Verdict};
///
/// let mut queue = Queue::open()?;
/// queue.bind(0, &QueueConfig::default())?;
/// let handle = queue.verdict_handle();
/// // Keep only the queue number and id; the verdict goes out from another thread.
/// let (num, id) = {
///     let view = queue.recv()?.detach();
///     (view.queue(), view.id())
/// };
/// std::thread::spawn(move || handle.verdict(num, id, &Verdict::drop())).join().unwrap()?;
/// # Ok::<(), nfqueue_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct VerdictHandle {
    pub(crate) shared: Arc<Shared>,
}

impl VerdictHandle {
    /// Gives packet `id` of queue `queue` its verdict.
    ///
    /// A send that fails for want of kernel memory (`ENOBUFS`, `ENOMEM`) is
    /// tried again a few times, for about 11 ms in all.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge) for a payload over
    /// [`MAX_PAYLOAD`](crate::MAX_PAYLOAD) bytes and
    /// [`Error::EmptyPayload`](crate::Error::EmptyPayload) for an empty one, or
    /// [`Error::Sys`](crate::Error::Sys) when the send fails. Nothing was sent
    /// then: the packet still waits for a verdict, which is the caller's to
    /// give (this is the one verdict call that leaves the packet waiting; the
    /// methods of [`Packet`](crate::Packet) and the other holders drop it, or
    /// give it back with `try_verdict`). A stale id is
    /// not an error here: the kernel reports it later, as
    /// [`Error::VerdictRejected`](crate::Error::VerdictRejected) from the receive call.
    pub fn verdict(&self, queue: u16, id: u32, verdict: &Verdict<'_>) -> Result<()> {
        let header = verdict::encode(queue, id, verdict, false)?;
        let result = match verdict.payload() {
            None => self.shared.send(&[IoSlice::new(header.as_bytes())]),
            Some(payload) => self.shared.send(&[
                IoSlice::new(header.as_bytes()),
                IoSlice::new(payload),
                IoSlice::new(&PADDING[..header.padding]),
            ]),
        };
        self.count(result, &self.shared.counters.verdicts)
    }

    /// Gives every packet of queue `queue` with an id up to and including `id`
    /// that is still waiting the same verdict and, optionally, mark
    /// (`NFQNL_MSG_VERDICT_BATCH`): one message for an in-order run.
    ///
    /// # Errors
    /// [`Error::Sys`](crate::Error::Sys) when the send fails.
    pub fn batch_verdict(
        &self,
        queue: u16,
        id: u32,
        kind: VerdictKind,
        mark: Option<u32>,
    ) -> Result<()> {
        let header = verdict::encode_batch(queue, id, kind, mark)?;
        let result = self.shared.send(&[IoSlice::new(header.as_bytes())]);
        self.count(result, &self.shared.counters.batch_verdicts)
    }

    /// The netlink port id of the socket, as /proc/net/netfilter/nfnetlink_queue
    /// shows it.
    pub fn portid(&self) -> u32 {
        self.shared.socket.portid()
    }

    /// The name of interface `index` in the network namespace of the queue's
    /// socket (which may not be the caller's), as [`Queue::interface_name`](crate::Queue::interface_name).
    ///
    /// # Errors
    /// [`Error::Sys`](crate::Error::Sys) (`ENODEV`) when there is no such interface.
    pub fn interface_name(&self, index: u32) -> Result<InterfaceName> {
        ifname::lookup(self.shared.socket.fd(), index).map_err(|source| crate::Error::Sys {
            op: "ioctl(SIOCGIFNAME)",
            source,
        })
    }

    /// A reader of the kernel's counters of the socket's network namespace
    /// (see [`Queue::kernel_stats_reader`](crate::Queue::kernel_stats_reader)).
    ///
    /// # Errors
    /// [`Error::Sys`](crate::Error::Sys) when the socket's namespace cannot be
    /// found.
    pub fn kernel_stats_reader(&self) -> Result<KernelStatsReader> {
        KernelStatsReader::of_socket(self.shared.socket.fd())
    }

    /// The counters of the queue handle this was taken from.
    pub fn stats(&self) -> Stats {
        self.shared.counters.snapshot()
    }

    fn count(&self, result: Result<()>, on_success: &std::sync::atomic::AtomicU64) -> Result<()> {
        match &result {
            Ok(()) => Counters::bump(on_success),
            Err(_) => Counters::bump(&self.shared.counters.failed_sends),
        }
        result
    }

    /// Sends `kind` for a packet dropped without a verdict; a failure can only
    /// be counted, as this runs in `Drop`.
    pub(crate) fn unanswered_verdict(&self, queue: u16, id: u32, kind: VerdictKind) {
        if self.verdict(queue, id, &Verdict::new(kind)).is_ok() {
            Counters::bump(&self.shared.counters.unanswered_verdicts);
        }
    }

    /// Drops a packet whose verdict could not be sent as given.
    pub(crate) fn fallback_drop(&self, queue: u16, id: u32) {
        if self.verdict(queue, id, &Verdict::drop()).is_ok() {
            Counters::bump(&self.shared.counters.fallback_drops);
        }
    }
}

/// The queue's socket, kept open while this handle lives.
impl AsFd for VerdictHandle {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the socket stays open as long as `self` (which shares it) is
        // borrowed.
        unsafe { BorrowedFd::borrow_raw(self.shared.socket.fd()) }
    }
}
