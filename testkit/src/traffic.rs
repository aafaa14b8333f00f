//! Traffic for tests: numbered UDP datagrams and bounded TCP transfers.
//!
//! Every wait is bounded: receivers have read timeouts, loops stop at a count or a
//! deadline. Sockets belong to the namespace of the thread that creates them.

use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::{AsFd, AsRawFd};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Read timeout of receiving sockets made here.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// Send buffer asked for by [`set_big_sndbuf`]: room for many packets that wait
/// in a queue, so the sender does not block while a consumer is slow.
pub const BIG_SNDBUF: usize = 8 << 20;

/// Overall bound of the loops here, whatever their other limits.
const HARD_DEADLINE: Duration = Duration::from_secs(30);

/// A UDP sender and a receiver in the current thread's namespace.
#[derive(Debug)]
pub struct UdpPair {
    /// Sending socket, with a big send buffer.
    pub sender: UdpSocket,
    /// Receiving socket, with a read timeout of [`RECV_TIMEOUT`].
    pub receiver: UdpSocket,
}

impl UdpPair {
    /// The receiver's address, to send to.
    ///
    /// # Panics
    ///
    /// Panics when `getsockname` fails.
    pub fn dest(&self) -> SocketAddr {
        self.receiver.local_addr().expect("getsockname failed")
    }
}

/// A [`UdpPair`] on 127.0.0.1.
///
/// # Panics
///
/// Panics when a socket cannot be created or bound (is `lo` up?).
pub fn udp_pair_v4() -> UdpPair {
    udp_pair(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A [`UdpPair`] on `::1`.
///
/// # Panics
///
/// Panics when a socket cannot be created or bound (is `lo` up?).
pub fn udp_pair_v6() -> UdpPair {
    udp_pair(IpAddr::V6(Ipv6Addr::LOCALHOST))
}

fn udp_pair(ip: IpAddr) -> UdpPair {
    UdpPair {
        sender: udp_sender(ip),
        receiver: udp_receiver(ip),
    }
}

/// A UDP socket bound to `ip` (any port) with a read timeout of
/// [`RECV_TIMEOUT`].
///
/// # Panics
///
/// Panics when the socket cannot be bound.
pub fn udp_receiver(ip: IpAddr) -> UdpSocket {
    let sock = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("binding UDP to {ip}: {e}"));
    sock.set_read_timeout(Some(RECV_TIMEOUT))
        .expect("setting a read timeout failed");
    sock
}

/// A UDP socket bound to `ip` (any port) with a big send buffer (see
/// [`set_big_sndbuf`]) and a write timeout of [`RECV_TIMEOUT`].
///
/// # Panics
///
/// Panics when the socket cannot be bound.
pub fn udp_sender(ip: IpAddr) -> UdpSocket {
    let sock = UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("binding UDP to {ip}: {e}"));
    set_big_sndbuf(&sock);
    sock.set_write_timeout(Some(RECV_TIMEOUT))
        .expect("setting a write timeout failed");
    sock
}

/// Gives `sock` a send buffer of [`BIG_SNDBUF`] and returns the size the kernel
/// reports afterwards (twice what was granted, for its bookkeeping).
///
/// Tries `SO_SNDBUFFORCE` first, which needs `CAP_NET_ADMIN` in the initial user
/// namespace; without it (in a user namespace, say) falls back to `SO_SNDBUF`,
/// which the kernel caps at `net.core.wmem_max`.
///
/// # Panics
///
/// Panics when even `SO_SNDBUF` fails (not a socket).
pub fn set_big_sndbuf(sock: &impl AsFd) -> usize {
    let fd = sock.as_fd().as_raw_fd();
    if setsockopt_int(fd, libc::SO_SNDBUFFORCE, BIG_SNDBUF).is_err() {
        setsockopt_int(fd, libc::SO_SNDBUF, BIG_SNDBUF).expect("setsockopt SO_SNDBUF failed");
    }
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are valid for writes during the call, and `len`
    // says `value` holds a c_int, which is what SO_SNDBUF returns.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    assert_eq!(
        rc,
        0,
        "getsockopt SO_SNDBUF: {}",
        io::Error::last_os_error()
    );
    value as usize
}

fn setsockopt_int(fd: libc::c_int, opt: libc::c_int, value: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(value).unwrap_or(libc::c_int::MAX);
    // SAFETY: the option value points to a live c_int and the length says so;
    // the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sends `count` datagrams of `payload_len` bytes to `dest`, numbered 0, 1, ...:
/// the number is a big-endian `u64` in the first 8 bytes (see [`seq_of`]), the
/// rest is a pattern.
///
/// Returns how many datagrams the kernel took. A send that fails (for example
/// `EPERM` from an `OUTPUT` rule that drops) is not counted and does not stop the
/// others; a send that blocks longer than the socket's write timeout fails.
///
/// # Panics
///
/// Panics when `payload_len < 8`.
pub fn send_numbered_udp(
    sock: &UdpSocket,
    dest: SocketAddr,
    count: u64,
    payload_len: usize,
) -> u64 {
    assert!(
        payload_len >= 8,
        "payload_len {payload_len} has no room for the sequence number"
    );
    let mut buf = pattern(payload_len);
    let mut sent = 0;
    for seq in 0..count {
        buf[..8].copy_from_slice(&seq.to_be_bytes());
        if sock.send_to(&buf, dest).is_ok() {
            sent += 1;
        }
    }
    sent
}

/// The sequence number written by [`send_numbered_udp`], or `None` when the
/// datagram is shorter than 8 bytes.
pub fn seq_of(datagram: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(datagram.get(..8)?.try_into().ok()?))
}

