//! Drops UDP and TCP packets sent to the listed destination ports and accepts
//! every other packet: a tiny port firewall in user space.
//!
//! ```text
//! nft add table inet nfq
//! nft 'add chain inet nfq output { type filter hook output priority 0; }'
//! nft add rule inet nfq output queue num 0     # IPv4 and IPv6
//! # or with iptables, where the kernel lacks CONFIG_NFT_QUEUE (nfq-doctor tells):
//! iptables  -A OUTPUT -j NFQUEUE --queue-num 0
//! ip6tables -A OUTPUT -j NFQUEUE --queue-num 0
//! drop_by_port --port 9999 --port 53 0
//! ```
//!
//! Only the first 128 bytes of each packet are copied to user space: enough for
//! the IP and transport headers, and a verdict without a new payload leaves the
//! packet whole whatever the copy range.

use clap::Parser;
use nfqueue_core::{CopyMode, Queue, QueueConfig};
use nfqueue_examples::{report, stop_on_signals, summary};
use std::process::ExitCode;

/// Drop UDP and TCP packets to the given destination ports, accept the rest.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The queue number to bind.
    queue: u16,
    /// A destination port to drop; repeatable.
    #[arg(long = "port", value_name = "PORT", required = true)]
    ports: Vec<u16>,
}

/// IP protocol numbers of the transports whose ports are read.
const TCP: u8 = 6;
const UDP: u8 = 17;

fn main() -> ExitCode {
    report(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let Args {
        queue: queue_num,
        ports,
    } = args;
    let mut queue = Queue::open()?;
    stop_on_signals(queue.stop_handle())?;
    // IPv4 headers are at most 60 bytes, IPv6 ones 40 here (no extension
    // headers are followed); the ports are the next 4 bytes.
    queue.bind(
        queue_num,
        &QueueConfig::default().copy_mode(CopyMode::Packet(128)),
    )?;
    eprintln!("bound queue {queue_num}; dropping UDP/TCP to ports {ports:?}; Ctrl-C stops");

    let (mut dropped, mut accepted) = (0u64, 0u64);
    queue.run(|packet| {
        let verdict = match transport_and_dest_port(packet.payload()) {
            Some((proto, port)) if ports.contains(&port) => {
                let name = if proto == TCP { "tcp" } else { "udp" };
                println!("#{} drop {name} to port {port}", packet.id());
                dropped += 1;
                packet.drop()
            }
            _ => {
                accepted += 1;
                packet.accept()
            }
        };
        if let Err(err) = verdict {
            eprintln!("verdict failed: {err}");
        }
    })?;
    summary::eprint(&summary::of_queue(
        [("dropped", dropped), ("accepted", accepted)],
        &queue,
    ));
    Ok(())
}

/// The transport protocol (TCP or UDP) and destination port of an IPv4 or IPv6
/// packet; `None` for other protocols and for what this does not parse.
///
/// A deliberately small parser for this example: it reads the IPv4 header
/// length (IHL) and, for IPv6, only a next header of TCP or UDP right after the
/// fixed header (no extension headers). `nfqueue_core::net` does this properly
/// with checked L3/L4 views.
fn transport_and_dest_port(ip: &[u8]) -> Option<(u8, u16)> {
    let (proto, transport) = match ip.first()? >> 4 {
        4 => {
            let header_len = usize::from(ip[0] & 0x0f) * 4;
            // Fragments after the first carry no transport header.
            let fragment_offset = u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x1fff;
            if header_len < 20 || fragment_offset != 0 {
                return None;
            }
            (*ip.get(9)?, ip.get(header_len..)?)
        }
        6 => (*ip.get(6)?, ip.get(40..)?),
        _ => return None,
    };
    if proto != TCP && proto != UDP {
        return None;
    }
    // Source port, then destination port, in both headers.
    let port = u16::from_be_bytes([*transport.get(2)?, *transport.get(3)?]);
    Some((proto, port))
}
