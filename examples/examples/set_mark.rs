//! Accepts every packet with a mark, so that rules and routing after the queue
//! can tell the packets this program has seen.
//!
//! ```text
//! nft add table inet nfq
//! nft 'add chain inet nfq output { type filter hook output priority 0; }'
//! nft 'add chain inet nfq postrouting { type filter hook postrouting priority 0; }'
//! nft add rule inet nfq output udp dport 9999 queue num 0
//! nft add rule inet nfq postrouting meta mark 7 counter
//! set_mark --mark 7 0
//! nft list chain inet nfq postrouting          # the mark rule counts the packets
//! # or with iptables, where the kernel lacks CONFIG_NFT_QUEUE (nfq-doctor tells):
//! iptables -A OUTPUT -p udp --dport 9999 -j NFQUEUE --queue-num 0
//! iptables -t mangle -A POSTROUTING -m mark --mark 7 -j ACCEPT
//! set_mark --mark 7 0
//! iptables -t mangle -L POSTROUTING -v -n
//! ```
//!
//! An accepted packet leaves the chain that queued it, like any ACCEPT, and goes
//! on through the later tables and hooks: that is where `-m mark --mark 7` (or
//! `ip rule add fwmark 7 ...`) sees the new mark. The Python package's
//! `packet.set_mark(7); packet.accept()` is `Verdict::accept().with_mark(7)`.

use clap::Parser;
use nfqueue_core::{Queue, QueueConfig, Verdict};
use nfqueue_examples::cli::parse_mark;
use nfqueue_examples::{report, stop_on_signals, summary};
use std::process::ExitCode;

/// Accept every packet of a queue with a mark.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The queue number to bind.
    queue: u16,
    /// The mark to set (decimal or 0x hex).
    #[arg(long, value_parser = parse_mark)]
    mark: u32,
}

fn main() -> ExitCode {
    report(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let Args {
        queue: queue_num,
        mark,
    } = args;

    let mut queue = Queue::open()?;
    stop_on_signals(queue.stop_handle())?;
    queue.bind(queue_num, &QueueConfig::default())?;
    eprintln!("bound queue {queue_num}; marking packets {mark:#x}; Ctrl-C stops");

    // The mark and the verdict go to the kernel in one message.
    let verdict = Verdict::accept().with_mark(mark);
    queue.run(|packet| {
        println!("#{} mark {:#x} -> {mark:#x}", packet.id(), packet.mark());
        if let Err(err) = packet.verdict(&verdict) {
            eprintln!("verdict failed: {err}");
        }
    })?;
    summary::eprint(&summary::of_queue([], &queue));
    Ok(())
}