/// `len` bytes of a fixed, recognisable pattern (`i % 251`, a prime, so it does
/// not line up with powers of two).
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Receives datagrams until none came for `idle`, `max` arrived, or 30 seconds
/// passed, whichever is first.
///
/// The socket's read timeout is changed to `idle` and restored afterwards.
///
/// # Panics
///
/// Panics on a receive error other than a timeout.
pub fn recv_all_until_idle(sock: &UdpSocket, idle: Duration, max: usize) -> Vec<Vec<u8>> {
    let before = sock
        .read_timeout()
        .expect("getting the read timeout failed");
    sock.set_read_timeout(Some(idle.max(Duration::from_millis(1))))
        .expect("setting a read timeout failed");
    let deadline = Instant::now() + HARD_DEADLINE;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < max && Instant::now() < deadline {
        match sock.recv(&mut buf) {
            Ok(n) => got.push(buf[..n].to_vec()),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => panic!("receiving UDP failed: {e}"),
        }
    }
    sock.set_read_timeout(before)
        .expect("restoring the read timeout failed");
    got
}

/// A TCP listener that accepts one connection and reads it to the end on a
/// thread of its own; see [`TcpSink::finish`].
#[derive(Debug)]
pub struct TcpSink {
    addr: SocketAddr,
    reader: JoinHandle<io::Result<Vec<u8>>>,
}

impl TcpSink {
    /// Listens on `ip` (any port) in the current thread's namespace and starts
    /// the thread that accepts one connection (within 5 seconds) and reads it
    /// until EOF, `max` bytes, or 5 seconds without data.
    ///
    /// # Panics
    ///
    /// Panics when the listener cannot be bound.
    pub fn bind(ip: IpAddr, max: usize) -> TcpSink {
        let listener =
            TcpListener::bind((ip, 0)).unwrap_or_else(|e| panic!("binding TCP to {ip}: {e}"));
        let addr = listener.local_addr().expect("getsockname failed");
        let reader = thread::Builder::new()
            .name("tcp-sink".into())
            .spawn(move || read_one_connection(listener, max))
            .expect("spawning a thread failed");
        TcpSink { addr, reader }
    }

    /// The address to connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the reading thread and returns what it received.
    ///
    /// # Errors
    ///
    /// No connection within 5 seconds (`TimedOut`), or a failed read.
    pub fn finish(self) -> io::Result<Vec<u8>> {
        self.reader
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    }
}

fn read_one_connection(listener: TcpListener, max: usize) -> io::Result<Vec<u8>> {
    let timeout = Duration::from_secs(5);
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    let mut stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(2));
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "no TCP connection to {} within {timeout:?}",
                        listener.local_addr()?
                    ),
                ));
            }
            Err(e) => return Err(e),
        }
    };
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(timeout))?;
    let hard = Instant::now() + HARD_DEADLINE;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < max && Instant::now() < hard {
        let want = buf.len().min(max - got.len());
        match stream.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Connects to `dest` (within 5 seconds), writes `data` (each write bounded by 5
/// seconds) and closes the sending side.
///
/// # Errors
///
/// A failed or timed-out connect or write.
pub fn tcp_send(dest: SocketAddr, data: &[u8]) -> io::Result<()> {
    let timeout = Duration::from_secs(5);
    let mut stream = TcpStream::connect_timeout(&dest, timeout)?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(data)?;
    stream.shutdown(Shutdown::Write)?;
    // Wait for the peer to close, so the data is delivered before we return.
    stream.set_read_timeout(Some(timeout))?;
    let _ = stream.read(&mut [0u8; 1]);
    Ok(())
}

/// Sends `len` bytes of [`pattern`] over a TCP connection to a [`TcpSink`] on
/// `ip`, both in the current thread's namespace, and returns what the sink
/// received (at most `len` bytes).
///
/// # Panics
///
/// Panics when the connection or a read fails.
pub fn tcp_transfer(ip: IpAddr, len: usize) -> Vec<u8> {
    let sink = TcpSink::bind(ip, len);
    let sent = tcp_send(sink.addr(), &pattern(len));
    let got = sink
        .finish()
        .unwrap_or_else(|e| panic!("TCP sink on {ip}: {e}"));
    sent.unwrap_or_else(|e| panic!("TCP send to {ip}: {e}"));
    got
}
