//! Sending verdicts.
//!
//! A verdict given on the thread that runs `run()` is collected, so that the
//! verdicts of a burst of fast callbacks go out together in one `sendmsg`, when
//! the burst is done. By default nothing can tell that from a send at once: a
//! flusher thread sends what was collected at most [`SEND_WITHIN`] after the
//! first of it was given, whatever the callback does meanwhile (sleeps, waits
//! for the packet, computes). With `run(batch=True)` the verdicts of a burst
//! wait for its last callback instead, as the program asked. Verdicts given on
//! other threads, and those of `run_socket()`, go out at once.
//!
//! A send that fails leaves its verdicts here, in order, to be sent again:
//! with the next ones, or by the flusher after a pause (10 ms, doubling up to
//! 1 s). They belong to their binding: `unbind()` forgets them (counted), and
//! nfqueue-core refuses to send a verdict of a binding that has ended.

use nfqueue_core::{
    Error as CoreError, InterfaceName, PacketKey, Result as CoreResult, Verdict, VerdictBatch,
    VerdictHandle, VerdictKind,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// The longest a verdict given in a callback of `run()` waits to be sent (in
/// the default mode), counted from when it was given, plus the time the
/// system takes to run the flusher thread when its timer is due.
pub(crate) const SEND_WITHIN: Duration = Duration::from_micros(200);
/// The pause before a failed send is tried again, doubled after each failure
/// up to [`LAST_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(10);
const LAST_RETRY: Duration = Duration::from_secs(1);

/// How the verdicts of the thread running `run()` go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Together at the end of the burst, or by the flusher within
    /// [`SEND_WITHIN`], whichever comes first.
    Timed,
    /// Together at the end of the burst (`run(batch=True)`).
    Burst,
}

/// The verdict side of one `NetfilterQueue`, shared with its bindings.
#[derive(Debug)]
pub(crate) struct Verdicts {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    handle: VerdictHandle,
    collector: Mutex<Collector>,
    /// Wakes the flusher.
    wake: Condvar,
    /// Verdicts given up on: their send failed and their queue was unbound
    /// before a retry went through.
    unsent: AtomicU64,
}

#[derive(Debug)]
struct Collector {
    batch: VerdictBatch,
    /// The thread whose verdicts are collected (the one running `run()`).
    dispatching: Option<(libc::pthread_t, Mode)>,
    /// When the flusher sends the batch: [`SEND_WITHIN`] after its oldest
    /// verdict (timed mode).
    send_by: Option<Instant>,
    /// When the flusher tries a failed send again.
    retry: Option<Retry>,
    flusher: Flusher,
    /// The queue is gone: the flusher ends.
    closed: bool,
}

#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    after: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flusher {
    NotStarted,
    /// Waiting without a deadline: wake it to give it one.
    Idle,
    /// Awake or waiting for a deadline: it will see a new one by itself.
    Watching,
    /// Could not be started: timed verdicts go out at once.
    Unavailable,
}

impl Verdicts {
    pub(crate) fn new(handle: VerdictHandle) -> Self {
        Verdicts {
            shared: Arc::new(Shared {
                handle,
                collector: Mutex::new(Collector {
                    batch: VerdictBatch::with_capacity(nfqueue_core::BURST_LEN),
                    dispatching: None,
                    send_by: None,
                    retry: None,
                    flusher: Flusher::NotStarted,
                    closed: false,
                }),
                wake: Condvar::new(),
                unsent: AtomicU64::new(0),
            }),
        }
    }

    /// The counters of the socket.
    pub(crate) fn stats(&self) -> nfqueue_core::Stats {
        self.shared.handle.stats()
    }

    /// Verdicts given up on (see [`discard_unsent`](Self::discard_unsent)).
    pub(crate) fn unsent(&self) -> u64 {
        self.shared.unsent.load(Ordering::Relaxed)
    }

