//! The receive side of a queue socket: the buffer of the datagram being read,
//! the messages kept while a configuration request waited for its answer, and
//! the buffers of burst receives (`recvmmsg`).
//!
//! It finds packet messages by offset, not by reference, so that the caller
//! can borrow the bytes for as long as it needs once the search is over.

use crate::error::{Error, Result};
use crate::handle::Shared;
use crate::message::{next_message, packet_prefix, Ack, Message, MSG_CONFIG};
use crate::stats::Counters;
use crate::stop::StopHandle;
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::mem;
use std::ops::{Deref, DerefMut};
use std::os::fd::RawFd;
use std::ptr::NonNull;
use std::slice;
use std::time::Instant;

/// Size of the receive buffer. One datagram carries one packet: at most a
/// 65531-byte payload plus its metadata attributes (security context, conntrack,
/// L2 header), all well under this; a larger datagram is reported, not cut.
pub const RECV_BUFFER_LEN: usize = 128 * 1024;

/// Datagrams asked for per `recvmmsg` call.
pub const BURST_LEN: usize = 16;

/// Where in its page the kernel writes a datagram for us: 256 bytes past a
/// 512-byte boundary. The kernel copies a packet message to user space with
/// `rep movsb` (`copy_to_user` on CPUs with fast string moves), from the
/// buffer it built the message in: for a message of more than about 250
/// bytes, a kmalloc'd one that starts on a 1024-byte boundary at least, or a
/// page. That copy is slower when its destination does not start a cache line
/// (by up to a quarter in Intel's optimization manual, and by up to 20 times
/// on AMD Zen 3 and 4: glibc bug 30994), and when the destination lies a few
/// bytes past the source's offset in its page (page aliasing, the same bug).
/// A buffer from `malloc` starts 16 bytes into a page: both. 256 bytes past a
/// 512-byte boundary starts a cache line, and lies at least 256 bytes away
/// from every such source's offset, either way.
pub(crate) const RECV_OFFSET: usize = 256;

/// The page size the offsets above are of: the smallest on x86_64, where
/// they matter; a larger page keeps them.
const PAGE: usize = 4096;

/// Distance between the starts of two burst buffers: a buffer and then 512
/// bytes, so that the datagrams of a burst (each at the start of its buffer)
/// start at 8 different offsets of their pages, and so do not all fall in the
/// same cache sets, as buffers at the same offset would; and each of them is
/// still 256 bytes past a 512-byte boundary (see [`RECV_OFFSET`]).
const BURST_STRIDE: usize = RECV_BUFFER_LEN + 512;

/// How long a receive may block.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wait {
    /// Not at all.
    No,
    /// Until the deadline, or forever.
    Until(Option<Instant>),
}

/// What became of a configuration request, as its answer says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// The kernel's answer: 0 for success, else the errno.
    Errno(i32),
    /// The answer was lost to a full receive buffer.
    Lost,
    /// No answer came in time (which the kernel's synchronous handling of
    /// requests should rule out).
    Late,
}

/// Where the attributes of a packet message lie in the buffer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found {
    pub(crate) queue: u16,
    start: usize,
    end: usize,
}

/// A zeroed buffer whose first byte lies at a given offset of a page (see
/// [`RECV_OFFSET`]); it reads as the slice of its bytes as cheaply as a
/// `Box<[u8]>` does: the hot path reads it several times per packet, and
/// slicing a larger buffer each time checks bounds each time (22
/// instructions per packet).
pub(crate) struct Landing {
    /// Owns the memory; only ever dropped, so `start` stays valid.
    _raw: Vec<u8>,
    start: NonNull<u8>,
    len: usize,
}

// SAFETY: a Landing is an owned byte buffer, like the Vec it holds: `start`
// points into that Vec's heap memory, which moves with the value and is
// reached only through `&self` or `&mut self`.
unsafe impl Send for Landing {}
// SAFETY: as for Send; shared access only reads.
unsafe impl Sync for Landing {}

