//! Benchmark client for the latency scenario of `cargo xtask bench`: UDP
//! requests at a fixed rate to an echo socket of its own, round-trip times
//! measured on the echoes. Only the requests' port is queued, so a run with the
//! rule and one without give the time the queue adds.
//!
//! ```text
//! iptables -t mangle -A OUTPUT -o lo -p udp --dport 7 -j NFQUEUE --queue-num 0
//! bench_latency --rate 50000 --secs 2
//! ```
//!
//! One thread does it all, so that no wake-up between threads adds to the
//! times measured: it serves the echo socket on 127.0.0.1:PORT (every datagram
//! goes back where it came from), sends the requests that are due (a sequence
//! number and the send time, RATE per second on average), records the round
//! trip of each echo that comes back, and sleeps in `ppoll` until the next
//! request is due or a socket is readable. Requests sent during the warm-up do
//! not count. At the end it prints one line on stdout, e.g.
//! `sent=100000 received=100000 secs=2.000 rate=50000 p50_ns=41000 p99_ns=93000 max_ns=310000`
//! (the percentiles are `none` when no echo came back).

use clap::Parser;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};

/// Benchmark client: paced UDP requests through the queue, round-trip times.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Requests per second.
    #[arg(long, value_parser = parse_rate)]
    rate: f64,
    /// Seconds of measured requests, after the warm-up.
    #[arg(long, default_value_t = 2.0)]
    secs: f64,
    /// Seconds of requests first that do not count.
    #[arg(long, default_value_t = 0.2)]
    warmup: f64,
    /// How long to wait for the last echoes, in seconds.
    #[arg(long, default_value_t = 0.5)]
    drain: f64,
    /// The echo socket's port on 127.0.0.1 (the port the rule queues).
    #[arg(long, default_value_t = 7)]
    port: u16,
    /// Bytes of each request's payload (at least 16: sequence and time).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(16..=1472))]
    size: u16,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if (1.0..=10_000_000.0).contains(&rate) => Ok(rate),
        _ => Err("a rate of 1..=10000000 requests per second".into()),
    }
}

/// Datagrams per sendmmsg or recvmmsg call.
const BATCH: usize = 64;
/// Socket buffers: requests waiting in the queue count against the send buffer,
/// and a burst of echoes must not overflow the receive buffers.
const SOCKET_BUFFER: libc::c_int = 32 << 20;
/// Room for any datagram the echo socket may get.
const DATAGRAM: usize = 2048;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let valid = args.secs > 0.0
        && args.secs <= 600.0
        && (0.0..=60.0).contains(&args.warmup)
        && (0.0..=60.0).contains(&args.drain);
    if !valid {
        return Err("bench_latency: --secs is in (0, 600], --warmup and --drain in [0, 60]".into());
    }
    let echo = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, args.port))?;
    let client = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))?;
    client.connect(echo.local_addr()?)?;
    for socket in [&echo, &client] {
        socket.set_nonblocking(true)?;
        force_buffer(socket.as_raw_fd(), libc::SO_SNDBUFFORCE)?;
        force_buffer(socket.as_raw_fd(), libc::SO_RCVBUFFORCE)?;
    }
    // Timer slack lets a sleep end up to 50 us late by default: far more than
    // the gaps between requests here.
    // SAFETY: PR_SET_TIMERSLACK takes an integer and touches no memory.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };

    let start = now_ns();
    let measured_from = start + secs_ns(args.warmup);
    let window = Window {
        start,
        measured_from,
        end: measured_from + secs_ns(args.secs),
        drain: secs_ns(args.drain),
    };
    let run = run(&echo, &client, args.rate, args.size.into(), &window)?;

    let mut rtts = run.rtts;
    rtts.sort_unstable();
    let percentile = |p: usize| match rtts.len() {
        0 => "none".to_string(),
        n => rtts[(n * p / 100).min(n - 1)].to_string(),
    };
    println!(
        "sent={} received={} secs={:.3} rate={:.0} p50_ns={} p99_ns={} max_ns={}",
        run.sent,
        rtts.len(),
        args.secs,
        run.sent as f64 / args.secs,
        percentile(50),
        percentile(99),
        rtts.last().map_or("none".into(), u64::to_string)
    );
    Ok(())
}

/// The times of a run, in CLOCK_MONOTONIC nanoseconds.
struct Window {
    start: u64,
    /// Requests sent from here on count.
    measured_from: u64,
    /// No request is sent from here on.
    end: u64,
    /// How long after `end` to wait for the last echoes.
    drain: u64,
}

/// What a run measured: requests sent in the measured window, and the round
/// trips (ns) of those that came back.
struct Run {
    sent: u64,
    rtts: Vec<u64>,
}

