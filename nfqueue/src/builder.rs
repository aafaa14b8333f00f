//! Configuring and starting a [`Dispatcher`].

use crate::affinity;
use crate::dispatcher::Dispatcher;
use crate::failure::FirstFailure;
use crate::receiver::{channel_room, Handling, ReceiveLoop, Setup};
use crate::stats::{QueueCounters, SlotCounters};
use crate::stats_handle::StatsHandle;
use crate::wake::Waker;
use crate::worker::{
    drop_contained, print_panic, Handler, Judge, PanicHandler, PanicReport, ReturnPath, Worker,
};
use crossbeam_channel::{bounded, Receiver, Sender};
use nfqueue_core::net::FlowKey;
use nfqueue_core::{
    Error, PacketView, Queue, QueueConfig, Result, StopHandle, Verdict, VerdictKind,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::{self, JoinHandle};

/// Default receive buffer per queue socket: room for a full default-length
/// queue (1024 packets) of MTU-sized packets with their metadata.
pub const DEFAULT_RECV_BUFFER: usize = 8 << 20;

/// Default of [`DispatcherBuilder::max_in_flight`]: the packets of one queue
/// that its workers may hold at once.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// The largest [`DispatcherBuilder::max_in_flight`]: 2^20 packets, a thousand
/// times the kernel's default queue length. Each packet in flight holds a
/// copy of its message, up to 64 KiB.
pub const MAX_IN_FLIGHT: usize = 1 << 20;

/// The most workers a dispatcher starts ([`DispatcherBuilder::workers`]).
pub const MAX_WORKERS: usize = 1024;

/// Builds a [`Dispatcher`], in the manner of rayon's `ThreadPoolBuilder`.
///
/// ```no_run
/// use nfqueue::{Dispatcher, QueueConfig, QueueFlags, Verdict};
/// use nfqueue::net::FlowKey;
///
/// let dispatcher = Dispatcher::builder()
///     .queues(0..=1) // iptables ... -j NFQUEUE --queue-balance 0:1
///     .workers(4)
///     .flow_affinity(FlowKey::FiveTuple)
///     .queue_config(QueueConfig::default().flags(QueueFlags::FAIL_OPEN))
///     .build(|packet: &nfqueue::PacketView<'_>| {
///         if packet.payload().len() > 1400 { Verdict::drop() } else { Verdict::accept() }
///     })?;
/// let stop = dispatcher.stop_handle();
/// # stop.stop();
/// let stats = dispatcher.join()?;
/// println!("{} packets, {:.2} verdict messages per packet", stats.packets, stats.messages_per_packet());
/// # Ok::<(), nfqueue::Error>(())
/// ```
pub struct DispatcherBuilder {
    queues: Vec<u16>,
    workers: Option<usize>,
    max_in_flight: usize,
    thread_prefix: String,
    pin_cpus: bool,
    on_panic: VerdictKind,
    panic_handler: PanicHandler,
    flow_affinity: Option<FlowKey>,
    queue_config: QueueConfig,
    recv_buffer: Option<usize>,
    stop: Option<StopHandle>,
    netns: Option<Netns>,
}

/// Where the queue sockets are made, when not in the builder's namespace.
#[derive(Debug, Clone)]
enum Netns {
    /// `/run/netns/NAME`.
    Named(String),
    /// A namespace file.
    Path(PathBuf),
}

impl std::fmt::Debug for DispatcherBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DispatcherBuilder")
            .field("queues", &self.queues)
            .field("workers", &self.workers)
            .field("max_in_flight", &self.max_in_flight)
            .field("thread_prefix", &self.thread_prefix)
            .field("pin_cpus", &self.pin_cpus)
            .field("on_panic", &self.on_panic)
            .field("flow_affinity", &self.flow_affinity)
            .field("queue_config", &self.queue_config)
            .field("recv_buffer", &self.recv_buffer)
            .field("netns", &self.netns)
            .finish_non_exhaustive()
    }
}

