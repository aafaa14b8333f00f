//! Accepts every packet with a mark, so that rules and routing after the queue
//! can tell the packets this program has seen.
//!
//! ```text
//! iptables -A OUTPUT -p udp --dport 9999 -j NFQUEUE --queue-num 0
//! iptables -t mangle -A POSTROUTING -m mark --mark 7 -j ACCEPT
//! set_mark --mark 7 0
//! iptables -t mangle -L POSTROUTING -v -n     # the mark rule counts the packets
//! ```
//!
//! An accepted packet leaves the chain that queued it, like any ACCEPT, and goes
//! on through the later tables and hooks: that is where `-m mark --mark 7` (or
//! `ip rule add fwmark 7 ...`) sees the new mark. The Python package's
//! `packet.set_mark(7); packet.accept()` is `Verdict::accept().with_mark(7)`.

use nfqueue_core::{Queue, QueueConfig, Verdict};
use nfqueue_examples::{option_arg, queue_number_arg, report, stop_on_signals};
use std::process::ExitCode;

const USAGE: &str = "set_mark --mark M QUEUE_NUM   (M decimal or 0x hex)";

fn main() -> ExitCode {
    report(run())
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let queue_num = queue_number_arg(&args, USAGE);
    let Some(mark) = option_arg::<String>(&args, "--mark").and_then(|m| parse_mark(&m)) else {
        eprintln!("usage: {USAGE}");
        std::process::exit(2);
    };

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
    eprintln!("{:?}", queue.stats());
    Ok(())
}

/// A mark as iptables writes it: decimal, or hexadecimal after `0x`.
fn parse_mark(text: &str) -> Option<u32> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}
