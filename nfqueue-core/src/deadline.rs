//! Verdict deadlines: a packet held in user space longer than its queue's
//! deadline gets the deadline's verdict, and the verdict its holder gives
//! later is refused, never sent.
//!
//! A watcher thread per socket (started by the first bind with a deadline)
//! keeps, for each such queue, the packets handed out, in the order received,
//! which is the order of their deadlines. It sleeps until the first one is
//! due. Each packet has a [`Claim`]: its holder and the watcher race to take
//! it, and only the one that does sends a verdict.

use crate::binding::{Binding, PacketKey};
use crate::handle::{Shared, VerdictHandle};
use crate::stats::Counters;
use crate::verdict::{Verdict, VerdictKind};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

/// How long a queue's packets may be held, and the verdict they get then.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub(crate) after: Duration,
    pub(crate) verdict: VerdictKind,
}

impl Deadline {
    /// The longest deadline taken: an hour. A packet the kernel holds that
    /// long is better refused than waited for.
    pub const MAX: Duration = Duration::from_secs(3600);

    /// How long a packet may be held.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// The verdict a packet gets when held longer.
    pub fn verdict(&self) -> VerdictKind {
        self.verdict
    }
}

const OPEN: u8 = 0;
const ANSWERED: u8 = 1;
const EXPIRED: u8 = 2;

/// Who gives one packet its verdict: its holder, or the deadline.
#[derive(Debug, Default)]
pub(crate) struct Claim(AtomicU8);

impl Claim {
    /// Takes the verdict for the holder: false when the deadline has it.
    pub(crate) fn answer(&self) -> bool {
        match self
            .0
            .compare_exchange(OPEN, ANSWERED, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => true,
            Err(state) => state == ANSWERED,
        }
    }

    /// Takes the verdict for the deadline: false when the holder has it.
    fn expire(&self) -> bool {
        self.0
            .compare_exchange(OPEN, EXPIRED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    fn answered(&self) -> bool {
        self.0.load(Ordering::Acquire) == ANSWERED
    }
}

/// A packet handed out under a deadline.
#[derive(Debug)]
struct Held {
    id: u32,
    due: Instant,
    claim: Arc<Claim>,
}

/// The packets of one binding under a deadline.
#[derive(Debug)]
struct Watched {
    binding: Binding,
    deadline: Deadline,
    held: VecDeque<Held>,
}

#[derive(Debug, Default)]
struct State {
    queues: Vec<Watched>,
    /// The socket is gone: the watcher ends.
    closed: bool,
    /// What the watcher is doing, so that a packet handed out wakes it only
    /// when it would otherwise look too late (a wake-up per packet would
    /// cost a system call and a context switch each).
    watcher: Watcher,
}

/// What the watcher thread is doing.
#[derive(Debug, Default, Clone, Copy)]
enum Watcher {
    /// Looking at the held packets, or about to: it sees every one.
    #[default]
    Awake,
    /// Asleep until this time, unless woken.
    Until(Instant),
    /// Asleep until woken: no packet was held.
    Asleep,
}

/// The deadlines of one socket, shared by its queue and its watcher thread.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    state: Mutex<State>,
    wake: Condvar,
}

impl Watch {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts watching `binding`'s packets.
    pub(crate) fn watch(&self, binding: Binding, deadline: Deadline) {
        self.state().queues.push(Watched {
            binding,
            deadline,
            held: VecDeque::new(),
        });
    }

    /// Stops watching `binding`: its packets' verdicts are refused anyway
    /// (the binding ended), and the kernel dropped them.
    pub(crate) fn unwatch(&self, binding: Binding) {
        self.state().queues.retain(|q| q.binding != binding);
    }

    /// The claim of packet `key`, handed out now, if its queue has a
    /// deadline. Packets answered already are let go on the way, so a
    /// queue whose verdicts come in time keeps few.
    pub(crate) fn hand_out(&self, key: PacketKey, now: Instant) -> Option<Arc<Claim>> {
        let mut state = self.state();
        let watched = state
            .queues
            .iter_mut()
            .find(|q| q.binding == key.binding())?;
        while watched.held.front().is_some_and(|h| h.claim.answered()) {
            watched.held.pop_front();
        }
        let claim = Arc::new(Claim::default());
        let due = now + watched.deadline.after;
        watched.held.push_back(Held {
            id: key.id(),
            due,
            claim: Arc::clone(&claim),
        });
        let wake = match state.watcher {
            Watcher::Awake => false,
            Watcher::Until(at) => at > due,
            Watcher::Asleep => true,
        };
        if wake {
            // Marked here, so that the packets after this one do not wake
            // it again before it has looked.
            state.watcher = Watcher::Awake;
        }
        drop(state);
        if wake {
            self.wake.notify_one();
        }
        Some(claim)
    }

