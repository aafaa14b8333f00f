//! The unit handed between a receive thread and a worker: the packets of one
//! burst that go to one worker, and on the way back their verdicts. One
//! channel message each way per burst and worker, not per packet; the receive
//! thread reuses batches, so a steady flow allocates nothing.

use nfqueue_core::{Binding, Verdict};

/// Where one packet of a batch lies in its bytes.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u32,
    start: usize,
    end: usize,
}

/// Packets of one queue, their attribute bytes one after another (one copy
/// each, into a buffer the batch keeps), and the verdicts a worker gave them.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Index of the receive thread (queue) it came from.
    pub(crate) slot: usize,
    /// The binding its packets came through.
    pub(crate) binding: Option<Binding>,
    /// Under flow affinity, the hash of the one flow of its packets.
    pub(crate) flow: Option<u64>,
    entries: Vec<Entry>,
    bytes: Vec<u8>,
    /// The verdicts, in the order of the packets; filled by the worker.
    pub(crate) verdicts: Vec<(u32, Verdict<'static>)>,
}

impl Batch {
    /// An empty batch with room for `packets` packets of `bytes_each` bytes
    /// of attributes, so that a full burst does not grow it.
    pub(crate) fn with_room(packets: usize, bytes_each: usize) -> Self {
        Batch {
            slot: 0,
            binding: None,
            flow: None,
            entries: Vec::with_capacity(packets),
            bytes: Vec::with_capacity(packets * bytes_each),
            verdicts: Vec::with_capacity(packets),
        }
    }

    /// Adds packet `id` with its attribute bytes.
    pub(crate) fn push(&mut self, id: u32, attrs: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(attrs);
        self.entries.push(Entry {
            id,
            start,
            end: self.bytes.len(),
        });
    }

    /// Moves the packets of `other` to the end of this batch (which must be
    /// of the same queue), leaving `other` empty.
    pub(crate) fn append(&mut self, other: &mut Batch) {
        let offset = self.bytes.len();
        self.bytes.extend_from_slice(&other.bytes);
        self.entries.extend(other.entries.iter().map(|e| Entry {
            id: e.id,
            start: e.start + offset,
            end: e.end + offset,
        }));
        other.clear();
    }

    /// Packets in the batch.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Each packet's id and attribute bytes, in order.
    pub(crate) fn packets(&self) -> impl Iterator<Item = (u32, &[u8])> {
        self.entries
            .iter()
            .map(|e| (e.id, &self.bytes[e.start..e.end]))
    }

    /// Empties the batch for reuse, keeping its storage.
    pub(crate) fn clear(&mut self) {
        self.flow = None;
        self.entries.clear();
        self.bytes.clear();
        self.verdicts.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_come_out_as_they_went_in_and_clear_keeps_the_storage() {
        let mut batch = Batch::with_room(0, 0);
        batch.push(10, b"first");
        batch.push(11, b"");
        batch.push(12, b"third");
        let packets: Vec<(u32, &[u8])> = batch.packets().collect();
        assert_eq!(
            packets,
            [(10, &b"first"[..]), (11, &b""[..]), (12, &b"third"[..])]
        );
        assert_eq!(batch.len(), 3);
        let mut more = Batch::with_room(0, 0);
        more.push(13, b"fourth");
        batch.append(&mut more);
        assert_eq!(more.len(), 0);
        assert_eq!(batch.packets().last(), Some((13, &b"fourth"[..])));
        let capacity = batch.bytes.capacity();
        batch.clear();
        assert_eq!(batch.len(), 0);
        assert_eq!(batch.bytes.capacity(), capacity);
    }
}
