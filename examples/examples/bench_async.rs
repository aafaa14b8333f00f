//! Benchmark consumer on `nfqueue-core`'s `AsyncQueue`: receive in a tokio
//! runtime (one thread), accept, repeat, one verdict per packet, as
//! `bench_core` does synchronously. Prints its packet count and exits 0 on
//! SIGTERM/SIGINT.
//!
//! ```text
//! iptables -t mangle -A OUTPUT -p udp --dport 9 -j NFQUEUE --queue-num 0
//! bench_async [--gso] 0
//! ```

use clap::Parser;
use nfqueue_core::{AsyncQueue, Error, Queue, QueueConfig, QueueFlags};
use nfqueue_examples::stop_on_signals;

/// Benchmark consumer: accept every packet, one verdict each, with tokio.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The queue number to bind.
    queue: u16,
    /// Receive GSO super-packets whole.
    #[arg(long)]
    gso: bool,
}

/// The receive buffer every benchmark consumer asks for.
const RECV_BUFFER: usize = 8 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let flags = if args.gso {
        QueueFlags::GSO
    } else {
        QueueFlags::empty()
    };
    let mut queue = Queue::open()?;
    stop_on_signals(queue.stop_handle())?;
    queue.bind(args.queue, &QueueConfig::default().flags(flags))?;
    queue.set_recv_buffer_size(RECV_BUFFER)?;
    eprintln!("bench_async: bound queue {}", args.queue);

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (packets, queue) = runtime.block_on(async move {
        let mut queue = AsyncQueue::new(queue)?;
        let mut packets = 0u64;
        loop {
            match queue.recv().await {
                Ok(packet) => {
                    packets += 1;
                    if let Err(err) = packet.accept() {
                        eprintln!("accept failed: {err}");
                    }
                }
                // The signal thread stopped the queue: its stop wakes recv.
                Err(Error::Stopped) => break,
                Err(err) if err.is_recoverable() => {}
                Err(err) => return Err(err),
            }
        }
        Ok::<_, Error>((packets, queue.into_inner()))
    })?;
    println!("{packets}");
    eprintln!("bench_async: {:?}", queue.stats());
    Ok(())
}
