//! The dispatcher under the verdict oracle: a configuration, a plan of
//! traffic, and the check at the far end.

use super::oracle_handler;
use nfqueue::net::FlowKey;
use nfqueue::{DispatchStats, Dispatcher, VerdictKind};
use nfqueue_testkit::oracle::{
    self, Expectation, FarEnd, Judge, Mix, Outcome, Pacer, Plan, Planned, Rules, SendReport, Sender,
};
use nfqueue_testkit::{counters, traffic};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The queue requeued packets go to (the dispatcher binds it too).
pub const REQUEUE_QUEUE: u16 = 9;

/// One configuration of the dispatcher.
#[derive(Debug, Clone, Copy)]
pub struct Setup {
    pub workers: usize,
    pub affinity: bool,
    /// Queues 0..queues, spread with --queue-balance.
    pub queues: u16,
    pub max_in_flight: Option<usize>,
    /// Some packets go to queue 9 (bound by the same dispatcher) and are
    /// decided again there.
    pub requeue: bool,
    pub on_panic_accepts: bool,
    /// Bytes of each datagram.
    pub datagram_len: usize,
}

impl Setup {
    pub fn new(workers: usize, affinity: bool, queues: u16, max_in_flight: Option<usize>) -> Self {
        Setup {
            workers,
            affinity,
            queues,
            max_in_flight,
            requeue: false,
            on_panic_accepts: false,
            datagram_len: oracle::DATAGRAM_LEN,
        }
    }

    pub fn requeue(mut self) -> Self {
        self.requeue = true;
        self
    }

    /// The mix of fates this setup's plans draw from.
    pub fn mix(&self) -> Mix {
        if self.requeue {
            Mix::standard().requeue_to(REQUEUE_QUEUE, 8)
        } else {
            Mix::standard()
        }
    }

    /// Every queue the dispatcher binds.
    pub fn queue_nums(&self) -> Vec<u16> {
        let mut q: Vec<u16> = (0..self.queues).collect();
        if self.requeue {
            q.push(REQUEUE_QUEUE);
        }
        q
    }

    /// What the far end may count on.
    pub fn expectation(&self) -> Expectation {
        Expectation {
            panic_accepts: self.on_panic_accepts,
            ordered: self.affinity,
        }
    }

    /// Starts everything in the current thread's namespace: rules, the
    /// dispatcher with the oracle's handler, the far end.
    pub fn start(&self, plan: Plan) -> Run {
        let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
        let dest = receiver.local_addr().unwrap();
        let last = (self.queues - 1).to_string();
        let target: Vec<String> = if self.queues == 1 {
            vec!["--queue-num".into(), "0".into()]
        } else {
            vec!["--queue-balance".into(), format!("0:{last}")]
        };
        let target: Vec<&str> = target.iter().map(String::as_str).collect();
        let rules = Rules::install(dest, &target);
        let judge = Judge::new();
        let mut builder = Dispatcher::builder()
            .queues(self.queue_nums())
            .workers(self.workers)
            .panic_handler(|_| {});
        if self.affinity {
            builder = builder.flow_affinity(FlowKey::FiveTuple);
        }
        if let Some(m) = self.max_in_flight {
            builder = builder.max_in_flight(m);
        }
        if self.on_panic_accepts {
            builder = builder.on_panic(VerdictKind::Accept);
        }
        let dispatcher = builder
            .build(oracle_handler(judge.clone()))
            .unwrap_or_else(|e| panic!("{self:?}: build failed: {e}"));
        let far = FarEnd::start(receiver);
        let expect = self.expectation();
        let pacer = Pacer::new(&far, Some(&judge), expect);
        Run {
            setup: *self,
            sender: Sender::new(plan.flows(), dest).with_len(self.datagram_len),
            plan,
            judge,
            dispatcher,
            rules,
            far,
            expect,
            pacer,
            dest,
        }
    }
}

/// A running configuration.
pub struct Run {
    pub setup: Setup,
    pub plan: Plan,
    pub judge: Judge,
    pub dispatcher: Dispatcher,
    pub rules: Rules,
    pub far: FarEnd,
    pub expect: Expectation,
    pub pacer: Pacer,
    pub sender: Sender,
    pub dest: SocketAddr,
}

impl Run {
    /// Sends `packets` (of the plan), paced.
    pub fn send(&mut self, packets: &[Planned]) -> SendReport {
        self.sender.send(packets, &mut self.pacer)
    }

    /// Sends the whole plan, paced.
    pub fn send_all(&mut self) -> SendReport {
        let packets = self.plan.packets().to_vec();
        self.send(&packets)
    }

    /// Sends the whole plan, waits for the far end, stops the dispatcher and
    /// checks: the far end against the plan, `join` within 2 s and without error,
    /// no queue left.
    pub fn finish_all(mut self) -> Result<String, String> {
        let report = self.send_all();
        self.finish(report, None, &mut || {}).map(|f| f.line)
    }