impl Default for DispatcherBuilder {
    fn default() -> Self {
        DispatcherBuilder {
            queues: Vec::new(),
            workers: None,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            thread_prefix: "nfq".to_string(),
            pin_cpus: false,
            on_panic: VerdictKind::Drop,
            panic_handler: Arc::new(print_panic),
            flow_affinity: None,
            queue_config: QueueConfig::default(),
            recv_buffer: Some(DEFAULT_RECV_BUFFER),
            stop: None,
            netns: None,
        }
    }
}

impl DispatcherBuilder {
    /// A builder with the defaults: no queue yet, one worker per available core,
    /// no flow affinity, drop for a packet whose handler panics, and the
    /// defaults of [`QueueConfig`] (drop for a packet read while stopping).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds queue number `queue` (one socket and receive thread each). A
    /// number given twice is refused when the dispatcher is built.
    pub fn queue(mut self, queue: u16) -> Self {
        self.queues.push(queue);
        self
    }

    /// Adds every queue number of `queues`, e.g. `0..=3` for
    /// `--queue-balance 0:3` or `--queue-cpu-fanout`.
    pub fn queues(mut self, queues: impl IntoIterator<Item = u16>) -> Self {
        self.queues.extend(queues);
        self
    }

    /// Number of worker threads (default: the available cores), at most
    /// [`MAX_WORKERS`].
    ///
    /// `0` runs the handler on each queue's receive thread instead, on the packet
    /// as it lies in the receive buffer: no copy, no hand-off between threads,
    /// one handler per queue (made by `build_with` with the queue's index). That
    /// is the fastest way for a cheap handler; spread the load over cores with
    /// several queues (`--queue-balance`, `--queue-cpu-fanout`). A pool pays for
    /// itself once the handler costs more than the hand-off.
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = Some(workers);
        self
    }

    /// Most packets of one queue that its workers may hold at once, handed
    /// out and not yet answered (default [`DEFAULT_MAX_IN_FLIGHT`], from 1 to
    /// [`MAX_IN_FLIGHT`]; a burst read whole may go over by up to 80). This
    /// is the one bound: a handler that is slow or stuck holds back the
    /// packets handed to it with its own (without flow affinity, its share
    /// of a burst; with it, its flow's later packets), while the other
    /// workers go on with the rest, until the queue has this many packets
    /// out. Then the queue's receive thread stops reading until verdicts
    /// come back, the kernel's queue fills meanwhile, and its `max_len` and
    /// fail-open setting decide. Each queue has a channel of its own to the
    /// workers, so a flood on one queue does not take the room of another. A
    /// value out of range is refused when the dispatcher is built.
    pub fn max_in_flight(mut self, packets: usize) -> Self {
        self.max_in_flight = packets;
        self
    }

    /// Prefix of thread names (default `nfq`: threads are `nfq-recv-QUEUE` and
    /// `nfq-worker-N`, as `top -H` and debuggers show them).
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.thread_prefix = prefix.into();
        self
    }

    /// Pins each receive thread and worker to one CPU, round robin (default off).
    pub fn pin_cpus(mut self, pin: bool) -> Self {
        self.pin_cpus = pin;
        self
    }

    /// The verdict for a packet whose handler panicked (default drop: a
    /// packet nobody decided on does not pass unless asked for; choose accept
    /// for a monitor that must never cut traffic). The panic handler is told.
    pub fn on_panic(mut self, kind: VerdictKind) -> Self {
        self.on_panic = kind;
        self
    }

    /// Called with a report for every handler panic (default: a line on stderr).
    pub fn panic_handler(mut self, handler: impl Fn(&PanicReport) + Send + Sync + 'static) -> Self {
        self.panic_handler = Arc::new(handler);
        self
    }

    /// Keeps the packets of one flow in order (default off: any free worker
    /// takes the next packet). A batch of packets holds one flow's, and a
    /// flow has one batch with the workers at a time: its packets read
    /// meanwhile wait at the receive thread and go, in order, when that one
    /// comes back, to whichever worker is free. A slow or stuck handler then
    /// holds back its own flow and no other. Flows are told apart by a 64-bit
    /// hash of `key`'s fields; two flows with the same hash count as one.
    pub fn flow_affinity(mut self, key: FlowKey) -> Self {
        self.flow_affinity = Some(key);
        self
    }

    /// Settings applied to every queue: copy mode, length, flags, the
    /// unanswered verdict, which the packets read while stopping get (drop
    /// unless changed: [`QueueConfig::unanswered`]), and the deadline
    /// ([`QueueConfig::deadline`]).
    ///
    /// Under a deadline, a packet whose handler has not returned its verdict
    /// in time gets the deadline verdict (drop unless changed), and the
    /// handler's verdict, when it comes, is not sent (counted in
    /// `late_verdicts`). The receive thread enforces it: it wakes when the
    /// packet waiting longest is due, so the resolution is about a
    /// millisecond, and it costs no clock read per packet (packets of a
    /// round share the round's). With flow affinity, the later packets of a
    /// flow whose handler is stuck wait behind it, and each gets the deadline
    /// verdict when its own deadline passes, unless the handler returns
    /// first. With `workers(0)` the handler runs on the receive thread, which
    /// a stuck handler stops: deadlines need workers. The handler keeps the
    /// packets it holds, and they count against `max_in_flight` until it
    /// returns.
    pub fn queue_config(mut self, config: QueueConfig) -> Self {
        self.queue_config = config;
        self
    }

    /// Receive buffer of each queue socket (default [`DEFAULT_RECV_BUFFER`],
    /// forced when privileged); `None` keeps the system default.
    pub fn recv_buffer_size(mut self, bytes: Option<usize>) -> Self {
        self.recv_buffer = bytes;
        self
    }

    /// Opens the queue sockets in the network namespace named `name`
    /// (`/run/netns/NAME`, as `ip netns add NAME` makes it), as
    /// [`Queue::open_in_netns`] does; the dispatcher's threads stay where they
    /// are, and [`Dispatcher::kernel_stats`] reads that namespace's counters.
    /// Entering it needs CAP_SYS_ADMIN. A name with a `/` is refused when the
    /// dispatcher is built.
    pub fn netns(mut self, name: impl Into<String>) -> Self {
        self.netns = Some(Netns::Named(name.into()));
        self
    }

    /// Opens the queue sockets in the network namespace of the file at `path`
    /// (e.g. `/proc/PID/ns/net`); see [`netns`](Self::netns).
    pub fn netns_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.netns = Some(Netns::Path(path.into()));
        self
    }

    /// Uses `stop` as the dispatcher's stop handle (default: a new one), e.g. one
    /// that a signal-handling thread set up before any thread was spawned.
    pub fn stop_handle(mut self, stop: StopHandle) -> Self {
        self.stop = Some(stop);
        self
    }

    /// Binds the queues and starts the threads, with one handler shared by all
    /// workers.
    ///
    /// # Errors
    /// As [`build_with`](Self::build_with).
    pub fn build<F>(self, handler: F) -> Result<Dispatcher>
    where
        F: Fn(&PacketView<'_>) -> Verdict<'static> + Send + Sync + 'static,
    {
        let shared = Arc::new(handler);
        self.build_with(move |_worker| {
            let handler = Arc::clone(&shared);
            move |packet: &PacketView<'_>| handler(packet)
        })
    }

    /// Binds the queues and starts the threads, with a handler of its own for
    /// each worker, made by `make_handler(worker_index)` (or, with `workers(0)`,
    /// for each queue, by `make_handler(queue_index)`): handlers may then keep
    /// mutable state without locks.
    ///
    /// Every input is checked before anything is bound, and nothing keeps
    /// running after an error: the queues are unbound (their sockets closed)
    /// and the threads started are joined before the error is returned. No
    /// packet is read until every thread has started.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] without queues or for a thread name prefix
    /// with a NUL byte, [`Error::DuplicateQueue`], [`Error::OutOfRange`] for
    /// `workers` or `max_in_flight`, the errors of
    /// [`QueueConfig::validate`]; the errors of [`Queue::bind`] (e.g.
    /// [`Error::QueueTaken`]); [`Error::Sys`] when a thread cannot be spawned.
    ///
    /// # Panics
    /// Passes on a panic of `make_handler`, after the same clean-up.
    pub fn build_with<M, H>(self, mut make_handler: M) -> Result<Dispatcher>
    where
        M: FnMut(usize) -> H,
        H: Handler,
    {
        let workers = self.workers.unwrap_or_else(affinity::available_cpus);
        self.check(workers)?;
        // Bind every queue here, so that errors reach the caller before any
        // thread starts.
        let mut queues = Vec::with_capacity(self.queues.len());
        for &num in &self.queues {
            let mut queue = match &self.netns {
                None => Queue::open()?,
                Some(Netns::Named(name)) => Queue::open_in_netns(name)?,
                Some(Netns::Path(path)) => Queue::open_in_netns_path(path)?,
            };
            // The deadline is applied here, in the receive threads, which
            // know when each packet went to a worker.
            queue.bind(num, &self.queue_config.without_deadline())?;
            if let Some(bytes) = self.recv_buffer {
                queue.set_recv_buffer_size(bytes)?;
            }
            queues.push(queue);
        }
        let kernel = queues[0].kernel_stats_reader()?;

        let stop = match self.stop.clone() {
            Some(stop) => stop,
            None => StopHandle::new()?,
        };
        let counters = QueueCounters::new(&self.queues);
        let cpus = affinity::available_cpus();
        let mut next_cpu = 0usize;
        let mut pin = || {
            let cpu = next_cpu % cpus;
            next_cpu += 1;
            self.pin_cpus.then_some(cpu)
        };
        let mut make = |index: usize| Judge {
            index,
            handler: make_handler(index),
            on_panic: self.on_panic,
            panic_handler: Arc::clone(&self.panic_handler),
        };

        // Threads started so far. Declared before everything that holds a
        // queue or a channel, so that on an early return, or a panic of
        // `make_handler`, those are dropped first (closing the sockets and
        // the channels), and then the threads, which end once they are, are
        // joined.
        let mut started = Started::new(self.queues.len());

        // One channel per queue, which every worker reads: any free worker
        // takes a queue's next batch, and a receive thread waits only for its
        // own, whose verdicts wake it. The way back has room for every batch
        // that can be out (in the channel and in the workers' hands), so a
        // worker never waits to give one back.
        let room = channel_room(workers);
        let mut worker_inputs = vec![Vec::with_capacity(queues.len()); workers];
        let mut jobs = || {
            let (tx, rx) = bounded(room);
            for inputs in &mut worker_inputs {
                inputs.push(rx.clone());
            }
            tx
        };
        let failures = Arc::new(FirstFailure::default());
        let mut loops = Vec::with_capacity(queues.len());
        let mut returns = Vec::with_capacity(queues.len());
        for (slot, queue) in queues.into_iter().enumerate() {
            let (done_tx, done_rx) = bounded(room + workers);
            let waker = Arc::new(Waker::new().map_err(|source| Error::Sys {
                op: "eventfd",
                source,
            })?);
            returns.push(ReturnPath {
                done: done_tx,
                waker: Arc::clone(&waker),
                socket: queue.verdict_handle(),
            });
            let handling = match workers {
                0 => Handling::Inline(make(slot)),
                _ => Handling::Workers {
                    jobs: jobs(),
                    workers,
                    flows: self.flow_affinity,
                },
            };
            loops.push(ReceiveLoop {
                handling,
                setup: Setup {
                    slot,
                    queue,
                    done: done_rx,
                    waker,
                    stop: stop.clone(),
                    max_in_flight: self.max_in_flight,
                    counters: SlotCounters::new(&counters, slot),
                    failures: Arc::clone(&failures),
                    deadline: self.queue_config.packet_deadline(),
                },
            });
        }
        let returns: Arc<[ReturnPath]> = returns.into();

        for (index, jobs) in worker_inputs.into_iter().enumerate() {
            let worker = Worker {
                jobs,
                returns: Arc::clone(&returns),
                counters: Arc::clone(&counters),
                judge: make(index),
            };
            let name = format!("{}-worker-{index}", self.thread_prefix);
            started
                .workers
                .push(spawn(name, pin(), move || worker.run())?);
        }
        drop(returns);
        for receive in loops.drain(..) {
            let name = format!(
                "{}-recv-{}",
                self.thread_prefix,
                receive.setup.queue.bound_queues()[0]
            );
            let go = started.go.1.clone();
            let handle = spawn(name, pin(), move || match go.recv() {
                Ok(()) => receive.run(),
                // The build failed: end without reading.
                Err(_) => Ok(()),
            })?;
            started.receivers.push(handle);
        }

        let stats = StatsHandle::new(Arc::clone(&counters), &self.queues, kernel);
        let mut dispatcher = Dispatcher::new(stop, stats, failures, self.queues.clone());
        for receiver in started.start() {
            dispatcher.add_receiver(receiver);
        }
        for worker in started.workers.drain(..) {
            dispatcher.add_worker(worker);
        }
        Ok(dispatcher)
    }

    /// Checks every input of [`build_with`](Self::build_with) but the ones
    /// the kernel checks.
    fn check(&self, workers: usize) -> Result<()> {
        if self.queues.is_empty() {
            return Err(Error::InvalidArgument(
                "a dispatcher needs at least one queue",
            ));
        }
        for (at, &queue) in self.queues.iter().enumerate() {
            if self.queues[..at].contains(&queue) {
                return Err(Error::DuplicateQueue { queue });
            }
        }
        if workers > MAX_WORKERS {
            return Err(Error::OutOfRange {
                name: "workers",
                value: workers as u64,
                min: 0,
                max: MAX_WORKERS as u64,
                why: "each worker is a thread with buffers of its own",
            });
        }
        if !(1..=MAX_IN_FLIGHT).contains(&self.max_in_flight) {
            return Err(Error::OutOfRange {
                name: "max_in_flight",
                value: self.max_in_flight as u64,
                min: 1,
                max: MAX_IN_FLIGHT as u64,
                why: "0 would never read a packet; each packet in flight holds a copy of it",
            });
        }
        if self.thread_prefix.contains('\0') {
            return Err(Error::InvalidArgument(
                "the thread name prefix has a NUL byte, which thread names cannot hold",
            ));
        }
        self.queue_config.validate()
    }
}

