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
use nfqueue_core::{AsyncQueue, Error};
use nfqueue_examples::bench;

/// Benchmark consumer: accept every packet, one verdict each, with tokio.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    queue: bench::QueueArgs,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let queue = bench::bind("bench_async", &Args::parse().queue)?;

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
