//! The right to give one packet its verdict, shared by every type that holds
//! one: it gives the verdict, and when dropped without one it answers for the
//! packet, so that none is left waiting in the kernel by accident.

use crate::binding::PacketKey;
use crate::deadline::Claim;
use crate::error::{Error, Result};
use crate::handle::VerdictHandle;
use crate::stats::Counters;
use crate::verdict::{Verdict, VerdictKind};
use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// What happens when the right is dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OnDrop {
    /// Send the queue's unanswered verdict: the packet got none.
    Unanswered(VerdictKind),
    /// Drop the packet: the verdict asked for could not be sent, and a
    /// fallback never lets through what the caller meant to change or stop.
    Fallback,
    /// Nothing: the verdict was given, or someone else gives it by id.
    Nothing,
}

/// The right to give the packet `key` names its verdict, through a
/// [`VerdictHandle`] borrowed (`H = &VerdictHandle`) or owned. It lapses
/// with the binding the packet came through: then nothing is sent. A right
/// with a borrowed handle borrows the queue itself, which cannot be unbound
/// while it lives, so its sends need no check of the binding; an owned one's
/// do.
pub(crate) struct VerdictRight<H: Handle> {
    handle: H,
    key: PacketKey,
    /// The mark the packet came with, for verdicts that set some of its bits.
    mark: u32,
    /// Under a deadline, what decides whether this right or the deadline
    /// gives the verdict.
    claim: Option<Arc<Claim>>,
    on_drop: OnDrop,
}

/// How a right holds its [`VerdictHandle`], and whether its sends must check
/// the binding.
pub(crate) trait Handle: Borrow<VerdictHandle> {
    /// True for a right that does not borrow its queue.
    const CHECKED: bool;
}

/// A right of a [`Packet`](crate::Packet): it borrows the queue.
impl Handle for &VerdictHandle {
    const CHECKED: bool = false;
}

/// A right of a deferred packet: the queue may be unbound meanwhile.
impl Handle for VerdictHandle {
    const CHECKED: bool = true;
}

impl<H: Handle> VerdictRight<H> {
    pub(crate) fn new(
        handle: H,
        key: PacketKey,
        mark: u32,
        unanswered: VerdictKind,
        claim: Option<Arc<Claim>>,
    ) -> Self {
        VerdictRight {
            handle,
            key,
            mark,
            claim,
            on_drop: OnDrop::Unanswered(unanswered),
        }
    }

    /// Takes the verdict from the deadline: false when the deadline has
    /// given it already.
    fn claim(&self) -> bool {
        self.claim.as_ref().map_or(true, |claim| claim.answer())
    }

    pub(crate) fn key(&self) -> PacketKey {
        self.key
    }

    pub(crate) fn handle(&self) -> &VerdictHandle {
        self.handle.borrow()
    }

    /// The verdict the packet gets if this right is dropped now.
    pub(crate) fn unanswered(&self) -> VerdictKind {
        match self.on_drop {
            OnDrop::Unanswered(kind) => kind,
            OnDrop::Fallback | OnDrop::Nothing => VerdictKind::Drop,
        }
    }

    /// Sends `verdict`, its mark bits worked out against the packet's mark.
    /// On error nothing was sent, and the right, if dropped now, drops the
    /// packet.
    pub(crate) fn give(&mut self, verdict: &Verdict<'_>) -> Result<()> {
        if !self.claim() {
            self.on_drop = OnDrop::Nothing;
            return Err(self.handle.borrow().shared.late(self.key));
        }
        let resolved;
        let verdict = match verdict.mark_bits() {
            None => verdict,
            Some(_) => {
                resolved = verdict.clone().resolve_mark(self.mark);
                &resolved
            }
        };
        match self.handle.borrow().send(self.key, verdict, H::CHECKED) {
            Ok(()) => {
                self.on_drop = OnDrop::Nothing;
                Ok(())
            }
            // Nothing can be sent for this packet any more.
            Err(err @ Error::StaleBinding { .. }) => {
                self.on_drop = OnDrop::Nothing;
                Err(err)
            }
            Err(err) => {
                self.on_drop = OnDrop::Fallback;
                Err(err)
            }
        }
    }

    /// Gives the right up: nothing is sent when it is dropped, and the
    /// deadline no longer applies (the caller gives the verdict by key).
    pub(crate) fn forget(&mut self) {
        self.claim();
        self.on_drop = OnDrop::Nothing;
    }

    /// Moves the right to a new one with an owned handle; this one is left
    /// with nothing to do.
    pub(crate) fn take_owned(&mut self) -> VerdictRight<VerdictHandle> {
        let owned = VerdictRight {
            handle: self.handle.borrow().clone(),
            key: self.key,
            mark: self.mark,
            claim: self.claim.take(),
            on_drop: self.on_drop,
        };
        self.on_drop = OnDrop::Nothing;
        owned
    }
}

