//! Receiving with tokio: a [`Queue`] registered with the reactor, read when the
//! socket is readable, so that one task can wait on the queue beside timers,
//! channels and sockets (`tokio::select!`) and packets can move into spawned
//! tasks.
//!
//! Verdicts stay synchronous, through the same methods as with a plain
//! [`Queue`]: a netlink send to the kernel never waits for buffer space (the
//! kernel handles the message inside `sendmsg`, whatever `O_NONBLOCK` says),
//! so a verdict cannot block a runtime thread and there is nothing to await.

use crate::config::QueueConfig;
use crate::deferred::OwnedPacket;
use crate::error::{Error, Result};
use crate::packet::Packet;
use crate::queue::{check_burst_max, Queue};
use crate::recv_buffer::{Found, Wait};
use crate::stats::Stats;
use futures_core::Stream;
use std::future::poll_fn;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A [`Queue`] for tokio (feature `tokio`): `recv` is `async`, and dropping a
/// `recv` future loses no packet, so it fits `tokio::select!` and timeouts.
///
/// ```no_run
/// use nfqueue_core::{AsyncQueue, Queue, QueueConfig, Verdict};
///
/// # async fn run() -> nfqueue_core::Result<()> {
/// let mut queue = Queue::open()?;
/// queue.bind(0, &QueueConfig::default())?;
/// let mut queue = AsyncQueue::new(queue)?;
/// loop {
///     // An owned packet moves into a task; its verdict can wait on async work
///     // while other packets flow.
///     let packet = queue.recv_owned().await?;
///     tokio::spawn(async move {
///         let allowed = packet.view().payload().len() < 1400; // an async lookup, say
///         let verdict = if allowed { Verdict::accept() } else { Verdict::drop() };
///         if let Err(err) = packet.verdict(&verdict) {
///             eprintln!("{err}");
///         }
///     });
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct AsyncQueue {
    fd: AsyncFd<Queue>,
    /// The stop handle's eventfd, readable once stopped: a receive waiting
    /// for the socket wakes for it too.
    stop: AsyncFd<OwnedFd>,
}

impl AsyncQueue {
    /// Registers `queue` with the tokio reactor of the current runtime and puts
    /// its socket in non-blocking mode (the blocking receives of the `Queue`
    /// still work on it, should it be taken back with
    /// [`into_inner`](Self::into_inner)).
    ///
    /// # Errors
    /// [`Error::Sys`] when the descriptor cannot be made non-blocking or
    /// registered.
    ///
    /// # Panics
    /// When called outside a tokio runtime with I/O enabled, as tokio's
    /// `AsyncFd` does.
    pub fn new(queue: Queue) -> Result<Self> {
        set_nonblocking(queue.as_raw_fd())?;
        // SAFETY: dup of the stop handle's eventfd, which `queue` keeps open;
        // the copy is owned here.
        let stop = unsafe { libc::dup(queue.stop_handle().fd()) };
        if stop < 0 {
            return Err(Error::last_os("dup"));
        }
        // SAFETY: `stop` is a new descriptor that nothing else owns.
        let stop = unsafe { OwnedFd::from_raw_fd(stop) };
        // SAFETY: an OwnedFd keeps its descriptor open, unchanged, until it is
        // dropped, which the AsyncFd does after deregistering it.
        let stop = unsafe { AsyncFd::register_with_interest(stop, Interest::READABLE) }
            .map_err(|err| sys("registering with the tokio reactor")(err.into_parts().1))?;
        // SAFETY: the queue owns its socket and keeps it open, under the same
        // descriptor, for as long as it lives: while the AsyncFd owns it, and
        // after into_inner gives it back.
        let fd = unsafe { AsyncFd::register_with_interest(queue, Interest::READABLE) }
            .map_err(|err| sys("registering with the tokio reactor")(err.into_parts().1))?;
        Ok(AsyncQueue { fd, stop })
    }

    /// The queue, for everything but receiving and changing its bindings:
    /// verdict and stop handles, counters, the receive buffer's size.
    pub fn get_ref(&self) -> &Queue {
        self.fd.get_ref()
    }

