//! Receive threads: one per queue. Each reads every packet that is waiting,
//! fans the packets out to the workers, and writes the verdicts that come back
//! on its own socket (the kernel accepts a verdict only from the socket that
//! bound the queue), coalesced.
//!
//! Packets go to the workers a burst at a time, in [`Batch`]es that come
//! back with the verdicts (see [`Handout`]). The one bound on the packets
//! out, with the workers or waiting here for one, is `max_in_flight`.
//!
//! What keeps a thread from stalling: it sleeps only in `poll`, on its socket
//! (unless its workers hold as many packets as it may hand out, or it is
//! stopping), the stop handle (unless it is stopping), its waker, and with a
//! timeout while verdicts wait to be sent again. When it stops reading for
//! want of room, its workers hold its packets, and each batch they send back
//! wakes it.

use crate::batch::Batch;
use crate::coalesce::{Coalescer, MAX_HELD};
use crate::failure::FirstFailure;
use crate::handout::Handout;
use crate::stats::{Counters, SlotCounters};
use crate::wake::Waker;
use crate::worker::{Handler, Judge};
use crossbeam_channel::{Receiver, Sender};
use nfqueue_core::net::FlowKey;
use nfqueue_core::{
    Deadline, Error, Queue, Result, Stats, StopHandle, Verdict, VerdictBatch, VerdictHandle,
    VerdictKind, BURST_LEN,
};
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Packets read per round before the verdicts that came back are written (a
/// burst of up to `BURST_LEN` datagrams already read is handled whole).
const READ_BUDGET: usize = 64;
/// Packets one round may read beyond `max_in_flight`: a burst read whole.
pub(crate) const READ_OVERSHOOT: usize = READ_BUDGET + BURST_LEN;
/// The flows (and window slots) made room for when a thread starts; more grow
/// the tables once, under a larger `max_in_flight`.
const ROOM_MAX: usize = 4096;

/// Room in a queue's channel to the workers, in batches: two for each worker
/// and two more, so that no worker waits for the receive thread. More wait
/// at the receive thread.
pub(crate) const fn channel_room(workers: usize) -> usize {
    2 * workers + 2
}

/// The batches made when a thread starts, so that a steady flow allocates
/// none: those the channel holds, one in each worker's hand, and those of the
/// burst being read.
fn batches_made(workers: usize) -> usize {
    channel_room(workers) + 2 * workers
}

/// Most packets given the default verdict at shutdown when the kernel's count
/// of waiting packets cannot be read.
const SHUTDOWN_DRAIN_MAX: usize = 65_536;
/// How long an idle thread waits before it sends again verdicts whose send
/// failed.
const RESEND_PAUSE: Duration = Duration::from_millis(10);
/// How long verdicts may go on failing to be sent (each send already retried)
/// before the queue counts as dead: the thread then fails, which stops the
/// dispatcher, and once stopping it gives up on them. Closing the socket then
/// makes the kernel drop those packets.
const SEND_GIVE_UP: Duration = Duration::from_millis(500);

/// Who decides the verdicts of a queue's packets.
pub(crate) enum Handling<H> {
    /// The `workers` of the pool, through `jobs`, with flow affinity by
    /// `flows` if given; verdicts come back on the `done` channel.
    Workers {
        jobs: Sender<Batch>,
        workers: usize,
        flows: Option<FlowKey>,
    },
    /// The receive thread itself, on the packet in its receive buffer: no copy,
    /// no hand-off, for handlers cheap enough to keep up on one core.
    Inline(Judge<H>),
}

/// What a receive thread is given when it starts.
pub(crate) struct ReceiveLoop<H> {
    pub(crate) handling: Handling<H>,
    pub(crate) setup: Setup,
}

/// What a receive thread works with.
pub(crate) struct Setup {
    pub(crate) slot: usize,
    pub(crate) queue: Queue,
    pub(crate) done: Receiver<Batch>,
    /// Most packets handed to the workers and not yet answered.
    pub(crate) max_in_flight: usize,
    pub(crate) waker: Arc<Waker>,
    pub(crate) stop: StopHandle,
    /// This queue's counters.
    pub(crate) counters: SlotCounters,
    pub(crate) failures: Arc<FirstFailure>,
    /// How long a packet may wait for its handler's verdict, and what it
    /// gets then.
    pub(crate) deadline: Option<Deadline>,
}

/// How a receive thread at work has its packets judged.
enum How<H> {
    Workers(Handout),
    Inline(Judge<H>),
}

impl<H: Handler> ReceiveLoop<H> {
    /// Runs until stopped and every packet read has its verdict.
    pub(crate) fn run(self) -> Result<()> {
        let ReceiveLoop { handling, setup } = self;
        let handle = setup.queue.verdict_handle();
        let queue_num = setup.queue.bound_queues()[0];
        let binding = setup
            .queue
            .binding(queue_num)
            .expect("the builder binds one queue per socket");
        let core_seen = handle.stats();
        let room = setup.max_in_flight.min(ROOM_MAX);
        let (how, pool) = match handling {
            Handling::Inline(judge) => (How::Inline(judge), Vec::new()),
            Handling::Workers {
                jobs,
                workers,
                flows,
            } => {
                let pool = (0..batches_made(workers)).map(|_| new_batch()).collect();
                (How::Workers(Handout::new(jobs, workers, flows, room)), pool)
            }
        };
        let mut thread = ReceiveThread {
            setup,
            how,
            handle,
            queue_num,
            // Room for what is usually out and held, so that the window and
            // the batch reach their size at once rather than over the traffic.
            coalescer: Coalescer::new(binding, room + MAX_HELD + 2 * READ_OVERSHOOT),
            batch: VerdictBatch::with_capacity(MAX_HELD + READ_OVERSHOOT),
            pool,
            in_flight: 0,
            stopping: false,
            failure: None,
            failing_since: None,
            core_seen,
        };
        thread.run()
    }
}

/// A receive thread at work.
struct ReceiveThread<H> {
    setup: Setup,
    how: How<H>,
    handle: VerdictHandle,
    queue_num: u16,
    /// The packets handed out, in order, until their verdicts are sent.
    coalescer: Coalescer,
    /// Verdicts to send this round, and those whose send failed.
    batch: VerdictBatch,
    /// The batches not in use.
    pool: Vec<Batch>,
    /// Packets handed to the workers whose batch has not come back: what
    /// `max_in_flight` bounds (those given the deadline verdict included,
    /// as their handler still has them).
    in_flight: usize,
    /// No more reading: once every packet read has its verdict, the thread ends.
    stopping: bool,
    failure: Option<Error>,
    /// Since when the verdicts in `batch` have failed to go out.
    failing_since: Option<Instant>,
    /// The socket's counters as last added to the dispatcher's.
    core_seen: Stats,
}

impl<H: Handler> ReceiveThread<H> {
    fn run(&mut self) -> Result<()> {
        loop {
            // Verdicts first: they free room in the kernel's queue.
            let mut progress = self.take_verdicts();
            self.expire();
            // A busy thread sees the stop here; an idle one in poll.
            if !self.stopping && self.setup.stop.is_stopped() {
                self.stopping = true;
                if self.failure.is_none() {
                    self.drain_with_default();
                }
            }
            if !self.stopping {
                progress |= self.read();
            }
            let idle = !progress;
            self.send(idle);
            self.add_socket_counters();

            if self.stopping
                && self.coalescer.is_empty()
                && (self.batch.is_empty() || self.given_up())
            {
                break;
            }
            if idle {
                self.wait();
            }
        }
        // Every packet read has its verdict (or, with a dead socket, cannot get
        // one): closing the socket now, by dropping the queue, drops only
        // packets the kernel had not handed over yet.
        self.failure.take().map_or(Ok(()), Err)
    }

    /// Records the verdicts the workers sent back, and hands out what waited
    /// for them. True if there were any.
    fn take_verdicts(&mut self) -> bool {
        let mut any = false;
        while let Ok(mut back) = self.setup.done.try_recv() {
            if let How::Workers(handout) = &mut self.how {
                self.in_flight -= back.len();
                let coalescer = &mut self.coalescer;
                let sent = handout.returned(&back, |lost| no_workers_left(coalescer, lost));
                Counters::add(&self.setup.counters.dispatched, sent as u64);
            }
            let counters = &self.setup.counters;
            for (id, verdict) in back.verdicts.drain(..) {
                let (kind, payload) = (verdict.kind(), verdict.payload().is_some());
                if self.coalescer.complete(id, verdict) {
                    counters.verdict(kind, payload);
                } else {
                    // The deadline gave this packet its verdict.
                    Counters::add(&counters.late_verdicts, 1);
                }
            }
            back.clear();
            self.pool.push(back);
            any = true;
        }
        any
    }

    /// Gives the deadline verdict to the packets that waited for their
    /// handler longer than the deadline.
    fn expire(&mut self) {
        let Some(deadline) = self.setup.deadline else {
            return;
        };
        let Some(cutoff) = Instant::now().checked_sub(deadline.after()) else {
            return;
        };
        let verdict = Verdict::new(deadline.verdict());
        let expired = self.coalescer.expire(cutoff, &verdict);
        let counters = &self.setup.counters;
        for _ in 0..expired {
            counters.verdict(deadline.verdict(), false);
        }
        Counters::add(&counters.deadline_verdicts, expired as u64);
    }

    /// How long until the packet waiting longest reaches the deadline.
    fn until_deadline(&self) -> Option<Duration> {
        let after = self.setup.deadline?.after();
        let due = self.coalescer.oldest_waiting()? + after;
        Some(due.saturating_duration_since(Instant::now()))
    }

    /// Whether the workers hold as many of this queue's packets as they may
    /// (those waiting here for room on their channel included): then reading
    /// waits (backpressure), and the kernel's queue fills meanwhile.
    fn workers_full(&self) -> bool {
        match &self.how {
            How::Inline(_) => false,
            How::Workers(_) => self.in_flight >= self.setup.max_in_flight,
        }
    }

    /// Reads what is waiting, up to the budget, many datagrams per system
    /// call, and hands the packets on, each channel's share of the burst in
    /// one batch (or judges them, inline). True if anything was read, or
    /// reading failed.
    fn read(&mut self) -> bool {
        if self.workers_full() {
            Counters::add(&self.setup.counters.backpressure_waits, 1);
            return false;
        }
        let ReceiveThread {
            setup,
            how,
            coalescer,
            pool,
            in_flight,
            ..
        } = self;
        let Setup {
            slot,
            queue,
            counters,
            ..
        } = setup;
        // One clock read a round: the packets of a round share their start.
        let now = Instant::now();
        let read = queue.recv_burst(READ_BUDGET, |packet| {
            let view = packet.detach();
            coalescer.dispatched(view.id(), now);
            match how {
                How::Inline(judge) => {
                    let verdict = judge.verdict(&view, counters);
                    counters.verdict(verdict.kind(), verdict.payload().is_some());
                    coalescer.complete(view.id(), verdict);
                }
                How::Workers(handout) => {
                    *in_flight += 1;
                    let batch = handout.batch_for(&view, || {
                        let mut batch = pool.pop().unwrap_or_else(small_batch);
                        batch.slot = *slot;
                        batch.binding = Some(view.key().binding());
                        batch
                    });
                    batch.push(view.id(), view.attribute_bytes());
                }
            }
        });
        if let How::Workers(handout) = &mut self.how {
            let (coalescer, pool) = (&mut self.coalescer, &mut self.pool);
            let sent = handout.end_burst(
                |lost| no_workers_left(coalescer, lost),
                |empty| pool.push(empty),
            );
            Counters::add(&self.setup.counters.dispatched, sent as u64);
        }
        match read {
            Ok(0) => false,
            Ok(n) => {
                Counters::add(&self.setup.counters.packets, n as u64);
                true
            }
            Err(err) => {
                self.fail(err);
                true
            }
        }
    }

    /// Sends the verdicts that can go: coalesced, in one `sendmsg` where they
    /// fit, together with those whose send failed before.
    fn send(&mut self, idle: bool) {
        let counters = &self.setup.counters;
        let flushed = self.coalescer.flush(&mut self.batch, idle);
        Counters::add(&counters.batch_messages, flushed.batch_messages);
        Counters::add(&counters.single_messages, flushed.single_messages);
        if self.batch.is_empty() {
            return;
        }
        match self.handle.send_all(&mut self.batch) {
            Ok(_) => self.failing_since = None,
            Err(err) => {
                // What failed stays in the batch and goes again next round.
                let since = *self.failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SEND_GIVE_UP {
                    self.fail(err);
                }
            }
        }
    }

    /// Whether verdicts have failed to go out for so long that the thread, once
    /// stopping, leaves them to the kernel (which drops those packets when the
    /// socket closes).
    fn given_up(&self) -> bool {
        self.failing_since
            .is_some_and(|since| since.elapsed() >= SEND_GIVE_UP)
    }

    /// Adds what the socket layer counted since the last round: system calls,
    /// failed and retried sends, fallbacks, and what a burst receive skips
    /// rather than reports.
    fn add_socket_counters(&mut self) {
        let core = self.handle.stats();
        let seen = self.core_seen;
        let c = &self.setup.counters;
        Counters::add(&c.recv_calls, core.recv_calls - seen.recv_calls);
        Counters::add(&c.send_calls, core.send_calls - seen.send_calls);
        Counters::add(&c.failed_sends, core.failed_sends - seen.failed_sends);
        Counters::add(&c.send_retries, core.send_retries - seen.send_retries);
        Counters::add(&c.fallback_drops, core.fallback_drops - seen.fallback_drops);
        Counters::add(
            &c.receive_overflows,
            core.receive_overflows - seen.receive_overflows,
        );
        Counters::add(
            &c.receive_errors,
            (core.rejected_verdicts + core.malformed) - (seen.rejected_verdicts + seen.malformed),
        );
        if core.malformed_unsettled > seen.malformed_unsettled {
            // A packet waits in the kernel that no verdict of ours names: a
            // batch verdict for a later id would settle it with its verdict.
            self.coalescer.stop_batching();
        }
        self.core_seen = core;
    }

    /// Ends this thread's reading because of `err`, and the whole dispatcher's
    /// with it. The packets read so far still get their verdicts.
    fn fail(&mut self, err: Error) {
        if self.failure.is_none() {
            self.setup.failures.record(self.setup.slot);
            self.failure = Some(err);
        }
        self.stopping = true;
        self.setup.stop.stop();
    }

    /// Gives the queue's unanswered verdict to the packets that are readable
    /// now, so that stopping answers what was already handed over. Reads no more than
    /// the kernel says are waiting (dispatched ones included), so traffic that
    /// goes on arriving does not keep the shutdown going.
    fn drain_with_default(&mut self) {
        let queue = &mut self.setup.queue;
        let mut left = match queue.kernel_stats(self.queue_num) {
            Ok(Some(stats)) => stats.waiting as usize,
            Ok(None) => 0,
            Err(_) => SHUTDOWN_DRAIN_MAX,
        };
        let unanswered = queue
            .unanswered_verdict(self.queue_num)
            .unwrap_or(VerdictKind::Drop);
        let verdict = Verdict::new(unanswered);
        let batch = &mut self.batch;
        while left > 0 {
            let read = queue.recv_burst(left, |packet| {
                let view = packet.detach();
                // A verdict without payload always encodes.
                let _ = batch.push(view.key(), verdict.clone());
            });
            match read {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    left = left.saturating_sub(n);
                    Counters::add(&self.setup.counters.packets, n as u64);
                    Counters::add(&self.setup.counters.shutdown_unanswered, n as u64);
                }
            }
        }
    }

    /// Sleeps until the socket is readable (when watched), a worker wakes us,
    /// the stop handle fires (unless stopping already), or, while verdicts
    /// wait to be sent again, a short pause has passed.
    fn wait(&mut self) {
        let waker = &self.setup.waker;
        waker.prepare_to_sleep();
        if self.setup.done.is_empty() {
            Counters::add(&self.setup.counters.polls, 1);
            let watch_socket = !self.stopping && !self.workers_full();
            let fds = [
                waker.fd(),
                if self.stopping {
                    -1
                } else {
                    self.setup.stop.as_raw_fd()
                },
                if watch_socket {
                    self.setup.queue.as_raw_fd()
                } else {
                    -1
                },
            ];
            let resend = (!self.batch.is_empty()).then_some(RESEND_PAUSE);
            let timeout = match (resend, self.until_deadline()) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Err(err) = poll(fds, timeout) {
                // Without poll there is no sleeping until woken: pause instead.
                self.fail(err);
                std::thread::sleep(RESEND_PAUSE);
            }
        }
        self.setup.waker.awake();
    }
}

