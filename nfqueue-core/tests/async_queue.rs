//! `AsyncQueue` against the real kernel: a hundred thousand packets through a
//! tokio runtime, `select!` cancelling receives, and verdicts given by spawned
//! tasks in an order of their own. Each checked at the far end.

mod common;

use common::*;
use futures_util::StreamExt;
use nfqueue_core::{AsyncQueue, Error, QueueConfig, Verdict};
use nfqueue_testkit::{counters, traffic};
use std::collections::BTreeSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A multi-threaded runtime, made on (and so inside the namespace of) the
/// calling thread.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Counts the datagrams `receiver` gets, by sequence number, until `expected`
/// arrived or none came for a second.
fn collect(receiver: UdpSocket, expected: u64) -> (Arc<AtomicU64>, thread::JoinHandle<Vec<u64>>) {
    let count = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&count);
    receiver
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let thread = thread::spawn(move || {
        let mut seqs = Vec::new();
        let mut buf = [0u8; 64];
        while (seqs.len() as u64) < expected {
            match receiver.recv(&mut buf) {
                Ok(len) => {
                    seqs.push(traffic::seq_of(&buf[..len]).unwrap());
                    counted.fetch_add(1, Ordering::Release);
                }
                Err(_) => break,
            }
        }
        seqs
    });
    (count, thread)
}

/// Sends `total` numbered datagrams, never more than 192 ahead of what
/// arrived (the receiving socket's buffer holds about 270).
fn send_windowed(udp: &traffic::UdpPair, total: u64, arrived: &AtomicU64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut datagram = [0u8; 16];
    for seq in 0..total {
        while seq >= arrived.load(Ordering::Acquire) + 192 {
            assert!(Instant::now() < deadline, "stalled at {seq}");
            thread::sleep(Duration::from_micros(50));
        }
        datagram[..8].copy_from_slice(&seq.to_be_bytes());
        udp.sender.send_to(&datagram, udp.dest()).unwrap();
    }
}

#[test]
fn a_hundred_thousand_packets_pass_through_a_tokio_runtime() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 1);
    let queue = bound_queue(1);
    const TOTAL: u64 = 100_000;
    let (arrived, collector) = collect(udp.receiver.try_clone().unwrap(), TOTAL);
    let rt = runtime();
    let stop = queue.stop_handle();
    let consumer = rt.spawn(async move {
        let mut queue = AsyncQueue::new(queue)?;
        let mut handled = 0u64;
        loop {
            // Bursts and single receives both, as programs use them.
            let burst = queue.recv_burst(64, |packet| {
                packet.accept().unwrap();
            });
            match burst.await {
                Ok(n) => handled += n as u64,
                Err(nfqueue_core::Error::Stopped) => break,
                Err(err) => return Err(err),
            }
            match queue.recv().await {
                Ok(packet) => {
                    packet.accept()?;
                    handled += 1;
                }
                Err(nfqueue_core::Error::Stopped) => break,
                Err(err) => return Err(err),
            }
        }
        Ok::<_, nfqueue_core::Error>((handled, queue.into_inner()))
    });
    send_windowed(&udp, TOTAL, &arrived);
    let seqs = collector.join().unwrap();
    stop.stop();
    let (handled, queue) = rt.block_on(consumer).unwrap().unwrap();

    assert_eq!(seqs.len() as u64, TOTAL, "every packet arrived");
    assert_eq!(seqs, (0..TOTAL).collect::<Vec<_>>(), "once each, in order");
    assert_eq!(handled, TOTAL);
    assert_eq!(queue.stats().packets, TOTAL);
    counters::assert_queue_drained(1);
}

/// `select!` drops the receive future whenever the timer fires first: a
/// dropped receive has taken nothing, so every packet still arrives.
#[test]
fn a_receive_cancelled_by_select_loses_nothing() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 2);
    let queue = bound_queue(2);
    const TOTAL: u64 = 300;
    let (_, collector) = collect(udp.receiver.try_clone().unwrap(), TOTAL);
    let rt = runtime();
    let stop = queue.stop_handle();
    let consumer = rt.spawn(async move {
        let mut queue = AsyncQueue::new(queue)?;
        let (mut handled, mut cancelled) = (0u64, 0u64);
        loop {
            tokio::select! {
                packet = queue.recv() => match packet {
                    Ok(packet) => {
                        packet.accept()?;
                        handled += 1;
                    }
                    Err(nfqueue_core::Error::Stopped) => break,
                    Err(err) => return Err(err),
                },
                () = tokio::time::sleep(Duration::from_micros(200)) => cancelled += 1,
            }
        }
        Ok::<_, nfqueue_core::Error>((handled, cancelled))
    });
    for seq in 0..TOTAL {
        udp.sender.send_to(&seq.to_be_bytes(), udp.dest()).unwrap();
        thread::sleep(Duration::from_micros(500));
    }
    let arrived: BTreeSet<u64> = collector.join().unwrap().into_iter().collect();
    stop.stop();
    let (handled, cancelled) = rt.block_on(consumer).unwrap().unwrap();

    assert_eq!(arrived, (0..TOTAL).collect(), "every packet arrived");
    assert_eq!(handled, TOTAL);
    assert!(cancelled > 0, "the timer won some races");
    counters::assert_queue_drained(2);
}

