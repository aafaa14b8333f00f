//! Which binding of a queue number a packet came through, so that a verdict
//! never outlives it.
//!
//! The kernel numbers a queue's packets from 1 each time the queue number is
//! bound, so after an unbind and a bind on the same socket, packet 1 of the
//! old binding and packet 1 of the new one are told apart by nothing the kernel
//! sees. The kernel dropped the old packet at the unbind; a late verdict for it
//! would settle the new one. Every packet therefore carries its [`Binding`],
//! and a verdict is sent only while that binding is current.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{PoisonError, RwLock, RwLockReadGuard};

/// One binding of a queue number to a socket: from a successful
/// [`Queue::bind`](crate::Queue::bind) to the unbind or the socket's close.
/// Two bindings, of any queue or socket of the process, are never equal.
///
/// Every packet received carries the binding it came through
/// ([`PacketView::key`](crate::PacketView::key)); [`Queue::binding`](crate::Queue::binding)
/// gives a queue's current one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Binding {
    queue: u16,
    /// Unique in the process; 0 for packets parsed from bytes, which came
    /// through no binding of this process.
    serial: u32,
}

/// The next binding's serial, process-wide, so that a key taken from one
/// socket never matches a binding of another.
static NEXT_SERIAL: AtomicU32 = AtomicU32::new(1);

impl Binding {
    /// A binding made now.
    pub(crate) fn new(queue: u16) -> Self {
        let mut serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
        if serial == 0 {
            // After 2^32 binds: skip the serial that means "none".
            serial = NEXT_SERIAL.fetch_add(1, Ordering::Relaxed);
        }
        Binding { queue, serial }
    }

    /// The binding of no socket, for queue number `queue`: what a packet
    /// parsed from bytes ([`PacketView::parse`](crate::PacketView::parse))
    /// came through. Keys made from it encode like any other (for
    /// [`VerdictBatch::to_bytes`](crate::VerdictBatch::to_bytes), tests and
    /// fuzzing), but no socket sends a verdict for them.
    pub const fn detached(queue: u16) -> Self {
        Binding { queue, serial: 0 }
    }

    /// The queue number.
    pub fn queue(self) -> u16 {
        self.queue
    }

    /// The key of packet `id` of this binding, to give it a verdict by id
    /// (with [`VerdictHandle`](crate::VerdictHandle) or
    /// [`VerdictBatch`](crate::VerdictBatch)).
    pub fn packet(self, id: u32) -> PacketKey {
        PacketKey { binding: self, id }
    }
}

/// What names one packet to the kernel, with the binding it came through:
/// the queue number, the packet id, and the [`Binding`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketKey {
    binding: Binding,
    id: u32,
}

impl PacketKey {
    /// The queue number.
    pub fn queue(self) -> u16 {
        self.binding.queue
    }

    /// The packet id.
    pub fn id(self) -> u32 {
        self.id
    }

    /// The binding the packet came through.
    pub fn binding(self) -> Binding {
        self.binding
    }
}

/// The bindings of one socket that are current: shared by the queue, which
/// changes them, and every verdict sender of the socket.
///
/// A sender holds the read lock from its check until its verdict is sent, and
/// an unbind takes the write lock before the queue can be bound again, so no
/// verdict of an old binding can reach the kernel once a new binding exists.
#[derive(Debug, Default)]
pub(crate) struct Bindings {
    current: RwLock<Vec<Binding>>,
}

impl Bindings {
    /// The current bindings, held until the guard is dropped.
    pub(crate) fn read(&self) -> Current<'_> {
        Current(self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Records a new binding.
    pub(crate) fn add(&self, binding: Binding) {
        self.write(|current| current.push(binding));
    }

    /// Ends `binding`: from now on no verdict for its packets is sent. Waits
    /// for the verdicts being sent for it now.
    pub(crate) fn remove(&self, binding: Binding) {
        self.write(|current| current.retain(|&b| b != binding));
    }

    fn write(&self, change: impl FnOnce(&mut Vec<Binding>)) {
        change(&mut self.current.write().unwrap_or_else(PoisonError::into_inner));
    }
}

/// The current bindings, read-locked: none ends while this lives.
pub(crate) struct Current<'a>(RwLockReadGuard<'a, Vec<Binding>>);

impl Current<'_> {
    /// Whether `binding` is current.
    #[inline]
    pub(crate) fn holds(&self, binding: Binding) -> bool {
        self.0.contains(&binding)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bindings_of_the_same_queue_differ_and_keys_name_theirs() {
        let first = Binding::new(3);
        let second = Binding::new(3);
        assert_ne!(first, second);
        assert_eq!(first.packet(1).queue(), 3);
        assert_ne!(first.packet(1), second.packet(1));
        assert_ne!(Binding::detached(3), first);
    }

    #[test]
    fn a_removed_binding_is_no_longer_current() {
        let bindings = Bindings::default();
        let old = Binding::new(0);
        bindings.add(old);
        assert!(bindings.read().holds(old));
        bindings.remove(old);
        let new = Binding::new(0);
        bindings.add(new);
        assert!(!bindings.read().holds(old));
        assert!(bindings.read().holds(new));
        assert!(!bindings.read().holds(Binding::detached(0)));
    }
}
