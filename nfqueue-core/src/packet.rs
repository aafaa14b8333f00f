//! A received packet that must get a verdict: the type system allows one.

use crate::deadline::Claim;
use crate::deferred::{OwnedPacket, PendingVerdict};
use crate::handle::VerdictHandle;
use crate::verdict::{Verdict, VerdictKind};
use crate::verdict_right::{verdict_methods, VerdictError, VerdictRight};
use crate::view::PacketView;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A packet received from a queue, borrowing the queue's receive buffer.
///
/// Read it through the getters of [`PacketView`] (it dereferences to one),
/// interface names included, then give it one verdict: each verdict method
/// takes the packet by value, so a second verdict does not compile. A packet
/// dropped without a verdict gets its queue's unanswered verdict
/// ([`QueueConfig::unanswered`](crate::QueueConfig::unanswered), drop unless
/// the bind said otherwise), so no packet is left waiting in the kernel by
/// accident, and `drop(packet)` does what `packet.drop()` does unless the
/// queue was bound to accept forgotten packets. To give the verdict later or
/// on another thread, [`defer`](Self::defer) it, or keep its bytes too with
/// [`into_owned`](Self::into_owned).
///
/// A packet belongs to the binding of its queue it came through
/// ([`key`](PacketView::key)): once that queue is unbound, the kernel has
/// dropped the packet, and no holder of it sends anything any more, since a
/// packet of a new binding of the queue may have the same id. Its verdict
/// methods then return [`Error::StaleBinding`](crate::Error::StaleBinding).
///
/// ```compile_fail
/// # fn f(packet: nfqueue_core::Packet<'_>) -> nfqueue_core::Result<()> {
/// packet.accept()?;
/// packet.drop()?; // error: use of moved value
/// # Ok(()) }
/// ```
pub struct Packet<'a> {
    view: PacketView<'a>,
    right: VerdictRight<&'a VerdictHandle>,
}

impl<'a> Packet<'a> {
    pub(crate) fn new(
        view: PacketView<'a>,
        handle: &'a VerdictHandle,
        unanswered: VerdictKind,
        claim: Option<Arc<Claim>>,
    ) -> Self {
        Packet {
            right: VerdictRight::new(handle, view.key(), view.mark(), unanswered, claim),
            view,
        }
    }

    /// Gives the packet `verdict`, or returns it with the error when the
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

    /// The verdict the packet gets if it is dropped without one.
    pub fn unanswered_verdict(&self) -> VerdictKind {
        self.right.unanswered()
    }

    /// Keeps the right to give this packet its verdict later, from any thread,
    /// without keeping its bytes.
    pub fn defer(mut self) -> PendingVerdict {
        PendingVerdict::new(self.right.take_owned())
    }

    /// Gives up the automatic unanswered verdict and returns the packet's
    /// view: the caller takes over giving this packet its verdict by its
    /// [`key`](PacketView::key), with a [`VerdictHandle`] or a
    /// [`VerdictBatch`](crate::VerdictBatch) (a dispatcher that copies packets
    /// to worker threads does this). A packet that then gets no verdict stays
    /// queued until its queue is unbound or the socket closes.
    pub fn detach(mut self) -> PacketView<'a> {
        self.right.forget();
        self.view
    }

    /// Copies the packet's message so that it outlives the receive buffer, with
    /// the right to give it its verdict later (one allocation; nothing is
    /// parsed again).
    pub fn into_owned(mut self) -> OwnedPacket {
        let attrs = self.view.attribute_bytes().into();
        OwnedPacket::new(
            attrs,
            self.view.meta(),
            PendingVerdict::new(self.right.take_owned()),
        )
    }
}

impl<'a> Deref for Packet<'a> {
    type Target = PacketView<'a>;

    fn deref(&self) -> &PacketView<'a> {
        &self.view
    }
}

impl fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.view.fmt(f)
    }
}
