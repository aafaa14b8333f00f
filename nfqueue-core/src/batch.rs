//! Several verdicts in one `sendmsg`: the kernel handles each netlink message of
//! a datagram in turn, so one system call can settle many packets.

use crate::error::Result;
use crate::handle::VerdictHandle;
use crate::retry;
use crate::stats::Counters;
use crate::verdict::{self, EncodedHeader, Verdict, VerdictKind, PADDING};
use std::io::IoSlice;

/// Most iovecs handed to one `sendmsg` (the kernel's limit, UIO_MAXIOV, is 1024).
const MAX_IOVECS: usize = 192;
/// Most bytes put in one datagram: well under the socket's default send buffer.
const MAX_DATAGRAM: usize = 64 * 1024;

/// One queued message: its encoded header, and the payload that follows it.
#[derive(Debug)]
struct Entry {
    queue: u16,
    id: u32,
    header: EncodedHeader,
    payload: Option<Vec<u8>>,
    /// A batch verdict: it settles every waiting packet of its queue up to `id`.
    batch: bool,
}

impl Entry {
    /// Bytes and iovecs this message takes in a datagram.
    fn size(&self) -> (usize, usize) {
        match &self.payload {
            None => (self.header.as_bytes().len(), 1),
            Some(p) => (
                self.header.as_bytes().len() + p.len() + self.header.padding,
                3,
            ),
        }
    }
}

/// Verdict messages collected to be sent together with
/// [`VerdictHandle::send_all`]. Reuse one: its storage is kept between sends, so
/// verdicts without payload cost no allocation.
///
/// ```no_run
/// use nfqueue_core::{Queue, QueueConfig, Verdict, VerdictKind, VerdictBatch};
///
/// let mut queue = Queue::open()?;
/// queue.bind(0, &QueueConfig::default())?;
/// let handle = queue.verdict_handle();
/// let mut batch = VerdictBatch::new();
/// let first = queue.recv()?.detach().id();
/// let second = queue.recv()?.detach().id();
/// batch.push(0, second, Verdict::drop())?;
/// batch.push_up_to(0, first, VerdictKind::Accept, None)?;
/// handle.send_all(&mut batch)?; // one system call
/// # Ok::<(), nfqueue_core::Error>(())
/// ```
#[derive(Debug, Default)]
pub struct VerdictBatch {
    entries: Vec<Entry>,
}

impl VerdictBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty batch with room for `messages` messages before it grows.
    pub fn with_capacity(messages: usize) -> Self {
        VerdictBatch {
            entries: Vec::with_capacity(messages),
        }
    }

    /// Adds a verdict for packet `id` of queue `queue`.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge) or
    /// [`Error::EmptyPayload`](crate::Error::EmptyPayload); nothing is added.
    pub fn push(&mut self, queue: u16, id: u32, verdict: Verdict<'_>) -> Result<()> {
        let header = verdict::encode(queue, id, &verdict, false)?;
        let payload = verdict.into_owned().take_payload();
        self.entries.push(Entry {
            queue,
            id,
            header,
            payload,
            batch: false,
        });
        Ok(())
    }

    /// Adds a batch verdict: `kind` and, optionally, `mark` for every packet of
    /// queue `queue` with an id up to and including `id` that is still waiting.
    ///
    /// # Errors
    /// None in practice; the signature matches [`push`](Self::push).
    pub fn push_up_to(
        &mut self,
        queue: u16,
        id: u32,
        kind: VerdictKind,
        mark: Option<u32>,
    ) -> Result<()> {
        let header = verdict::encode_batch(queue, id, kind, mark)?;
        self.entries.push(Entry {
            queue,
            id,
            header,
            payload: None,
            batch: true,
        });
        Ok(())
    }

    /// Messages waiting to be sent.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Forgets every message without sending it.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// The netlink messages of the batch, one after another, as
    /// [`send_all`](VerdictHandle::send_all) writes them (it may split them over
    /// several datagrams, always between messages). For logging, tests and
    /// fuzzing: the kernel reads exactly these bytes.
    ///
    /// ```
    /// use nfqueue_core::{Verdict, VerdictBatch};
    ///
    /// let mut batch = VerdictBatch::new();
    /// batch.push(0, 1, Verdict::accept().with_mark(7))?;
    /// let bytes = batch.to_bytes();
    /// // nlmsghdr, nfgenmsg, verdict header attribute and mark attribute.
    /// assert_eq!(bytes.len(), 16 + 4 + 12 + 8);
    /// assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()), 40);
    /// # Ok::<(), nfqueue_core::Error>(())
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in &self.entries {
            out.extend_from_slice(entry.header.as_bytes());
            if let Some(payload) = &entry.payload {
                out.extend_from_slice(payload);
                out.extend_from_slice(&PADDING[..entry.header.padding]);
            }
        }
        out
    }
}

