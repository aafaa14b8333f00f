//! Worker threads: run the handler on each packet and send its verdict back to
//! the receive thread of the packet's queue.

use crate::batch::Batch;
use crate::stats::{Counters, QueueCounters};
use crate::wake::Waker;
use crossbeam_channel::{Receiver, Select, Sender};
use nfqueue_core::{PacketView, Verdict, VerdictHandle, VerdictKind};
use std::any::Any;
use std::os::fd::AsFd;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Arc;

/// Decides the verdict for one packet. Implemented for every
/// `FnMut(&PacketView) -> Verdict<'static> + Send`, so a closure is a handler;
/// a worker owns its handler, so it may keep mutable state.
pub trait Handler: Send + 'static {
    /// The verdict for `packet`.
    fn handle(&mut self, packet: &PacketView<'_>) -> Verdict<'static>;
}

impl<F> Handler for F
where
    F: FnMut(&PacketView<'_>) -> Verdict<'static> + Send + 'static,
{
    fn handle(&mut self, packet: &PacketView<'_>) -> Verdict<'static> {
        self(packet)
    }
}

/// What a panic handler is told about a handler that panicked.
#[derive(Debug)]
#[non_exhaustive]
pub struct PanicReport {
    /// The worker's index.
    pub worker: usize,
    /// The packet's queue.
    pub queue: u16,
    /// The packet's id.
    pub packet_id: u32,
    /// The panic message, when it was a string.
    pub message: Option<String>,
    /// The verdict the packet got instead
    /// ([`on_panic`](crate::DispatcherBuilder::on_panic)).
    pub verdict: VerdictKind,
}

impl PanicReport {
    fn new(
        worker: usize,
        view: &PacketView<'_>,
        payload: &(dyn Any + Send),
        verdict: VerdictKind,
    ) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned());
        PanicReport {
            worker,
            queue: view.queue(),
            packet_id: view.id(),
            message,
            verdict,
        }
    }
}

/// Called with a report for every handler panic.
pub type PanicHandler = Arc<dyn Fn(&PanicReport) + Send + Sync>;

/// The way back to one receive thread.
#[derive(Debug, Clone)]
pub(crate) struct ReturnPath {
    pub(crate) done: Sender<Batch>,
    pub(crate) waker: Arc<Waker>,
    /// The queue's socket, for the interface names of its packets.
    pub(crate) socket: VerdictHandle,
}

/// A handler with what it takes to get a verdict out of it safely: a panic is
/// caught and reported, and a verdict the kernel could not take is replaced.
/// Neither fallback lets a packet through unless the user chose so.
pub(crate) struct Judge<H> {
    /// The worker's index (or the queue's slot, when handling inline).
    pub(crate) index: usize,
    pub(crate) handler: H,
    /// The verdict for a packet whose handler panicked.
    pub(crate) on_panic: VerdictKind,
    pub(crate) panic_handler: PanicHandler,
}

impl<H: Handler> Judge<H> {
    /// The verdict for `view`, one the kernel can take; what went wrong is
    /// counted in `counters`, its queue's.
    pub(crate) fn verdict(
        &mut self,
        view: &PacketView<'_>,
        counters: &Counters,
    ) -> Verdict<'static> {
        let handler = &mut self.handler;
        // Mark bits are set against the mark the packet came with.
        let judged = panic::catch_unwind(AssertUnwindSafe(|| handler.handle(view)))
            .map(|verdict| verdict.resolve_mark(view.mark()));
        match judged {
            // A payload the kernel cannot take (empty, or too long for a
            // netlink attribute): the packet is dropped, whatever the verdict.
            // Passing the original bytes could let through what the rewrite
            // was meant to remove.
            Ok(verdict) if verdict.validate().is_err() => {
                Counters::add(&counters.invalid_verdicts, 1);
                Verdict::drop()
            }
            Ok(verdict) => verdict,
            Err(payload) => {
                Counters::add(&counters.handler_panics, 1);
                let report = PanicReport::new(self.index, view, payload.as_ref(), self.on_panic);
                drop_contained(payload);
                // A panicking panic handler must not take the thread down.
                if let Err(payload) =
                    panic::catch_unwind(AssertUnwindSafe(|| (self.panic_handler)(&report)))
                {
                    drop_contained(payload);
                }
                Verdict::new(self.on_panic)
            }
        }
    }
}

/// Drops a panic's payload without letting a panic in its `Drop` unwind
/// (which would end the thread). The payload of such a second panic is
/// dropped the same way, so a `&str` message raised from a `Drop` is freed;
/// only a chain of payloads that keep panicking past [`DROP_ATTEMPTS`] is
/// leaked, since each drop could panic again.
pub(crate) fn drop_contained(payload: Box<dyn Any + Send>) {
    let mut payload = payload;
    for _ in 0..DROP_ATTEMPTS {
        match panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
            Ok(()) => return,
            Err(again) => payload = again,
        }
    }
    std::mem::forget(payload);
}

