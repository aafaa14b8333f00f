//! Receiving many datagrams per system call (`recvmmsg`): for loops that read
//! everything that is waiting, such as a dispatcher's receive thread.

use crate::error::{Error, Result};
use crate::message::{next_message, Message};
use crate::packet::Packet;
use crate::queue::{Queue, Wait, RECV_BUFFER_LEN};
use crate::stats::Counters;
use crate::view::PacketView;
use std::io;
use std::mem;

/// Datagrams asked for per `recvmmsg` call.
pub const BURST_LEN: usize = 16;

/// One receive buffer per datagram of a burst, each large enough for the
/// largest message (2 MiB in all, made on first use).
#[derive(Debug)]
pub(crate) struct BurstBuffers {
    slots: Vec<Box<[u8]>>,
}

impl BurstBuffers {
    fn new() -> Self {
        BurstBuffers {
            slots: (0..BURST_LEN)
                .map(|_| vec![0; RECV_BUFFER_LEN].into_boxed_slice())
                .collect(),
        }
    }
}

impl Queue {
    /// Calls `handler` for every packet waiting now, reading up to 16 datagrams
    /// per system call (`recvmmsg`), without blocking; returns how many packets
    /// it handled. It stops once the socket is empty or about `max` packets were
    /// handled (a burst already read is always handled whole).
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
        let mut handled = 0;
        // Messages left in the single buffer, or kept while configuring, first.
        while (self.cursor < self.filled || !self.stash.is_empty()) && handled < max {
            match self.next_packet(Wait::No) {
                Ok(Some(packet)) => {
                    handled += 1;
                    handler(packet);
                }
                Ok(None) => break,
                Err(err) if err.is_recoverable() => {}
                Err(err) => return Err(err),
            }
        }
        let counters = &self.handle.shared.counters;
        let buffers = self.burst.get_or_insert_with(BurstBuffers::new);
        while handled < max {
            // SAFETY: all-zero is a valid value for these plain C structs; every
            // pointer is set below before the call.
            let mut iovecs: [libc::iovec; BURST_LEN] = unsafe { mem::zeroed() };
            // SAFETY: as above.
            let mut headers: [libc::mmsghdr; BURST_LEN] = unsafe { mem::zeroed() };
            for ((iov, header), slot) in iovecs
                .iter_mut()
                .zip(headers.iter_mut())
                .zip(buffers.slots.iter_mut())
            {
                iov.iov_base = slot.as_mut_ptr().cast();
                iov.iov_len = slot.len();
                header.msg_hdr.msg_iov = iov;
                header.msg_hdr.msg_iovlen = 1;
            }
            Counters::bump(&counters.recv_calls);
            // SAFETY: `headers` holds BURST_LEN headers, each pointing at one
            // iovec over one of our buffers; all outlive the call.
            let received = unsafe {
                libc::recvmmsg(
                    self.handle.shared.socket.fd(),
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
                        Counters::bump(&counters.receive_overflows);
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
            for (header, slot) in headers.iter().zip(buffers.slots.iter()).take(received) {
                if header.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                    Counters::bump(&counters.malformed);
                    continue;
                }
                let mut datagram = &slot[..header.msg_len as usize];
                while !datagram.is_empty() {
                    let Ok((message, rest)) = next_message(datagram) else {
                        Counters::bump(&counters.malformed);
                        break;
                    };
                    datagram = rest;
                    match message {
                        Message::Packet { queue, attrs } => match PacketView::parse(queue, attrs) {
                            Ok(view) => {
                                Counters::bump(&counters.packets);
                                handled += 1;
                                handler(Packet::new(view, &self.handle, self.default));
                            }
                            Err(_) => Counters::bump(&counters.malformed),
                        },
                        Message::Ack(ack) if ack.errno != 0 => {
                            Counters::bump(&counters.rejected_verdicts)
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