impl VerdictBatch {
    /// The sending plan of [`VerdictHandle::send_all`], over `send` (one
    /// datagram of messages) and `drop_instead` (a plain drop for the packet of
    /// a message too large to send).
    fn send_with(
        &mut self,
        mut send: impl FnMut(&[Entry]) -> Result<()>,
        mut drop_instead: impl FnMut(&Entry) -> Result<()>,
    ) -> Result<usize> {
        let mut calls = 0;
        let mut start = 0;
        let mut failure = None;
        while start < self.entries.len() {
            let end = datagram_end(&self.entries, start);
            calls += 1;
            match send(&self.entries[start..end]) {
                Ok(()) => start = end,
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        let Some(first_error) = failure else {
            self.entries.clear();
            return Ok(calls);
        };
        // What is left goes one message at a time; what fails keeps its order.
        let rest: Vec<Entry> = self.entries.drain(start..).collect();
        self.entries.clear();
        let mut stuck: Vec<u16> = Vec::new();
        for entry in rest {
            if entry.batch && stuck.contains(&entry.queue) {
                self.entries.push(entry);
                continue;
            }
            calls += 1;
            let sent = match send(std::slice::from_ref(&entry)) {
                Err(err) if entry.payload.is_some() && retry::is_too_large(&err) => {
                    calls += 1;
                    drop_instead(&entry)
                }
                other => other,
            };
            if sent.is_err() {
                stuck.push(entry.queue);
                self.entries.push(entry);
            }
        }
        if self.entries.is_empty() {
            Ok(calls)
        } else {
            Err(first_error)
        }
    }
}

impl VerdictHandle {
    /// Sends every message of `batch`, as few datagrams as fit (usually one).
    /// Returns the number of `sendmsg` calls made.
    ///
    /// A send that fails for want of kernel memory is tried again a few times.
    /// After a datagram fails for good, the messages from it on are sent one
    /// per datagram, so that one message the kernel cannot take does not hold
    /// up the others: a message with a payload too large for the socket's send
    /// buffer (`EMSGSIZE`) is replaced by a plain drop of its packet (counted in
    /// [`Stats::fallback_drops`](crate::Stats::fallback_drops)), and the
    /// messages that still fail stay in `batch`, in order, to be sent again.
    /// A batch verdict behind a message of its queue that failed stays too,
    /// unsent: it would settle that packet as well, with its own verdict.
    ///
    /// # Errors
    /// The first [`Error::Sys`](crate::Error::Sys) of a message left in `batch`; every other
    /// message was sent and removed. A message the kernel refuses (e.g. a
    /// stale id) is reported later by the receive call, as for single
    /// verdicts; the others still apply.
    pub fn send_all(&self, batch: &mut VerdictBatch) -> Result<usize> {
        batch.send_with(
            |entries| self.send_entries(entries),
            |entry| self.send_fallback_drop(entry),
        )
    }

    /// Sends `entries` in one datagram, counting them.
    fn send_entries(&self, entries: &[Entry]) -> Result<()> {
        let counters = &self.shared.counters;
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        let mut used = 0;
        for entry in entries {
            iov[used] = IoSlice::new(entry.header.as_bytes());
            used += 1;
            if let Some(payload) = &entry.payload {
                iov[used] = IoSlice::new(payload);
                iov[used + 1] = IoSlice::new(&PADDING[..entry.header.padding]);
                used += 2;
            }
        }
        let result = self.shared.send(&iov[..used]);
        match &result {
            Ok(()) => {
                for entry in entries {
                    Counters::bump(if entry.batch {
                        &counters.batch_verdicts
                    } else {
                        &counters.verdicts
                    });
                }
            }
            Err(_) => Counters::bump(&counters.failed_sends),
        }
        result
    }

    /// Drops the packet of `entry`, whose own message cannot be sent.
    fn send_fallback_drop(&self, entry: &Entry) -> Result<()> {
        let drop = Entry {
            header: verdict::encode(entry.queue, entry.id, &Verdict::drop(), false)?,
            payload: None,
            ..*entry
        };
        self.send_entries(std::slice::from_ref(&drop))?;
        Counters::bump(&self.shared.counters.fallback_drops);
        Ok(())
    }
}

/// Where the datagram that starts at `start` ends: as many messages as fit in
/// the iovec and size limits, and at least one.
fn datagram_end(entries: &[Entry], start: usize) -> usize {
    let (mut slots, mut bytes, mut end) = (0, 0, start);
    while let Some(entry) = entries.get(end) {
        let (size, iovecs) = entry.size();
        if end > start && (slots + iovecs > MAX_IOVECS || bytes + size > MAX_DATAGRAM) {
            break;
        }
        slots += iovecs;
        bytes += size;
        end += 1;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::io;

    fn sys(errno: i32) -> Error {
        Error::Sys {
            op: "sendmsg",
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// The packet ids of messages, `-id` for a batch verdict.
    fn ids(entries: &[Entry]) -> Vec<i64> {
        entries
            .iter()
            .map(|e| {
                if e.batch {
                    -i64::from(e.id)
                } else {
                    i64::from(e.id)
                }
            })
            .collect()
    }

    /// Sends `batch` over a socket that fails every datagram holding one of the
    /// `failing` ids with `errno`; returns the result, the datagrams sent and
    /// the fallback drops.
    fn send(
        batch: &mut VerdictBatch,
        failing: &[u32],
        errno: i32,
    ) -> (Result<usize>, Vec<Vec<i64>>, Vec<u32>) {
        let mut sent = Vec::new();
        let mut drops = Vec::new();
        let result = batch.send_with(
            |entries| {
                if entries.iter().any(|e| failing.contains(&e.id)) {
                    return Err(sys(errno));
                }
                sent.push(ids(entries));
                Ok(())
            },
            |entry| {
                drops.push(entry.id);
                Ok(())
            },
        );
        (result, sent, drops)
    }

    #[test]
    fn a_batch_goes_out_in_one_datagram() {
        let mut batch = VerdictBatch::new();
        batch.push(0, 1, Verdict::drop()).unwrap();
        batch.push_up_to(0, 3, VerdictKind::Accept, None).unwrap();
        let (result, sent, _) = send(&mut batch, &[], 0);
        assert_eq!(result.unwrap(), 1);
        assert_eq!(sent, vec![vec![1, -3]]);
        assert!(batch.is_empty());
    }

    #[test]
    fn after_a_failed_datagram_the_other_messages_still_go() {
        let mut batch = VerdictBatch::new();
        for id in 1..=4 {
            batch.push(0, id, Verdict::accept()).unwrap();
        }
        let (result, sent, drops) = send(&mut batch, &[2], libc::EBADF);
        assert!(result.is_err());
        assert_eq!(sent, vec![vec![1], vec![3], vec![4]]);
        assert!(drops.is_empty());
        assert_eq!(
            ids(&batch.entries),
            vec![2],
            "the failed one stays to be sent again"
        );
    }

    #[test]
    fn a_batch_verdict_never_passes_a_failed_message_of_its_queue() {
        let mut batch = VerdictBatch::new();
        batch.push(0, 5, Verdict::drop()).unwrap();
        batch.push(1, 6, Verdict::accept()).unwrap();
        batch.push_up_to(0, 9, VerdictKind::Accept, None).unwrap();
        batch.push_up_to(1, 9, VerdictKind::Accept, None).unwrap();
        batch.push(0, 10, Verdict::drop()).unwrap();
        let (result, sent, _) = send(&mut batch, &[5], libc::EBADF);
        assert!(result.is_err());
        // The batch verdict of queue 0 would accept packet 5, which was to be
        // dropped: it waits. Queue 1's and the verdict by id go.
        assert_eq!(sent, vec![vec![6], vec![-9], vec![10]]);
        assert_eq!(ids(&batch.entries), vec![5, -9]);
        assert_eq!(batch.entries[1].queue, 0);
        // Sent again once the socket works, in the same order.
        let (result, sent, _) = send(&mut batch, &[], 0);
        assert_eq!(result.unwrap(), 1);
        assert_eq!(sent, vec![vec![5, -9]]);
    }

    #[test]
    fn a_message_too_large_to_send_becomes_a_drop() {
        let mut batch = VerdictBatch::new();
        batch.push(0, 1, Verdict::accept()).unwrap();
        batch
            .push(0, 2, Verdict::accept().with_payload(vec![0x45; 6000]))
            .unwrap();
        batch.push(0, 3, Verdict::accept()).unwrap();
        let (result, sent, drops) = send(&mut batch, &[2], libc::EMSGSIZE);
        assert_eq!(result.unwrap(), 5, "the datagram, 3 alone, and the drop");
        assert_eq!(sent, vec![vec![1], vec![3]]);
        assert_eq!(drops, vec![2]);
        assert!(batch.is_empty());
    }
}
