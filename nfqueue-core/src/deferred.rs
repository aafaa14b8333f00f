//! Packets whose verdict comes later: by id only, or with their bytes.

use crate::binding::PacketKey;
use crate::handle::VerdictHandle;
use crate::verdict::{Verdict, VerdictKind};
use crate::verdict_right::{verdict_methods, VerdictError, VerdictRight};
use crate::view::{Meta, PacketView};
use std::os::fd::AsFd;

/// The right to give one packet its verdict, later and from any thread. It is
/// `Send`; its verdict methods take it by value, so a packet gets one verdict.
/// Dropped without a verdict, it sends the queue's unanswered verdict. Like
/// every holder, it lapses when its queue is unbound (see
/// [`Packet`](crate::Packet)): nothing is sent then.
#[derive(Debug)]
pub struct PendingVerdict {
    right: VerdictRight<VerdictHandle>,
}

impl PendingVerdict {
    pub(crate) fn new(right: VerdictRight<VerdictHandle>) -> Self {
        PendingVerdict { right }
    }

    /// The packet's queue number.
    pub fn queue(&self) -> u16 {
        self.right.key().queue()
    }

    /// The packet's id.
    pub fn id(&self) -> u32 {
        self.right.key().id()
    }

    /// The packet's queue, id and binding.
    pub fn key(&self) -> PacketKey {
        self.right.key()
    }

    /// The verdict the packet gets if this is dropped without one.
    pub fn unanswered_verdict(&self) -> VerdictKind {
        self.right.unanswered()
    }

    /// Gives the packet `verdict`, or returns this with the error when the
    /// verdict cannot be sent (nothing was sent then), to try again.
    ///
    /// # Errors
    /// As [`VerdictHandle::verdict`].
    pub fn try_verdict(mut self, verdict: &Verdict<'_>) -> Result<(), VerdictError<Self>> {
        match self.right.give(verdict) {
            Ok(()) => Ok(()),
            Err(err) => Err(VerdictError::new(err, self)),
        }
    }

    verdict_methods!();

    /// Gives up the right without sending anything: the caller takes over, e.g.
    /// with [`VerdictHandle::verdict`] or a batch verdict by id. A packet that
    /// then gets no verdict stays queued until the socket closes.
    pub fn forget(mut self) {
        self.right.forget();
    }

    fn handle(&self) -> &VerdictHandle {
        self.right.handle()
    }
}

/// A packet copied out of the receive buffer, with the right to give it its
/// verdict later (see [`PendingVerdict`]). `Send`, so it can go to another
/// thread or task. Its attributes were parsed when it was received:
/// [`view`](Self::view) reads them without parsing again.
#[derive(Debug)]
pub struct OwnedPacket {
    attrs: Box<[u8]>,
    meta: Meta,
    pending: PendingVerdict,
}

impl OwnedPacket {
    pub(crate) fn new(attrs: Box<[u8]>, meta: Meta, pending: PendingVerdict) -> Self {
        OwnedPacket {
            attrs,
            meta,
            pending,
        }
    }

    /// The packet's metadata and payload, interface names included.
    pub fn view(&self) -> PacketView<'_> {
        PacketView::from_meta(&self.attrs, self.meta)
            .with_interface_names(self.pending.handle().as_fd())
    }

    /// The packet's queue number.
    pub fn queue(&self) -> u16 {
        self.pending.queue()
    }

    /// The packet's id.
    pub fn id(&self) -> u32 {
        self.pending.id()
    }

    /// The packet's queue, id and binding.
    pub fn key(&self) -> PacketKey {
        self.pending.key()
    }

    /// The verdict the packet gets if this is dropped without one.
    pub fn unanswered_verdict(&self) -> VerdictKind {
        self.pending.unanswered_verdict()
    }

    /// Gives the packet `verdict`, or returns it with the error when the
    /// verdict cannot be sent (nothing was sent then), to try again.
    ///
    /// # Errors
    /// As [`VerdictHandle::verdict`].
    pub fn try_verdict(self, verdict: &Verdict<'_>) -> Result<(), VerdictError<Self>> {
        let OwnedPacket {
            attrs,
            meta,
            pending,
        } = self;
        pending.try_verdict(verdict).map_err(|err| {
            let (error, pending) = err.into_parts();
            VerdictError::new(
                error,
                OwnedPacket {
                    attrs,
                    meta,
                    pending,
                },
            )
        })
    }

    verdict_methods!();

    /// Separates the bytes from the right to the verdict.
    pub fn into_pending(self) -> PendingVerdict {
        self.pending
    }
}
