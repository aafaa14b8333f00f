//! Flow affinity that keeps a flow's order without tying it to one worker for
//! good: a flow with packets in flight stays on the worker that has them, and
//! a flow with none goes to the least loaded worker. A stuck handler then
//! holds back only the flows with packets on its worker, and new flows go
//! around it.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A flow with packets in flight: where they are, and how many.
#[derive(Debug, Clone, Copy)]
struct Flow {
    worker: usize,
    in_flight: u32,
}

/// Which worker each flow with packets in flight is on, by the flow's 64-bit
/// hash (two flows with the same hash count as one: they then share a worker
/// while either has packets in flight), and how many packets each worker
/// holds.
#[derive(Debug)]
pub(crate) struct FlowTable {
    flows: HashMap<u64, Flow, BuildHasherDefault<Identity>>,
    load: Vec<usize>,
}

impl FlowTable {
    /// A table for `workers` workers, with room for `flows` flows in flight
    /// before it grows.
    pub(crate) fn new(workers: usize, flows: usize) -> Self {
        FlowTable {
            flows: HashMap::with_capacity_and_hasher(flows, BuildHasherDefault::default()),
            load: vec![0; workers],
        }
    }

    /// The worker for a new packet of flow `hash`: the one that has the
    /// flow's other packets in flight, or else the least loaded one (ties go
    /// to the first from `hash`, which spreads idle flows).
    pub(crate) fn assign(&mut self, hash: u64) -> usize {
        let load = &mut self.load;
        let flow = self.flows.entry(hash).or_insert_with(|| {
            let workers = load.len();
            let start = (hash % workers as u64) as usize;
            let worker = (0..workers)
                .map(|step| (start + step) % workers)
                .min_by_key(|&w| load[w])
                .unwrap_or(0);
            Flow {
                worker,
                in_flight: 0,
            }
        });
        flow.in_flight += 1;
        load[flow.worker] += 1;
        flow.worker
    }

    /// Records that a packet of flow `hash` got its verdict.
    pub(crate) fn finished(&mut self, hash: u64) {
        let Some(flow) = self.flows.get_mut(&hash) else {
            return;
        };
        self.load[flow.worker] -= 1;
        flow.in_flight -= 1;
        if flow.in_flight == 0 {
            self.flows.remove(&hash);
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

    #[test]
    fn a_flow_stays_on_its_worker_while_it_has_packets_in_flight() {
        let mut table = FlowTable::new(4, 8);
        let first = table.assign(7);
        assert_eq!(table.assign(7), first);
        table.finished(7);
        assert_eq!(table.assign(7), first, "one packet still in flight");
        table.finished(7);
        table.finished(7);
        assert_eq!(table.len(), 0);
    }

    #[test]
    fn new_flows_go_around_a_loaded_worker() {
        let mut table = FlowTable::new(2, 8);
        // Flow 0 starts on worker 0 and gets stuck there with 3 packets.
        for _ in 0..3 {
            assert_eq!(table.assign(0), 0);
        }
        // New flows go to worker 1, even those whose hash points at 0.
        for hash in [2, 4, 6] {
            assert_eq!(table.assign(hash), 1);
            table.finished(hash);
        }
        // Once flow 0 is done, worker 0 takes new flows again.
        for _ in 0..3 {
            table.finished(0);
        }
        assert_eq!(table.assign(4), 0);
    }

    #[test]
    fn a_verdict_for_an_unknown_flow_changes_nothing() {
        let mut table = FlowTable::new(3, 0);
        table.finished(99);
        assert_eq!(table.assign(99), 0);
    }
}
