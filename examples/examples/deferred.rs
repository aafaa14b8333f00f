//! Gives verdicts later and from another thread: packets are received here,
//! sent to a verdict thread, and accepted there in groups of N, each group in
//! reverse order of arrival (so a UDP receiver sees the datagrams reordered).
//!
//! ```text
//! nft add table inet nfq
//! nft 'add chain inet nfq output { type filter hook output priority 0; }'
//! nft add rule inet nfq output udp dport 9999 queue num 0
//! # or with iptables, where the kernel lacks CONFIG_NFT_QUEUE (nfq-doctor tells):
//! iptables -A OUTPUT -p udp --dport 9999 -j NFQUEUE --queue-num 0
//! deferred --group 3 0
//! ```
//!
//! [`Packet::into_owned`] copies a packet out of the receive buffer together
//! with the right to give its verdict: an [`OwnedPacket`], which is `Send`.
//! [`OwnedPacket::into_pending`] keeps only that right (a [`PendingVerdict`]),
//! when the bytes are no longer needed. A packet dropped without a verdict
//! gets the queue's default verdict (accept), so none is left waiting.
//!
//! The kernel keeps the packets queued meanwhile (at most 1024 by default, see
//! `QueueConfig::max_len`) and finds each by a walk of its queue, so holding
//! many packets and answering out of order has a cost.

use clap::Parser;
use nfqueue_core::{OwnedPacket, Packet, PendingVerdict, Queue, QueueConfig};
use nfqueue_examples::{report, stop_on_signals, summary};
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

/// Give verdicts from a second thread, each group in reverse order.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The queue number to bind.
    queue: u16,
    /// Packets per group answered in reverse order.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    group: u16,
}

/// A group that is not full after this long is flushed anyway, so that a lull in
/// traffic does not hold packets back for ever.
const FLUSH_AFTER: Duration = Duration::from_secs(1);

fn main() -> ExitCode {
    report(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let queue_num = args.queue;
    let group_size = usize::from(args.group);

    let mut queue = Queue::open()?;
    stop_on_signals(queue.stop_handle())?;
    queue.bind(queue_num, &QueueConfig::default())?;
    eprintln!(
        "bound queue {queue_num}; answering in reverse, groups of {group_size}; Ctrl-C stops"
    );

    let (packets, incoming) = mpsc::channel::<OwnedPacket>();
    let verdicts = thread::Builder::new()
        .name("verdicts".into())
        .spawn(move || {
            let mut group: Vec<PendingVerdict> = Vec::with_capacity(group_size);
            loop {
                match incoming.recv_timeout(FLUSH_AFTER) {
                    Ok(packet) => {
                        let view = packet.view();
                        println!("#{} held ({} bytes)", packet.id(), view.payload().len());
                        // The bytes have been looked at: keep only the verdict.
                        group.push(packet.into_pending());
                        if group.len() == group_size {
                            answer_in_reverse(&mut group);
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => answer_in_reverse(&mut group),
                    Err(RecvTimeoutError::Disconnected) => {
                        answer_in_reverse(&mut group);
                        return;
                    }
                }
            }
        })?;

    queue.run(|packet: Packet<'_>| {
        // Copy the packet so it outlives this call; if the verdict thread were
        // gone, dropping it here would give it the default verdict.
        let _ = packets.send(packet.into_owned());
    })?;
    // Closing the channel lets the verdict thread answer what it still holds.
    // The socket stays open until then: the held packets keep it alive.
    drop(packets);
    if verdicts.join().is_err() {
        eprintln!("the verdict thread panicked; its packets got the default verdict");
    }
    summary::eprint(&summary::of_queue([], &queue));
    Ok(())
}

/// Accepts the packets of `group`, last received first, and empties it.
fn answer_in_reverse(group: &mut Vec<PendingVerdict>) {
    for pending in group.drain(..).rev() {
        let id = pending.id();
        match pending.accept() {
            Ok(()) => println!("#{id} accepted"),
            Err(err) => eprintln!("#{id}: verdict failed: {err}"),
        }
    }
}
