//! Receive threads: one per queue. Each reads every packet that is waiting,
//! fans the packets out to the workers, and writes the verdicts that come back
//! on its own socket (the kernel accepts a verdict only from the socket that
//! bound the queue), coalesced.

use crate::coalesce::Coalescer;
use crate::stats::Counters;
use crate::wake::Waker;
use crate::worker::{Done, Handler, Job, Judge};
use crossbeam_channel::{Receiver, Sender, TrySendError};
use nfqueue_core::net::{self, FlowKey};
use nfqueue_core::{Error, PacketView, Queue, Result, StopHandle, VerdictBatch};
use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

/// Packets read per round before the verdicts that came back are written (a
/// burst of up to `BURST_LEN` datagrams already read is handled whole).
const READ_BUDGET: usize = 64;
/// Most packets given the default verdict at shutdown when the kernel's count
/// of waiting packets cannot be read.
const SHUTDOWN_DRAIN_MAX: usize = 65_536;

/// Where packets go: one channel all workers share, or one per worker chosen by
/// the packet's flow.
#[derive(Debug, Clone)]
pub(crate) enum Fanout {
    Shared(Sender<Job>),
    ByFlow(Vec<Sender<Job>>, FlowKey),
}

impl Fanout {
    fn pick(&self, view: &PacketView<'_>) -> &Sender<Job> {
        match self {
            Fanout::Shared(sender) => sender,
            Fanout::ByFlow(senders, key) => {
                // Non-IP or unparsable packets all go to the first worker.
                let hash = net::parse(view.payload()).map_or(0, |ip| ip.flow().hash_by(*key));
                &senders[(hash % senders.len() as u64) as usize]
            }
        }
    }
}

/// Who decides the verdicts of a queue's packets.
pub(crate) enum Handling<H> {
    /// The worker pool, reached through the fan-out; verdicts come back on
    /// the `done` channel.
    Workers(Fanout),
    /// The receive thread itself, on the packet in its receive buffer: no copy,
    /// no hand-off, for handlers cheap enough to keep up on one core.
    Inline(Judge<H>),
}

/// One queue's receive thread.
pub(crate) struct ReceiveLoop<H> {
    pub(crate) slot: usize,
    pub(crate) queue: Queue,
    pub(crate) handling: Handling<H>,
    pub(crate) done: Receiver<Done>,
    pub(crate) waker: Arc<Waker>,
    pub(crate) stop: StopHandle,
    pub(crate) counters: Arc<Counters>,
}

