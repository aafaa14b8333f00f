//! Benchmark consumer on `nfqueue-core`, one verdict per packet: receive,
//! accept, repeat. Prints its packet count and exits 0 on SIGTERM/SIGINT, so
//! that any harness can time it (`cargo xtask bench` does).
//!
//! ```text
//! iptables -t mangle -A OUTPUT -p udp --dport 9 -j NFQUEUE --queue-num 0
//! bench_core [--gso] 0
//! ```

use clap::Parser;
use nfqueue_examples::bench;

/// Benchmark consumer: accept every packet, one verdict each.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    queue: bench::QueueArgs,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut queue = bench::bind("bench_core", &Args::parse().queue)?;

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