    /// Ends the watcher.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.wake.notify_one();
    }

    /// The watcher's loop: until closed (or the socket is gone), sends the
    /// deadline verdict of every packet held past its deadline.
    fn run(&self, socket: Weak<Shared>) {
        let mut due: Vec<(PacketKey, VerdictKind)> = Vec::new();
        loop {
            let mut state = self.state();
            loop {
                if state.closed {
                    return;
                }
                let now = Instant::now();
                let mut next: Option<Instant> = None;
                for q in &mut state.queues {
                    while let Some(front) = q.held.front() {
                        if front.claim.answered() {
                            q.held.pop_front();
                        } else if front.due <= now {
                            let held = q.held.pop_front().expect("front exists");
                            if held.claim.expire() {
                                due.push((q.binding.packet(held.id), q.deadline.verdict));
                            }
                        } else {
                            next = Some(next.map_or(front.due, |n| n.min(front.due)));
                            break;
                        }
                    }
                }
                if !due.is_empty() {
                    break;
                }
                state = match next {
                    Some(at) => {
                        state.watcher = Watcher::Until(at);
                        let wait = at.saturating_duration_since(Instant::now());
                        self.wake
                            .wait_timeout(state, wait)
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                    None => {
                        state.watcher = Watcher::Asleep;
                        self.wake
                            .wait(state)
                            .unwrap_or_else(PoisonError::into_inner)
                    }
                };
                state.watcher = Watcher::Awake;
            }
            drop(state);
            let Some(shared) = socket.upgrade() else {
                return;
            };
            let handle = VerdictHandle { shared };
            let counter = &handle.shared.counters.deadline_verdicts;
            for (key, kind) in due.drain(..) {
                // Counted before it is sent, so that whoever sees the packet
                // pass (or not) sees the count; taken back should it fail.
                Counters::bump(counter);
                if handle.verdict(key, &Verdict::new(kind)).is_err() {
                    counter.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
    }
}

/// Starts the watcher thread of `socket`'s deadlines.
pub(crate) fn start(watch: Arc<Watch>, socket: Weak<Shared>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("nfq-deadline".into())
        .spawn(move || watch.run(socket))
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_goes_to_the_holder_or_the_deadline_once() {
        let claim = Claim::default();
        assert!(claim.answer());
        assert!(claim.answer(), "the holder may try again");
        assert!(!claim.expire());
        let late = Claim::default();
        assert!(late.expire());
        assert!(!late.answer(), "the deadline had it");
    }

    #[test]
    fn answered_packets_are_let_go_as_new_ones_come() {
        let watch = Watch::default();
        let binding = Binding::detached(0);
        watch.watch(
            binding,
            Deadline {
                after: Duration::from_secs(60),
                verdict: VerdictKind::Drop,
            },
        );
        let now = Instant::now();
        for id in 0..100 {
            let claim = watch.hand_out(binding.packet(id), now).unwrap();
            assert!(claim.answer());
        }
        assert_eq!(watch.state().queues[0].held.len(), 1);
        assert!(watch
            .hand_out(Binding::detached(1).packet(1), now)
            .is_none());
    }

    /// The watcher sleeps until the first due packet; one handed out later
    /// with an earlier deadline (another queue's) must still wake it, and
    /// packets due after its wake-up must not.
    #[test]
    fn the_watcher_is_woken_only_for_an_earlier_deadline() {
        let watch = Arc::new(Watch::default());
        let (slow, fast) = (Binding::detached(0), Binding::detached(1));
        let deadline = |after| Deadline {
            after,
            verdict: VerdictKind::Drop,
        };
        watch.watch(slow, deadline(Duration::from_secs(3600)));
        watch.watch(fast, deadline(Duration::from_millis(50)));
        start(Arc::clone(&watch), Weak::new()).unwrap();
        let held = watch.hand_out(slow.packet(1), Instant::now()).unwrap();
        let asleep = Instant::now() + Duration::from_secs(5);
        while !matches!(watch.state().watcher, Watcher::Until(_)) {
            assert!(Instant::now() < asleep, "the watcher never slept");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Due later than the watcher wakes: it is left asleep.
        let later = watch.hand_out(slow.packet(2), Instant::now()).unwrap();
        assert!(matches!(watch.state().watcher, Watcher::Until(_)));
        let urgent = watch.hand_out(fast.packet(3), Instant::now()).unwrap();
        let expired = Instant::now() + Duration::from_secs(5);
        while urgent.0.load(Ordering::Acquire) != EXPIRED {
            assert!(Instant::now() < expired, "the earlier deadline was missed");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(held.answer() && later.answer(), "not due for an hour");
        watch.close();
    }
}