/// How many nested panic payloads [`drop_contained`] drops before it gives up.
const DROP_ATTEMPTS: usize = 8;

/// Everything a worker thread needs.
pub(crate) struct Worker<H> {
    /// One channel per receive thread (queue): a queue whose channel is full
    /// holds only its own jobs, so the worker that takes one of them is sure to
    /// wake that receive thread with the verdict, and a busy queue cannot crowd
    /// the others out (a worker picks at random among the channels that hold
    /// jobs).
    pub(crate) jobs: Vec<Receiver<Batch>>,
    pub(crate) returns: Arc<[ReturnPath]>,
    pub(crate) counters: Arc<QueueCounters>,
    pub(crate) judge: Judge<H>,
}

impl<H: Handler> Worker<H> {
    /// Handles jobs until every receive thread has hung up. The handler is
    /// dropped here too, and a panic in its `Drop` is contained.
    pub(crate) fn run(self) {
        let Worker {
            jobs,
            returns,
            counters,
            judge,
        } = self;
        let mut judge = Contained(Some(judge));
        let judge = judge.0.as_mut().expect("set above");
        if let [only] = &jobs[..] {
            for batch in only.iter() {
                handle(judge, &returns, &counters, batch);
            }
            return;
        }
        let mut select = Select::new();
        for input in &jobs {
            select.recv(input);
        }
        let mut open = jobs.len();
        while open > 0 {
            let ready = select.select();
            let index = ready.index();
            match ready.recv(&jobs[index]) {
                Ok(batch) => handle(judge, &returns, &counters, batch),
                Err(_) => {
                    // That receive thread is done.
                    select.remove(index);
                    open -= 1;
                }
            }
        }
    }
}

/// A value whose `Drop` may panic (a user's handler), dropped with the panic
/// contained.
struct Contained<T>(Option<T>);

impl<T> Drop for Contained<T> {
    fn drop(&mut self) {
        let value = self.0.take();
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(move || drop(value))) {
            drop_contained(payload);
        }
    }
}

/// Runs the handler on every packet of `batch` and sends the batch back to its
/// receive thread with their verdicts: one message and at most one wake-up.
fn handle<H: Handler>(
    judge: &mut Judge<H>,
    returns: &[ReturnPath],
    counters: &QueueCounters,
    batch: Batch,
) {
    let back = &returns[batch.slot];
    let counters = counters.slot(batch.slot);
    // Should anything here unwind (the handler's panics are caught; this is
    // for a bug of ours), the batch still goes back, its packets dropped, so
    // that the receive thread is not left waiting for it.
    let mut job = Job {
        batch: Some(batch),
        back,
    };
    let batch = job.batch.as_mut().expect("set above");
    let mut verdicts = std::mem::take(&mut batch.verdicts);
    for (id, attrs) in batch.packets() {
        let parsed = match batch.binding {
            Some(binding) => PacketView::parse_received(binding, attrs),
            None => PacketView::parse(0, attrs),
        };
        let verdict = match parsed {
            Ok(view) => judge.verdict(&view.with_interface_names(back.socket.as_fd()), counters),
            // The receive thread parsed these bytes already.
            Err(_) => Verdict::drop(),
        };
        verdicts.push((id, verdict));
    }
    batch.verdicts = verdicts;
    job.finish();
}

/// A batch a worker has in hand, and the way back for it.
struct Job<'a> {
    batch: Option<Batch>,
    back: &'a ReturnPath,
}

impl Job<'_> {
    /// Sends the batch back with its verdicts.
    fn finish(&mut self) {
        if let Some(batch) = self.batch.take() {
            // The receive thread lives until it has every verdict it is owed.
            let _ = self.back.done.send(batch);
            self.back.waker.wake_if_sleeping();
        }
    }
}

impl Drop for Job<'_> {
    fn drop(&mut self) {
        if let Some(batch) = &mut self.batch {
            // Unwinding: a drop for every packet without a verdict yet.
            let answered = batch.verdicts.len();
            let ids: Vec<u32> = batch.packets().skip(answered).map(|(id, _)| id).collect();
            batch
                .verdicts
                .extend(ids.into_iter().map(|id| (id, Verdict::drop())));
            self.finish();
        }
    }
}

/// The default panic handler: one line on stderr.
pub(crate) fn print_panic(report: &PanicReport) {
    eprintln!(
        "nfqueue: handler panicked on packet {} of queue {} (worker {}): {}; the packet got the verdict {:?}",
        report.packet_id,
        report.queue,
        report.worker,
        report.message.as_deref().unwrap_or("(no message)"),
        report.verdict,
    );
}
