//! Prints every packet of a queue and accepts it: the NetfilterQueue README's
//! first example, with addresses, ports and lengths.
//!
//! ```text
//! nft add table inet nfq
//! nft 'add chain inet nfq input { type filter hook input priority 0; }'
//! nft add rule inet nfq input udp dport 9999 queue num 0
//! # or with iptables, where the kernel lacks CONFIG_NFT_QUEUE (nfq-doctor tells):
//! iptables -A INPUT -p udp --dport 9999 -j NFQUEUE --queue-num 0
//! print_and_accept [--count N] 0
//! ```

use clap::Parser;
use nfqueue_core::{Queue, QueueConfig, QueueFlags};
use nfqueue_examples::{report, stop_on_signals, summary};
use std::process::ExitCode;

/// Print every packet of a queue and accept it.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The queue number to bind.
    queue: u16,
    /// Stop after this many packets.
    #[arg(long)]
    count: Option<u64>,
}

fn main() -> ExitCode {
    report(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut queue = Queue::open()?;
    stop_on_signals(queue.stop_handle())?;
    queue.bind(
        args.queue,
        &QueueConfig::default().flags(QueueFlags::UID_GID),
    )?;
    eprintln!("bound queue {}; Ctrl-C stops", args.queue);

    let stop = queue.stop_handle();
    let mut seen = 0u64;
    queue.run(|packet| {
        seen += 1;
        // Time, hook, interfaces, protocol, addresses and ports, length, mark.
        println!("{packet}");
        if let Err(err) = packet.accept() {
            eprintln!("accept failed: {err}");
        }
        if args.count.is_some_and(|count| seen >= count) {
            stop.stop();
        }
    })?;
    summary::eprint(&summary::of_queue([("packets", seen)], &queue));
    Ok(())
}
