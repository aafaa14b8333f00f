//! Counts packets and bytes per flow on every core, each worker in its own
//! table (no locks on the packet path), and prints the busiest flows on exit.
//!
//! ```text
//! nft add table inet nfq
//! nft 'add chain inet nfq input { type filter hook input priority 0; }'
//! nft add rule inet nfq input queue num 0
//! # or with iptables, where the kernel lacks CONFIG_NFT_QUEUE (nfq-doctor tells):
//! iptables -A INPUT -j NFQUEUE --queue-num 0
//! flow_counter [--workers N] 0
//! ```

use clap::Parser;
use nfqueue::net::{self, FlowKey, FlowTuple};
use nfqueue::{Dispatcher, Handler, PacketView, StopHandle, Verdict};
use nfqueue_examples::{report, stop_on_signals};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

/// Count packets and bytes per flow on every core; Ctrl-C prints the busiest.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The queue number to bind.
    queue: u16,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
}

/// Per-flow totals: packets and bytes.
type Table = HashMap<FlowTuple, (u64, u64)>;

/// One worker's handler: counts into its own table, and hands the table over
/// to the shared one when the worker ends.
struct Counter {
    mine: Table,
    all: Arc<Mutex<Table>>,
}

impl Handler for Counter {
    fn handle(&mut self, packet: &PacketView<'_>) -> Verdict<'static> {
        if let Ok(ip) = net::parse(packet.payload()) {
            // Both directions of a connection count as one flow.
            let entry = self.mine.entry(ip.flow().canonical()).or_default();
            entry.0 += 1;
            entry.1 += packet.original_len() as u64;
        }
        Verdict::accept()
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        let mut all = self
            .all
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (flow, (packets, bytes)) in self.mine.drain() {
            let entry = all.entry(flow).or_default();
            entry.0 += packets;
            entry.1 += bytes;
        }
    }
}

fn main() -> ExitCode {
    report(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let Args { queue, workers } = args;

    let stop = StopHandle::new()?;
    stop_on_signals(stop.clone())?;
    let all = Arc::new(Mutex::new(Table::new()));
    let mut builder = Dispatcher::builder()
        .queue(queue)
        .flow_affinity(FlowKey::FiveTuple)
        .stop_handle(stop);
    if let Some(workers) = workers {
        builder = builder.workers(workers);
    }
    let shared = Arc::clone(&all);
    let dispatcher = builder.build_with(move |_worker| Counter {
        mine: Table::new(),
        all: Arc::clone(&shared),
    })?;
    eprintln!("counting flows on queue {queue}; Ctrl-C prints them");
    let stats = dispatcher.join()?;

    let all = all.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut flows: Vec<_> = all.iter().collect();
    flows.sort_by_key(|(_, (_, bytes))| std::cmp::Reverse(*bytes));
    println!("{:>10} {:>12}  flow", "packets", "bytes");
    for (flow, (packets, bytes)) in flows.iter().take(20) {
        println!(
            "{packets:>10} {bytes:>12}  {} {}:{} <-> {}:{}",
            flow.protocol, flow.src, flow.src_port, flow.dst, flow.dst_port
        );
    }
    println!("{} flows, {} packets", flows.len(), stats.packets);
    Ok(())
}
