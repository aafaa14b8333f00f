//! The queue handle: open a socket, bind queue numbers, receive packets.

use crate::config::QueueConfig;
use crate::error::{Error, Result};
use crate::handle::{Shared, VerdictHandle};
use crate::ifname::{self, InterfaceName};
use crate::message::{next_message, Ack, Message, MSG_CONFIG};
use crate::netns;
use crate::packet::Packet;
use crate::socket::NetlinkSocket;
use crate::stats::{Counters, QueueStats, Stats};
use crate::stop::StopHandle;
use crate::verdict::VerdictKind;
use crate::view::PacketView;
use nfqueue_sys as sys;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size of the receive buffer. One datagram carries one packet: at most a
/// 65531-byte payload plus its metadata attributes (security context, conntrack,
/// L2 header), all well under this; a larger datagram is reported, not cut.
pub const RECV_BUFFER_LEN: usize = 128 * 1024;

/// Longest a blocking receive sleeps in the kernel before it looks at the stop
/// handle again. Blocking in `recv` itself costs one system call per packet where
/// a `poll` first would cost two; this bounds how late a stop is seen.
const STOP_CHECK_INTERVAL: Duration = Duration::from_millis(100);

/// How long a configuration request waits for the kernel's answer. The kernel
/// answers while handling the request; only a full receive buffer loses it.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A netlink socket with one or more queue numbers bound to it.
///
/// ```no_run
/// use nfqueue_core::{Queue, QueueConfig, Verdict};
///
/// let mut queue = Queue::open()?;
/// queue.bind(0, &QueueConfig::default())?;
/// queue.run(|packet| {
///     let verdict = if packet.payload().len() > 1000 { Verdict::drop() } else { Verdict::accept() };
///     if let Err(err) = packet.verdict(&verdict) {
///         eprintln!("verdict failed: {err}");
///     }
/// })?;
/// # Ok::<(), nfqueue_core::Error>(())
/// ```
///
/// Dropping the handle closes the socket once every [`VerdictHandle`] and
/// deferred packet taken from it is gone; the kernel then unbinds its queues and
/// drops the packets still waiting in them.
#[derive(Debug)]
pub struct Queue {
    pub(crate) handle: VerdictHandle,
    buf: Box<[u8]>,
    /// Bytes of `buf` holding the current datagram.
    pub(crate) filled: usize,
    /// Where the next unread message of the current datagram starts.
    pub(crate) cursor: usize,
    /// Messages that arrived while waiting for a configuration answer.
    pub(crate) stash: VecDeque<Box<[u8]>>,
    /// Buffers for [`recv_burst`](Self::recv_burst), made on its first use.
    pub(crate) burst: Option<crate::burst::BurstBuffers>,
    seq: u32,
    bound: Vec<u16>,
    pub(crate) default: VerdictKind,
    stop: StopHandle,
}

impl Queue {
    /// Opens a queue socket in the calling thread's network namespace.
    ///
    /// # Errors
    /// [`Error::Sys`] when the socket cannot be created.
    pub fn open() -> Result<Self> {
        Self::with_socket(NetlinkSocket::open()?)
    }

    /// Adopts an existing `AF_NETLINK`/`NETLINK_NETFILTER` socket, e.g. one made
    /// by another process or thread inside another network namespace (the socket
    /// stays in the namespace it was created in). It is bound if it is not yet.
    ///
    /// # Errors
    /// [`Error::NotNetfilterSocket`] when `fd` is another kind of file.
    pub fn from_fd(fd: OwnedFd) -> Result<Self> {
        Self::with_socket(NetlinkSocket::from_fd(fd)?)
    }

    /// Opens a queue socket inside the named network namespace
    /// (`/run/netns/NAME`, as made by `ip netns add NAME`); the calling thread
    /// stays where it is.
    ///
    /// # Errors
    /// [`Error::Netns`] when the namespace cannot be entered (entering needs
    /// CAP_SYS_ADMIN).
    pub fn open_in_netns(name: &str) -> Result<Self> {
        if name.is_empty() || name.contains('/') {
            return Err(Error::InvalidArgument(
                "a namespace name has no '/'; use open_in_netns_path for a path",
            ));
        }
        Self::open_in_netns_path(Path::new("/run/netns").join(name))
    }

