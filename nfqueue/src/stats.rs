//! Live statistics of a dispatcher.

use nfqueue_core::{QueueStats, VerdictKind};
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters of a running [`Dispatcher`](crate::Dispatcher), summed over its
/// queues and workers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DispatchStats {
    /// Packets received from the kernel.
    pub packets: u64,
    /// Packets handed to workers.
    pub dispatched: u64,
    /// Verdicts given: accept.
    pub accepted: u64,
    /// Verdicts given: drop.
    pub dropped: u64,
    /// Verdicts given: repeat.
    pub repeated: u64,
    /// Verdicts given: queue to another number.
    pub requeued: u64,
    /// Verdicts given: stop.
    pub stopped: u64,
    /// Verdicts that carried a replacement payload.
    pub payloads: u64,
    /// Packets that got the default verdict because their handler panicked.
    pub handler_panics: u64,
    /// Packets that got the default verdict because their handler returned a
    /// verdict the kernel cannot take (see
    /// [`Verdict::validate`](nfqueue_core::Verdict::validate): an empty payload or
    /// one over [`MAX_PAYLOAD`](nfqueue_core::MAX_PAYLOAD) bytes).
    pub invalid_verdicts: u64,
    /// Packets that got the default verdict at shutdown, unread by a worker.
    pub shutdown_defaults: u64,
    /// Batch verdict messages sent (each settles a run of packets).
    pub batch_messages: u64,
    /// Single verdict messages sent.
    pub single_messages: u64,
    /// `sendmsg` calls made for verdicts.
    pub send_calls: u64,
    /// `recv` calls made (including ones that found the socket empty).
    pub recv_calls: u64,
    /// Times a receive thread went to sleep in `poll`.
    pub polls: u64,
    /// Receive buffer overflows (`ENOBUFS`): the kernel dropped packets.
    pub receive_overflows: u64,
    /// Verdicts the kernel rejected, and malformed messages skipped.
    pub receive_errors: u64,
    /// Times a receive thread found every worker channel full and stopped
    /// reading until a worker caught up.
    pub backpressure_waits: u64,
}

impl DispatchStats {
    /// Verdict messages per packet: 1.0 without coalescing, lower with it.
    pub fn messages_per_packet(&self) -> f64 {
        let verdicts = self.accepted + self.dropped + self.repeated + self.requeued + self.stopped;
        if verdicts == 0 {
            return 0.0;
        }
        (self.batch_messages + self.single_messages) as f64 / verdicts as f64
    }
}

/// The kernel's counters for the dispatcher's queues.
pub type KernelStats = Vec<QueueStats>;

macro_rules! counters {
    ($($field:ident),* $(,)?) => {
        /// The atomics behind [`DispatchStats`].
        #[derive(Debug, Default)]
        pub(crate) struct Counters {
            $(pub(crate) $field: AtomicU64,)*
        }

        impl Counters {
            pub(crate) fn snapshot(&self) -> DispatchStats {
                DispatchStats { $($field: self.$field.load(Ordering::Relaxed),)* }
            }
        }

        impl DispatchStats {
            /// Every counter with its field name, in the order of the fields:
            /// for printing and for export (see [`prometheus`](crate::prometheus)).
            pub fn named(&self) -> impl Iterator<Item = (&'static str, u64)> {
                [$((stringify!($field), self.$field),)*].into_iter()
            }
        }
    };
}

counters!(
    packets,
    dispatched,
    accepted,
    dropped,
    repeated,
    requeued,
    stopped,
    payloads,
    handler_panics,
    invalid_verdicts,
    shutdown_defaults,
    batch_messages,
    single_messages,
    send_calls,
    recv_calls,
    polls,
    receive_overflows,
    receive_errors,
    backpressure_waits,
);

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
            VerdictKind::Stop => &self.stopped,
        };
        Self::add(counter, 1);
        if has_payload {
            Self::add(&self.payloads, 1);
        }
    }
}
