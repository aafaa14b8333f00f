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
//! flag set by the signal thread. The same descriptor gets the 8 MiB receive
//! buffer the other consumers ask for.

use nfqueue_examples::queue_number_arg;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

const RECV_BUFFER: libc::c_int = 8 << 20;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let queue_num = queue_number_arg(&args, "bench_nfq [--gso] QUEUE_NUM");
    let gso = args.iter().any(|a| a == "--gso");
    let stop = stop_flag_on_signals()?;

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
    while !stop.load(Ordering::Relaxed) {
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

/// Blocks SIGINT and SIGTERM and sets the returned flag from a thread that
/// waits for them.
fn stop_flag_on_signals() -> std::io::Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; these calls change it and this
    // thread's signal mask only.
    let rc = unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    let setter = Arc::clone(&flag);
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signal = 0;
            // SAFETY: `set` lives in this closure; sigwait writes the signal number.
            unsafe { libc::sigwait(&set, &mut signal) };
            setter.store(true, Ordering::Relaxed);
        })?;
    Ok(flag)
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