    /// Opens a queue socket inside the network namespace of the file at `path`
    /// (e.g. `/proc/PID/ns/net`).
    ///
    /// # Errors
    /// As [`open_in_netns`](Self::open_in_netns).
    pub fn open_in_netns_path(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let ns = netns::open(path)?;
        Self::with_socket(netns::run_in(&ns, path, NetlinkSocket::open)?)
    }

    fn with_socket(socket: NetlinkSocket) -> Result<Self> {
        socket.set_recv_timeout(STOP_CHECK_INTERVAL)?;
        let shared = Shared {
            socket,
            counters: Counters::default(),
        };
        Ok(Queue {
            handle: VerdictHandle {
                shared: Arc::new(shared),
            },
            buf: vec![0; RECV_BUFFER_LEN].into_boxed_slice(),
            filled: 0,
            cursor: 0,
            stash: VecDeque::new(),
            burst: None,
            seq: 0,
            bound: Vec::new(),
            default: VerdictKind::Accept,
            stop: StopHandle::new()?,
        })
    }

    /// Binds queue number `queue` to this socket and applies `config`.
    ///
    /// # Errors
    /// [`Error::QueueTaken`] when another socket has bound it,
    /// [`Error::AlreadyBound`] when this one has, [`Error::PermissionDenied`]
    /// without CAP_NET_ADMIN, [`Error::Config`] when the kernel refuses a
    /// setting (the queue is then unbound again).
    pub fn bind(&mut self, queue: u16, config: &QueueConfig) -> Result<()> {
        if self.bound.contains(&queue) {
            return Err(Error::AlreadyBound { queue });
        }
        let bound = self.request(queue, "bind", |nlh| {
            // SAFETY: `nlh` heads a request buffer with room for this attribute.
            unsafe {
                sys::nfq_nlmsg_cfg_put_cmd(
                    nlh,
                    libc::AF_UNSPEC as u16,
                    sys::nfqnl_msg_config_cmds::NFQNL_CFG_CMD_BIND as u8,
                )
            }
        });
        match bound {
            Ok(()) => {}
            Err(Error::Config { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
                // The kernel says EPERM both without privilege and for a queue that
                // another socket holds; the /proc line tells them apart.
                return Err(match self.kernel_stats(queue) {
                    Ok(Some(stats)) if stats.portid != self.portid() => Error::QueueTaken {
                        queue,
                        owner_portid: stats.portid,
                    },
                    Ok(_) => Error::PermissionDenied {
                        op: "binding a queue",
                    },
                    // Without the /proc line (unreadable from a user namespace
                    // that does not own the network namespace) both are possible.
                    Err(_) => Error::PermissionDenied {
                        op: "binding a queue (unless another socket holds it: \
                             /proc/net/netfilter/nfnetlink_queue could not be read to tell)",
                    },
                });
            }
            Err(Error::Config { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
                return Err(Error::AlreadyBound { queue });
            }
            Err(err) => return Err(err),
        }
        self.bound.push(queue);
        if let Err(err) = self.configure(queue, config) {
            let _ = self.unbind(queue);
            return Err(err);
        }
        Ok(())
    }

    /// Changes the settings of a bound queue.
    ///
    /// # Errors
    /// [`Error::NotBound`], or [`Error::Config`] naming the setting the kernel
    /// refused (e.g. `EOPNOTSUPP` for [`QueueFlags::CONNTRACK`](crate::QueueFlags::CONNTRACK)
    /// when the nf_conntrack_netlink module is not loaded, or
    /// [`QueueFlags::SECCTX`](crate::QueueFlags::SECCTX) without CONFIG_NETWORK_SECMARK).
    pub fn configure(&mut self, queue: u16, config: &QueueConfig) -> Result<()> {
        if !self.bound.contains(&queue) {
            return Err(Error::NotBound { queue });
        }
        let (mode, range) = config.copy_mode.to_raw()?;
        self.request(queue, "copy mode", |nlh| {
            // SAFETY: `nlh` heads a request buffer with room for this attribute.
            unsafe { sys::nfq_nlmsg_cfg_put_params(nlh, mode, range as i32) }
        })?;
        if let Some(max_len) = config.max_len {
            self.request(queue, "maximum queue length", |nlh| {
                // SAFETY: as above.
                unsafe { sys::nfq_nlmsg_cfg_put_qmaxlen(nlh, max_len) }
            })?;
        }
        let flags = config.flags.bits();
        let mask = crate::QueueFlags::all().bits();
        self.request(queue, "flags", |nlh| {
            // SAFETY: as above; the kernel reads both values in network byte order.
            unsafe {
                sys::mnl_attr_put_u32(
                    nlh,
                    sys::nfqnl_attr_config::NFQA_CFG_FLAGS as u16,
                    flags.to_be(),
                );
                sys::mnl_attr_put_u32(
                    nlh,
                    sys::nfqnl_attr_config::NFQA_CFG_MASK as u16,
                    mask.to_be(),
                );
            }
        })
    }

    /// Unbinds queue number `queue`: the kernel drops the packets still waiting
    /// in it, and new ones are dropped (or accepted with `--queue-bypass`) until
    /// a program binds it again.
    ///
    /// # Errors
    /// [`Error::NotBound`], or [`Error::Config`] when the kernel refuses.
    pub fn unbind(&mut self, queue: u16) -> Result<()> {
        let Some(at) = self.bound.iter().position(|&q| q == queue) else {
            return Err(Error::NotBound { queue });
        };
        self.bound.remove(at);
        self.request(queue, "unbind", |nlh| {
            // SAFETY: `nlh` heads a request buffer with room for this attribute.
            unsafe {
                sys::nfq_nlmsg_cfg_put_cmd(
                    nlh,
                    libc::AF_UNSPEC as u16,
                    sys::nfqnl_msg_config_cmds::NFQNL_CFG_CMD_UNBIND as u8,
                )
            }
        })
    }

    /// The queue numbers bound to this socket.
    pub fn bound_queues(&self) -> &[u16] {
        &self.bound
    }

    /// Sets the verdict given to packets dropped without one (accept unless
    /// changed); it applies to packets received from now on.
    pub fn set_default_verdict(&mut self, kind: VerdictKind) {
        self.default = kind;
    }

    /// The verdict given to packets dropped without one.
    pub fn default_verdict(&self) -> VerdictKind {
        self.default
    }

    /// Sets the socket's receive buffer (how many queued packets it holds before
    /// the kernel drops new ones with `ENOBUFS`). Privileged callers get the size
    /// asked for (`SO_RCVBUFFORCE`); others are capped at
    /// `/proc/sys/net/core/rmem_max`. Returns the size the kernel reports (twice
    /// the request, for its bookkeeping).
    ///
    /// # Errors
    /// [`Error::Sys`] when the option cannot be set.
    pub fn set_recv_buffer_size(&self, bytes: usize) -> Result<usize> {
        let socket = &self.handle.shared.socket;
        let value = libc::c_int::try_from(bytes)
            .map_err(|_| Error::InvalidArgument("receive buffer size over 2 GiB"))?;
        match socket.set_option(
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            value,
            "SO_RCVBUFFORCE",
        ) {
            Ok(()) => {}
            Err(Error::PermissionDenied { .. }) => {
                socket.set_option(libc::SOL_SOCKET, libc::SO_RCVBUF, value, "SO_RCVBUF")?
            }
            Err(err) => return Err(err),
        }
        let size = socket
            .option(libc::SOL_SOCKET, libc::SO_RCVBUF)
            .map_err(|source| Error::Sys {
                op: "getsockopt(SO_RCVBUF)",
                source,
            })?;
        Ok(size as usize)
    }

    /// With `true`, the kernel no longer reports receive buffer overflows
    /// (`NETLINK_NO_ENOBUFS`): packets are still dropped, silently.
    ///
    /// # Errors
    /// [`Error::Sys`] when the option cannot be set.
    pub fn set_no_enobufs(&self, on: bool) -> Result<()> {
        self.handle.shared.socket.set_option(
            libc::SOL_NETLINK,
            libc::NETLINK_NO_ENOBUFS,
            on.into(),
            "NETLINK_NO_ENOBUFS",
        )
    }

    /// Waits for the next packet.
    ///
    /// # Errors
    /// [`Error::Stopped`] once the [`StopHandle`] was used. Recoverable errors
    /// ([`Error::is_recoverable`]), after which the next call goes on:
    /// [`Error::VerdictRejected`] when the kernel reports a verdict it refused
    /// (e.g. for a stale id), [`Error::ReceiveOverflow`] when packets were lost to
    /// a full receive buffer, [`Error::Malformed`] for a message that cannot be
    /// parsed (skipped). Otherwise [`Error::Sys`].
    pub fn recv(&mut self) -> Result<Packet<'_>> {
        match self.next_packet(Wait::Until(None))? {
            Some(packet) => Ok(packet),
            None => unreachable!("a wait without deadline returns a packet or an error"),
        }
    }

    /// Waits at most `timeout` for the next packet; `Ok(None)` when none came.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<Option<Packet<'_>>> {
        self.next_packet(Wait::Until(Some(Instant::now() + timeout)))
    }

