//! Benchmark consumer on `nfqueue-core`, one verdict per packet: receive,
//! accept, repeat. Prints its packet count and exits 0 on SIGTERM/SIGINT, so
//! that any harness can time it (`cargo xtask bench` does).
//!
//! ```text
//! iptables -t mangle -A OUTPUT -p udp --dport 9 -j NFQUEUE --queue-num 0
//! bench_core [--gso] [--recv-offset BYTES] [--no-enobufs] [--deadline-us US] 0
//! ```
//!
//! The options change one thing each, for benchmarks that compare: where in
//! its page the kernel writes each datagram (the default is the library's),
//! `NETLINK_NO_ENOBUFS`, which the `nfq` crate sets, and a verdict deadline
//! (what watching the packets costs).

use clap::Parser;
use nfqueue_core::QueueConfig;
use nfqueue_examples::bench;
use std::time::Duration;

/// Benchmark consumer: accept every packet, one verdict each.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    queue: bench::QueueArgs,
    /// Receive each datagram this many bytes into a page (0..4095).
    #[arg(long)]
    recv_offset: Option<usize>,
    /// Set NETLINK_NO_ENOBUFS on the socket, as the nfq crate does.
    #[arg(long)]
    no_enobufs: bool,
    /// Give the queue a verdict deadline of this many microseconds.
    #[arg(long)]
    deadline_us: Option<u64>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut queue = bench::bind("bench_core", &args.queue)?;
    if let Some(offset) = args.recv_offset {
        queue.set_recv_offset(offset)?;
    }
    if args.no_enobufs {
        queue.set_no_enobufs(true)?;
    }
    if let Some(us) = args.deadline_us {
        let config = QueueConfig::default()
            .flags(bench::flags(args.queue.gso))
            .deadline(Duration::from_micros(us));
        queue.configure(args.queue.queue, &config)?;
    }

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
