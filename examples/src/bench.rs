//! What the benchmark consumers share, so that they compete on equal terms:
//! their command line, the receive buffer and, for the `nfqueue-core` ones,
//! how the queue is set up.

use nfqueue_core::{Queue, QueueConfig, QueueFlags};
use std::error::Error;

/// The receive buffer every benchmark consumer asks for: the dispatcher's
/// default, which the C consumers (`bench/*.c`) ask for too.
pub const RECV_BUFFER: usize = nfqueue::DEFAULT_RECV_BUFFER;

/// The arguments of a one-queue benchmark consumer.
#[derive(Debug, clap::Args)]
pub struct QueueArgs {
    /// The queue number to bind.
    pub queue: u16,
    /// Receive GSO super-packets whole.
    #[arg(long)]
    pub gso: bool,
}

/// The queue flags a benchmark consumer binds with.
pub fn flags(gso: bool) -> QueueFlags {
    if gso {
        QueueFlags::GSO
    } else {
        QueueFlags::empty()
    }
}

/// Opens a queue that SIGINT/SIGTERM stop, binds `args.queue` with
/// [`RECV_BUFFER`], and says so on stderr as `name`.
///
/// # Errors
/// When the socket cannot be opened, bound or configured.
pub fn bind(name: &str, args: &QueueArgs) -> Result<Queue, Box<dyn Error>> {
    let mut queue = Queue::open()?;
    crate::stop_on_signals(queue.stop_handle())?;
    queue.bind(args.queue, &QueueConfig::default().flags(flags(args.gso)))?;
    queue.set_recv_buffer_size(RECV_BUFFER)?;
    eprintln!("{name}: bound queue {}", args.queue);
    Ok(queue)
}
