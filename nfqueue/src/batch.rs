//! The unit handed between a receive thread and a worker: the packets of one
//! burst that go to one worker, and on the way back their verdicts. One
//! channel message each way per burst and worker, not per packet; the receive
//! thread reuses batches, so a steady flow allocates nothing.

use nfqueue_core::{Binding, Verdict};

/// Where one packet of a batch lies in its bytes, and its flow.
#[derive(Debug, Clone, Copy)]
struct Entry {
    id: u32,
    start: usize,
    end: usize,
    /// The flow's hash, under flow affinity (else 0).
    flow: u64,
}

/// Packets of one queue, their attribute bytes one after another (one copy
/// each, into a buffer the batch keeps), and the verdicts a worker gave them.
#[derive(Debug)]
pub(crate) struct Batch {
    /// Index of the receive thread (queue) it came from.
    pub(crate) slot: usize,
    /// The binding its packets came through.
    pub(crate) binding: Option<Binding>,
    /// The index of the channel it went out on.
    pub(crate) channel: usize,
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
            channel: 0,
            entries: Vec::with_capacity(packets),
            bytes: Vec::with_capacity(packets * bytes_each),
            verdicts: Vec::with_capacity(packets),
        }
    }

    /// Adds packet `id` of flow `flow` with its attribute bytes.
    pub(crate) fn push(&mut self, id: u32, flow: u64, attrs: &[u8]) {
        let start = self.bytes.len();
        self.bytes.extend_from_slice(attrs);
        self.entries.push(Entry {
            id,
            start,
            end: self.bytes.len(),
            flow,
        });
    }

    /// Each packet's id and flow hash, in order.
    pub(crate) fn flows(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.entries.iter().map(|e| (e.id, e.flow))
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
        batch.push(10, 1, b"first");
        batch.push(11, 2, b"");
        batch.push(12, 1, b"third");
        assert_eq!(
            batch.flows().collect::<Vec<_>>(),
            [(10, 1), (11, 2), (12, 1)]
        );
        let packets: Vec<(u32, &[u8])> = batch.packets().collect();
        assert_eq!(
            packets,
            [(10, &b"first"[..]), (11, &b""[..]), (12, &b"third"[..])]
        );
        assert_eq!(batch.len(), 3);
        let capacity = batch.bytes.capacity();
        batch.clear();
        assert_eq!(batch.len(), 0);
        assert_eq!(batch.bytes.capacity(), capacity);
    }
}