/// The threads a build has started: the workers, and the receive threads,
/// which wait for the word to go before they read anything. Dropped before
/// that word (an error or a panic on the way), it lets them end without
/// reading and joins them.
struct Started {
    /// The receive threads wait on the receiver; `start` sends one word each.
    go: (Option<Sender<()>>, Receiver<()>),
    receivers: Vec<JoinHandle<Result<()>>>,
    workers: Vec<JoinHandle<()>>,
}

impl Started {
    fn new(receive_threads: usize) -> Self {
        let (tx, rx) = bounded(receive_threads);
        Started {
            go: (Some(tx), rx),
            receivers: Vec::new(),
            workers: Vec::new(),
        }
    }

    /// Lets the receive threads go, and hands them over.
    fn start(&mut self) -> Vec<JoinHandle<Result<()>>> {
        if let Some(go) = self.go.0.take() {
            for _ in &self.receivers {
                // Room for one word per receive thread.
                let _ = go.send(());
            }
        }
        std::mem::take(&mut self.receivers)
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        // Receive threads still waiting for the word end without reading.
        self.go.0 = None;
        for receiver in self.receivers.drain(..) {
            let _ = receiver.join();
        }
        // The workers end once every receive loop, and with it every sender
        // of their channels, is gone: the threads' and the build's own.
        for worker in self.workers.drain(..) {
            if let Err(payload) = worker.join() {
                drop_contained(payload);
            }
        }
    }
}

/// Spawns a named thread, pinned to `cpu` if given.
fn spawn<T: Send + 'static>(
    name: String,
    cpu: Option<usize>,
    body: impl FnOnce() -> T + Send + 'static,
) -> Result<JoinHandle<T>> {
    thread::Builder::new()
        .name(name)
        .spawn(move || {
            if let Some(cpu) = cpu {
                // Pinning is an optimisation: a failure (e.g. a cpuset without
                // that CPU) leaves the thread where the scheduler puts it.
                let _ = affinity::pin_current_thread(cpu);
            }
            body()
        })
        .map_err(|source| Error::Sys {
            op: "spawning a thread",
            source,
        })
}