impl Landing {
    /// `len` bytes starting `offset` bytes into a page (`offset < PAGE`).
    pub(crate) fn new(len: usize, offset: usize) -> Self {
        debug_assert!(offset < PAGE);
        // Zeroed like `vec![0; len]`, which a large buffer gets from fresh
        // pages that are only touched where the kernel writes: a page more,
        // to move the start to the offset, costs no memory until touched.
        let mut raw = vec![0; len + PAGE];
        let skip = (offset + PAGE - raw.as_ptr() as usize % PAGE) % PAGE;
        let start = NonNull::from(&mut raw[skip..skip + len]).cast();
        Landing {
            _raw: raw,
            start,
            len,
        }
    }
}

impl Deref for Landing {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        // SAFETY: `start` is `len` initialized bytes inside the Vec, which is
        // never resized or otherwise reached; `&self` rules out a writer.
        unsafe { slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }
}

impl DerefMut for Landing {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as for `deref`; `&mut self` makes this the only access.
        unsafe { slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }
}

impl fmt::Debug for Landing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Landing")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

/// The datagram being read, the messages kept for later, and the burst
/// buffers.
#[derive(Debug)]
pub(crate) struct RecvBuffer {
    buf: Landing,
    /// Bytes of `buf` holding the current datagram.
    filled: usize,
    /// Where the next unread message of the current datagram starts.
    cursor: usize,
    /// Messages that arrived while waiting for a configuration answer.
    stash: VecDeque<Box<[u8]>>,
    /// The buffers of [`burst`](Self::burst), one region made on its first
    /// use: buffer `i` starts at `i * BURST_STRIDE`.
    burst: Option<Landing>,
}

impl RecvBuffer {
    pub(crate) fn new() -> Self {
        RecvBuffer {
            buf: Landing::new(RECV_BUFFER_LEN, RECV_OFFSET),
            filled: 0,
            cursor: 0,
            stash: VecDeque::new(),
            burst: None,
        }
    }

    /// Moves the buffer of single receives to `offset` bytes into a page
    /// (less than a page), for benchmarks that compare placements; `false`
    /// (and nothing changed) while messages wait in it.
    pub(crate) fn set_offset(&mut self, offset: usize) -> bool {
        if self.cursor < self.filled {
            return false;
        }
        self.buf = Landing::new(RECV_BUFFER_LEN, offset);
        true
    }

    /// Whether messages were read from the socket and wait here.
    pub(crate) fn has_buffered(&self) -> bool {
        self.cursor < self.filled || !self.stash.is_empty()
    }

    /// The attributes of a packet found by [`next_packet`](Self::next_packet).
    pub(crate) fn attrs(&self, found: Found) -> &[u8] {
        &self.buf[found.start..found.end]
    }

    /// Finds the next packet message, reading a datagram when none is left
    /// (waiting as `wait` says); `None` when the wait ran out first. An error
    /// message for a verdict is returned as [`Error::VerdictRejected`].
    pub(crate) fn next_packet(
        &mut self,
        shared: &Shared,
        stop: &StopHandle,
        wait: Wait,
    ) -> Result<Option<Found>> {
        loop {
            if self.cursor >= self.filled && !self.refill(shared, stop, wait)? {
                return Ok(None);
            }
            let datagram = &self.buf[self.cursor..self.filled];
            let (message, rest) = match next_message(datagram) {
                Ok(parsed) => parsed,
                Err(err) => {
                    self.cursor = self.filled;
                    // A packet message cut short still names its packet: the
                    // caller fails to parse it and drops the packet by id.
                    if let Some((queue, attrs)) = packet_prefix(datagram) {
                        let start = attrs.as_ptr() as usize - self.buf.as_ptr() as usize;
                        return Ok(Some(Found {
                            queue,
                            start,
                            end: start + attrs.len(),
                        }));
                    }
                    Counters::bump_receive(&shared.counters.malformed);
                    return Err(err.into());
                }
            };
            self.cursor = self.filled - rest.len();
            match message {
                Message::Packet { queue, attrs } => {
                    let start = attrs.as_ptr() as usize - self.buf.as_ptr() as usize;
                    return Ok(Some(Found {
                        queue,
                        start,
                        end: start + attrs.len(),
                    }));
                }
                Message::Ack(ack) if ack.errno != 0 => {
                    Counters::bump_receive(&shared.counters.rejected_verdicts);
                    return Err(rejected(ack));
                }
                _ => continue,
            }
        }
    }