    /// Binds queue number `queue`, as [`Queue::bind`] does.
    ///
    /// There is no `&mut Queue` while the socket is registered with the
    /// reactor (safe code could replace the queue and close a registered
    /// descriptor); these methods are what needs one.
    ///
    /// # Errors
    /// As [`Queue::bind`].
    pub fn bind(&mut self, queue: u16, config: &QueueConfig) -> Result<()> {
        self.fd.get_mut().bind(queue, config)
    }

    /// Changes the settings of a bound queue, as [`Queue::configure`] does.
    ///
    /// # Errors
    /// As [`Queue::configure`].
    pub fn configure(&mut self, queue: u16, config: &QueueConfig) -> Result<()> {
        self.fd.get_mut().configure(queue, config)
    }

    /// Unbinds queue number `queue`, as [`Queue::unbind`] does.
    ///
    /// # Errors
    /// As [`Queue::unbind`].
    pub fn unbind(&mut self, queue: u16) -> Result<()> {
        self.fd.get_mut().unbind(queue)
    }

    /// This handle's counters, as [`Queue::stats`].
    pub fn stats(&self) -> Stats {
        self.fd.get_ref().stats()
    }

    /// Takes the queue back out of the reactor.
    pub fn into_inner(self) -> Queue {
        self.fd.into_inner()
    }