    /// Returns the next packet if one is waiting, without blocking.
    ///
    /// # Errors
    /// As [`recv`](Self::recv), but never [`Error::Stopped`].
    pub fn try_recv(&mut self) -> Result<Option<Packet<'_>>> {
        self.next_packet(Wait::No)
    }

    /// Calls `handler` for every packet until the [`StopHandle`] is used, then
    /// returns `Ok`. Recoverable errors are counted in [`stats`](Self::stats) and
    /// the loop goes on. A packet the handler does not give a verdict gets the
    /// default verdict when the handler returns.
    ///
    /// # Errors
    /// The first unrecoverable receive error.
    pub fn run(&mut self, mut handler: impl FnMut(Packet<'_>)) -> Result<()> {
        loop {
            match self.recv() {
                Ok(packet) => handler(packet),
                Err(Error::Stopped) => return Ok(()),
                Err(err) if err.is_recoverable() => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// Calls `handler` for every packet that is waiting now, then returns how
    /// many there were, without blocking (the Python package's
    /// `run(block=False)`, for event loops that watch [`as_raw_fd`](AsRawFd::as_raw_fd)).
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_nonblocking(&mut self, mut handler: impl FnMut(Packet<'_>)) -> Result<usize> {
        let mut handled = 0;
        loop {
            match self.try_recv() {
                Ok(Some(packet)) => {
                    handled += 1;
                    handler(packet);
                }
                Ok(None) => return Ok(handled),
                Err(err) if err.is_recoverable() => {}
                Err(err) => return Err(err),
            }
        }
    }

    /// A handle that gives verdicts by id from any thread.
    pub fn verdict_handle(&self) -> VerdictHandle {
        self.handle.clone()
    }

    /// A handle that stops blocking receives and [`run`](Self::run).
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// This handle's counters.
    pub fn stats(&self) -> Stats {
        self.handle.shared.counters.snapshot()
    }

    /// The kernel's line for `queue` in /proc/net/netfilter/nfnetlink_queue,
    /// read in this socket's network namespace; `None` when nobody binds it.
    ///
    /// # Errors
    /// When the file cannot be read, or (for a socket in another namespace) the
    /// namespace cannot be entered.
    pub fn kernel_stats(&self, queue: u16) -> Result<Option<QueueStats>> {
        let io_err = |source| Error::Sys {
            op: "reading /proc/net/netfilter/nfnetlink_queue",
            source,
        };
        let ns = netns::of_socket(self.as_raw_fd()).map_err(|source| Error::Sys {
            op: "ioctl(SIOCGSKNS)",
            source,
        })?;
        if netns::is_current(&ns).map_err(io_err)? {
            return QueueStats::read(queue).map_err(io_err);
        }
        netns::run_in(&ns, Path::new("socket namespace"), || {
            QueueStats::read(queue).map_err(io_err)
        })
    }

    /// The name of interface `index` in this socket's network namespace.
    ///
    /// # Errors
    /// [`Error::Sys`] (`ENODEV`) when there is no such interface.
    pub fn interface_name(&self, index: u32) -> Result<InterfaceName> {
        ifname::lookup(self.as_raw_fd(), index).map_err(|source| Error::Sys {
            op: "ioctl(SIOCGIFNAME)",
            source,
        })
    }

    /// Whether messages were read from the socket and wait here to be handled:
    /// the rest of a datagram, or packets that arrived while
    /// [`bind`](Self::bind) or [`configure`](Self::configure) waited for the
    /// kernel's answer. `poll` on the descriptor cannot see them, so an event
    /// loop handles them (with [`try_recv`](Self::try_recv) or
    /// [`run_nonblocking`](Self::run_nonblocking), which take them first) before
    /// it waits for the descriptor to become readable.
    pub fn has_buffered(&self) -> bool {
        self.cursor < self.filled || !self.stash.is_empty()
    }

    /// The socket's netlink port id, as /proc/net/netfilter/nfnetlink_queue shows
    /// it.
    pub fn portid(&self) -> u32 {
        self.handle.shared.socket.portid()
    }

    pub(crate) fn next_packet(&mut self, wait: Wait) -> Result<Option<Packet<'_>>> {
        // Checked before every blocking receive, not only when it would block:
        // under steady traffic the socket is always readable, and `run` would
        // never see the stop.
        if matches!(wait, Wait::Until(_)) && self.stop.is_stopped() {
            return Err(Error::Stopped);
        }
        // Find the next packet message by offsets, so the borrow of the buffer
        // returned in the packet starts only once the loop is done.
        let (queue, start, end) = loop {
            if self.cursor >= self.filled && !self.refill(wait)? {
                return Ok(None);
            }
            let datagram = &self.buf[self.cursor..self.filled];
            let (message, rest) = match next_message(datagram) {
                Ok(parsed) => parsed,
                Err(err) => {
                    self.cursor = self.filled;
                    Counters::bump(&self.handle.shared.counters.malformed);
                    return Err(err.into());
                }
            };
            self.cursor = self.filled - rest.len();
            match message {
                Message::Packet { queue, attrs } => {
                    let start = attrs.as_ptr() as usize - self.buf.as_ptr() as usize;
                    break (queue, start, start + attrs.len());
                }
                Message::Ack(ack) if ack.errno != 0 => {
                    Counters::bump(&self.handle.shared.counters.rejected_verdicts);
                    return Err(rejected(ack));
                }
                _ => continue,
            }
        };
        let counters = &self.handle.shared.counters;
        match PacketView::parse(queue, &self.buf[start..end]) {
            Ok(view) => {
                Counters::bump(&counters.packets);
                Ok(Some(Packet::new(view, &self.handle, self.default)))
            }
            Err(err) => {
                Counters::bump(&counters.malformed);
                Err(err.into())
            }
        }
    }

    /// Loads the next datagram into the buffer: from the stash, or the socket.
    /// `false` when `wait` ran out first.
    fn refill(&mut self, wait: Wait) -> Result<bool> {
        self.cursor = 0;
        self.filled = 0;
        if let Some(stashed) = self.stash.pop_front() {
            self.buf[..stashed.len()].copy_from_slice(&stashed);
            self.filled = stashed.len();
            return Ok(true);
        }
        // A receive without deadline blocks in recv itself (bounded by the
        // socket's receive timeout, so that a stop is seen); the others poll.
        let blocking = matches!(wait, Wait::Until(None));
        loop {
            Counters::bump(&self.handle.shared.counters.recv_calls);
            match self.handle.shared.socket.recv(&mut self.buf, !blocking) {
                Ok(Some(len)) if len > self.buf.len() => {
                    Counters::bump(&self.handle.shared.counters.malformed);
                    return Err(crate::message::MalformedError::DatagramTooLarge {
                        len,
                        capacity: self.buf.len(),
                    }
                    .into());
                }
                Ok(Some(len)) => {
                    self.filled = len;
                    return Ok(true);
                }
                Ok(None) => {}
                Err(Error::ReceiveOverflow) => {
                    Counters::bump(&self.handle.shared.counters.receive_overflows);
                    return Err(Error::ReceiveOverflow);
                }
                Err(err) => return Err(err),
            }
            match wait {
                Wait::No => return Ok(false),
                Wait::Until(None) if self.stop.is_stopped() => return Err(Error::Stopped),
                // The receive timeout ran out, or the descriptor is non-blocking
                // (adopted so, or set so for an event loop) and recv returns at
                // once: then wait in poll, which also sees the stop.
                Wait::Until(None) => {
                    if self.handle.shared.socket.is_nonblocking() {
                        self.wait_readable(None)?;
                    }
                }
                Wait::Until(Some(deadline)) => {
                    if !self.wait_readable(Some(deadline))? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Waits until the socket is readable (`true`), the deadline (if any)
    /// passes (`false`), or the stop handle is used ([`Error::Stopped`]).
    fn wait_readable(&self, deadline: Option<Instant>) -> Result<bool> {
        let mut fds = [
            libc::pollfd {
                fd: self.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: self.stop.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        loop {
            // Round up so a sub-millisecond remainder still waits.
            let timeout_ms = deadline.map_or(-1, |deadline| {
                let left = deadline.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            });
            // SAFETY: `fds` is a valid array of two pollfds.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout_ms) };
            if rc < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(Error::Sys {
                    op: "poll",
                    source: err,
                });
            }
            if fds[1].revents != 0 {
                return Err(Error::Stopped);
            }
            if fds[0].revents != 0 {
                return Ok(true);
            }
            if rc == 0 {
                return Ok(false);
            }
        }
    }

    /// Sends a configuration request for `queue` built by `build` and waits for
    /// the kernel's answer. Messages that arrive meanwhile are kept for `recv`.
    fn request(
        &mut self,
        queue: u16,
        what: &'static str,
        build: impl FnOnce(*mut sys::nlmsghdr),
    ) -> Result<()> {
        #[repr(C, align(8))]
        struct RequestBuf([u8; 256]);
        let mut req = RequestBuf([0; 256]);
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        // SAFETY: the buffer is aligned for nlmsghdr and large enough for the
        // header, nfgenmsg and the one or two small attributes `build` adds.
        let len = unsafe {
            let nlh = sys::nfq_nlmsg_put(
                req.0.as_mut_ptr().cast(),
                sys::nfqnl_msg_types::NFQNL_MSG_CONFIG as i32,
                u32::from(queue),
            );
            (*nlh).nlmsg_flags |= sys::NLM_F_ACK as u16;
            (*nlh).nlmsg_seq = seq;
            build(nlh);
            (*nlh).nlmsg_len as usize
        };
        self.handle
            .shared
            .socket
            .send(&[io::IoSlice::new(&req.0[..len])])?;

        // Keep what is left of the current datagram for later.
        if self.cursor < self.filled {
            self.stash
                .push_front(self.buf[self.cursor..self.filled].into());
        }
        self.cursor = 0;
        self.filled = 0;
        let deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            Counters::bump(&self.handle.shared.counters.recv_calls);
            let len = match self.handle.shared.socket.recv(&mut self.buf, true) {
                Ok(Some(len)) => len.min(self.buf.len()),
                Ok(None) => match self.wait_readable(Some(deadline)) {
                    Ok(true) => continue,
                    Ok(false) | Err(Error::Stopped) => return Err(Error::NoAck { queue, what }),
                    Err(err) => return Err(err),
                },
                Err(Error::ReceiveOverflow) => {
                    Counters::bump(&self.handle.shared.counters.receive_overflows);
                    continue;
                }
                Err(err) => return Err(err),
            };
            let mut answer = None;
            let mut datagram = &self.buf[..len];
            while !datagram.is_empty() {
                let Ok((message, rest)) = next_message(datagram) else {
                    break;
                };
                let this = &datagram[..datagram.len() - rest.len()];
                match message {
                    Message::Ack(ack) if ack.seq == seq && ack.request_kind == MSG_CONFIG => {
                        answer = Some(ack.errno)
                    }
                    _ => self.stash.push_back(this.into()),
                }
                datagram = rest;
            }
            match answer {
                Some(0) => return Ok(()),
                Some(errno) => {
                    return Err(Error::Config {
                        queue,
                        what,
                        source: io::Error::from_raw_os_error(errno),
                    })
                }
                None => {}
            }
        }
    }
}

/// How long a receive may block.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all.
    No,
    /// Until the deadline, or forever.
    Until(Option<Instant>),
}

pub(crate) fn rejected(ack: Ack) -> Error {
    Error::VerdictRejected {
        queue: ack.queue.unwrap_or_default(),
        packet_id: ack.packet_id.unwrap_or(ack.seq),
        source: io::Error::from_raw_os_error(ack.errno),
    }
}

/// The socket, for event loops (`poll`, epoll, tokio's `AsyncFd`). It is
/// readable when the kernel has messages for it; messages this handle has read
/// already are not shown: see [`Queue::has_buffered`]. The receive calls work
/// on a non-blocking descriptor too.
impl AsRawFd for Queue {
    fn as_raw_fd(&self) -> RawFd {
        self.handle.shared.socket.fd()
    }
}

/// As for [`AsRawFd`]: check [`Queue::has_buffered`] before waiting for
/// readability.
impl AsFd for Queue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        // SAFETY: the fd stays open as long as `self` (which holds the socket)
        // is borrowed.
        unsafe { BorrowedFd::borrow_raw(self.as_raw_fd()) }
    }
}