    /// Loads the next datagram: from the stash, or the socket. `false` when
    /// `wait` ran out first.
    ///
    /// It never blocks in `recv` itself: it reads without waiting and, when
    /// nothing is there, sleeps in `poll` on the socket and the stop handle.
    /// Under load that is one system call per datagram, as a blocking `recv`
    /// is; and nothing of the socket's own settings (a receive timeout) is
    /// needed to see a stop, so a program that shares the descriptor finds it
    /// as it left it.
    fn refill(&mut self, shared: &Shared, stop: &StopHandle, wait: Wait) -> Result<bool> {
        self.cursor = 0;
        self.filled = 0;
        if let Some(stashed) = self.stash.pop_front() {
            self.buf[..stashed.len()].copy_from_slice(&stashed);
            self.filled = stashed.len();
            return Ok(true);
        }
        let socket = &shared.socket;
        loop {
            Counters::bump_receive(&shared.counters.recv_calls);
            match socket.recv(&mut self.buf, true) {
                Ok(Some(len)) => {
                    // A datagram longer than the buffer (which no packet
                    // message is) keeps what fits: its packet is then
                    // dropped by id, see next_packet.
                    self.filled = len.min(self.buf.len());
                    return Ok(true);
                }
                Ok(None) => {}
                Err(Error::ReceiveOverflow) => {
                    Counters::bump_receive(&shared.counters.receive_overflows);
                    return Err(Error::ReceiveOverflow);
                }
                Err(err) => return Err(err),
            }
            match wait {
                Wait::No => return Ok(false),
                Wait::Until(deadline) => {
                    if !wait_readable(socket.fd(), stop, deadline)? {
                        return Ok(false);
                    }
                }
            }
        }
    }

    /// Reads until the kernel answers configuration request `seq`, keeping
    /// every other message (and what was left of the current datagram) for
    /// later receives, but for the packets of `discard`, which are dropped
    /// here (counted as stale): those of a queue being unbound.
    ///
    /// The kernel handles a request while it is being sent, so its answer is
    /// in the socket, behind what came before it, by the time this runs;
    /// unless the socket's receive buffer was full, and the answer was lost.
    /// Hence: [`Answer::Errno`] (0 for success) when it is found,
    /// [`Answer::Lost`] when the socket was read empty past an overflow
    /// without it, and [`Answer::Late`] when none came by `deadline`
    /// without an overflow.
    pub(crate) fn await_answer(
        &mut self,
        shared: &Shared,
        stop: &StopHandle,
        seq: u32,
        discard: Option<u16>,
        deadline: Instant,
    ) -> Result<Answer> {
        if self.cursor < self.filled {
            self.stash
                .push_front(self.buf[self.cursor..self.filled].into());
        }
        self.cursor = 0;
        self.filled = 0;
        let mut overflowed = false;
        loop {
            Counters::bump_receive(&shared.counters.recv_calls);
            let len = match shared.socket.recv(&mut self.buf, true) {
                Ok(Some(len)) => len.min(self.buf.len()),
                Ok(None) if overflowed => return Ok(Answer::Lost),
                Ok(None) => match wait_readable(shared.socket.fd(), stop, Some(deadline)) {
                    Ok(true) => continue,
                    Ok(false) | Err(Error::Stopped) => return Ok(Answer::Late),
                    Err(err) => return Err(err),
                },
                Err(Error::ReceiveOverflow) => {
                    Counters::bump_receive(&shared.counters.receive_overflows);
                    overflowed = true;
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
                    Message::Packet { queue, .. } if Some(queue) == discard => {
                        Counters::bump_receive(&shared.counters.stale_packets)
                    }
                    _ => self.stash.push_back(this.into()),
                }
                datagram = rest;
            }
            if let Some(errno) = answer {
                return Ok(Answer::Errno(errno));
            }
        }
    }