impl<H: Handle> Drop for VerdictRight<H> {
    #[inline]
    fn drop(&mut self) {
        // Given its verdict: the usual case, kept small enough to inline.
        if !matches!(self.on_drop, OnDrop::Nothing) {
            self.answer_for_the_packet();
        }
    }
}

impl<H: Handle> VerdictRight<H> {
    /// Dropped without a verdict sent: the unanswered verdict, or the
    /// fallback drop, unless the deadline gave one.
    #[cold]
    fn answer_for_the_packet(&mut self) {
        let handle = self.handle.borrow();
        match self.on_drop {
            OnDrop::Nothing => {}
            OnDrop::Unanswered(_) if !self.claim() => {
                // The deadline gave its verdict.
                Counters::bump(&handle.shared.counters.late_verdicts);
            }
            OnDrop::Unanswered(kind) => handle.unanswered_verdict(self.key, kind, H::CHECKED),
            OnDrop::Fallback => handle.fallback_drop(self.key, H::CHECKED),
        }
    }
}

impl<H: Handle> fmt::Debug for VerdictRight<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerdictRight")
            .field("key", &self.key)
            .field("on_drop", &self.on_drop)
            .finish()
    }
}

/// A verdict that could not be sent, with the packet it was for, so that the
/// caller can try again (e.g. without the payload the kernel refused) or give
/// up. Dropped without another try, the packet is dropped: never given the
/// unanswered verdict, which may be accept.
///
/// `?` turns it into an [`Error`] (and drops the packet).
pub struct VerdictError<P> {
    error: Error,
    /// Boxed: the error path pays for the allocation, not every `Result`.
    packet: Box<P>,
}

impl<P> VerdictError<P> {
    pub(crate) fn new(error: Error, packet: P) -> Self {
        VerdictError {
            error,
            packet: Box::new(packet),
        }
    }

    /// Why the verdict was not sent.
    pub fn error(&self) -> &Error {
        &self.error
    }

    /// The packet, to give a verdict again.
    pub fn into_packet(self) -> P {
        *self.packet
    }

    /// Why, and the packet.
    pub fn into_parts(self) -> (Error, P) {
        (self.error, *self.packet)
    }
}

impl<P> From<VerdictError<P>> for Error {
    /// The error; the packet is dropped.
    fn from(err: VerdictError<P>) -> Error {
        err.error
    }
}

impl<P> fmt::Debug for VerdictError<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VerdictError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<P> fmt::Display for VerdictError<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}

impl<P> std::error::Error for VerdictError<P> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// The verdict methods every packet holder offers, in terms of its
/// `try_verdict`: one set of names and meanings for
/// [`Packet`](crate::Packet), [`OwnedPacket`](crate::OwnedPacket) and
/// [`PendingVerdict`](crate::PendingVerdict).
macro_rules! verdict_methods {
    () => {
        /// Gives the packet `verdict` (with its mark and payload, if any).
        ///
        /// # Errors
        /// As [`VerdictHandle::verdict`](crate::VerdictHandle::verdict): for a
        /// packet whose queue was unbound since it was received,
        /// [`Error::StaleBinding`](crate::Error::StaleBinding), and nothing is
        /// or will be sent (the kernel dropped the packet at the unbind).
        /// Otherwise nothing was sent, and the packet is dropped (counted in
        /// [`Stats::fallback_drops`](crate::Stats::fallback_drops)), so it
        /// neither stays queued nor passes: a drop that cannot be sent as
        /// given stays a drop, and an accept whose new payload the kernel
        /// cannot take does not let the original bytes through. Use
        /// [`try_verdict`](Self::try_verdict) to get the packet back instead.
        pub fn verdict(self, verdict: &$crate::Verdict<'_>) -> $crate::Result<()> {
            self.try_verdict(verdict).map_err($crate::Error::from)
        }

        /// Accepts the packet.
        ///
        /// # Errors
        /// As [`verdict`](Self::verdict).
        pub fn accept(self) -> $crate::Result<()> {
            self.verdict(&$crate::Verdict::accept())
        }

        /// Drops the packet (`NF_DROP`).
        ///
        /// # Errors
        /// As [`verdict`](Self::verdict).
        pub fn drop(self) -> $crate::Result<()> {
            self.verdict(&$crate::Verdict::drop())
        }

        /// Sends the packet through the current hook again. Mark it (e.g.
        /// `Verdict::repeat().with_mark(1)`) and let the rule skip marked
        /// packets, or it comes straight back.
        ///
        /// # Errors
        /// As [`verdict`](Self::verdict).
        pub fn repeat(self) -> $crate::Result<()> {
            self.verdict(&$crate::Verdict::repeat())
        }

        /// Moves the packet to queue `num`; with `bypass` it is accepted when
        /// no program has bound `num`, else dropped.
        ///
        /// # Errors
        /// As [`verdict`](Self::verdict).
        pub fn queue_to(self, num: u16, bypass: bool) -> $crate::Result<()> {
            self.verdict(&$crate::Verdict::queue(num, bypass))
        }
    };
}
pub(crate) use verdict_methods;
