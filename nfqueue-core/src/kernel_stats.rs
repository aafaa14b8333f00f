//! The kernel's counters of the queues of one network namespace, read from any
//! thread, whichever namespace it is in.

use crate::error::{Error, Result};
use crate::netns;
use crate::stats::QueueStats;
use std::fs::File;
use std::os::fd::RawFd;
use std::path::Path;
use std::sync::Arc;

/// Reads `/proc/net/netfilter/nfnetlink_queue` of the network namespace a
/// queue socket was made in ([`Queue::kernel_stats_reader`](crate::Queue::kernel_stats_reader)),
/// from any thread: a thread elsewhere reads it through a short-lived thread
/// that enters the namespace (which needs CAP_SYS_ADMIN there). It holds the
/// namespace, not the socket, so it outlives the queue. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KernelStatsReader {
    netns: Arc<File>,
}

impl KernelStatsReader {
    /// The reader for the namespace of socket `fd`.
    pub(crate) fn of_socket(fd: RawFd) -> Result<Self> {
        let netns = netns::of_socket(fd).map_err(|source| Error::Sys {
            op: "ioctl(SIOCGSKNS)",
            source,
        })?;
        Ok(KernelStatsReader {
            netns: Arc::new(netns),
        })
    }

    /// Every queue bound in the namespace.
    ///
    /// # Errors
    /// When the file cannot be read (the nfnetlink_queue module is not loaded
    /// until a queue is first bound; a user namespace cannot read it for a
    /// network namespace it does not own), or the namespace cannot be entered.
    pub fn read_all(&self) -> Result<Vec<QueueStats>> {
        let read = || {
            QueueStats::read_all().map_err(|source| Error::Sys {
                op: "reading /proc/net/netfilter/nfnetlink_queue",
                source,
            })
        };
        let here = netns::is_current(&self.netns).map_err(|source| Error::Sys {
            op: "comparing network namespaces",
            source,
        })?;
        if here {
            read()
        } else {
            netns::run_in(
                &self.netns,
                Path::new("the socket's network namespace"),
                read,
            )
        }
    }

    /// The line of `queue`; `None` when nobody binds it.
    ///
    /// # Errors
    /// As [`read_all`](Self::read_all).
    pub fn read(&self, queue: u16) -> Result<Option<QueueStats>> {
        Ok(self.read_all()?.into_iter().find(|s| s.queue == queue))
    }
}
