//! Building a dispatcher: every input is checked before anything is bound, and
//! every way a build can fail (a refused input, a queue taken, a panicking
//! handler factory) returns within a bound with nothing left running: no
//! thread, no queue bound. Packets sent meanwhile are never handled by a
//! dispatcher that was not built.

mod common;

use common::{delivered, queue_udp_counted};
use nfqueue::{Dispatcher, Error, PacketView, Queue, QueueConfig, Verdict, MAX_IN_FLIGHT};
use nfqueue_testkit::{counters, traffic, Netns};
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a failing build may take to return, clean-up included.
const BUILD_BOUND: Duration = Duration::from_secs(1);

/// Runs `build` on a thread in a new network namespace (which the calling
/// thread enters too), and returns what it returned (or its panic's message)
/// once it has, with how long it took. Panics if it has not returned within
/// 5 s: a hang.
fn build_in_netns(
    build: impl FnOnce() -> nfqueue::Result<Dispatcher> + Send + 'static,
) -> (Result<nfqueue::Result<Dispatcher>, String>, Duration, Netns) {
    let ns = Netns::new();
    ns.enter();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let started = Instant::now();
        let result = panic::catch_unwind(AssertUnwindSafe(build)).map_err(|payload| {
            payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_default()
        });
        let _ = tx.send((result, started.elapsed()));
    });
    match rx.recv_timeout(Duration::from_secs(5)) {
        Ok((result, took)) => (result, took, ns),
        Err(_) => panic!("the build did not return within 5 s"),
    }
}

/// Asserts that no queue is bound in the calling thread's namespace.
fn assert_nothing_bound() {
    for queue in 0..=2 {
        counters::assert_queue_unbound(queue);
    }
}

#[test]
fn a_handler_factory_that_panics_for_a_worker_ends_the_build_and_everything_it_started() {
    let (result, took, _ns) = build_in_netns(|| {
        Dispatcher::builder()
            .queues(0..=1)
            .workers(3)
            .build_with(|worker| {
                assert_ne!(worker, 1, "no handler for worker 1");
                |_: &PacketView<'_>| Verdict::accept()
            })
    });
    match result {
        Err(message) => assert!(message.contains("no handler for worker 1"), "{message}"),
        Ok(other) => panic!("expected the factory's panic, got {other:?}"),
    }
    assert!(took < BUILD_BOUND, "took {took:?}");
    assert_nothing_bound();
}

#[test]
fn a_handler_factory_that_panics_for_a_queue_handled_inline_ends_the_build() {
    let (result, took, _ns) = build_in_netns(|| {
        Dispatcher::builder()
            .queues(0..=2)
            .workers(0)
            .build_with(|queue| {
                assert_ne!(queue, 2, "no handler for queue 2");
                |_: &PacketView<'_>| Verdict::accept()
            })
    });
    assert!(result.is_err(), "the panic is passed on");
    assert!(took < BUILD_BOUND, "took {took:?}");
    assert_nothing_bound();
}

#[test]
fn a_queue_taken_after_others_were_bound_unbinds_them_and_no_packet_is_handled() {
    let ns = Netns::new();
    ns.enter();
    let udp = traffic::udp_pair_v4();
    queue_udp_counted(udp.dest(), &["--queue-num", "0", "--queue-bypass"]);
    let mut holder = Queue::open().unwrap();
    holder.bind(2, &QueueConfig::default()).unwrap();
    let started = Instant::now();
    let result = Dispatcher::builder()
        .queues(0..=2)
        .workers(2)
        .build(|_: &PacketView<'_>| -> Verdict<'static> { panic!("no packet is handled") });
    assert!(
        matches!(result, Err(Error::QueueTaken { queue: 2, .. })),
        "{result:?}"
    );
    assert!(started.elapsed() < BUILD_BOUND);
    counters::assert_queue_unbound(0);
    counters::assert_queue_unbound(1);
    // Queue 0 is free again: --queue-bypass lets its traffic through.
    udp.sender.send_to(b"through", udp.dest()).unwrap();
    let got = traffic::recv_all_until_idle(&udp.receiver, Duration::from_millis(300), 2);
    assert_eq!(got, vec![b"through".to_vec()]);
    assert_eq!(delivered(), 1);
}

#[test]
fn inputs_that_would_lose_packets_or_memory_are_refused_by_name_before_binding() {
    let ns = Netns::new();
    ns.enter();
    let refused = |builder: nfqueue::DispatcherBuilder| {
        builder
            .build(|_: &PacketView<'_>| Verdict::accept())
            .map(|d| d.stop_and_join())
            .expect_err("refused")
    };
    let in_flight = |n: usize| refused(Dispatcher::builder().queue(0).max_in_flight(n));
    for n in [0, MAX_IN_FLIGHT + 1, u32::MAX as usize, usize::MAX] {
        match in_flight(n) {
            err @ Error::OutOfRange {
                name: "max_in_flight",
                ..
            } => assert!(err.to_string().contains("from 1 to 1048576"), "{err}"),
            other => panic!("max_in_flight({n}): {other:?}"),
        }
    }
    assert!(matches!(
        refused(Dispatcher::builder().queue(3).queue(0).queue(3)),
        Error::DuplicateQueue { queue: 3 }
    ));
    assert!(matches!(
        refused(Dispatcher::builder().queue(0).workers(100_000)),
        Error::OutOfRange {
            name: "workers",
            ..
        }
    ));
    assert!(matches!(
        refused(
            Dispatcher::builder()
                .queue(0)
                .thread_name_prefix("bad\0name")
        ),
        Error::InvalidArgument(_)
    ));
    assert!(matches!(
        refused(
            Dispatcher::builder()
                .queue(0)
                .queue_config(QueueConfig::default().max_len(0))
        ),
        Error::OutOfRange {
            name: "max_len",
            ..
        }
    ));
    assert!(matches!(
        refused(
            Dispatcher::builder()
                .queue(0)
                .queue_config(QueueConfig::default().copy_mode(nfqueue::CopyMode::None))
        ),
        Error::InvalidArgument(_)
    ));
    for queue in [0, 3] {
        counters::assert_queue_unbound(queue);
    }
    // The largest value is taken.
    let dispatcher = Dispatcher::builder()
        .queue(0)
        .workers(1)
        .max_in_flight(MAX_IN_FLIGHT)
        .build(|_: &PacketView<'_>| Verdict::accept())
        .unwrap();
    dispatcher.stop_and_join().unwrap();
}
