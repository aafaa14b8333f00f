//! The queue handle: open a socket, bind queue numbers, receive packets.

use crate::config::QueueConfig;
use crate::error::{Error, Result};
use crate::handle::{Shared, VerdictHandle};
use crate::ifname::{self, InterfaceName};
use crate::kernel_stats::KernelStatsReader;
use crate::netns;
use crate::packet::Packet;
use crate::recv_buffer::{Found, RecvBuffer, Wait};
use crate::socket::NetlinkSocket;
use crate::stats::{Counters, QueueStats, Stats};
use crate::stop::StopHandle;
use crate::verdict::VerdictKind;
use crate::view::PacketView;
use nfqueue_sys as sys;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    handle: VerdictHandle,
    buffer: RecvBuffer,
    seq: u32,
    /// The bound queue numbers.
    bound: Vec<u16>,
    /// For each of `bound`, the verdict for its packets left without one.
    unanswered: Vec<VerdictKind>,
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
            buffer: RecvBuffer::new(),
            seq: 0,
            bound: Vec::new(),
            unanswered: Vec::new(),
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
        self.unanswered.push(config.unanswered);
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
        let Some(at) = self.bound.iter().position(|&q| q == queue) else {
            return Err(Error::NotBound { queue });
        };
        self.unanswered[at] = config.unanswered;
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
        self.unanswered.remove(at);
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

    /// The verdict packets of `queue` get when dropped without one (set by
    /// [`QueueConfig::unanswered`]); `None` when this socket has not bound it.
    pub fn unanswered_verdict(&self, queue: u16) -> Option<VerdictKind> {
        let at = self.bound.iter().position(|&q| q == queue)?;
        Some(self.unanswered[at])
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
    /// unanswered verdict of its queue when the handler returns.
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
        self.kernel_stats_reader()?.read(queue)
    }

    /// A reader of the kernel's counters of this socket's network namespace,
    /// for any thread, which stays usable after the queue is gone.
    ///
    /// # Errors
    /// [`Error::Sys`] when the socket's namespace cannot be found.
    pub fn kernel_stats_reader(&self) -> Result<KernelStatsReader> {
        self.handle.kernel_stats_reader()
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
        self.buffer.has_buffered()
    }

    /// The socket's netlink port id, as /proc/net/netfilter/nfnetlink_queue shows
    /// it.
    pub fn portid(&self) -> u32 {
        self.handle.shared.socket.portid()
    }

    /// Calls `handler` for every packet waiting now, reading up to
    /// [`BURST_LEN`](crate::BURST_LEN) datagrams per system call (`recvmmsg`),
    /// without blocking; returns how many packets it handled. It stops once the
    /// socket is empty or about `max` packets were handled (a burst already
    /// read is always handled whole).
    ///
    /// Unlike [`try_recv`](Self::try_recv), it reports nothing as an error that
    /// leaves the queue usable: verdicts the kernel rejected, overflows of the
    /// receive buffer and malformed messages are counted in
    /// [`stats`](Self::stats) and skipped. The first call allocates 2 MiB of
    /// buffers, kept for later calls.
    ///
    /// # Errors
    /// [`Error::Sys`] when receiving fails otherwise.
    pub fn recv_burst(&mut self, max: usize, mut handler: impl FnMut(Packet<'_>)) -> Result<usize> {
        let Queue {
            handle,
            buffer,
            bound,
            unanswered,
            stop,
            ..
        } = self;
        let counters = &handle.shared.counters;
        let fd = handle.as_fd().as_raw_fd();
        buffer.burst(
            &handle.shared,
            stop,
            max,
            |queue, attrs| match PacketView::parse_with_names(queue, attrs, Some(fd)) {
                Ok(view) => {
                    Counters::bump_receive(&counters.packets);
                    let unanswered = unanswered_for(bound, unanswered, queue);
                    handler(Packet::new(view, handle, unanswered));
                    true
                }
                Err(_) => {
                    Counters::bump_receive(&counters.malformed);
                    false
                }
            },
        )
    }

    pub(crate) fn next_packet(&mut self, wait: Wait) -> Result<Option<Packet<'_>>> {
        match self.next_found(wait)? {
            Some(found) => self.packet_at(found).map(Some),
            None => Ok(None),
        }
    }

    /// Finds the next packet without borrowing it yet.
    pub(crate) fn next_found(&mut self, wait: Wait) -> Result<Option<Found>> {
        // Checked before every blocking receive, not only when it would block:
        // under steady traffic the socket is always readable, and `run` would
        // never see the stop.
        if matches!(wait, Wait::Until(_)) && self.stop.is_stopped() {
            return Err(Error::Stopped);
        }
        self.buffer
            .next_packet(&self.handle.shared, &self.stop, wait)
    }

    /// The packet found by [`next_found`](Self::next_found).
    pub(crate) fn packet_at(&self, found: Found) -> Result<Packet<'_>> {
        let counters = &self.handle.shared.counters;
        let fd = Some(self.as_raw_fd());
        match PacketView::parse_with_names(found.queue, self.buffer.attrs(found), fd) {
            Ok(view) => {
                Counters::bump_receive(&counters.packets);
                let unanswered = unanswered_for(&self.bound, &self.unanswered, found.queue);
                Ok(Packet::new(view, &self.handle, unanswered))
            }
            Err(err) => {
                Counters::bump_receive(&counters.malformed);
                Err(err.into())
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

        let deadline = Instant::now() + ACK_TIMEOUT;
        match self
            .buffer
            .await_answer(&self.handle.shared, &self.stop, seq, deadline)?
        {
            Some(0) => Ok(()),
            Some(errno) => Err(Error::Config {
                queue,
                what,
                source: io::Error::from_raw_os_error(errno),
            }),
            None => Err(Error::NoAck { queue, what }),
        }
    }
}

/// The unanswered verdict of `queue`: as bound, or drop for a packet of a
/// queue no longer bound (its unbind dropped it already).
fn unanswered_for(bound: &[u16], unanswered: &[VerdictKind], queue: u16) -> VerdictKind {
    bound
        .iter()
        .position(|&q| q == queue)
        .map_or(VerdictKind::Drop, |at| unanswered[at])
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
