//! Benchmark consumer on the pure-Rust `nfq` crate, as a peer: receive,
//! accept, repeat. Prints its packet count and exits 0 on SIGTERM/SIGINT.
//!
//! ```text
//! iptables -t mangle -A OUTPUT -p udp --dport 9 -j NFQUEUE --queue-num 0
//! bench_nfq [--gso] 0
//! ```
//!
//! `nfq` 0.2 neither exposes its socket nor can be interrupted in a blocking
//! receive, so the socket runs non-blocking and the loop waits in `poll` on its
//! descriptor, found in /proc/self/fd, with a timeout that lets it see the stop
//! handle set by the signal thread. The same descriptor gets the 8 MiB receive
//! buffer the other consumers ask for.

use clap::Parser;
use nfqueue_core::StopHandle;
use nfqueue_examples::{bench, stop_on_signals};
use std::io::ErrorKind;

/// Benchmark consumer on the `nfq` crate: accept every packet.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    queue: bench::QueueArgs,
}

/// [`bench::RECV_BUFFER`] as the `int` that `setsockopt` takes.
const RECV_BUFFER: libc::c_int = bench::RECV_BUFFER as libc::c_int;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bench::QueueArgs {
        queue: queue_num,
        gso,
    } = Args::parse().queue;
    let stop = StopHandle::new()?;
    stop_on_signals(stop.clone())?;

    let mut queue = nfq::Queue::open()?;
    queue.bind(queue_num)?;
    queue.set_recv_gso(queue_num, gso)?;
    queue.set_nonblocking(true);
    let fd = netfilter_socket().ok_or("bench_nfq: cannot find the nfq socket")?;
    // SAFETY: `fd` is the open socket of `queue`; the option is a plain int.
    unsafe {
        let value = &RECV_BUFFER as *const libc::c_int;
        let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        if libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            value.cast(),
            len,
        ) < 0
        {
            libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, value.cast(), len);
        }
    }
    eprintln!("bench_nfq: bound queue {queue_num}");

    let mut packets = 0u64;
    while !stop.is_stopped() {
        match queue.recv() {
            Ok(mut msg) => {
                packets += 1;
                msg.set_verdict(nfq::Verdict::Accept);
                queue.verdict(msg)?;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                let mut poll = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                unsafe { libc::poll(&mut poll, 1, 100) };
            }
            // ENOBUFS: the kernel dropped packets; the count is in /proc.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    println!("{packets}");
    Ok(())
}

/// The process's only `AF_NETLINK`/`NETLINK_NETFILTER` socket.
fn netfilter_socket() -> Option<i32> {
    std::fs::read_dir("/proc/self/fd").ok()?.find_map(|entry| {
        let fd: i32 = entry.ok()?.file_name().to_str()?.parse().ok()?;
        let option = |name| {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt on a descriptor number writes at most `len`
            // bytes to `value`; on a non-socket it fails with ENOTSOCK.
            let rc = unsafe {
                libc::getsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    name,
                    (&mut value as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            (rc == 0).then_some(value)
        };
        (option(libc::SO_DOMAIN)? == libc::AF_NETLINK
            && option(libc::SO_PROTOCOL)? == libc::NETLINK_NETFILTER)
            .then_some(fd)
    })
}
