//! Live statistics of a dispatcher.

use nfqueue_core::{QueueStats, VerdictKind};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

nfqueue_core::counter_set! {
    /// Counters of a running [`Dispatcher`](crate::Dispatcher): of one queue
    /// ([`Dispatcher::stats_by_queue`](crate::Dispatcher::stats_by_queue)), or
    /// summed over its queues ([`Dispatcher::stats`](crate::Dispatcher::stats)).
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    #[non_exhaustive]
    pub struct DispatchStats;
    /// The atomics behind [`DispatchStats`].
    pub(crate) struct Counters;
    /// Packets received from the kernel.
    packets,
    /// Packets handed to workers.
    dispatched,
    /// Verdicts given: accept.
    accepted,
    /// Verdicts given: drop.
    dropped,
    /// Verdicts given: repeat.
    repeated,
    /// Verdicts given: queue to another number.
    requeued,
    /// Verdicts given: accept final (`NF_STOP`).
    accepted_final,
    /// Verdicts that carried a replacement payload.
    payloads,
    /// Packets whose handler panicked; they got the
    /// [`on_panic`](crate::DispatcherBuilder::on_panic) verdict (counted under
    /// its kind too).
    handler_panics,
    /// Packets dropped because their handler returned a verdict the kernel
    /// cannot take (see
    /// [`Verdict::validate`](nfqueue_core::Verdict::validate): an empty payload or
    /// one over [`MAX_PAYLOAD`](nfqueue_core::MAX_PAYLOAD) bytes); counted
    /// under `dropped` too.
    invalid_verdicts,
    /// Packets dropped because the kernel would not take their verdict's
    /// message from the socket (a payload over the socket's send buffer);
    /// counted under the verdict the handler gave too.
    fallback_drops,
    /// Packets that waited for their handler longer than the deadline
    /// ([`QueueConfig::deadline`](nfqueue_core::QueueConfig::deadline)) and
    /// got the deadline verdict (counted under its kind too).
    deadline_verdicts,
    /// Verdicts handlers gave after the deadline had given theirs: not sent.
    late_verdicts,
    /// Packets read while stopping, which got the queue's unanswered verdict
    /// ([`QueueConfig::unanswered`](nfqueue_core::QueueConfig::unanswered))
    /// and no handler.
    shutdown_unanswered,
    /// Batch verdict messages sent (each settles a run of packets).
    batch_messages,
    /// Single verdict messages sent.
    single_messages,
    /// `sendmsg` calls made for verdicts (retries included).
    send_calls,
    /// `sendmsg` calls that failed after their retries; their verdicts stayed
    /// to be sent again.
    failed_sends,
    /// `sendmsg` calls tried again after the kernel was short of memory.
    send_retries,
    /// `recv` calls made (including ones that found the socket empty).
    recv_calls,
    /// Times a receive thread went to sleep in `poll`.
    polls,
    /// Receive buffer overflows (`ENOBUFS`): the kernel dropped packets.
    receive_overflows,
    /// Verdicts the kernel rejected, and malformed messages skipped.
    receive_errors,
    /// Times a receive thread found every worker channel full and stopped
    /// reading until a worker caught up.
    backpressure_waits,
}

impl DispatchStats {
    /// Verdict messages per packet: 1.0 without coalescing, lower with it.
    pub fn messages_per_packet(&self) -> f64 {
        let verdicts =
            self.accepted + self.dropped + self.repeated + self.requeued + self.accepted_final;
        if verdicts == 0 {
            return 0.0;
        }
        (self.batch_messages + self.single_messages) as f64 / verdicts as f64
    }
}

/// The kernel's counters for the dispatcher's queues.
pub type KernelStats = Vec<QueueStats>;

/// The counters of every queue of a dispatcher, one set per receive thread:
/// what a queue's thread and the workers do for its packets is counted there.
#[derive(Debug)]
pub(crate) struct QueueCounters {
    numbers: Box<[u16]>,
    each: Box<[Counters]>,
}

impl QueueCounters {
    pub(crate) fn new(numbers: &[u16]) -> Arc<Self> {
        Arc::new(QueueCounters {
            numbers: numbers.into(),
            each: numbers.iter().map(|_| Counters::default()).collect(),
        })
    }

    /// The counters of the queue of receive thread `slot`.
    pub(crate) fn slot(&self, slot: usize) -> &Counters {
        &self.each[slot]
    }

    /// The sums over every queue.
    pub(crate) fn total(&self) -> DispatchStats {
        let mut total = DispatchStats::default();
        for counters in self.each.iter() {
            total += counters.snapshot();
        }
        total
    }

    /// Each queue's counters, by queue number, in the order the queues were
    /// added to the builder.
    pub(crate) fn by_queue(&self) -> Vec<(u16, DispatchStats)> {
        self.numbers
            .iter()
            .zip(self.each.iter())
            .map(|(&queue, counters)| (queue, counters.snapshot()))
            .collect()
    }
}

/// One queue's counters, shared with the dispatcher's other queues.
#[derive(Debug, Clone)]
pub(crate) struct SlotCounters {
    all: Arc<QueueCounters>,
    slot: usize,
}

impl SlotCounters {
    pub(crate) fn new(all: &Arc<QueueCounters>, slot: usize) -> Self {
        SlotCounters {
            all: Arc::clone(all),
            slot,
        }
    }
}

impl std::ops::Deref for SlotCounters {
    type Target = Counters;

    fn deref(&self) -> &Counters {
        self.all.slot(self.slot)
    }
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Counts one verdict by its kind.
    pub(crate) fn verdict(&self, kind: VerdictKind, has_payload: bool) {
        let counter = match kind {
            VerdictKind::Accept => &self.accepted,
            VerdictKind::Drop => &self.dropped,
            VerdictKind::Repeat => &self.repeated,
            VerdictKind::Queue { .. } => &self.requeued,
            VerdictKind::AcceptFinal => &self.accepted_final,
        };
        Self::add(counter, 1);
        if has_payload {
            Self::add(&self.payloads, 1);
        }
    }
}