/// The loop: echo, receive, send what is due, sleep.
fn run(
    echo: &UdpSocket,
    client: &UdpSocket,
    rate: f64,
    size: usize,
    window: &Window,
) -> io::Result<Run> {
    let mut echoes = Batch::new(DATAGRAM);
    let mut replies = Batch::new(DATAGRAM);
    let mut requests = Batch::new(size);
    let mut run = Run {
        sent: 0,
        rtts: Vec::with_capacity(
            (rate * (window.end - window.measured_from) as f64 / 1e9) as usize + 1,
        ),
    };
    let mut seq = 0u64;
    loop {
        let mut busy = false;
        // The echo socket: every datagram straight back.
        let n = echoes.recv(echo.as_raw_fd())?;
        if n > 0 {
            echoes.send(echo.as_raw_fd(), n, true)?;
            busy = true;
        }
        // The echoes: one round trip each.
        let n = replies.recv(client.as_raw_fd())?;
        if n > 0 {
            let now = now_ns();
            for i in 0..n {
                if let Some(sent) = replies.sent_ns(i) {
                    if (window.measured_from..window.end).contains(&sent) {
                        run.rtts.push(now.saturating_sub(sent));
                    }
                }
            }
            busy = true;
        }
        let now = now_ns();
        if now >= window.end {
            if run.rtts.len() as u64 >= run.sent || now >= window.end + window.drain {
                return Ok(run);
            }
            if !busy {
                wait(&[echo, client], window.end + window.drain - now);
            }
            continue;
        }
        // Requests due by now, counted from the start: a late wake-up sends
        // those it missed at once, so that the rate holds on average.
        let due = ((now - window.start) as f64 * rate / 1e9) as u64 + 1;
        let n = (due.saturating_sub(seq) as usize).min(BATCH);
        if n > 0 {
            for i in 0..n {
                requests.encode(i, seq + i as u64, now);
            }
            let sent = requests.send(client.as_raw_fd(), n, false)? as u64;
            seq += sent;
            if now >= window.measured_from {
                run.sent += sent;
            }
        } else if !busy {
            let next = window.start + (seq as f64 * 1e9 / rate) as u64;
            wait(&[echo, client], next.min(window.end).saturating_sub(now));
        }
    }
}

/// Sleeps until a socket is readable or `ns` have passed.
fn wait(sockets: &[&UdpSocket], ns: u64) {
    let mut fds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let timeout = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: valid pollfds and timespec for the call; no signal mask.
    unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &timeout,
            std::ptr::null(),
        )
    };
}

fn secs_ns(secs: f64) -> u64 {
    (secs * 1e9) as u64
}

/// CLOCK_MONOTONIC in nanoseconds.
fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec to write into; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn force_buffer(fd: RawFd, option: libc::c_int) -> io::Result<()> {
    // SAFETY: a c_int option value of the right size for SOL_SOCKET buffers.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&SOCKET_BUFFER as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// [`BATCH`] datagram buffers with their lengths and addresses, for one
/// recvmmsg or sendmmsg.
struct Batch {
    bufs: Vec<Vec<u8>>,
    lens: [usize; BATCH],
    names: [libc::sockaddr_in; BATCH],
}

impl Batch {
    fn new(size: usize) -> Self {
        Batch {
            bufs: vec![vec![0; size]; BATCH],
            lens: [size; BATCH],
            // SAFETY: sockaddr_in is plain data; zeroed is a valid value.
            names: [unsafe { std::mem::zeroed() }; BATCH],
        }
    }

    /// Request `i`: its sequence number and send time, then zeros.
    fn encode(&mut self, i: usize, seq: u64, sent_ns: u64) {
        self.bufs[i][..8].copy_from_slice(&seq.to_le_bytes());
        self.bufs[i][8..16].copy_from_slice(&sent_ns.to_le_bytes());
    }

    /// The send time that datagram `i` carries.
    fn sent_ns(&self, i: usize) -> Option<u64> {
        if self.lens[i] < 16 {
            return None;
        }
        Some(u64::from_le_bytes(self.bufs[i][8..16].try_into().ok()?))
    }

    /// What is waiting on non-blocking `fd`, up to [`BATCH`] datagrams, with
    /// their sources; the number read (0: none).
    fn recv(&mut self, fd: RawFd) -> io::Result<usize> {
        for (buf, len) in self.bufs.iter().zip(self.lens.iter_mut()) {
            *len = buf.len();
        }
        self.call(fd, BATCH, true, |fd, msgs, n| {
            // SAFETY: the headers point into self's buffers, alive for the call.
            unsafe { libc::recvmmsg(fd, msgs, n, libc::MSG_DONTWAIT, std::ptr::null_mut()) }
        })
    }

    /// Sends the first `n` datagrams (to their addresses when `addressed`, else
    /// on the connected socket); the number sent (0 when the kernel had no room:
    /// the next round tries again).
    fn send(&mut self, fd: RawFd, n: usize, addressed: bool) -> io::Result<usize> {
        self.call(fd, n, addressed, |fd, msgs, n| {
            // SAFETY: the headers point into self's buffers, alive for the call.
            unsafe { libc::sendmmsg(fd, msgs, n, 0) }
        })
    }

    fn call(
        &mut self,
        fd: RawFd,
        n: usize,
        addressed: bool,
        syscall: impl FnOnce(RawFd, *mut libc::mmsghdr, libc::c_uint) -> libc::c_int,
    ) -> io::Result<usize> {
        let mut iovs = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; BATCH];
        // SAFETY: a zeroed mmsghdr is valid (no name, no control data).
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        for i in 0..n {
            iovs[i] = libc::iovec {
                iov_base: self.bufs[i].as_mut_ptr().cast(),
                iov_len: self.lens[i],
            };
            msgs[i].msg_hdr.msg_iov = &mut iovs[i];
            msgs[i].msg_hdr.msg_iovlen = 1;
            if addressed {
                msgs[i].msg_hdr.msg_name = (&mut self.names[i] as *mut libc::sockaddr_in).cast();
                msgs[i].msg_hdr.msg_namelen =
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
        }
        let rc = syscall(fd, msgs.as_mut_ptr(), n as libc::c_uint);
        if rc < 0 {
            let err = io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN | libc::ENOBUFS) => Ok(0),
                _ => Err(err),
            };
        }
        let done = rc as usize;
        for (len, msg) in self.lens.iter_mut().zip(&msgs[..done]) {
            *len = msg.msg_len as usize;
        }
        Ok(done)
    }
}