    /// From now on, verdicts given on this thread are collected, in `mode`.
    pub(crate) fn begin(&self, mode: Mode) {
        self.shared.collector().dispatching = Some((this_thread(), mode));
    }

    /// Verdicts go out at once again; those collected go now.
    pub(crate) fn end(&self) -> CoreResult<()> {
        let mut c = self.shared.collector();
        c.dispatching = None;
        self.shared.flush_locked(&mut c)
    }

    /// Sends the verdicts collected, in the order given. On failure they stay,
    /// to be sent again.
    pub(crate) fn flush(&self) -> CoreResult<()> {
        self.shared.flush_locked(&mut self.shared.collector())
    }

    /// Forgets the verdicts that could not be sent, counting them: their
    /// queue was unbound, and the kernel dropped their packets.
    pub(crate) fn discard_unsent(&self) {
        let mut c = self.shared.collector();
        let forgotten = c.batch.len() as u64;
        c.batch.clear();
        c.send_by = None;
        c.retry = None;
        self.shared.unsent.fetch_add(forgotten, Ordering::Relaxed);
    }

    /// Gives the packet `key` names its verdict: collected when the thread
    /// running `run()` gives it, else sent at once (with the GIL held, as the
    /// reference does: a verdict is one system call that never waits).
    pub(crate) fn give(&self, key: PacketKey, verdict: Verdict<'_>) -> CoreResult<()> {
        let shared = &self.shared;
        let mut c = shared.collector();
        match c.dispatching {
            Some((thread, mode)) if thread == this_thread() => {
                c.batch.push(key, verdict)?;
                if mode == Mode::Timed && c.send_by.is_none() {
                    c.send_by = Some(Instant::now() + SEND_WITHIN);
                    if !shared.watch(&mut c) {
                        // No flusher to keep the bound: send now.
                        return shared.flush_locked(&mut c);
                    }
                }
                Ok(())
            }
            _ => {
                drop(c);
                shared.handle.verdict(key, &verdict)
            }
        }
    }
}

impl Drop for Verdicts {
    fn drop(&mut self) {
        self.shared.collector().closed = true;
        self.shared.wake.notify_all();
    }
}

impl Shared {
    fn collector(&self) -> MutexGuard<'_, Collector> {
        // A panic while holding the lock leaves nothing half-done worth refusing.
        self.collector.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes sure the flusher will look at the batch's deadlines; false when
    /// there is no flusher.
    fn watch(self: &Arc<Self>, c: &mut Collector) -> bool {
        match c.flusher {
            Flusher::Watching => true,
            Flusher::Idle => {
                c.flusher = Flusher::Watching;
                self.wake.notify_one();
                true
            }
            Flusher::NotStarted => {
                let shared = Arc::clone(self);
                let started = without_signals(|| {
                    thread::Builder::new()
                        .name("nfq-py-verdicts".into())
                        .spawn(move || shared.run_flusher())
                });
                c.flusher = match started {
                    Ok(_) => Flusher::Watching,
                    Err(_) => Flusher::Unavailable,
                };
                c.flusher == Flusher::Watching
            }
            Flusher::Unavailable => false,
        }
    }

    /// Sends the batch; on failure keeps it and sets a retry.
    fn flush_locked(self: &Arc<Self>, c: &mut Collector) -> CoreResult<()> {
        c.send_by = None;
        if c.batch.is_empty() {
            c.retry = None;
            return Ok(());
        }
        match self.handle.send_all(&mut c.batch) {
            // Refused verdicts of ended bindings are counted by nfqueue-core;
            // the others went.
            Ok(_) | Err(CoreError::StaleBinding { .. }) => {
                c.retry = None;
                Ok(())
            }
            Err(err) => {
                let after = c
                    .retry
                    .map_or(FIRST_RETRY, |r| (r.after * 2).min(LAST_RETRY));
                c.retry = Some(Retry {
                    at: Instant::now() + after,
                    after,
                });
                self.watch(c);
                Err(err)
            }
        }
    }

