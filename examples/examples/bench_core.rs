//! Benchmark consumer on `nfqueue-core`, one verdict per packet: receive,
//! accept, repeat. Prints its packet count and exits 0 on SIGTERM/SIGINT, so
//! that any harness can time it (`cargo xtask bench` does).
//!
//! ```text
//! iptables -t mangle -A OUTPUT -p udp --dport 9 -j NFQUEUE --queue-num 0
//! bench_core [--gso] 0
//! ```

use clap::Parser;
use nfqueue_core::{Queue, QueueConfig, QueueFlags};
use nfqueue_examples::stop_on_signals;

/// Benchmark consumer: accept every packet, one verdict each.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The queue number to bind.
    queue: u16,
    /// Receive GSO super-packets whole.
    #[arg(long)]
    gso: bool,
}

/// The receive buffer every benchmark consumer asks for (the C ones too).
const RECV_BUFFER: usize = 8 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let queue_num = args.queue;
    let flags = if args.gso {
        QueueFlags::GSO
    } else {
        QueueFlags::empty()
    };

    let mut queue = Queue::open()?;
    stop_on_signals(queue.stop_handle())?;
    queue.bind(queue_num, &QueueConfig::default().flags(flags))?;
    queue.set_recv_buffer_size(RECV_BUFFER)?;
    eprintln!("bench_core: bound queue {queue_num}");

    let mut packets = 0u64;
    queue.run(|packet| {
        packets += 1;
        if let Err(err) = packet.accept() {
            eprintln!("accept failed: {err}");
        }
    })?;
    println!("{packets}");
    eprintln!("bench_core: {:?}", queue.stats());
    Ok(())
}
