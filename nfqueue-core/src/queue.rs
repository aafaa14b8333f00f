//! The queue handle: open a socket, bind queue numbers, receive packets.

use crate::binding::{Binding, Bindings};
use crate::config::QueueConfig;
use crate::deadline::{self, Deadline, Watch};
use crate::error::{Error, Result};
use crate::handle::{Shared, VerdictHandle};
use crate::ifname::{self, InterfaceName};
use crate::kernel_stats::KernelStatsReader;
use crate::netns;
use crate::packet::Packet;
use crate::recv_buffer::{Answer, Found, RecvBuffer, Wait};
use crate::socket::NetlinkSocket;
use crate::stats::{Counters, QueueStats, Stats};
use crate::stop::StopHandle;
use crate::verdict::Verdict;
use crate::verdict::VerdictKind;
use crate::view::{self, PacketView};
use nfqueue_sys as sys;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// How long a configuration request waits for the kernel's answer. The kernel
/// answers while handling the request, so the answer is there at once, or was
/// lost to a full receive buffer, which is seen at once too; this only bounds
/// the wait should a kernel ever answer later.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How many times a request whose answer was lost to a full receive buffer is
/// sent again (each time after the buffer was read empty). Every request is
/// safe to repeat: see [`Queue::request`].
const LOST_ANSWER_RETRIES: usize = 3;

