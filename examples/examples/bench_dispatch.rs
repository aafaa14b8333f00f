//! Benchmark consumer on the `nfqueue` dispatcher: receive thread, worker pool
//! and coalesced verdicts. Accepts every packet, optionally after some busy
//! work; prints its packet count and exits 0 on SIGTERM/SIGINT.
//!
//! ```text
//! iptables -t mangle -A OUTPUT -p udp --dport 9 -j NFQUEUE --queue-num 0
//! bench_dispatch [--workers N] [--busy-us MICROS] [--queues N] [--gso] 0
//! ```
//!
//! `--queues N` binds queues QUEUE..QUEUE+N-1, a receive thread each, for a rule
//! that spreads packets over them (`-j NFQUEUE --queue-balance 0:1`); with
//! `--workers 0` every receive thread runs the handler itself.
//!
//! `--busy-us` does about that much CPU work on every packet, standing in for a
//! handler that does real work (parsing, lookups) so that worker scaling can be
//! measured. The work is a fixed number of rounds, calibrated at start, rather
//! than a wait on the clock: a worker that is preempted does not get its work
//! done meanwhile.

use clap::Parser;
use nfqueue::{Dispatcher, PacketView, QueueConfig, StopHandle, Verdict};
use nfqueue_examples::{bench, stop_on_signals};
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Benchmark consumer on the dispatcher: accept every packet.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The (first) queue number to bind.
    queue: u16,
    /// Bind this many consecutive queues, from QUEUE on.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    queues: u16,
    /// Worker threads (0: the handler runs on the receive thread).
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// About this many microseconds of CPU work per packet.
    #[arg(long = "busy-us", value_name = "MICROS", default_value_t = 0)]
    busy_us: u64,
    /// Receive GSO super-packets whole.
    #[arg(long)]
    gso: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let workers = args.workers;
    let first = args.queue;
    let last = first
        .checked_add(args.queues - 1)
        .ok_or("bench_dispatch: --queues goes past queue 65535")?;
    let busy = Duration::from_micros(args.busy_us);
    let rounds = if busy.is_zero() { 0 } else { calibrate(busy) };
    let flags = bench::flags(args.gso);

    // Block the signals before the dispatcher starts its threads, so that only
    // the signal thread sees them; it stops `signalled`, which stops the
    // dispatcher below.
    let signalled = StopHandle::new()?;
    stop_on_signals(signalled.clone())?;

    let dispatcher = Dispatcher::builder()
        .queues(first..=last)
        .workers(workers)
        .queue_config(QueueConfig::default().flags(flags))
        .build(move |packet: &PacketView<'_>| {
            if rounds > 0 {
                black_box(work(rounds, packet.payload()));
            }
            Verdict::accept()
        })?;
    eprintln!(
        "bench_dispatch: bound queues {first}..={last}, {workers} workers, {rounds} rounds of work per packet"
    );

    wait_readable(signalled.as_raw_fd());
    let stats = dispatcher.stop_and_join()?;
    println!("{}", stats.packets);
    eprintln!(
        "bench_dispatch: {stats:?}; {:.3} verdict messages per packet",
        stats.messages_per_packet()
    );
    Ok(())
}

/// CPU work: `rounds` passes of a checksum over 64 bytes seeded by the payload.
fn work(rounds: u64, payload: &[u8]) -> u32 {
    let mut block = [0u8; 64];
    let n = payload.len().min(64);
    block[..n].copy_from_slice(&payload[..n]);
    let mut sum = 0u32;
    for round in 0..rounds {
        for pair in black_box(&block).chunks_exact(2) {
            sum =
                sum.wrapping_add(u32::from(u16::from_be_bytes([pair[0], pair[1]])) ^ round as u32);
        }
    }
    sum
}

/// The number of [`work`] rounds that take about `target` on this CPU (the
/// fastest of several trials, so that a preempted trial does not count).
fn calibrate(target: Duration) -> u64 {
    const TRIAL: u64 = 100_000;
    let best = (0..5)
        .map(|_| {
            let start = Instant::now();
            black_box(work(TRIAL, &[1; 64]));
            start.elapsed()
        })
        .min()
        .unwrap_or(Duration::from_millis(1));
    ((TRIAL as f64) * target.as_secs_f64() / best.as_secs_f64().max(1e-9)).max(1.0) as u64
}

/// Blocks until `fd` is readable.
fn wait_readable(fd: i32) {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; EINTR is retried.
    while unsafe { libc::poll(&mut poll, 1, -1) } < 0 {}
}