impl<H: Handler> ReceiveLoop<H> {
    /// Runs until stopped and every packet read has its verdict.
    pub(crate) fn run(self) -> Result<()> {
        let ReceiveLoop {
            slot,
            mut queue,
            mut handling,
            done,
            waker,
            stop,
            counters,
        } = self;
        let handle = queue.verdict_handle();
        let queue_num = *queue
            .bound_queues()
            .first()
            .expect("the builder binds one queue per socket");
        let mut coalescer = Coalescer::new(queue_num);
        let mut batch = VerdictBatch::new();
        let mut pool: Vec<Vec<u8>> = Vec::new();
        let mut pending: VecDeque<(Job, Sender<Job>)> = VecDeque::new();
        let mut stopping = false;
        let mut failure = None;
        let mut core_seen = handle.stats();

        loop {
            let mut progress = false;

            // Verdicts first: they free room in the kernel's queue.
            while let Ok(d) = done.try_recv() {
                counters.verdict(d.verdict.kind(), d.verdict.payload().is_some());
                coalescer.complete(d.id, d.verdict);
                pool.push(d.bytes);
                progress = true;
            }

            while let Some((job, sender)) = pending.pop_front() {
                match sender.try_send(job) {
                    Ok(()) => {
                        Counters::add(&counters.dispatched, 1);
                        progress = true;
                    }
                    Err(TrySendError::Full(job)) => {
                        pending.push_front((job, sender));
                        break;
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        unreachable!("workers outlive receive threads")
                    }
                }
            }

            // A busy thread sees the stop here; an idle one in poll.
            if !stopping && stop.is_stopped() {
                stopping = true;
                drain_with_default(&mut queue, queue_num, &counters);
            }

            if !stopping && pending.is_empty() {
                // Everything waiting, up to the budget, many datagrams per
                // system call; a packet that finds every channel full waits in
                // `pending`, and reading stops until a worker catches up.
                let read = queue.recv_burst(READ_BUDGET, |packet| {
                    let view = packet.detach();
                    coalescer.dispatched(view.id());
                    match &mut handling {
                        Handling::Inline(judge) => {
                            let verdict = judge.verdict(&view);
                            counters.verdict(verdict.kind(), verdict.payload().is_some());
                            coalescer.complete(view.id(), verdict);
                        }
                        Handling::Workers(fanout) => {
                            let mut bytes = pool.pop().unwrap_or_default();
                            bytes.clear();
                            bytes.extend_from_slice(view.attribute_bytes());
                            let job = Job {
                                slot,
                                queue: view.queue(),
                                id: view.id(),
                                bytes,
                            };
                            let sender = fanout.pick(&view);
                            if !pending.is_empty() {
                                pending.push_back((job, sender.clone()));
                                return;
                            }
                            match sender.try_send(job) {
                                Ok(()) => Counters::add(&counters.dispatched, 1),
                                Err(TrySendError::Full(job)) => {
                                    // Backpressure: the kernel's queue fills meanwhile.
                                    Counters::add(&counters.backpressure_waits, 1);
                                    pending.push_back((job, sender.clone()));
                                }
                                Err(TrySendError::Disconnected(_)) => {
                                    unreachable!("workers outlive receive threads")
                                }
                            }
                        }
                    }
                });
                match read {
                    Ok(0) => {}
                    Ok(n) => {
                        Counters::add(&counters.packets, n as u64);
                        progress = true;
                    }
                    Err(err) => {
                        failure = Some(err);
                        stopping = true;
                    }
                }
            }

            let idle = !progress;
            let flushed = coalescer.flush(&mut batch, idle)?;
            if !batch.is_empty() {
                let calls = handle.send_all(&mut batch)?;
                Counters::add(&counters.send_calls, calls as u64);
                Counters::add(&counters.batch_messages, flushed.batch_messages);
                Counters::add(&counters.single_messages, flushed.single_messages);
            }

            // What the socket layer counted this round: system calls, and what
            // a burst receive skips rather than reports.
            let core = handle.stats();
            Counters::add(&counters.recv_calls, core.recv_calls - core_seen.recv_calls);
            Counters::add(
                &counters.receive_overflows,
                core.receive_overflows - core_seen.receive_overflows,
            );
            Counters::add(
                &counters.receive_errors,
                (core.rejected_verdicts + core.malformed)
                    - (core_seen.rejected_verdicts + core_seen.malformed),
            );
            core_seen = core;

            if stopping && pending.is_empty() && coalescer.is_empty() {
                break;
            }
            if idle {
                waker.prepare_to_sleep();
                if done.is_empty() {
                    Counters::add(&counters.polls, 1);
                    let watch_socket = !stopping && pending.is_empty();
                    if wait(&queue, &waker, &stop, watch_socket, stopping)? && !stopping {
                        stopping = true;
                        drain_with_default(&mut queue, queue_num, &counters);
                    }
                }
                waker.awake();
            }
        }
        // Every packet read has its verdict; closing the socket now (by dropping
        // the queue) drops only packets the kernel had not handed over yet.
        drop(queue);
        failure.map_or(Ok(()), Err)
    }
}

/// Gives the default verdict to the packets that are readable now, so that
/// stopping does not drop what was already handed over. Reads no more than the
/// kernel says are waiting (dispatched ones included), so traffic that goes on
/// arriving does not keep the shutdown going.
fn drain_with_default(queue: &mut Queue, queue_num: u16, counters: &Counters) {
    let waiting = match queue.kernel_stats(queue_num) {
        Ok(Some(stats)) => stats.waiting as usize,
        Ok(None) => 0,
        Err(_) => SHUTDOWN_DRAIN_MAX,
    };
    for _ in 0..waiting {
        match queue.try_recv() {
            // Dropping the packet sends the queue's default verdict.
            Ok(Some(packet)) => {
                Counters::add(&counters.packets, 1);
                Counters::add(&counters.shutdown_defaults, 1);
                drop(packet);
            }
            Ok(None) => return,
            Err(err) if err.is_recoverable() => {}
            Err(_) => return,
        }
    }
}

/// Sleeps until the socket is readable (when watched), a worker wakes us, or
/// the stop handle fires. Returns true when the stop handle fired.
fn wait(
    queue: &Queue,
    waker: &Waker,
    stop: &StopHandle,
    watch_socket: bool,
    stopping: bool,
) -> Result<bool> {
    let mut fds = [
        libc::pollfd {
            fd: waker.fd(),
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: if stopping { -1 } else { stop.as_raw_fd() },
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: if watch_socket { queue.as_raw_fd() } else { -1 },
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: `fds` is a valid array of three pollfds (negative fds are ignored).
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc >= 0 {
            return Ok(fds[1].revents != 0);
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