    /// Checks the far end for the packets of the plan that `report` says were
    /// sent, by `outcome` (else each packet's planned outcome); calls
    /// `before_stop` once the far end has what it is due and before the
    /// dispatcher is stopped. See [`finish_all`](Self::finish_all).
    pub fn finish(
        self,
        report: SendReport,
        outcome: Option<&dyn Fn(&Planned) -> Outcome>,
        before_stop: &mut dyn FnMut(),
    ) -> Result<Finished, String> {
        let Run {
            setup,
            plan,
            judge,
            dispatcher,
            rules,
            far,
            expect,
            ..
        } = self;
        let (sent, stalled) = (report.sent, report.stalled);
        let planned = |p: &Planned| p.outcome(&expect);
        let outcome: &dyn Fn(&Planned) -> Outcome = outcome.unwrap_or(&planned);
        let queues = setup.queue_nums();
        let sent_packets = &plan.packets()[..sent];
        let due = oracle::due(sent_packets, outcome);
        let observed = oracle::observe(far, &rules, &queues, sent, due);
        before_stop();
        let started = Instant::now();
        let joined = dispatcher.stop_and_join();
        let took = started.elapsed();
        let mut problems = Vec::new();
        if stalled {
            problems.push(format!(
                "the sender stalled after {sent} of {} packets: nothing moved for 3 s",
                plan.packets().len()
            ));
        }
        let stats = match joined {
            Ok(stats) => Some(stats),
            Err(e) => {
                problems.push(format!("join failed: {e}"));
                None
            }
        };
        if took > Duration::from_secs(2) {
            problems.push(format!("stop_and_join took {took:?}"));
        }
        let result = oracle::check(sent_packets, outcome, expect, &observed);
        let summary = match result {
            Ok(s) => s,
            Err(diff) => {
                problems.push(diff);
                Default::default()
            }
        };
        let planned_panics = sent_packets
            .iter()
            .filter(|p| p.fault == oracle::Fault::Panic)
            .count() as u64;
        if let Some(stats) = &stats {
            if stats.handler_panics != planned_panics || judge.panics() != planned_panics {
                problems.push(format!(
                    "{planned_panics} planned panics, the handler panicked {} times, the \
                     dispatcher counted {}",
                    judge.panics(),
                    stats.handler_panics
                ));
            }
        }
        if judge.foreign() > 0 {
            problems.push(format!("{} packets were not the oracle's", judge.foreign()));
        }
        for q in &queues {
            if let Some(line) = counters::queue_line(*q) {
                wait_unbound(*q);
                if counters::queue_line(*q).is_some() {
                    problems.push(format!("queue {q} still bound after join: {line:?}"));
                }
            }
        }
        let line = format!(
            "{setup:?}: {}; {sent} sent, {} arrived, {} blocked; join {took:?}; {}",
            plan.summary(),
            summary.arrived,
            summary.blocked,
            stats.map(brief).unwrap_or_default()
        );
        if problems.is_empty() {
            Ok(Finished { line, stats })
        } else {
            Err(format!("{line}\n{}", problems.join("\n")))
        }
    }
}

/// A run that passed.
pub struct Finished {
    /// What it did, in a line.
    pub line: String,
    /// The dispatcher's counters at join.
    pub stats: Option<DispatchStats>,
}

/// Waits (at most 2 s) for a queue to be released.
fn wait_unbound(queue: u16) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while counters::queue_line(queue).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The counters worth a line.
pub fn brief(s: DispatchStats) -> String {
    format!(
        "packets {} (accepted {}, dropped {}, repeated {}, requeued {}), panics {}, \
         {} batch + {} single messages, send retries {}, failed sends {}, \
         fallback drops {}, backpressure waits {}, unanswered at stop {}",
        s.packets,
        s.accepted,
        s.dropped,
        s.repeated,
        s.requeued,
        s.handler_panics,
        s.batch_messages,
        s.single_messages,
        s.send_retries,
        s.failed_sends,
        s.fallback_drops,
        s.backpressure_waits,
        s.shutdown_unanswered
    )
}

/// The outcome of a packet from what the handler recorded: what its decision
/// lets through, or blocked when the handler never decided on it (read at a
/// stop, or never read).
pub fn outcome_from_records(judge: &Judge, may: bool) -> impl Fn(&Planned) -> Outcome + 'static {
    use nfqueue_testkit::oracle::Decision;
    use std::collections::HashMap;
    let decided: HashMap<(u16, u32), Option<Decision>> = judge
        .records()
        .into_iter()
        .filter(|r| r.first_pass)
        .map(|r| ((r.packet.flow, r.packet.seq), r.decision))
        .collect();
    move |p: &Planned| {
        let mark = match decided.get(&(p.flow, p.seq)) {
            Some(Some(Decision::Accept { mark })) => mark.unwrap_or(0),
            Some(Some(Decision::Repeat { mark })) => *mark,
            Some(Some(Decision::Queue { bypass: true, .. })) => 0,
            _ => return Outcome::Blocked,
        };
        if may {
            Outcome::MayPass {
                mark,
                replaced: false,
            }
        } else {
            Outcome::Pass {
                mark,
                replaced: false,
            }
        }
    }
}