    /// Drops the packet messages of `queue` read already (the rest of the
    /// current datagram, and those kept while a request waited), counting
    /// them as stale: they came through a binding that has ended.
    pub(crate) fn discard(&mut self, shared: &Shared, queue: u16) {
        if self.cursor < self.filled {
            self.stash
                .push_front(self.buf[self.cursor..self.filled].into());
            self.cursor = 0;
            self.filled = 0;
        }
        let before = self.stash.len();
        let mut kept = VecDeque::with_capacity(before);
        for datagram in self.stash.drain(..) {
            let mut rest: &[u8] = &datagram;
            let mut keep = Vec::new();
            while !rest.is_empty() {
                let Ok((message, next)) = next_message(rest) else {
                    keep.extend_from_slice(rest);
                    break;
                };
                let this = &rest[..rest.len() - next.len()];
                match message {
                    Message::Packet { queue: q, .. } if q == queue => {
                        Counters::bump_receive(&shared.counters.stale_packets)
                    }
                    _ => keep.extend_from_slice(this),
                }
                rest = next;
            }
            if !keep.is_empty() {
                kept.push_back(keep.into_boxed_slice());
            }
        }
        self.stash = kept;
    }

    /// Calls `packet(queue, attrs)` for every packet waiting now (it returns
    /// whether it took the packet, which only a malformed one is not), the
    /// ones kept here first, then up to [`BURST_LEN`] datagrams per `recvmmsg`, without
    /// blocking, until the socket is empty or about `max` were handled (a
    /// burst read is handled whole). Rejected verdicts, overflows and
    /// malformed messages are counted and skipped.
    pub(crate) fn burst(
        &mut self,
        shared: &Shared,
        stop: &StopHandle,
        max: usize,
        mut packet: impl FnMut(u16, &[u8]) -> bool,
    ) -> Result<usize> {
        let mut handled = 0;
        while self.has_buffered() && handled < max {
            match self.next_packet(shared, stop, Wait::No) {
                Ok(Some(found)) => {
                    if packet(found.queue, self.attrs(found)) {
                        handled += 1;
                    }
                }
                Ok(None) => break,
                Err(err) if err.is_recoverable() => {}
                Err(err) => return Err(err),
            }
        }
        let counters = &shared.counters;
        let region = self
            .burst
            .get_or_insert_with(|| Landing::new(BURST_LEN * BURST_STRIDE, RECV_OFFSET));
        while handled < max {
            // SAFETY: all-zero is a valid value for these plain C structs; every
            // pointer is set below before the call.
            let mut iovecs: [libc::iovec; BURST_LEN] = unsafe { mem::zeroed() };
            // SAFETY: as above.
            let mut headers: [libc::mmsghdr; BURST_LEN] = unsafe { mem::zeroed() };
            for ((iov, header), slot) in iovecs
                .iter_mut()
                .zip(headers.iter_mut())
                .zip(region.chunks_exact_mut(BURST_STRIDE))
            {
                iov.iov_base = slot.as_mut_ptr().cast();
                iov.iov_len = RECV_BUFFER_LEN;
                header.msg_hdr.msg_iov = iov;
                header.msg_hdr.msg_iovlen = 1;
            }
            Counters::bump_receive(&counters.recv_calls);
            // SAFETY: `headers` holds BURST_LEN headers, each pointing at one
            // iovec over one of our buffers; all outlive the call.
            let received = unsafe {
                libc::recvmmsg(
                    shared.socket.fd(),
                    headers.as_mut_ptr(),
                    BURST_LEN as libc::c_uint,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                )
            };
            if received < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    Some(libc::ENOBUFS) => {
                        Counters::bump_receive(&counters.receive_overflows);
                        continue;
                    }
                    _ => {
                        return Err(Error::Sys {
                            op: "recvmmsg",
                            source: err,
                        })
                    }
                }
            }
            let received = received as usize;
            for (header, slot) in headers
                .iter()
                .zip(region.chunks_exact(BURST_STRIDE))
                .take(received)
            {
                let len = (header.msg_len as usize).min(RECV_BUFFER_LEN);
                let mut datagram = &slot[..len];
                while !datagram.is_empty() {
                    let Ok((message, rest)) = next_message(datagram) else {
                        // A packet message cut short (a datagram longer than
                        // the buffer, which no packet message is) still
                        // names its packet: `packet` fails to parse it and
                        // drops the packet by id.
                        match packet_prefix(datagram) {
                            Some((queue, attrs)) => {
                                packet(queue, attrs);
                            }
                            None => Counters::bump_receive(&counters.malformed),
                        }
                        break;
                    };
                    datagram = rest;
                    match message {
                        Message::Packet { queue, attrs } if packet(queue, attrs) => handled += 1,
                        Message::Ack(ack) if ack.errno != 0 => {
                            Counters::bump_receive(&counters.rejected_verdicts)
                        }
                        _ => {}
                    }
                }
            }
            if received < BURST_LEN {
                break;
            }
        }
        Ok(handled)
    }
}

