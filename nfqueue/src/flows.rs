//! Flow affinity as an ordered work queue: a flow has at most one batch with
//! the workers at a time, and its packets read meanwhile wait here, in one
//! batch, for that one to come back. Any free worker takes the next batch, so
//! a flow's packets keep their order, and a stuck handler holds back its own
//! flow and no other: no flow waits behind another's packets on a worker.

use crate::batch::Batch;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A flow with packets in flight.
#[derive(Debug, Default)]
struct Flow {
    /// Packets read and not answered: out with a worker, or pending.
    in_flight: usize,
    /// Whether a batch of the flow is with the workers.
    out: bool,
    /// Packets read while a batch is out, or this round, not sent yet.
    pending: Option<Batch>,
}

/// The flows with packets in flight, by the flow's 64-bit hash (two flows
/// with the same hash count as one: they then keep their order together).
#[derive(Debug)]
pub(crate) struct FlowQueue {
    flows: HashMap<u64, Flow, BuildHasherDefault<Identity>>,
    /// Flows that got packets this round while none of their batches was out.
    ready: Vec<u64>,
}

impl FlowQueue {
    /// A queue with room for `flows` flows in flight before it grows.
    pub(crate) fn new(flows: usize) -> Self {
        FlowQueue {
            flows: HashMap::with_capacity_and_hasher(flows, BuildHasherDefault::default()),
            ready: Vec::with_capacity(flows.min(1024)),
        }
    }

    /// The batch that packets of flow `hash` read now go into (made by
    /// `make` when the flow has none pending).
    pub(crate) fn batch_for(&mut self, hash: u64, make: impl FnOnce() -> Batch) -> &mut Batch {
        let flow = self.flows.entry(hash).or_default();
        flow.in_flight += 1;
        if flow.pending.is_none() && !flow.out {
            self.ready.push(hash);
        }
        flow.pending.get_or_insert_with(|| {
            let mut batch = make();
            batch.flow = Some(hash);
            batch
        })
    }

    /// Takes the batches that can go to the workers now: those of flows that
    /// got packets this round and have no batch out. Each is counted as out.
    pub(crate) fn take_ready(&mut self, mut send: impl FnMut(Batch)) {
        for hash in self.ready.drain(..) {
            let Some(flow) = self.flows.get_mut(&hash) else {
                continue;
            };
            if let Some(batch) = flow.pending.take() {
                flow.out = true;
                send(batch);
            }
        }
    }

    /// Records that the batch of flow `hash` with `packets` packets came back
    /// with their verdicts; returns the flow's next batch, if packets wait,
    /// which is then counted as out.
    pub(crate) fn returned(&mut self, hash: u64, packets: usize) -> Option<Batch> {
        let flow = self.flows.get_mut(&hash)?;
        flow.in_flight -= packets;
        flow.out = false;
        match flow.pending.take() {
            Some(next) => {
                flow.out = true;
                Some(next)
            }
            None => {
                if flow.in_flight == 0 {
                    self.flows.remove(&hash);
                }
                None
            }
        }
    }

    /// Flows with packets in flight.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.flows.len()
    }
}

/// The hasher of a key that is a hash already.
#[derive(Debug, Default)]
pub(crate) struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(queue: &mut FlowQueue, hash: u64, id: u32) {
        queue
            .batch_for(hash, || Batch::with_room(4, 16))
            .push(id, b"");
    }

    fn ids(batch: &Batch) -> Vec<u32> {
        batch.packets().map(|(id, _)| id).collect()
    }

    #[test]
    fn a_flow_has_one_batch_out_and_the_next_waits_for_it() {
        let mut queue = FlowQueue::new(8);
        read(&mut queue, 7, 1);
        read(&mut queue, 7, 2);
        let mut sent = Vec::new();
        queue.take_ready(|batch| sent.push(batch));
        assert_eq!(sent.len(), 1);
        assert_eq!(ids(&sent[0]), [1, 2]);
        // More of flow 7 while its batch is out: they wait.
        read(&mut queue, 7, 3);
        read(&mut queue, 7, 4);
        queue.take_ready(|batch| sent.push(batch));
        assert_eq!(sent.len(), 1, "nothing more went");
        let next = queue.returned(7, 2).expect("the waiting packets go next");
        assert_eq!(ids(&next), [3, 4]);
        assert!(queue.returned(7, 2).is_none());
        assert_eq!(queue.len(), 0);
    }

    #[test]
    fn other_flows_go_while_one_has_a_batch_out() {
        let mut queue = FlowQueue::new(8);
        read(&mut queue, 1, 1);
        let mut sent = Vec::new();
        queue.take_ready(|batch| sent.push(batch));
        // Flow 1 is stuck with a worker; flows 2 and 3 go on.
        for id in 2..10 {
            read(&mut queue, 2 + u64::from(id % 2), id);
            queue.take_ready(|batch| sent.push(batch));
            let back = sent.pop().unwrap();
            assert_eq!(back.flow, Some(2 + u64::from(id % 2)));
            assert!(queue.returned(back.flow.unwrap(), 1).is_none());
        }
        assert_eq!(sent.len(), 1, "flow 1's batch is still out");
        assert_eq!(queue.len(), 1);
    }
}
