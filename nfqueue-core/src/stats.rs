//! Counters: this library's own, and the kernel's for each queue.

use std::fs;
use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

crate::counter_set! {
    /// What a [`Queue`](crate::Queue) handle has done, counted since it was opened.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct Stats;
    /// Live counters behind [`Stats`], shared by a queue and its verdict handles.
    pub(crate) struct Counters;
    /// Packets received.
    packets,
    /// Verdict messages sent (each for one packet).
    verdicts,
    /// Batch verdict messages sent (each for every packet up to an id).
    batch_verdicts,
    /// Unanswered verdicts given to packets dropped without one (included in
    /// `verdicts`; see [`QueueConfig::unanswered`](crate::QueueConfig::unanswered)).
    unanswered_verdicts,
    /// Verdicts the kernel rejected (reported in the receive stream).
    rejected_verdicts,
    /// Sends of verdicts that failed, after their retries (the verdicts were
    /// not taken).
    failed_sends,
    /// Sends tried again after the kernel was short of memory (`ENOBUFS`,
    /// `ENOMEM`).
    send_retries,
    /// Packets dropped because their verdict could not be sent as given (an
    /// invalid payload, or a send that failed; included in `verdicts`); see
    /// [`Packet::verdict`](crate::Packet::verdict).
    fallback_drops,
    /// Receive buffer overflows (`ENOBUFS`): the kernel dropped packets.
    receive_overflows,
    /// Malformed messages skipped (those of packets included: see
    /// `malformed_dropped` and `malformed_unsettled`).
    malformed,
    /// Packets whose message could not be parsed whole but whose id could:
    /// they were dropped (included in `malformed`).
    malformed_dropped,
    /// Packet messages whose id could not be read, or whose drop could not
    /// be sent (included in `malformed`): such a packet waits in the kernel
    /// until its queue is unbound, and a batch verdict for a later id would
    /// settle it too.
    malformed_unsettled,
    /// Verdicts not sent because the binding their packet came through had
    /// ended (see [`Error::StaleBinding`](crate::Error::StaleBinding)),
    /// including unanswered verdicts of holders dropped after an unbind.
    stale_verdicts,
    /// Deadline verdicts sent: packets held past their queue's deadline
    /// ([`QueueConfig::deadline`](crate::QueueConfig::deadline)).
    deadline_verdicts,
    /// Verdicts refused because their packet's deadline had passed
    /// ([`Error::DeadlinePassed`](crate::Error::DeadlinePassed)), including
    /// unanswered verdicts of holders dropped after it.
    late_verdicts,
    /// Packets read after their binding ended (kept while a request waited
    /// for its answer, or sent by the kernel during an unbind): not handed
    /// out, as the kernel dropped them at the unbind.
    stale_packets,
    /// `recv` system calls made (including ones that found nothing).
    recv_calls,
    /// `sendmsg` system calls made.
    send_calls,
}

impl Counters {
    /// Counts one, for a counter any thread may count (the verdict side:
    /// every `VerdictHandle` shares these).
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one, for a counter of the receive side, which only the thread
    /// that holds the `Queue` mutably counts: a plain load and store, not an
    /// atomic read-modify-write, which costs a locked instruction per packet.
    /// Readers on other threads still see whole values.
    pub(crate) fn bump_receive(counter: &AtomicU64) {
        counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }
}

/// The kernel's line for one queue in `/proc/net/netfilter/nfnetlink_queue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueStats {
    /// The queue number.
    pub queue: u16,
    /// Netlink port id of the socket that bound it.
    pub portid: u32,
    /// Packets waiting for a verdict now.
    pub waiting: u32,
    /// Copy mode (0 none, 1 meta, 2 packet).
    pub copy_mode: u8,
    /// Copy range in bytes.
    pub copy_range: u32,
    /// Packets dropped (or accepted under fail-open) because the queue was full.
    pub queue_dropped: u32,
    /// Packets dropped because the socket's receive buffer was full.
    pub user_dropped: u32,
    /// The last packet id handed out.
    pub last_id: u32,
}

impl QueueStats {
    /// Parses one line of the /proc file; `None` when it is not such a line.
    pub fn parse_line(line: &str) -> Option<Self> {
        let mut fields = line.split_whitespace().map(str::parse::<u64>);
        let mut next = || fields.next()?.ok();
        let stats = QueueStats {
            queue: u16::try_from(next()?).ok()?,
            portid: u32::try_from(next()?).ok()?,
            waiting: u32::try_from(next()?).ok()?,
            copy_mode: u8::try_from(next()?).ok()?,
            copy_range: u32::try_from(next()?).ok()?,
            queue_dropped: u32::try_from(next()?).ok()?,
            user_dropped: u32::try_from(next()?).ok()?,
            last_id: u32::try_from(next()?).ok()?,
        };
        Some(stats)
    }

    /// Every field with its name, in the order of the fields, widened to
    /// `u64`: for printing and for export (see [`prometheus`](crate::prometheus)).
    pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
        // No `..`: a new field does not compile until it is listed here.
        let QueueStats {
            queue,
            portid,
            waiting,
            copy_mode,
            copy_range,
            queue_dropped,
            user_dropped,
            last_id,
        } = *self;
        [
            ("queue", u64::from(queue)),
            ("portid", u64::from(portid)),
            ("waiting", u64::from(waiting)),
            ("copy_mode", u64::from(copy_mode)),
            ("copy_range", u64::from(copy_range)),
            ("queue_dropped", u64::from(queue_dropped)),
            ("user_dropped", u64::from(user_dropped)),
            ("last_id", u64::from(last_id)),
        ]
        .into_iter()
    }

    /// Every queue of the calling thread's network namespace.
    ///
    /// # Errors
    /// When the file cannot be read (the nfnetlink_queue module is not loaded
    /// until a queue is first bound).
    pub fn read_all() -> io::Result<Vec<Self>> {
        // /proc/net follows the thread-group leader's namespace; thread-self
        // follows this thread's, which is what a queue opened here uses.
        Self::read_all_from(Path::new("/proc/thread-self/net/netfilter/nfnetlink_queue"))
    }

    /// Every queue listed in a file in the format of
    /// /proc/net/netfilter/nfnetlink_queue.
    ///
    /// # Errors
    /// When the file cannot be read.
    pub fn read_all_from(path: &Path) -> io::Result<Vec<Self>> {
        Ok(fs::read_to_string(path)?
            .lines()
            .filter_map(Self::parse_line)
            .collect())
    }

    /// The line of `queue` in the calling thread's network namespace, if bound.
    ///
    /// # Errors
    /// As [`read_all`](Self::read_all).
    pub fn read(queue: u16) -> io::Result<Option<Self>> {
        Ok(Self::read_all()?.into_iter().find(|s| s.queue == queue))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_format() {
        let line = "    3  12345     2 2 65531     7     1       99  1";
        let stats = QueueStats::parse_line(line).unwrap();
        assert_eq!(
            stats,
            QueueStats {
                queue: 3,
                portid: 12345,
                waiting: 2,
                copy_mode: 2,
                copy_range: 65531,
                queue_dropped: 7,
                user_dropped: 1,
                last_id: 99,
            }
        );
        assert_eq!(QueueStats::parse_line("garbage"), None);
        assert_eq!(QueueStats::parse_line("1 2 3"), None);
    }
}