/// The error the kernel reported for a verdict.
fn rejected(ack: Ack) -> Error {
    Error::VerdictRejected {
        queue: ack.queue.unwrap_or_default(),
        packet_id: ack.packet_id.unwrap_or(ack.seq),
        source: io::Error::from_raw_os_error(ack.errno),
    }
}

/// Waits until `fd` is readable (`true`), the deadline (if any) passes
/// (`false`), or `stop` is used ([`Error::Stopped`]).
fn wait_readable(fd: RawFd, stop: &StopHandle, deadline: Option<Instant>) -> Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: stop.fd(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_datagram_lands_256_bytes_into_a_page() {
        let buffer = RecvBuffer::new();
        assert_eq!(buffer.buf.len(), RECV_BUFFER_LEN);
        assert_eq!(buffer.buf.as_ptr() as usize % PAGE, RECV_OFFSET);
        for offset in [0, 16, 64, 4095] {
            let landing = Landing::new(100, offset);
            assert_eq!(landing.as_ptr() as usize % PAGE, offset);
            assert_eq!(landing.len(), 100);
            assert!(landing.iter().all(|&b| b == 0));
        }
    }

    #[test]
    fn burst_buffers_spread_over_cache_sets_and_stay_aligned() {
        let region = Landing::new(BURST_LEN * BURST_STRIDE, RECV_OFFSET);
        let mut offsets: Vec<usize> = region
            .chunks_exact(BURST_STRIDE)
            .map(|slot| slot.as_ptr() as usize % PAGE)
            .collect();
        assert_eq!(offsets.len(), BURST_LEN);
        assert!(offsets.iter().all(|o| o % 512 == RECV_OFFSET));
        offsets.sort_unstable();
        offsets.dedup();
        assert_eq!(offsets.len(), 8, "{offsets:?}");
    }

    #[test]
    fn the_offset_moves_only_an_empty_buffer() {
        let mut buffer = RecvBuffer::new();
        assert!(buffer.set_offset(16));
        assert_eq!(buffer.buf.as_ptr() as usize % PAGE, 16);
        buffer.filled = 8;
        assert!(!buffer.set_offset(256));
        assert_eq!(buffer.buf.as_ptr() as usize % PAGE, 16);
    }
}
