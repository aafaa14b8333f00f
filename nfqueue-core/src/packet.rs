//! A received packet that must get a verdict: the type system allows one.

use crate::deferred::{OwnedPacket, PendingVerdict};
use crate::error::Result;
use crate::handle::VerdictHandle;
use crate::ifname::{self, InterfaceName};
use crate::verdict::{Verdict, VerdictKind};
use crate::view::PacketView;
use std::fmt;
use std::ops::Deref;

/// A packet received from a queue, borrowing the queue's receive buffer.
///
/// Read it through the getters of [`PacketView`] (it dereferences to one), then
/// give it one verdict: each verdict method takes the packet by value, so a
/// second verdict does not compile. A packet dropped without a verdict gets the
/// queue's default verdict ([`Queue::set_default_verdict`](crate::Queue::set_default_verdict),
/// accept unless changed), so no packet is left waiting in the kernel by
/// accident. To give the verdict later or on another thread, [`defer`](Self::defer)
/// it, or keep its bytes too with [`into_owned`](Self::into_owned).
///
/// ```compile_fail
/// # fn f(packet: nfqueue_core::Packet<'_>) -> nfqueue_core::Result<()> {
/// packet.accept()?;
/// packet.drop()?; // error: use of moved value
/// # Ok(()) }
/// ```
pub struct Packet<'a> {
    view: PacketView<'a>,
    handle: &'a VerdictHandle,
    default: VerdictKind,
    settled: bool,
}

impl<'a> Packet<'a> {
    pub(crate) fn new(
        view: PacketView<'a>,
        handle: &'a VerdictHandle,
        default: VerdictKind,
    ) -> Self {
        Packet {
            view,
            handle,
            default,
            settled: false,
        }
    }

    /// Gives the packet `verdict` (with its mark and payload, if any).
    ///
    /// # Errors
    /// As [`VerdictHandle::verdict`]. On error the packet is dropped instead
    /// (counted in [`Stats::fallback_drops`](crate::Stats::fallback_drops)), so
    /// it neither stays queued nor passes: a drop that cannot be sent as given
    /// stays a drop, and an accept whose new payload the kernel cannot take
    /// (empty, or over [`MAX_PAYLOAD`](crate::MAX_PAYLOAD) bytes) does not let
    /// the original bytes through, which the rewrite was meant to replace.
    /// Never the default verdict: that is for packets given no verdict at all.
    pub fn verdict(mut self, verdict: &Verdict<'_>) -> Result<()> {
        self.settled = true;
        self.handle
            .verdict_or_drop(self.view.queue(), self.view.id(), verdict)
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

    /// Sends the packet through the current hook again. Mark it (e.g.
    /// `Verdict::repeat().with_mark(1)`) and let the rule skip marked packets, or
    /// it comes straight back.
    ///
    /// # Errors
    /// As [`verdict`](Self::verdict).
    pub fn repeat(self) -> Result<()> {
        self.verdict(&Verdict::repeat())
    }

    /// Moves the packet to queue `num`; with `bypass` it is accepted when no
    /// program has bound `num`, else dropped.
    ///
    /// # Errors
    /// As [`verdict`](Self::verdict).
    pub fn queue_to(self, num: u16, bypass: bool) -> Result<()> {
        self.verdict(&Verdict::queue(num, bypass))
    }

    /// Keeps the right to give this packet its verdict later, from any thread,
    /// without keeping its bytes.
    pub fn defer(mut self) -> PendingVerdict {
        self.settled = true;
        PendingVerdict::new(
            self.handle.clone(),
            self.view.queue(),
            self.view.id(),
            self.default,
        )
    }

    /// Gives up the automatic default verdict and returns the packet's view: the
    /// caller takes over giving this packet its verdict by id, with a
    /// [`VerdictHandle`] or a [`VerdictBatch`](crate::VerdictBatch) (a dispatcher
    /// that copies packets to worker threads does this). A packet that then gets
    /// no verdict stays queued until the socket closes.
    pub fn detach(mut self) -> PacketView<'a> {
        self.settled = true;
        self.view
    }

    /// Copies the packet's message so that it outlives the receive buffer, with
    /// the right to give it its verdict later (one allocation).
    pub fn into_owned(self) -> OwnedPacket {
        let attrs = self.view.attribute_bytes();
        let queue = self.view.queue();
        OwnedPacket::new(queue, attrs.into(), self.defer())
    }

    /// The name of the interface the packet arrived on, looked up in the queue
    /// socket's network namespace (one system call).
    pub fn indev_name(&self) -> Option<InterfaceName> {
        self.name_of(self.view.indev())
    }

    /// The name of the interface the packet leaves on.
    pub fn outdev_name(&self) -> Option<InterfaceName> {
        self.name_of(self.view.outdev())
    }

    /// The name of the physical interface the packet arrived on.
    pub fn physindev_name(&self) -> Option<InterfaceName> {
        self.name_of(self.view.physindev())
    }

    /// The name of the physical interface the packet leaves on.
    pub fn physoutdev_name(&self) -> Option<InterfaceName> {
        self.name_of(self.view.physoutdev())
    }

    /// The name of interface `index` in the queue socket's network namespace.
    pub fn interface_name(&self, index: u32) -> Option<InterfaceName> {
        ifname::lookup(self.handle.shared.socket.fd(), index).ok()
    }

    fn name_of(&self, index: Option<u32>) -> Option<InterfaceName> {
        self.interface_name(index?)
    }
}

impl<'a> Deref for Packet<'a> {
    type Target = PacketView<'a>;

    fn deref(&self) -> &PacketView<'a> {
        &self.view
    }
}

impl Drop for Packet<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.handle
                .default_verdict(self.view.queue(), self.view.id(), self.default);
        }
    }
}

impl fmt::Debug for Packet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.view.fmt(f)
    }
}