/// A batch with room for a burst of small packets (a full burst of large ones
/// grows it once; it is reused after).
fn new_batch() -> Batch {
    Batch::with_room(READ_OVERSHOOT, 512)
}

/// A batch made beyond the first ones, for a flow's few packets; it grows as
/// needed and is reused after.
fn small_batch() -> Batch {
    Batch::with_room(4, 512)
}

/// Every worker is gone, which only a bug could cause: the packets are dropped
/// rather than stranded (and the batch is not seen again).
fn no_workers_left(coalescer: &mut Coalescer, batch: Batch) {
    for (id, _) in batch.packets() {
        coalescer.complete(id, Verdict::drop());
    }
}

/// Polls `fds` for input (negative ones are ignored) until one is ready or
/// `timeout` passes.
fn poll(fds: [libc::c_int; 3], timeout: Option<Duration>) -> Result<()> {
    let mut pollfds = fds.map(|fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    });
    let timeout_ms = timeout.map_or(-1, |t| t.as_millis().min(i32::MAX as u128) as i32);
    loop {
        // SAFETY: `pollfds` is a valid array of three pollfds.
        let rc = unsafe {
            libc::poll(
                pollfds.as_mut_ptr(),
                pollfds.len() as libc::nfds_t,
                timeout_ms,
            )
        };
        if rc >= 0 {
            return Ok(());
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(Error::Sys {
                op: "poll",
                source: err,
            });
        }
    }
}
