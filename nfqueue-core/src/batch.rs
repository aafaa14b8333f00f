//! Several verdicts in one `sendmsg`: the kernel handles each netlink message of
//! a datagram in turn, so one system call can settle many packets.

use crate::error::Result;
use crate::handle::VerdictHandle;
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
    header: EncodedHeader,
    payload: Option<Vec<u8>>,
    batch: bool,
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

    /// Adds a verdict for packet `id` of queue `queue`.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge) or
    /// [`Error::EmptyPayload`](crate::Error::EmptyPayload); nothing is added.
    pub fn push(&mut self, queue: u16, id: u32, verdict: Verdict<'_>) -> Result<()> {
        let header = verdict::encode(queue, id, &verdict, false)?;
        let payload = verdict.into_owned().take_payload();
        self.entries.push(Entry {
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

impl VerdictHandle {
    /// Sends every message of `batch`, as few datagrams as fit (usually one), and
    /// empties it. Returns the number of `sendmsg` calls made.
    ///
    /// # Errors
    /// [`Error::Sys`](crate::Error::Sys) when a send fails; the batch is emptied
    /// all the same (the kernel may have taken some of its messages). A message
    /// the kernel refuses (e.g. a stale id) is reported later by the receive
    /// call, as for single verdicts; the others still apply.
    pub fn send_all(&self, batch: &mut VerdictBatch) -> Result<usize> {
        let counters = &self.shared.counters;
        let mut calls = 0;
        let mut result = Ok(());
        let mut iov = [IoSlice::new(&[]); MAX_IOVECS];
        let mut start = 0;
        while start < batch.entries.len() && result.is_ok() {
            let (mut used, mut bytes, mut end) = (0, 0, start);
            while let Some(entry) = batch.entries.get(end) {
                let payload = entry.payload.as_deref();
                let size = entry.header.as_bytes().len()
                    + payload.map_or(0, |p| p.len() + entry.header.padding);
                let slots = if payload.is_some() { 3 } else { 1 };
                if end > start && (used + slots > MAX_IOVECS || bytes + size > MAX_DATAGRAM) {
                    break;
                }
                iov[used] = IoSlice::new(entry.header.as_bytes());
                if let Some(payload) = payload {
                    iov[used + 1] = IoSlice::new(payload);
                    iov[used + 2] = IoSlice::new(&PADDING[..entry.header.padding]);
                }
                used += slots;
                bytes += size;
                end += 1;
            }
            result = self.shared.send(&iov[..used]);
            calls += 1;
            if result.is_ok() {
                for entry in &batch.entries[start..end] {
                    Counters::bump(if entry.batch {
                        &counters.batch_verdicts
                    } else {
                        &counters.verdicts
                    });
                }
            } else {
                Counters::bump(&counters.failed_sends);
            }
            start = end;
        }
        batch.entries.clear();
        result.map(|()| calls)
    }
}