    /// Waits for the next packet.
    ///
    /// Cancel-safe: the future waits only for readiness, and reads and returns
    /// a packet in one step, so a future dropped before it is ready (by
    /// `select!` or a timeout) has taken nothing from the socket.
    ///
    /// # Errors
    /// As [`Queue::recv`]: [`Error::Stopped`] once the queue's
    /// [`StopHandle`](crate::StopHandle) was used (a waiting receive wakes for
    /// it), recoverable errors ([`Error::is_recoverable`]) after which the
    /// next call goes on, and [`Error::Sys`].
    pub async fn recv(&mut self) -> Result<Packet<'_>> {
        let found = poll_fn(|cx| self.poll_found(cx)).await?;
        self.fd.get_ref().packet_at(found)
    }

    /// Waits for the next packet and copies it out of the receive buffer, with
    /// the right to give its verdict, so that it can move into a spawned task.
    ///
    /// # Errors
    /// As [`recv`](Self::recv).
    pub async fn recv_owned(&mut self) -> Result<OwnedPacket> {
        self.recv().await.map(Packet::into_owned)
    }

    /// Waits until packets are readable, then handles what is waiting as
    /// [`Queue::recv_burst`] does (up to 16 datagrams per `recvmmsg`, about
    /// `max` packets); returns how many it handled, at least one. Cancel-safe
    /// as [`recv`](Self::recv) is.
    ///
    /// # Errors
    /// [`Error::OutOfRange`] for a `max` of 0, at once; [`Error::Stopped`]
    /// once the stop handle was used; otherwise as [`Queue::recv_burst`].
    pub async fn recv_burst(
        &mut self,
        max: usize,
        mut handler: impl FnMut(Packet<'_>),
    ) -> Result<usize> {
        check_burst_max(max)?;
        poll_fn(|cx| self.poll_burst(cx, max, &mut handler)).await
    }

    /// The packets as a [`Stream`] of owned packets, for stream combinators
    /// (`StreamExt::for_each_concurrent`, `take`, ...). It ends when the stop
    /// handle is used.
    pub fn into_stream(self) -> PacketStream {
        PacketStream { queue: self }
    }

    /// Whether the stop handle was used.
    fn stopped(&self) -> bool {
        self.fd.get_ref().stop_handle().is_stopped()
    }

    /// `Pending`, with this task to be woken by the stop handle too, or
    /// [`Error::Stopped`] if it was used meanwhile. Called only when about to
    /// sleep on the socket: registering a waker costs a lock, which a busy
    /// queue should not pay per packet.
    fn pending_unless_stopped<T>(&self, cx: &mut Context<'_>) -> Poll<Result<T>> {
        if self.stop.poll_read_ready(cx).is_ready() || self.stopped() {
            Poll::Ready(Err(Error::Stopped))
        } else {
            Poll::Pending
        }
    }

    /// Where the next packet lies in the receive buffer, reading a datagram
    /// when the socket is readable.
    fn poll_found(&mut self, cx: &mut Context<'_>) -> Poll<Result<Found>> {
        loop {
            if self.stopped() {
                return Poll::Ready(Err(Error::Stopped));
            }
            // Messages read already (the rest of a datagram, or packets kept
            // while a request waited for its answer) first: poll cannot see
            // them.
            if self.fd.get_ref().has_buffered() {
                match self.fd.get_mut().next_found(Wait::No) {
                    Ok(Some(found)) => return Poll::Ready(Ok(found)),
                    Ok(None) => continue,
                    Err(err) => return Poll::Ready(Err(err)),
                }
            }
            let mut ready = match self.fd.poll_read_ready_mut(cx) {
                Poll::Pending => return self.pending_unless_stopped(cx),
                Poll::Ready(Ok(ready)) => ready,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(sys("poll")(err))),
            };
            match ready.get_inner_mut().next_found(Wait::No) {
                Ok(Some(found)) => return Poll::Ready(Ok(found)),
                // Readiness is cleared only once the socket said EAGAIN.
                Ok(None) => ready.clear_ready(),
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }

    /// [`recv_burst`](Self::recv_burst), polled.
    fn poll_burst(
        &mut self,
        cx: &mut Context<'_>,
        max: usize,
        handler: &mut impl FnMut(Packet<'_>),
    ) -> Poll<Result<usize>> {
        loop {
            if self.stopped() {
                return Poll::Ready(Err(Error::Stopped));
            }
            if self.fd.get_ref().has_buffered() {
                match self.fd.get_mut().recv_burst(max, &mut *handler) {
                    Ok(0) => continue,
                    handled => return Poll::Ready(handled),
                }
            }
            let mut ready = match self.fd.poll_read_ready_mut(cx) {
                Poll::Pending => return self.pending_unless_stopped(cx),
                Poll::Ready(Ok(ready)) => ready,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(sys("poll")(err))),
            };
            match ready.get_inner_mut().recv_burst(max, &mut *handler) {
                // A burst that handled nothing found the socket empty.
                Ok(0) => ready.clear_ready(),
                handled => return Poll::Ready(handled),
            }
        }
    }
}

/// Puts `fd` in non-blocking mode, keeping its other flags.
fn set_nonblocking(fd: RawFd) -> Result<()> {
    // SAFETY: F_GETFL and F_SETFL on a descriptor the caller keeps open; no
    // memory is passed.
    let rc = unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 {
            flags
        } else {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK)
        }
    };
    if rc < 0 {
        return Err(Error::last_os("fcntl(O_NONBLOCK)"));
    }
    Ok(())
}

/// The packets of an [`AsyncQueue`], owned, as a [`Stream`]. Every item is a
/// packet or a receive error (recoverable ones included, as
/// [`AsyncQueue::recv`] returns them); the stream ends once the queue's stop
/// handle is used.
#[derive(Debug)]
pub struct PacketStream {
    queue: AsyncQueue,
}

impl PacketStream {
    /// The queue, for verdict and stop handles, settings and counters.
    pub fn get_ref(&self) -> &Queue {
        self.queue.get_ref()
    }

    /// The [`AsyncQueue`] back.
    pub fn into_inner(self) -> AsyncQueue {
        self.queue
    }
}

impl Stream for PacketStream {
    type Item = Result<OwnedPacket>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let queue = &mut self.get_mut().queue;
        match ready!(queue.poll_found(cx)) {
            Ok(found) => {
                let packet = queue.fd.get_ref().packet_at(found);
                Poll::Ready(Some(packet.map(Packet::into_owned)))
            }
            Err(Error::Stopped) => Poll::Ready(None),
            Err(err) => Poll::Ready(Some(Err(err))),
        }
    }
}

/// Wraps an I/O error of `op`.
fn sys(op: &'static str) -> impl Fn(io::Error) -> Error {
    move |source| Error::Sys { op, source }
}
