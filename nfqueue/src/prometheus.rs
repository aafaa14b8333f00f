//! The dispatcher's counters in the Prometheus text format: an addition to
//! [`nfqueue_core::prometheus`], which this module re-exports.
//!
//! ```
//! use nfqueue::prometheus::Exposition;
//! use nfqueue::DispatchStats;
//!
//! let stats = DispatchStats::default(); // dispatcher.stats() in a real program
//! let text = Exposition::new().add(&stats).to_string();
//! assert!(text.contains("nfqueue_dispatcher_packets_total 0\n"));
//! ```
//!
//! Every field of [`DispatchStats`] becomes the counter
//! `nfqueue_dispatcher_<field>_total`; add each queue's counters
//! ([`Dispatcher::stats_by_queue`](crate::Dispatcher::stats_by_queue)) with
//! [`Exposition::add_labeled`] and a `queue` label, as the `firewall` example
//! does, and the kernel's lines ([`Dispatcher::kernel_stats`](crate::Dispatcher::kernel_stats))
//! for `nfqueue_kernel_*{queue="N"}`.

pub use nfqueue_core::prometheus::*;

use crate::stats::DispatchStats;

impl Metrics for DispatchStats {
    fn write_metrics(&self, out: &mut Exposition) {
        for (field, value) in self.named() {
            let help = help_text(DispatchStats::describe(field).unwrap_or_default());
            out.counter(
                &format!("nfqueue_dispatcher_{field}_total"),
                &help,
                &[],
                value,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_exported_once() {
        let stats = DispatchStats {
            packets: 7,
            accepted: 5,
            ..DispatchStats::default()
        };
        let text = Exposition::new().add(&stats).to_string();
        assert!(text.contains("\nnfqueue_dispatcher_packets_total 7\n"));
        assert!(text.contains("\nnfqueue_dispatcher_accepted_total 5\n"));
        let fields = stats.named().count();
        assert_eq!(text.matches("# TYPE ").count(), fields);
        assert_eq!(text.matches(" counter\n").count(), fields);
    }
}
