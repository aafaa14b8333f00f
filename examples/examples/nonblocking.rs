//! Drives a queue from a `poll(2)` event loop that also watches standard input:
//! the use case of the Python package's `run(block=False)` and `run_socket()`,
//! where the queue is one source of events among others.
//!
//! ```text
//! nft add table inet nfq
//! nft 'add chain inet nfq output { type filter hook output priority 0; }'
//! nft add rule inet nfq output udp dport 9999 queue num 0
//! # or with iptables, where the kernel lacks CONFIG_NFT_QUEUE (nfq-doctor tells):
//! iptables -A OUTPUT -p udp --dport 9999 -j NFQUEUE --queue-num 0
//! nonblocking 0          # press Enter to print the counters
//! ```
//!
//! When the queue's descriptor is readable, [`Queue::run_nonblocking`] handles
//! every packet waiting and returns without blocking. The same pattern fits any
//! reactor that can watch a file descriptor (mio, tokio's `AsyncFd`, glib, ...).

use clap::Parser;
use nfqueue_core::{Queue, QueueConfig};
use nfqueue_examples::{report, stop_on_signals, summary};
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::process::ExitCode;

/// Drive a queue from a poll(2) loop; Enter prints the counters.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The queue number to bind.
    queue: u16,
}

fn main() -> ExitCode {
    report(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let queue_num = args.queue;

    let mut queue = Queue::open()?;
    let stop = queue.stop_handle();
    stop_on_signals(stop.clone())?;
    queue.bind(queue_num, &QueueConfig::default())?;
    eprintln!("bound queue {queue_num}; Enter prints the counters, Ctrl-C stops");

    let mut fds = [
        libc::pollfd {
            fd: queue.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: libc::STDIN_FILENO,
            events: libc::POLLIN,
            revents: 0,
        },
        // The stop handle's eventfd turns readable when a signal stops us.
        libc::pollfd {
            fd: stop.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    let mut handled = 0u64;
    while !stop.is_stopped() {
        // SAFETY: `fds` is an array of initialised pollfds that outlives the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err.into());
        }
        if fds[0].revents != 0 {
            handled += queue.run_nonblocking(|packet| {
                println!("{packet}");
                if let Err(err) = packet.accept() {
                    eprintln!("accept failed: {err}");
                }
            })? as u64;
        }
        if fds[1].revents != 0 {
            let mut line = [0u8; 256];
            match io::stdin().read(&mut line) {
                // End of input (or an unreadable stdin): stop watching it.
                Ok(0) | Err(_) => fds[1].fd = -1,
                Ok(_) => print_stats(&queue, handled),
            }
        }
    }
    print_stats(&queue, handled);
    Ok(())
}

/// This handle's counters and the kernel's (which a user namespace that does
/// not own the network namespace cannot read: then its error is shown).
fn print_stats(queue: &Queue, handled: u64) {
    summary::eprint(&summary::of_queue([("handled", handled)], queue));
}
