//! Benchmark consumer on the `nfqueue` dispatcher: receive thread, worker pool
//! and coalesced verdicts. Accepts every packet, optionally after some busy
//! work; prints its packet count and exits 0 on SIGTERM/SIGINT.
//!
//! ```text
//! iptables -t mangle -A OUTPUT -p udp --dport 9 -j NFQUEUE --queue-num 0
//! bench_dispatch [--workers N] [--busy-us MICROS] [--gso] 0
//! ```
//!
//! `--busy-us` spins that long on every packet, standing in for a handler that
//! does real work (parsing, lookups) so that worker scaling can be measured.

use nfqueue::{Dispatcher, PacketView, QueueConfig, QueueFlags, StopHandle, Verdict};
use nfqueue_examples::{option_arg, queue_number_arg, stop_on_signals};
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const USAGE: &str = "bench_dispatch [--workers N] [--busy-us MICROS] [--gso] QUEUE_NUM";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let queue_num = queue_number_arg(&args, USAGE);
    let workers: usize = option_arg(&args, "--workers").unwrap_or(1);
    let busy = Duration::from_micros(option_arg(&args, "--busy-us").unwrap_or(0));
    let flags = if args.iter().any(|a| a == "--gso") {
        QueueFlags::GSO
    } else {
        QueueFlags::empty()
    };

    // Block the signals before the dispatcher starts its threads, so that only
    // the signal thread sees them; it stops `signalled`, which stops the
    // dispatcher below.
    let signalled = StopHandle::new()?;
    stop_on_signals(signalled.clone())?;

    let dispatcher = Dispatcher::builder()
        .queue(queue_num)
        .workers(workers)
        .queue_config(QueueConfig::default().flags(flags))
        .build(move |packet: &PacketView<'_>| {
            if !busy.is_zero() {
                spin(busy, packet.payload());
            }
            Verdict::accept()
        })?;
    eprintln!("bench_dispatch: bound queue {queue_num}, {workers} workers");

    wait_readable(signalled.as_raw_fd());
    let stats = dispatcher.stop_and_join()?;
    println!("{}", stats.packets);
    eprintln!(
        "bench_dispatch: {stats:?}; {:.3} verdict messages per packet",
        stats.messages_per_packet()
    );
    Ok(())
}

/// Busy work for `time`: checksum the payload over and over.
fn spin(time: Duration, payload: &[u8]) {
    let start = Instant::now();
    let mut sum = 0u32;
    while start.elapsed() < time {
        for chunk in payload.chunks(2) {
            sum =
                sum.wrapping_add(u32::from(chunk[0]) << 8 | u32::from(*chunk.get(1).unwrap_or(&0)));
        }
        black_box(sum);
    }
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
