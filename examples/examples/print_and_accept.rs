//! Prints every packet of a queue and accepts it: the NetfilterQueue README's
//! first example, with addresses, ports and lengths.
//!
//! ```text
//! iptables -A INPUT -p udp --dport 9999 -j NFQUEUE --queue-num 0
//! print_and_accept [--count N] 0
//! ```

use nfqueue_core::{Queue, QueueConfig, QueueFlags};
use nfqueue_examples::{option_arg, queue_number_arg, report, stop_on_signals};
use std::process::ExitCode;

fn main() -> ExitCode {
    report(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let queue_num = queue_number_arg(&args, "print_and_accept [--count N] QUEUE_NUM");
    let count: Option<u64> = option_arg(&args, "--count");

    let mut queue = Queue::open()?;
    stop_on_signals(queue.stop_handle())?;
    queue.bind(
        queue_num,
        &QueueConfig::default().flags(QueueFlags::UID_GID),
    )?;
    eprintln!("bound queue {queue_num}; Ctrl-C stops");

    let stop = queue.stop_handle();
    let mut seen = 0u64;
    queue.run(|packet| {
        seen += 1;
        // Time, hook, interfaces, protocol, addresses and ports, length, mark.
        println!("{packet}");
        if let Err(err) = packet.accept() {
            eprintln!("accept failed: {err}");
        }
        if count.is_some_and(|count| seen >= count) {
            stop.stop();
        }
    })?;
    eprintln!("{seen} packets; {:?}", queue.stats());
    Ok(())
}
