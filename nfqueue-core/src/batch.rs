//! Several verdicts in one `sendmsg`: the kernel handles each netlink message of
//! a datagram in turn, so one system call can settle many packets.

use crate::binding::{Binding, PacketKey};
use crate::error::{Error, Result};
use crate::handle::VerdictHandle;
use crate::retry;
use crate::stats::Counters;
use crate::verdict::{self, EncodedHeader, Verdict, VerdictKind};
use std::io::IoSlice;

/// Most iovecs handed to one `sendmsg` (the kernel's limit, UIO_MAXIOV, is 1024).
const MAX_IOVECS: usize = 192;
/// Most bytes put in one datagram: well under the socket's default send buffer.
const MAX_DATAGRAM: usize = 64 * 1024;

/// One queued message: its encoded header, and the payload that follows it.
#[derive(Debug)]
struct Entry {
    key: PacketKey,
    header: EncodedHeader,
    payload: Option<Vec<u8>>,
    /// A batch verdict: it settles every waiting packet of its queue up to `id`.
    batch: bool,
}

impl Entry {
    /// The pieces of this message, in order (up to four).
    fn parts(&self) -> ([&[u8]; 4], usize) {
        self.header.parts(self.payload.as_deref())
    }

    /// Bytes and iovecs this message takes in a datagram.
    fn size(&self) -> (usize, usize) {
        let (parts, used) = self.parts();
        (parts[..used].iter().map(|p| p.len()).sum(), used)
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
/// let first = queue.recv()?.detach().key();
/// let second = queue.recv()?.detach().key();
/// batch.push(second, Verdict::drop())?;
/// batch.push_up_to(first, VerdictKind::Accept, None)?;
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

    /// Adds a verdict for the packet `key` names.
    ///
    /// # Errors
    /// [`Error::PayloadTooLarge`](crate::Error::PayloadTooLarge) or
    /// [`Error::EmptyPayload`](crate::Error::EmptyPayload); nothing is added.
    pub fn push(&mut self, key: PacketKey, verdict: Verdict<'_>) -> Result<()> {
        let header = verdict::encode(key.queue(), key.id(), &verdict, false)?;
        let payload = verdict.into_owned().take_payload();
        self.entries.push(Entry {
            key,
            header,
            payload,
            batch: false,
        });
        Ok(())
    }

    /// Adds a batch verdict: `kind` and, optionally, `mark` for every packet of
    /// the queue and binding of `last` with an id up to and including
    /// `last`'s that is still waiting.
    ///
    /// # Errors
    /// None in practice; the signature matches [`push`](Self::push).
    pub fn push_up_to(
        &mut self,
        last: PacketKey,
        kind: VerdictKind,
        mark: Option<u32>,
    ) -> Result<()> {
        let header = verdict::encode_batch(last.queue(), last.id(), kind, mark)?;
        self.entries.push(Entry {
            key: last,
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
    /// use nfqueue_core::{Binding, Verdict, VerdictBatch};
    ///
    /// # let key = nfqueue_core::Binding::detached(0).packet(1);
    /// let mut batch = VerdictBatch::new();
    /// batch.push(key, Verdict::accept().with_mark(7))?;
    /// let bytes = batch.to_bytes();
    /// // nlmsghdr, nfgenmsg, verdict header attribute and mark attribute.
    /// assert_eq!(bytes.len(), 16 + 4 + 12 + 8);
    /// assert_eq!(u32::from_ne_bytes(bytes[..4].try_into().unwrap()), 40);
    /// # Ok::<(), nfqueue_core::Error>(())
    /// ```
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for entry in &self.entries {
            let (parts, used) = entry.parts();
            parts[..used]
                .iter()
                .for_each(|part| out.extend_from_slice(part));
        }
        out
    }
}

impl VerdictBatch {
    /// The sending plan of [`VerdictHandle::send_all`], over `holds` (whether
    /// a binding is current), `send` (one datagram of messages) and
    /// `drop_instead` (a plain drop for the packet of a message too large to
    /// send).
    fn send_with(
        &mut self,
        holds: impl Fn(Binding) -> bool,
        mut send: impl FnMut(&[Entry]) -> Result<()>,
        mut drop_instead: impl FnMut(&Entry) -> Result<()>,
    ) -> Result<usize> {
        let mut stale = None;
        self.entries.retain(|entry| {
            let current = holds(entry.key.binding());
            if !current && stale.is_none() {
                stale = Some(entry.key);
            }
            current
        });
        let mut calls = 0;
        let mut start = 0;
        while start < self.entries.len() {
            let end = datagram_end(&self.entries, start);
            calls += 1;
            let sent = match send(&self.entries[start..end]) {
                Err(err) if retry::is_too_large(&err) => {
                    // Too large as one datagram: the messages one by one, and
                    // a drop for one too large even alone.
                    (start..end).try_for_each(|at| {
                        let entry = &self.entries[at];
                        calls += 1;
                        let sent = match send(std::slice::from_ref(entry)) {
                            Err(err) if retry::is_too_large(&err) => {
                                calls += 1;
                                drop_instead(entry)
                            }
                            other => other,
                        };
                        // The messages before it went: only the rest stays.
                        sent.map_err(|err| (at, err))
                    })
                }
                other => other.map_err(|err| (start, err)),
            };
            if let Err((at, err)) = sent {
                // Nothing behind a failure goes: the verdicts of one flow keep
                // their order, and a batch verdict never settles a packet
                // whose own verdict is still unsent.
                self.entries.drain(..at);
                return Err(err);
            }
            start = end;
        }
        self.entries.clear();
        match stale {
            None => Ok(calls),
            Some(key) => Err(Error::StaleBinding {
                queue: key.queue(),
                packet_id: key.id(),
            }),
        }
    }
}

impl VerdictHandle {
    /// Sends every message of `batch`, in order, as few datagrams as fit
    /// (usually one). Returns the number of `sendmsg` calls made.
    ///
    /// A message for a packet whose binding has ended (see
    /// [`verdict`](Self::verdict)) is removed unsent and counted in
    /// [`Stats::stale_verdicts`](crate::Stats::stale_verdicts). A send that
    /// fails for want of kernel memory is tried again a few times. A datagram
    /// too large for the socket's send buffer (`EMSGSIZE`) goes as one
    /// message per datagram, and a message too large even alone (a long
    /// payload) is replaced by a plain drop of its packet (counted in
    /// [`Stats::fallback_drops`](crate::Stats::fallback_drops)). Any other
    /// failure stops the send: that message and every one behind it stay in
    /// `batch`, in order, to be sent again, so that verdicts never overtake
    /// one another (a flow's packets leave in the order of their verdicts,
    /// and a batch verdict never settles a packet whose own verdict failed).
    ///
    /// # Errors
    /// The [`Error::Sys`](crate::Error::Sys) that stopped the send, with the
    /// messages not sent left in `batch`. Otherwise, when messages were
    /// refused for their binding, [`Error::StaleBinding`](crate::Error::StaleBinding)
    /// for the first of them, the rest having been sent. A message the kernel
    /// refuses (e.g. an unknown id) is reported later by the receive call, as
    /// for single verdicts; the others still apply.
    pub fn send_all(&self, batch: &mut VerdictBatch) -> Result<usize> {
        let current = self.shared.current();
        batch.send_with(
            |binding| {
                let holds = current.holds(binding);
                if !holds {
                    Counters::bump(&self.shared.counters.stale_verdicts);
                }
                holds
            },
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
            let (parts, n) = entry.parts();
            for part in &parts[..n] {
                iov[used] = IoSlice::new(part);
                used += 1;
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
            header: verdict::encode(entry.key.queue(), entry.key.id(), &Verdict::drop(), false)?,
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
    use std::io;

    fn sys(errno: i32) -> Error {
        Error::Sys {
            op: "sendmsg",
            source: io::Error::from_raw_os_error(errno),
        }
    }

    /// Packet `id` of queue `queue`, through binding `binding`.
    fn key(binding: Binding, id: u32) -> PacketKey {
        binding.packet(id)
    }

    /// The packet ids of messages, `-id` for a batch verdict.
    fn ids(entries: &[Entry]) -> Vec<i64> {
        entries
            .iter()
            .map(|e| {
                let id = i64::from(e.key.id());
                if e.batch {
                    -id
                } else {
                    id
                }
            })
            .collect()
    }

    /// Sends `batch` over a socket that fails every datagram holding one of the
    /// `failing` ids with `errno`, with only `current` bindings current;
    /// returns the result, the datagrams sent and the fallback drops.
    fn send_bound(
        batch: &mut VerdictBatch,
        current: &[Binding],
        failing: &[u32],
        errno: i32,
    ) -> (Result<usize>, Vec<Vec<i64>>, Vec<u32>) {
        let mut sent = Vec::new();
        let mut drops = Vec::new();
        let result = batch.send_with(
            |binding| current.contains(&binding),
            |entries| {
                if entries.iter().any(|e| failing.contains(&e.key.id())) {
                    return Err(sys(errno));
                }
                sent.push(ids(entries));
                Ok(())
            },
            |entry| {
                drops.push(entry.key.id());
                Ok(())
            },
        );
        (result, sent, drops)
    }

    fn send(
        batch: &mut VerdictBatch,
        bound: Binding,
        failing: &[u32],
        errno: i32,
    ) -> (Result<usize>, Vec<Vec<i64>>, Vec<u32>) {
        send_bound(batch, &[bound], failing, errno)
    }

    #[test]
    fn a_batch_goes_out_in_one_datagram() {
        let q = Binding::new(0);
        let mut batch = VerdictBatch::new();
        batch.push(key(q, 1), Verdict::drop()).unwrap();
        batch
            .push_up_to(key(q, 3), VerdictKind::Accept, None)
            .unwrap();
        let (result, sent, _) = send(&mut batch, q, &[], 0);
        assert_eq!(result.unwrap(), 1);
        assert_eq!(sent, vec![vec![1, -3]]);
        assert!(batch.is_empty());
    }

    #[test]
    fn nothing_behind_a_failed_datagram_goes_and_the_order_is_kept() {
        let q = Binding::new(0);
        let mut batch = VerdictBatch::new();
        for id in 1..=4 {
            batch.push(key(q, id), Verdict::accept()).unwrap();
        }
        let (result, sent, drops) = send(&mut batch, q, &[1], libc::ENOBUFS);
        assert!(result.is_err());
        assert!(sent.is_empty(), "3 and 4 must not overtake 1 and 2");
        assert!(drops.is_empty());
        assert_eq!(ids(&batch.entries), vec![1, 2, 3, 4]);
        // Sent again once the socket works, in the same order.
        let (result, sent, _) = send(&mut batch, q, &[], 0);
        assert_eq!(result.unwrap(), 1);
        assert_eq!(sent, vec![vec![1, 2, 3, 4]]);
    }

    #[test]
    fn a_datagram_too_large_goes_message_by_message() {
        let q = Binding::new(0);
        let mut batch = VerdictBatch::new();
        batch.push(key(q, 1), Verdict::accept()).unwrap();
        batch
            .push(key(q, 2), Verdict::accept().with_payload(vec![0x45; 6000]))
            .unwrap();
        batch.push(key(q, 3), Verdict::accept()).unwrap();
        batch
            .push_up_to(key(q, 9), VerdictKind::Drop, None)
            .unwrap();
        let (result, sent, drops) = send(&mut batch, q, &[2], libc::EMSGSIZE);
        assert_eq!(
            result.unwrap(),
            6,
            "the datagram, 1 alone, 2 alone, its drop, 3 alone, 9 alone"
        );
        assert_eq!(sent, vec![vec![1], vec![3], vec![-9]]);
        assert_eq!(drops, vec![2], "never the original bytes");
        assert!(batch.is_empty());
    }

    #[test]
    fn a_failure_while_splitting_keeps_what_was_not_sent() {
        let q = Binding::new(0);
        let mut batch = VerdictBatch::new();
        batch.push(key(q, 1), Verdict::accept()).unwrap();
        batch
            .push(key(q, 2), Verdict::accept().with_payload(vec![0x45; 6000]))
            .unwrap();
        batch
            .push_up_to(key(q, 5), VerdictKind::Accept, None)
            .unwrap();
        let mut tries = 0;
        let result = batch.send_with(
            |_| true,
            |entries| {
                tries += 1;
                match tries {
                    // The datagram is too large; 1 goes alone; then 2 fails
                    // for want of memory.
                    1 => Err(sys(libc::EMSGSIZE)),
                    2 => Ok(()),
                    _ => {
                        assert_eq!(entries[0].key.id(), 2);
                        Err(sys(libc::ENOBUFS))
                    }
                }
            },
            |_| unreachable!("2 was not too large alone"),
        );
        assert!(result.is_err());
        assert_eq!(ids(&batch.entries), vec![2, -5]);
    }

    #[test]
    fn verdicts_of_an_ended_binding_are_refused_and_the_others_go() {
        let old = Binding::new(0);
        let new = Binding::new(0);
        let other = Binding::new(1);
        let mut batch = VerdictBatch::new();
        batch.push(key(old, 1), Verdict::accept()).unwrap();
        batch.push(key(new, 1), Verdict::drop()).unwrap();
        batch
            .push_up_to(key(old, 7), VerdictKind::Accept, None)
            .unwrap();
        batch.push(key(other, 1), Verdict::accept()).unwrap();
        let (result, sent, _) = send_bound(&mut batch, &[new, other], &[], 0);
        assert!(matches!(
            result,
            Err(Error::StaleBinding {
                queue: 0,
                packet_id: 1
            })
        ));
        assert_eq!(sent, vec![vec![1, 1]], "new's and other's, not old's");
        assert!(batch.is_empty(), "refused messages are not kept");
    }
}
