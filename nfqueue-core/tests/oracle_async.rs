//! `AsyncQueue` under the verdict oracle, against the real kernel: each packet
//! moves into a spawned task that decides from its content, waits a little
//! (so tasks finish in an order of their own) and gives the verdict; packets
//! requeued to a second queue of the same socket come back and are decided
//! again. The far end checks every packet's fate and mark.

mod common;

use common::{bound_queue, oracle_verdict};
use nfqueue_core::{AsyncQueue, Error, QueueConfig};
use nfqueue_testkit::oracle::{
    self, Expectation, FarEnd, Judge, Mix, Pacer, Plan, Planned, Rules, Sender,
};
use nfqueue_testkit::{traffic, Netns};
use std::time::Duration;

const SECOND: u16 = 9;

#[test]
fn oracle_async_queue_with_verdicts_from_spawned_tasks() {
    let ns = Netns::new();
    ns.run(|| {
        let plan = Plan::new(1100, 6, 80, &Mix::standard().requeue_to(SECOND, 8));
        let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
        let dest = receiver.local_addr().unwrap();
        let rules = Rules::install(dest, &["--queue-num", "0"]);
        let mut queue = bound_queue(0);
        queue.bind(SECOND, &QueueConfig::default()).unwrap();
        let stop = queue.stop_handle();
        let judge = Judge::new();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let consumer = rt.spawn({
            let judge = judge.clone();
            async move {
                let mut queue = AsyncQueue::new(queue)?;
                let mut tasks = Vec::new();
                loop {
                    let packet = match queue.recv_owned().await {
                        Ok(packet) => packet,
                        Err(Error::Stopped) => break,
                        Err(e) => return Err(e),
                    };
                    let judge = judge.clone();
                    tasks.push(tokio::spawn(async move {
                        let view = packet.view();
                        let decision = judge.decide(packet.queue(), packet.id(), view.payload());
                        // 0 to 3 ms, from the content: an order of their own.
                        let wait = oracle::udp_data(view.payload())
                            .and_then(Planned::parse)
                            .map_or(0, |(p, _)| (u64::from(p.flow) * 7 + u64::from(p.seq)) % 4);
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                        packet.verdict(&oracle_verdict(decision))
                    }));
                }
                let mut failed = Vec::new();
                for task in tasks {
                    if let Err(e) = task.await.expect("a verdict task panicked") {
                        failed.push(e.to_string());
                    }
                }
                assert!(failed.is_empty(), "verdicts failed: {failed:?}");
                Ok::<_, Error>(queue.into_inner())
            }
        });
        let far = FarEnd::start(receiver);
        let expect = Expectation::default();
        let mut pacer = Pacer::new(&far, Some(&judge), expect);
        let report = Sender::new(plan.flows(), dest).send(plan.packets(), &mut pacer);
        assert!(!report.stalled, "the sender stalled at {}", report.sent);
        let sent = plan.packets();
        let due = oracle::due(sent, |p| p.outcome(&expect));
        far.wait_for(due, Duration::from_secs(1));
        stop.stop();
        let queue = rt
            .block_on(consumer)
            .unwrap()
            .unwrap_or_else(|e| panic!("the consumer failed: {e}"));
        let observed = oracle::observe(far, &rules, &[0, SECOND], sent.len(), due);
        let summary = oracle::check(sent, |p| p.outcome(&expect), expect, &observed)
            .unwrap_or_else(|diff| panic!("{}:\n{diff}", plan.summary()));
        let stats = queue.stats();
        eprintln!(
            "{}; {} arrived, {} blocked; {stats:?}",
            plan.summary(),
            summary.arrived,
            summary.blocked
        );
        assert_eq!(stats.rejected_verdicts, 0, "{stats:?}");
    });
}