/// A queue number this socket has bound.
#[derive(Debug, Clone, Copy)]
struct Bound {
    binding: Binding,
    /// The verdict for its packets left without one.
    unanswered: VerdictKind,
    /// Whether its packets are watched for a deadline.
    deadline: bool,
}

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
    /// The bound queue numbers, as the shared table of bindings has them too.
    bound: Vec<Bound>,
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
        let shared = Shared {
            socket,
            counters: Counters::default(),
            bindings: Bindings::default(),
            deadlines: OnceLock::new(),
        };
        Ok(Queue {
            handle: VerdictHandle {
                shared: Arc::new(shared),
            },
            buffer: RecvBuffer::new(),
            seq: 0,
            bound: Vec::new(),
            stop: StopHandle::new()?,
        })
    }

    /// Binds queue number `queue` to this socket and applies `config`, in one
    /// request that the kernel takes whole or not at all. Packet ids of the
    /// queue start again at 1, and a new [`Binding`] begins: packets of an
    /// earlier binding of the same number get no verdict from now on (the
    /// kernel dropped them when it was unbound).
    ///
    /// # Errors
    /// The errors of [`QueueConfig::validate`], before anything is sent;
    /// [`Error::QueueTaken`] when another socket has bound it,
    /// [`Error::AlreadyBound`] when this one has, [`Error::PermissionDenied`]
    /// without CAP_NET_ADMIN, [`Error::Config`] when the kernel refuses a
    /// setting (e.g. `EOPNOTSUPP` for [`QueueFlags::CONNTRACK`](crate::QueueFlags::CONNTRACK)
    /// when the nf_conntrack_netlink module is missing, or
    /// [`QueueFlags::SECCTX`](crate::QueueFlags::SECCTX) without
    /// CONFIG_NETWORK_SECMARK). After an error, nothing has changed: the
    /// queue is not bound.
    pub fn bind(&mut self, queue: u16, config: &QueueConfig) -> Result<()> {
        if self.at(queue).is_some() {
            return Err(Error::AlreadyBound { queue });
        }
        config.validate()?;
        if config.packet_deadline().is_some() {
            self.watcher()?;
        }
        let bound = self.request(queue, Request::Bind, |nlh| {
            // SAFETY: `nlh` heads a request buffer with room for the command
            // and the settings.
            unsafe {
                sys::nfq_nlmsg_cfg_put_cmd(
                    nlh,
                    libc::AF_UNSPEC as u16,
                    sys::nfqnl_msg_config_cmds::NFQNL_CFG_CMD_BIND as u8,
                );
                config.put(nlh)
            }
        });
        match bound {
            Ok(()) => {}
            Err(Error::Config { source, .. }) if source.raw_os_error() == Some(libc::EPERM) => {
                return Err(self.why_not_permitted(queue));
            }
            // A repeat after a lost answer finds the queue bound by this very
            // request; otherwise it was bound through this socket by another
            // handle of it.
            Err(Error::Config { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
                return Err(Error::AlreadyBound { queue });
            }
            Err(err) => return Err(err),
        }
        // Packets of the queue read before the answer came through an earlier
        // binding of the number.
        self.buffer.discard(&self.handle.shared, queue);
        let binding = Binding::new(queue);
        self.handle.shared.bindings.add(binding);
        self.bound.push(Bound {
            binding,
            unanswered: config.unanswered,
            deadline: false,
        });
        self.set_deadline(self.bound.len() - 1, config.packet_deadline());
        Ok(())
    }

    /// The socket's deadline watcher, started the first time a queue has a
    /// deadline (before anything changes: starting a thread is what can fail).
    fn watcher(&mut self) -> Result<&Arc<Watch>> {
        let deadlines = &self.handle.shared.deadlines;
        if deadlines.get().is_none() {
            let watch = Arc::new(Watch::default());
            let socket = Arc::downgrade(&self.handle.shared);
            deadline::start(Arc::clone(&watch), socket).map_err(|source| Error::Sys {
                op: "spawning the deadline thread",
                source,
            })?;
            let _ = deadlines.set(watch);
        }
        Ok(deadlines.get().expect("set above"))
    }

    /// Watches the packets of `bound[at]` for `deadline` from now on, or no
    /// longer (the watcher runs already when there is one).
    fn set_deadline(&mut self, at: usize, deadline: Option<Deadline>) {
        let binding = self.bound[at].binding;
        if let Some(watch) = self.handle.shared.deadlines.get() {
            watch.unwatch(binding);
            if let Some(deadline) = deadline {
                watch.watch(binding, deadline);
            }
        }
        self.bound[at].deadline = deadline.is_some();
    }

    /// Why the kernel said `EPERM` to a bind: without privilege, or because
    /// another socket holds the queue; the /proc line tells them apart.
    fn why_not_permitted(&self, queue: u16) -> Error {
        match self.kernel_stats(queue) {
            Ok(Some(stats)) if stats.portid != self.portid() => Error::QueueTaken {
                queue,
                owner_portid: stats.portid,
            },
            Ok(_) => Error::PermissionDenied {
                op: "binding a queue",
            },
            // Without the /proc line (unreadable from a user namespace that
            // does not own the network namespace) both are possible.
            Err(_) => Error::PermissionDenied {
                op: "binding a queue (unless another socket holds it: \
                     /proc/net/netfilter/nfnetlink_queue could not be read to tell)",
            },
        }
    }

    /// Applies `config` to a bound queue: every setting of it, defaults
    /// included (see [`QueueConfig`]), in one request that the kernel takes
    /// whole or not at all.
    ///
    /// # Errors
    /// [`Error::NotBound`]; the errors of [`QueueConfig::validate`], before
    /// anything is sent; [`Error::Config`] naming the setting the kernel
    /// refused, as for [`bind`](Self::bind). After an error nothing has
    /// changed: not the settings, not the unanswered verdict.
    pub fn configure(&mut self, queue: u16, config: &QueueConfig) -> Result<()> {
        let Some(at) = self.at(queue) else {
            return Err(Error::NotBound { queue });
        };
        config.validate()?;
        if config.packet_deadline().is_some() {
            self.watcher()?;
        }
        self.request(queue, Request::Configure, |nlh| {
            // SAFETY: `nlh` heads a request buffer with room for the settings.
            unsafe { config.put(nlh) }
        })?;
        self.bound[at].unanswered = config.unanswered;
        self.set_deadline(at, config.packet_deadline());
        Ok(())
    }

    /// Unbinds queue number `queue`: the kernel drops the packets still waiting
    /// in it, and new ones are dropped (or accepted with `--queue-bypass`) until
    /// a program binds it again. The binding ends: no verdict for a packet
    /// received through it is sent any more (see [`Binding`]), and packets of
    /// it read but not yet handed out are dropped here (counted in
    /// [`Stats::stale_packets`]).
    ///
    /// # Errors
    /// [`Error::NotBound`], or [`Error::Config`] when the kernel refuses; the
    /// queue is still bound then.
    pub fn unbind(&mut self, queue: u16) -> Result<()> {
        let Some(at) = self.at(queue) else {
            return Err(Error::NotBound { queue });
        };
        let unbound = self.request(queue, Request::Unbind, |nlh| {
            // SAFETY: `nlh` heads a request buffer with room for this attribute.
            unsafe {
                sys::nfq_nlmsg_cfg_put_cmd(
                    nlh,
                    libc::AF_UNSPEC as u16,
                    sys::nfqnl_msg_config_cmds::NFQNL_CFG_CMD_UNBIND as u8,
                )
            };
            Ok(())
        });
        match unbound {
            Ok(()) => {}
            // Not bound in the kernel (a repeat after a lost answer, or the
            // namespace is going away): unbound, as asked.
            Err(Error::Config { source, .. }) if source.raw_os_error() == Some(libc::ENODEV) => {}
            Err(err) => return Err(err),
        }
        let Bound { binding, .. } = self.bound.remove(at);
        self.handle.shared.bindings.remove(binding);
        if let Some(watch) = self.handle.shared.deadlines.get() {
            watch.unwatch(binding);
        }
        self.buffer.discard(&self.handle.shared, queue);
        Ok(())
    }

    /// Where `queue` is in `bound`.
    fn at(&self, queue: u16) -> Option<usize> {
        self.bound.iter().position(|b| b.binding.queue() == queue)
    }

    /// The queue numbers bound to this socket.
    pub fn bound_queues(&self) -> Vec<u16> {
        self.bound.iter().map(|b| b.binding.queue()).collect()
    }

    /// The current binding of `queue`, `None` when this socket has not bound
    /// it: with [`Binding::packet`], the key for a verdict by id.
    pub fn binding(&self, queue: u16) -> Option<Binding> {
        self.at(queue).map(|at| self.bound[at].binding)
    }

    /// The verdict packets of `queue` get when dropped without one (set by
    /// [`QueueConfig::unanswered`]); `None` when this socket has not bound it.
    pub fn unanswered_verdict(&self, queue: u16) -> Option<VerdictKind> {
        self.at(queue).map(|at| self.bound[at].unanswered)
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

    /// Moves the buffer the kernel writes each received datagram into to
    /// `offset` bytes into a page, for benchmarks that compare placements
    /// (the default, 256, is the one the kernel copies into fastest).
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for an offset of a page (4096) or more;
    /// [`Error::InvalidArgument`] while received messages wait in the buffer.
    #[doc(hidden)]
    pub fn set_recv_offset(&mut self, offset: usize) -> Result<()> {
        if offset >= 4096 {
            return Err(Error::OutOfRange {
                name: "receive buffer offset",
                value: offset as u64,
                min: 0,
                max: 4095,
                why: "it is an offset in a page",
            });
        }
        if !self.buffer.set_offset(offset) {
            return Err(Error::InvalidArgument(
                "messages wait in the receive buffer: move it before receiving",
            ));
        }
        Ok(())
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
        // Without a deadline the wait ends with a packet or an error; no
        // Option to go through (a packet is large to move).
        let found = loop {
            if let Some(found) = self.next_found(Wait::Until(None))? {
                break found;
            }
        };
        self.packet_at(found)
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
    /// A packet that cannot be parsed is dropped by id (counted in
    /// [`Stats::malformed_dropped`]), and one of a binding that has ended is
    /// skipped (see [`unbind`](Self::unbind)).
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a `max` of 0; [`Error::Sys`] when receiving
    /// fails otherwise.
    pub fn recv_burst(&mut self, max: usize, mut handler: impl FnMut(Packet<'_>)) -> Result<usize> {
        check_burst_max(max)?;
        let Queue {
            handle,
            buffer,
            bound,
            stop,
            ..
        } = self;
        let fd = handle.as_fd().as_raw_fd();
        buffer.burst(&handle.shared, stop, max, |queue, attrs| {
            match admit(bound, handle, queue, attrs, fd) {
                Ok(packet) => {
                    handler(packet);
                    true
                }
                Err(_) => false,
            }
        })
    }

    pub(crate) fn next_packet(&mut self, wait: Wait) -> Result<Option<Packet<'_>>> {
        match self.next_found(wait)? {
            Some(found) => self.packet_at(found).map(Some),
            None => Ok(None),
        }
    }

    /// Finds the next packet without borrowing it yet, skipping those of
    /// bindings that have ended (the kernel dropped them at the unbind).
    pub(crate) fn next_found(&mut self, wait: Wait) -> Result<Option<Found>> {
        // Checked before every blocking receive, not only when it would block:
        // under steady traffic the socket is always readable, and `run` would
        // never see the stop.
        if matches!(wait, Wait::Until(_)) && self.stop.is_stopped() {
            return Err(Error::Stopped);
        }
        loop {
            let found = self
                .buffer
                .next_packet(&self.handle.shared, &self.stop, wait)?;
            match found {
                Some(found) if self.at(found.queue).is_none() => {
                    Counters::bump_receive(&self.handle.shared.counters.stale_packets);
                }
                found => return Ok(found),
            }
        }
    }

    /// The packet found by [`next_found`](Self::next_found).
    ///
    /// # Errors
    /// [`Error::Malformed`] when it cannot be parsed (the packet was dropped
    /// by id where its id could be read), [`Error::StaleBinding`] for a packet
    /// of a binding that has ended (which the kernel dropped).
    pub(crate) fn packet_at(&self, found: Found) -> Result<Packet<'_>> {
        admit(
            &self.bound,
            &self.handle,
            found.queue,
            self.buffer.attrs(found),
            self.as_raw_fd(),
        )
    }

    /// Sends a configuration request for `queue` built by `build` and waits for
    /// the kernel's answer. Messages that arrive meanwhile are kept for `recv`,
    /// but for the packets of a queue being unbound.
    ///
    /// An answer lost to a full receive buffer does not say whether the
    /// request was taken, so the request is sent again once the buffer was
    /// read empty: every request here is safe to repeat. A configuration sets
    /// the same values again; a repeated bind finds the queue bound by this
    /// socket (`EBUSY`) and a repeated unbind finds it gone (`ENODEV`), which
    /// the callers read as success when a first answer was lost.
    fn request(
        &mut self,
        queue: u16,
        kind: Request,
        build: impl Fn(*mut sys::nlmsghdr) -> Result<()>,
    ) -> Result<()> {
        let what = kind.what();
        let discard = matches!(kind, Request::Unbind).then_some(queue);
        #[repr(C, align(8))]
        struct RequestBuf([u8; 256]);
        let mut lost = 0;
        loop {
            let mut req = RequestBuf([0; 256]);
            self.seq = self.seq.wrapping_add(1);
            let seq = self.seq;
            // SAFETY: the buffer is aligned for nlmsghdr and large enough for
            // the header, nfgenmsg and the attributes `build` adds (a command
            // and the settings: under 80 bytes).
            let len = unsafe {
                let nlh = sys::nfq_nlmsg_put(
                    req.0.as_mut_ptr().cast(),
                    sys::nfqnl_msg_types::NFQNL_MSG_CONFIG as i32,
                    u32::from(queue),
                );
                (*nlh).nlmsg_flags |= sys::NLM_F_ACK as u16;
                (*nlh).nlmsg_seq = seq;
                build(nlh)?;
                (*nlh).nlmsg_len as usize
            };
            self.handle
                .shared
                .socket
                .send(&[io::IoSlice::new(&req.0[..len])])?;

            let deadline = Instant::now() + ACK_TIMEOUT;
            let answer = self.buffer.await_answer(
                &self.handle.shared,
                &self.stop,
                seq,
                discard,
                deadline,
            )?;
            let errno = match answer {
                Answer::Errno(0) => return Ok(()),
                Answer::Errno(errno) => errno,
                Answer::Lost if lost < LOST_ANSWER_RETRIES => {
                    lost += 1;
                    continue;
                }
                Answer::Lost | Answer::Late => return Err(Error::NoAck { queue, what }),
            };
            return Err(match errno {
                // The request whose answer was lost was taken.
                _ if lost > 0 && Some(errno) == kind.repeated_ok() => return Ok(()),
                // The kernel loaded the conntrack module for the request and
                // asks for it again.
                libc::EAGAIN if lost < LOST_ANSWER_RETRIES => {
                    lost += 1;
                    continue;
                }
                libc::EOPNOTSUPP => Error::Config {
                    queue,
                    what: "flags",
                    source: io::Error::from_raw_os_error(errno),
                },
                _ => Error::Config {
                    queue,
                    what,
                    source: io::Error::from_raw_os_error(errno),
                },
            });
        }
    }
}

/// The configuration requests a queue sends.
#[derive(Debug, Clone, Copy)]
enum Request {
    Bind,
    Configure,
    Unbind,
}

impl Request {
    /// What an error names.
    fn what(self) -> &'static str {
        match self {
            Request::Bind => "bind",
            Request::Configure => "configure",
            Request::Unbind => "unbind",
        }
    }

    /// The errno a repeat of the request gets when the first one, whose
    /// answer was lost, was taken.
    fn repeated_ok(self) -> Option<i32> {
        match self {
            Request::Bind => Some(libc::EBUSY),
            Request::Unbind => Some(libc::ENODEV),
            Request::Configure => None,
        }
    }
}