/// Packets handed to spawned tasks get their verdicts when each task decides:
/// here in reverse order of arrival (each task waits for the one of the next
/// packet), and they leave in that order.
#[test]
fn spawned_tasks_give_verdicts_in_their_own_order() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 3);
    let queue = bound_queue_with(3, &QueueConfig::default());
    const TOTAL: u64 = 20;
    let rt = runtime();
    let given = Arc::new(Mutex::new(Vec::new()));
    let order = Arc::clone(&given);
    let consumer = rt.spawn(async move {
        let mut packets = AsyncQueue::new(queue)?.into_stream().take(TOTAL as usize);
        let mut received = Vec::new();
        while let Some(packet) = packets.next().await {
            received.push(packet?);
        }
        // Each task waits for the task of the packet after its own; the last
        // packet's waits for nothing.
        let mut tasks = Vec::new();
        let mut after: Option<tokio::sync::oneshot::Receiver<()>> = None;
        for packet in received.into_iter().rev() {
            let order = Arc::clone(&order);
            let (done, done_rx) = tokio::sync::oneshot::channel::<()>();
            let wait_for = after.replace(done_rx);
            tasks.push(tokio::spawn(async move {
                if let Some(next_done) = wait_for {
                    let _ = next_done.await;
                }
                let seq = traffic::seq_of(udp_data(packet.view().payload())).unwrap();
                order.lock().unwrap().push(seq);
                packet.verdict(&Verdict::accept()).unwrap();
                let _ = done.send(());
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        Ok::<_, nfqueue_core::Error>(packets.into_inner().into_inner().into_inner())
    });
    traffic::send_numbered_udp(&udp.sender, udp.dest(), TOTAL, 16);
    let queue = rt.block_on(consumer).unwrap().unwrap();
    let arrived: Vec<u64> =
        traffic::recv_all_until_idle(&udp.receiver, Duration::from_millis(500), 100)
            .iter()
            .map(|d| traffic::seq_of(d).unwrap())
            .collect();

    let given = given.lock().unwrap().clone();
    assert_eq!(given, (0..TOTAL).rev().collect::<Vec<_>>());
    assert_eq!(arrived, given, "they left in the order of their verdicts");
    assert_eq!(queue.stats().verdicts, TOTAL);
    counters::assert_queue_drained(3);
}

/// A task that never answers its packet: the deadline drops it within the
/// bound, the next packets flow through other tasks, and the task's late
/// verdict is refused.
#[tokio::test(flavor = "current_thread")]
async fn a_task_that_never_answers_is_overtaken_by_the_deadline() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 43);
    let deadline = Duration::from_millis(200);
    let mut queue = AsyncQueue::new(bound_queue_with(
        43,
        &QueueConfig::default().deadline(deadline),
    ))
    .unwrap();
    udp.sender.send_to(b"forgotten", udp.dest()).unwrap();
    let forgotten = queue.recv_owned().await.unwrap();
    let (late_tx, late_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        tokio::time::sleep(deadline * 2).await;
        let _ = late_tx.send(forgotten.accept());
    });
    udp.sender.send_to(b"next", udp.dest()).unwrap();
    let next = queue.recv_owned().await.unwrap();
    tokio::spawn(async move { next.accept().unwrap() });
    let late = late_rx.await.unwrap();
    assert!(
        matches!(late, Err(Error::DeadlinePassed { .. })),
        "{late:?}"
    );
    assert_eq!(recv_datagram(&udp.receiver), b"next");
    assert_no_datagram(&udp.receiver);
    let stats = queue.stats();
    assert_eq!((stats.deadline_verdicts, stats.late_verdicts), (1, 1));
    counters::assert_queue_drained(43);
}
