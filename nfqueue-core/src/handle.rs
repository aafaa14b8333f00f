//! Verdicts by packet id, from any thread.

use crate::binding::{Bindings, Current, PacketKey};
use crate::deadline::Watch;
use crate::error::{Error, Result};
use crate::ifname::{self, InterfaceName};
use crate::kernel_stats::KernelStatsReader;
use crate::retry;
use crate::socket::NetlinkSocket;
use crate::stats::{Counters, Stats};
use crate::verdict::{self, Verdict, VerdictKind};
use std::io::IoSlice;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, OnceLock};

/// What a queue handle shares with its verdict handles and deferred packets:
/// the socket stays open (and its queues bound) until the last of them is gone.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) socket: NetlinkSocket,
    pub(crate) counters: Counters,
    /// The bindings of the socket's queues that are current: a verdict goes
    /// out only for a packet of one of them.
    pub(crate) bindings: Bindings,
    /// The deadlines of its queues, once one has one.
    pub(crate) deadlines: OnceLock<Arc<Watch>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(watch) = self.deadlines.get() {
            watch.close();
        }
    }
}

impl Shared {
    /// The current bindings, read-locked until the verdicts checked against
    /// them are sent.
    #[inline]
    pub(crate) fn current(&self) -> Current<'_> {
        self.bindings.read()
    }

    /// Counts a verdict refused for its deadline, and says why.
    #[cold]
    pub(crate) fn late(&self, key: PacketKey) -> Error {
        Counters::bump(&self.counters.late_verdicts);
        Error::DeadlinePassed {
            queue: key.queue(),
            packet_id: key.id(),
        }
    }

    /// Counts a verdict refused for its binding, and says why.
    #[cold]
    pub(crate) fn stale(&self, key: PacketKey) -> Error {
        Counters::bump(&self.counters.stale_verdicts);
        Error::StaleBinding {
            queue: key.queue(),
            packet_id: key.id(),
        }
    }

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
/// // Keep only the packet's key (queue, id and binding); the verdict goes out
/// // from another thread.
/// let key = queue.recv()?.detach().key();
/// std::thread::spawn(move || handle.verdict(key, &Verdict::drop())).join().unwrap()?;
/// # Ok::<(), nfqueue_core::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct VerdictHandle {
    pub(crate) shared: Arc<Shared>,
}

impl VerdictHandle {
    /// Gives the packet `key` names its verdict, if the binding it came
    /// through is still current.
    ///
    /// A send that fails for want of kernel memory (`ENOBUFS`, `ENOMEM`) is
    /// tried again a few times, for about 11 ms in all.
    ///
    /// # Errors
    /// [`Error::StaleBinding`](crate::Error::StaleBinding) when the packet's
    /// queue was unbound since it was received (the kernel dropped it then;
    /// the queue may be bound again, with new packets of the same ids), or
    /// when the key is not from this socket: counted in
    /// [`Stats::stale_verdicts`](crate::Stats::stale_verdicts), and nothing is
    /// sent.
    /// [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge) for a payload over
    /// [`MAX_PAYLOAD`](crate::MAX_PAYLOAD) bytes and
    /// [`Error::EmptyPayload`](crate::Error::EmptyPayload) for an empty one, or
    /// [`Error::Sys`](crate::Error::Sys) when the send fails. Nothing was sent
    /// then: the packet still waits for a verdict, which is the caller's to
    /// give (this is the one verdict call that leaves the packet waiting; the
    /// methods of [`Packet`](crate::Packet) and the other holders drop it, or
    /// give it back with `try_verdict`). An id the kernel does not know is
    /// not an error here: the kernel reports it later, as
    /// [`Error::VerdictRejected`](crate::Error::VerdictRejected) from the receive call.
    pub fn verdict(&self, key: PacketKey, verdict: &Verdict<'_>) -> Result<()> {
        let current = self.shared.current();
        if !current.holds(key.binding()) {
            return Err(self.shared.stale(key));
        }
        self.verdict_current(key, verdict)
    }

    /// [`verdict`](Self::verdict) for a packet whose binding is known to be
    /// current, and to stay so until the send is done: one that borrows the
    /// queue it came from, which cannot be unbound meanwhile (that takes
    /// `&mut Queue`), and which alone can unbind its queues.
    pub(crate) fn verdict_current(&self, key: PacketKey, verdict: &Verdict<'_>) -> Result<()> {
        let header = verdict::encode(key.queue(), key.id(), verdict, false)?;
        let (parts, used) = header.parts(verdict.payload());
        let result = self.shared.send(&parts.map(IoSlice::new)[..used]);
        self.count(result, &self.shared.counters.verdicts)
    }

    /// Gives every packet of the queue and binding of `last` with an id up to
    /// and including `last`'s that is still waiting the same verdict and,
    /// optionally, mark (`NFQNL_MSG_VERDICT_BATCH`): one message for an
    /// in-order run.
    ///
    /// # Errors
    /// [`Error::StaleBinding`](crate::Error::StaleBinding) as for
    /// [`verdict`](Self::verdict), or [`Error::Sys`](crate::Error::Sys) when
    /// the send fails.
    pub fn batch_verdict(
        &self,
        last: PacketKey,
        kind: VerdictKind,
        mark: Option<u32>,
    ) -> Result<()> {
        let header = verdict::encode_batch(last.queue(), last.id(), kind, mark)?;
        let current = self.shared.current();
        if !current.holds(last.binding()) {
            return Err(self.shared.stale(last));
        }
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
    /// be counted, as this runs in `Drop` (a stale binding is counted as
    /// such, and nothing is sent).
    pub(crate) fn unanswered_verdict(&self, key: PacketKey, kind: VerdictKind, checked: bool) {
        if self.send(key, &Verdict::new(kind), checked).is_ok() {
            Counters::bump(&self.shared.counters.unanswered_verdicts);
        }
    }

    /// Drops a packet whose verdict could not be sent as given.
    pub(crate) fn fallback_drop(&self, key: PacketKey, checked: bool) {
        if self.send(key, &Verdict::drop(), checked).is_ok() {
            Counters::bump(&self.shared.counters.fallback_drops);
        }
    }

    /// [`verdict`](Self::verdict), or [`verdict_current`](Self::verdict_current)
    /// when the binding need not be `checked`.
    #[inline]
    pub(crate) fn send(&self, key: PacketKey, verdict: &Verdict<'_>, checked: bool) -> Result<()> {
        if checked {
            self.verdict(key, verdict)
        } else {
            self.verdict_current(key, verdict)
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
