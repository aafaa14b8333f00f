//! How a receive thread hands its packets to the workers: in batches, on its
//! queue's one channel, which every worker reads, so that any free worker
//! takes the next batch and no packet waits behind a busy worker while
//! another is free.
//!
//! Without flow affinity, each burst is spread over as many batches as there
//! are workers. With it, a batch holds the packets of one flow, and a flow has
//! one batch out at a time ([`FlowQueue`]): its packets keep their order, and
//! a stuck handler holds back only its own flow.
//!
//! A batch that does not fit the channel waits in a list here and goes as
//! soon as there is room: reading is held back by `max_in_flight` alone.
//! Without flow affinity, once a batch waits for each worker, the packets of
//! later bursts join the last one, so that a backlog is a few batches that
//! grow to its size once, not one more batch per burst.

use crate::batch::Batch;
use crate::flows::FlowQueue;
use crossbeam_channel::{Sender, TrySendError};
use nfqueue_core::net::{self, FlowKey};
use nfqueue_core::PacketView;
use std::collections::VecDeque;

/// How the packets of a burst are put into batches.
#[derive(Debug)]
enum Mode {
    /// Round robin over up to `batches` batches per burst.
    Spread {
        batches: usize,
        filling: Vec<Batch>,
        /// Packets of this burst so far.
        count: usize,
    },
    /// One batch per flow, one batch of a flow out at a time.
    ByFlow { key: FlowKey, flows: FlowQueue },
}

/// A queue's way to its workers.
#[derive(Debug)]
pub(crate) struct Handout {
    sender: Sender<Batch>,
    /// Batches ready to go, waiting for room in the channel.
    waiting: VecDeque<Batch>,
    mode: Mode,
}

impl Handout {
    /// A hand-out over `sender`, to `workers` workers, with flow affinity by
    /// `key` if given; `room` is the number of flows and batches to make room
    /// for before the tables grow.
    pub(crate) fn new(
        sender: Sender<Batch>,
        workers: usize,
        key: Option<FlowKey>,
        room: usize,
    ) -> Self {
        let mode = match key {
            None => Mode::Spread {
                batches: workers.max(1),
                filling: Vec::with_capacity(workers),
                count: 0,
            },
            Some(key) => Mode::ByFlow {
                key,
                flows: FlowQueue::new(room),
            },
        };
        Handout {
            sender,
            waiting: VecDeque::with_capacity(room.min(1024)),
            mode,
        }
    }

    /// The batch that `view`, read now, goes into; `make` gives an empty one.
    pub(crate) fn batch_for(
        &mut self,
        view: &PacketView<'_>,
        make: impl FnOnce() -> Batch,
    ) -> &mut Batch {
        match &mut self.mode {
            Mode::Spread {
                batches,
                filling,
                count,
            } => {
                let at = *count % *batches;
                *count += 1;
                if filling.len() <= at {
                    filling.push(make());
                }
                &mut filling[at]
            }
            Mode::ByFlow { key, flows } => {
                // Non-IP or unparsable packets all count as one flow.
                let hash = net::parse(view.payload()).map_or(0, |ip| ip.flow().hash_by(*key));
                flows.batch_for(hash, make)
            }
        }
    }

    /// Sends what this burst filled, as far as it may go now; a batch that
    /// cannot go (every worker gone, which only a bug could cause) is passed
    /// to `lost`, and one emptied into another to `recycle`. Returns the
    /// packets sent.
    pub(crate) fn end_burst(
        &mut self,
        lost: impl FnMut(Batch),
        mut recycle: impl FnMut(Batch),
    ) -> usize {
        let Handout {
            sender,
            waiting,
            mode,
        } = self;
        match mode {
            Mode::Spread {
                batches,
                filling,
                count,
            } => {
                *count = 0;
                for mut batch in filling.drain(..) {
                    // One batch waiting per worker is enough to keep them all
                    // busy: more packets join the last one.
                    let full = waiting.len() >= *batches;
                    match waiting.back_mut() {
                        Some(last) if full => {
                            last.append(&mut batch);
                            recycle(batch);
                        }
                        _ => waiting.push_back(batch),
                    }
                }
            }
            Mode::ByFlow { flows, .. } => flows.take_ready(|batch| waiting.push_back(batch)),
        }
        send_waiting(sender, waiting, lost)
    }

    /// Records that `batch` came back with its verdicts (its storage is the
    /// caller's again), and sends what may go now.
    pub(crate) fn returned(&mut self, batch: &Batch, lost: impl FnMut(Batch)) -> usize {
        if let (Mode::ByFlow { flows, .. }, Some(hash)) = (&mut self.mode, batch.flow) {
            if let Some(next) = flows.returned(hash, batch.len()) {
                self.waiting.push_back(next);
            }
        }
        send_waiting(&self.sender, &mut self.waiting, lost)
    }
}

/// Sends the waiting batches, in order, while the channel has room; returns
/// the packets sent.
fn send_waiting(
    sender: &Sender<Batch>,
    waiting: &mut VecDeque<Batch>,
    mut lost: impl FnMut(Batch),
) -> usize {
    let mut sent = 0;
    while let Some(batch) = waiting.pop_front() {
        let packets = batch.len();
        match sender.try_send(batch) {
            Ok(()) => sent += packets,
            Err(TrySendError::Full(batch)) => {
                waiting.push_front(batch);
                break;
            }
            Err(TrySendError::Disconnected(batch)) => lost(batch),
        }
    }
    sent
}