/// What a packet message read from the socket becomes: a [`Packet`] of its
/// binding, or an error for one that cannot be handed out. A packet that
/// cannot be parsed is dropped by id, if its id can be read (so that it does
/// not wait in the kernel, where a later batch verdict would settle it too);
/// one of a binding that has ended is skipped (the kernel dropped it).
#[inline]
fn admit<'a>(
    bound: &[Bound],
    handle: &'a VerdictHandle,
    queue: u16,
    attrs: &'a [u8],
    names: RawFd,
) -> Result<Packet<'a>> {
    let counters = &handle.shared.counters;
    let Some(bound) = bound.iter().find(|b| b.binding.queue() == queue) else {
        Counters::bump_receive(&counters.stale_packets);
        return Err(Error::StaleBinding {
            queue,
            packet_id: view::packet_id(attrs).unwrap_or_default(),
        });
    };
    match PacketView::parse_with_names(bound.binding, attrs, Some(names)) {
        Ok(view) => {
            Counters::bump_receive(&counters.packets);
            let claim = if bound.deadline {
                let watch = handle.shared.deadlines.get();
                watch.and_then(|watch| watch.hand_out(view.key(), Instant::now()))
            } else {
                None
            };
            Ok(Packet::new(view, handle, bound.unanswered, claim))
        }
        Err(err) => {
            Counters::bump_receive(&counters.malformed);
            let dropped = view::packet_id(attrs).is_some_and(|id| {
                handle
                    .verdict(bound.binding.packet(id), &Verdict::drop())
                    .is_ok()
            });
            Counters::bump_receive(if dropped {
                &counters.malformed_dropped
            } else {
                &counters.malformed_unsettled
            });
            Err(err.into())
        }
    }
}

/// Refuses a burst of no packets, which could only return at once having
/// handled nothing (or, waiting for packets, never return).
pub(crate) fn check_burst_max(max: usize) -> Result<()> {
    if max == 0 {
        return Err(Error::OutOfRange {
            name: "recv_burst max",
            value: 0,
            min: 1,
            max: usize::MAX as u64,
            why: "a burst of 0 packets handles none",
        });
    }
    Ok(())
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
