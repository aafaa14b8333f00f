//! Packets whose verdict comes later: by id only, or with their bytes.

use crate::error::Result;
use crate::handle::VerdictHandle;
use crate::ifname::{self, InterfaceName};
use crate::verdict::{Verdict, VerdictKind};
use crate::view::PacketView;

/// The right to give one packet its verdict, later and from any thread. It is
/// `Send`; its verdict methods take it by value, so a packet gets one verdict.
/// Dropped without a verdict, it sends the queue's default verdict.
#[derive(Debug)]
pub struct PendingVerdict {
    handle: VerdictHandle,
    queue: u16,
    id: u32,
    default: VerdictKind,
    settled: bool,
}

impl PendingVerdict {
    pub(crate) fn new(handle: VerdictHandle, queue: u16, id: u32, default: VerdictKind) -> Self {
        PendingVerdict {
            handle,
            queue,
            id,
            default,
            settled: false,
        }
    }

    /// The packet's queue number.
    pub fn queue(&self) -> u16 {
        self.queue
    }

    /// The packet's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Gives the packet `verdict`.
    ///
    /// # Errors
    /// As [`VerdictHandle::verdict`]; on error the packet is dropped instead, as
    /// [`Packet::verdict`](crate::Packet::verdict) does.
    pub fn verdict(mut self, verdict: &Verdict<'_>) -> Result<()> {
        self.settled = true;
        self.handle.verdict_or_drop(self.queue, self.id, verdict)
    }

    /// Accepts the packet.
    ///
    /// # Errors
    /// As [`verdict`](Self::verdict).
    pub fn accept(self) -> Result<()> {
        self.verdict(&Verdict::accept())
    }

    /// Drops the packet.
    ///
    /// # Errors
    /// As [`verdict`](Self::verdict).
    pub fn drop(self) -> Result<()> {
        self.verdict(&Verdict::drop())
    }

    /// Gives up the right without sending anything: the caller takes over, e.g.
    /// with [`VerdictHandle::verdict`] or a batch verdict by id. A packet that
    /// then gets no verdict stays queued until the socket closes.
    pub fn forget(mut self) {
        self.settled = true;
    }
}

impl Drop for PendingVerdict {
    fn drop(&mut self) {
        if !self.settled {
            self.handle
                .default_verdict(self.queue, self.id, self.default);
        }
    }
}

/// A packet copied out of the receive buffer, with the right to give it its
/// verdict later (see [`PendingVerdict`]). `Send`, so it can go to another thread.
#[derive(Debug)]
pub struct OwnedPacket {
    queue: u16,
    attrs: Box<[u8]>,
    pending: PendingVerdict,
}

impl OwnedPacket {
    pub(crate) fn new(queue: u16, attrs: Box<[u8]>, pending: PendingVerdict) -> Self {
        OwnedPacket {
            queue,
            attrs,
            pending,
        }
    }

    /// The packet's metadata and payload.
    pub fn view(&self) -> PacketView<'_> {
        PacketView::parse(self.queue, &self.attrs)
            .expect("the attributes were parsed when the packet was received")
    }

    /// The packet's id.
    pub fn id(&self) -> u32 {
        self.pending.id()
    }

    /// The name of the interface the packet arrived on, in the queue socket's
    /// network namespace.
    pub fn indev_name(&self) -> Option<InterfaceName> {
        ifname::lookup(self.pending_fd(), self.view().indev()?).ok()
    }

    /// The name of the interface the packet leaves on.
    pub fn outdev_name(&self) -> Option<InterfaceName> {
        ifname::lookup(self.pending_fd(), self.view().outdev()?).ok()
    }

    fn pending_fd(&self) -> std::os::fd::RawFd {
        self.pending.handle.shared.socket.fd()
    }

    /// Gives the packet `verdict`.
    ///
    /// # Errors
    /// As [`PendingVerdict::verdict`].
    pub fn verdict(self, verdict: &Verdict<'_>) -> Result<()> {
        self.pending.verdict(verdict)
    }

    /// Accepts the packet.
    ///
    /// # Errors
    /// As [`PendingVerdict::verdict`].
    pub fn accept(self) -> Result<()> {
        self.pending.accept()
    }

    /// Drops the packet.
    ///
    /// # Errors
    /// As [`PendingVerdict::verdict`].
    pub fn drop(self) -> Result<()> {
        self.pending.drop()
    }

    /// Separates the bytes from the right to the verdict.
    pub fn into_pending(self) -> PendingVerdict {
        self.pending
    }
}