    /// The flusher: sends the batch when it is due, and retries failed sends.
    /// It never touches Python, so it needs no GIL, and the interpreter's
    /// shutdown does not concern it.
    fn run_flusher(self: Arc<Self>) {
        // Wake up when asked to, not up to 50 us later.
        // SAFETY: prctl(PR_SET_TIMERSLACK) only changes this thread's slack.
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1000 as libc::c_ulong) };

        let mut c = self.collector();
        // After a deadline passes with nothing left to send, the flusher
        // watches one more interval before it goes idle, so that a steady
        // stream of bursts never has to wake it.
        let mut lingered = false;
        loop {
            if c.closed {
                return;
            }
            let due = match (c.send_by, c.retry.map(|r| r.at)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            match due {
                None if lingered => {
                    c.flusher = Flusher::Idle;
                    c = self.wake.wait(c).unwrap_or_else(|e| e.into_inner());
                    c.flusher = Flusher::Watching;
                    lingered = false;
                }
                None => {
                    c = self
                        .wake
                        .wait_timeout(c, SEND_WITHIN)
                        .unwrap_or_else(|e| e.into_inner())
                        .0;
                    lingered = true;
                }
                Some(at) => {
                    lingered = false;
                    let now = Instant::now();
                    if now >= at {
                        // A failure sets the next retry.
                        let _ = self.flush_locked(&mut c);
                    } else {
                        c = self
                            .wake
                            .wait_timeout(c, at - now)
                            .unwrap_or_else(|e| e.into_inner())
                            .0;
                    }
                }
            }
        }
    }
}

/// The calling thread, cheaply (a register read: a verdict asks each time).
fn this_thread() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() }
}

/// Runs `f` (which starts a thread) with every signal blocked, so that the
/// thread starts with them blocked: the program's signals are for its own
/// threads, and one that a thread of ours took would wake no wait of the
/// program's (Python runs its handler only when the main thread looks).
fn without_signals<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: sigset_t is plain data that sigfillset/pthread_sigmask fill in;
    // the calls change this thread's mask only, and it is put back below.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    };
    let out = f();
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    out
}

/// One `bind()` of a queue number: what its packets need to give their verdict.
#[derive(Debug)]
pub(crate) struct Binding {
    core: nfqueue_core::Binding,
    unbound: AtomicBool,
    verdicts: Arc<Verdicts>,
}

impl Binding {
    pub(crate) fn new(core: nfqueue_core::Binding, verdicts: Arc<Verdicts>) -> Self {
        Binding {
            core,
            unbound: AtomicBool::new(false),
            verdicts,
        }
    }

    /// nfqueue-core's binding, which the keys of its packets carry.
    pub(crate) fn core(&self) -> nfqueue_core::Binding {
        self.core
    }

    /// The queue number.
    pub(crate) fn queue(&self) -> u16 {
        self.core.queue()
    }

    /// From now on its packets refuse verdicts: the kernel has dropped them.
    pub(crate) fn mark_unbound(&self) {
        self.unbound.store(true, Ordering::Release);
    }

    /// True once the queue was unbound.
    pub(crate) fn is_unbound(&self) -> bool {
        self.unbound.load(Ordering::Acquire)
    }

    /// Gives packet `id` its verdict (see [`Verdicts::give`]).
    pub(crate) fn give(
        &self,
        id: u32,
        kind: VerdictKind,
        mark: Option<u32>,
        payload: Option<&[u8]>,
    ) -> CoreResult<()> {
        let mut verdict = Verdict::new(kind);
        if let Some(mark) = mark {
            verdict = verdict.with_mark(mark);
        }
        if let Some(payload) = payload {
            verdict = verdict.with_payload(payload);
        }
        self.verdicts.give(self.core.packet(id), verdict)
    }

    /// The name of interface `index` in the socket's network namespace.
    pub(crate) fn interface_name(&self, index: u32) -> Option<InterfaceName> {
        self.verdicts.shared.handle.interface_name(index).ok()
    }
}
