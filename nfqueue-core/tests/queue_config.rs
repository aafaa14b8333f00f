//! Queue settings, sockets from elsewhere, receive loops and errors against the
//! real kernel: what the kernel counts, what arrives, what is refused.

mod common;

use common::*;
use nfqueue_core::{CopyMode, Error, Queue, QueueConfig, QueueFlags, Verdict};
use nfqueue_testkit::{counters, traffic, without_capabilities, Netns};
use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// The sequence numbers of datagrams that arrive within a short while.
fn arrived_seqs(sock: &std::net::UdpSocket) -> BTreeSet<u64> {
    traffic::recv_all_until_idle(sock, Duration::from_millis(300), 1000)
        .iter()
        .map(|d| traffic::seq_of(d).unwrap())
        .collect()
}

/// Gives the next `n` queued packets an accept and returns their sequence
/// numbers.
fn accept_next(queue: &mut Queue, n: usize) -> BTreeSet<u64> {
    (0..n)
        .map(|_| {
            let packet = next_packet(queue);
            let seq = traffic::seq_of(udp_data(packet.payload())).unwrap();
            packet.accept().unwrap();
            seq
        })
        .collect()
}

#[test]
fn fail_open_accepts_what_a_full_queue_cannot_hold() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 1);
    let config = QueueConfig::default()
        .max_len(4)
        .flags(QueueFlags::FAIL_OPEN);
    let mut queue = bound_queue_with(1, &config);
    assert_eq!(
        traffic::send_numbered_udp(&udp.sender, udp.dest(), 50, 32),
        50
    );

    // Nothing read yet: the first 4 wait, the other 46 went through at once.
    assert_eq!(arrived_seqs(&udp.receiver), (4..50).collect());
    let line = counters::queue_line(1).unwrap();
    assert_eq!(line.waiting, 4);
    // The kernel counts packets accepted under fail-open nowhere: neither as
    // queue-full drops nor as user drops.
    assert_eq!((line.queue_dropped, line.user_dropped), (0, 0), "{line:?}");
    assert_eq!(
        line.id_sequence, 4,
        "ids go only to packets that were queued"
    );

    assert_eq!(accept_next(&mut queue, 4), (0..4).collect());
    assert_eq!(arrived_seqs(&udp.receiver), (0..4).collect());
    assert_no_packet(&mut queue);
    counters::assert_queue_drained(1);
}

#[test]
fn without_fail_open_a_full_queue_drops() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 2);
    let mut queue = bound_queue_with(2, &QueueConfig::default().max_len(4));
    // The sender is not told: the hook swallows the packet and reports success.
    assert_eq!(
        traffic::send_numbered_udp(&udp.sender, udp.dest(), 50, 32),
        50
    );

    assert_no_datagram(&udp.receiver);
    let line = counters::queue_line(2).unwrap();
    assert_eq!(
        (line.waiting, line.queue_dropped, line.user_dropped),
        (4, 46, 0),
        "{line:?}"
    );
    assert_eq!(accept_next(&mut queue, 4), (0..4).collect());
    assert_eq!(arrived_seqs(&udp.receiver), (0..4).collect());
    assert_no_packet(&mut queue);
    counters::assert_queue_drained(2);
}

#[test]
fn a_full_receive_buffer_is_reported_and_counted() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 3);
    let mut queue = bound_queue(3);
    // As root SO_RCVBUFFORCE, in a user namespace SO_RCVBUF: either way the
    // kernel doubles the request (its minimum, about 2.3 KiB, is lower).
    assert_eq!(queue.set_recv_buffer_size(4096).unwrap(), 8192);
    const SENT: u64 = 50;
    assert_eq!(
        traffic::send_numbered_udp(&udp.sender, udp.dest(), SENT, 1000),
        SENT
    );

    let mut overflows = 0;
    let mut delivered = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match queue.recv_timeout(Duration::from_millis(300)) {
            Ok(Some(packet)) => {
                delivered.insert(traffic::seq_of(udp_data(packet.payload())).unwrap());
                packet.accept().unwrap();
            }
            Ok(None) => break,
            Err(Error::ReceiveOverflow) => overflows += 1,
            Err(err) => panic!("receiving: {err}"),
        }
    }
    assert!(overflows >= 1, "no ENOBUFS reported");
    assert!(!delivered.is_empty() && delivered.len() < SENT as usize);
    // ENOBUFS is reported once per overflow, however many packets it cost.
    assert_eq!(queue.stats().receive_overflows, overflows);
    let line = queue.kernel_stats(3).unwrap().unwrap();
    assert!(line.user_dropped > 0, "{line:?}");
    assert_eq!(line.queue_dropped, 0, "{line:?}");
    assert_eq!(
        u64::from(line.user_dropped) + delivered.len() as u64,
        SENT,
        "every packet was either delivered or counted as a user drop: {line:?}"
    );
    assert_eq!(arrived_seqs(&udp.receiver), delivered);

    // The queue goes on.
    udp.sender.send_to(b"later", udp.dest()).unwrap();
    next_packet(&mut queue).accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"later");
    counters::assert_queue_drained(3);
}

/// A raw `NETLINK_NETFILTER` socket made on the calling thread.
fn netfilter_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain system call; a non-negative result is a new descriptor that
    // nothing else owns.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_NETFILTER,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Checks that `queue`, in namespace `b`, gets the packets queued to `num` there
/// while the test thread is elsewhere.
fn receives_traffic_of(b: &Netns, queue: &mut Queue, num: u16) {
    let udp = b.run(|| udp_through_queue(false, num));
    udp.sender.send_to(b"from B", udp.dest()).unwrap();
    let packet = next_packet(queue);
    assert_eq!(packet.queue(), num);
    assert_eq!(udp_data(packet.payload()), b"from B");
    packet.accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"from B");
}

#[test]
fn a_socket_from_another_namespace_queues_its_traffic() {
    let _a = enter_new_netns();
    let b = Netns::new();
    // Queue 5 in A too, to tell the two /proc lines apart by their copy range.
    let here = bound_queue_with(5, &QueueConfig::default().copy_mode(CopyMode::Packet(500)));

    let fd = b.run(netfilter_socket).unwrap();
    let mut there = Queue::from_fd(fd).unwrap();
    there.bind(5, &QueueConfig::default()).unwrap();
    receives_traffic_of(&b, &mut there, 5);
    // Read from this thread, in A: the line of the socket's namespace, B.
    let line = there
        .kernel_stats(5)
        .unwrap()
        .expect("queue 5 is bound in B");
    assert_eq!(
        (line.portid, line.copy_range, line.last_id),
        (there.portid(), nfqueue_core::MAX_COPY_RANGE, 1)
    );
    let line = here
        .kernel_stats(5)
        .unwrap()
        .expect("queue 5 is bound in A");
    assert_eq!(
        (line.portid, line.copy_range, line.last_id),
        (here.portid(), 500, 0)
    );
    assert_eq!(counters::queue_line(5).unwrap().copy_range, 500);

    let mut opened = Queue::open_in_netns_path(b.path()).unwrap();
    opened.bind(6, &QueueConfig::default()).unwrap();
    receives_traffic_of(&b, &mut opened, 6);
    assert_eq!(
        opened.kernel_stats(6).unwrap().map(|l| l.portid),
        Some(opened.portid())
    );
    assert_eq!(counters::queue_line(6), None, "nothing bound 6 in A");

    b.run(|| {
        counters::assert_queue_drained(5);
        counters::assert_queue_drained(6);
    });
    counters::assert_queue_drained(5);
}

#[test]
fn only_netfilter_sockets_are_adopted() {
    let _ns = enter_new_netns();
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    match Queue::from_fd(OwnedFd::from(udp)) {
        Err(Error::NotNetfilterSocket { .. }) => {}
        other => panic!("expected NotNetfilterSocket, got {other:?}"),
    }
    // SAFETY: plain system call; a non-negative result is a new descriptor.
    let route = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    assert!(route >= 0);
    // SAFETY: `route` is a new descriptor that nothing else owns.
    let route = unsafe { OwnedFd::from_raw_fd(route) };
    match Queue::from_fd(route) {
        Err(Error::NotNetfilterSocket { .. }) => {}
        other => panic!("expected NotNetfilterSocket, got {other:?}"),
    }
    match Queue::open_in_netns("a/b") {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    match Queue::open_in_netns_path("/nonexistent/netns") {
        Err(Error::Netns { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound)
        }
        other => panic!("expected Netns, got {other:?}"),
    }
}

#[test]
fn run_nonblocking_handles_what_is_waiting() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 7);
    let mut queue = bound_queue(7);
    let accept_all = |packet: nfqueue_core::Packet<'_>| packet.accept().unwrap();
    assert_eq!(queue.run_nonblocking(accept_all).unwrap(), 0);
    // A packet sent through OUTPUT on lo is in the queue socket when send returns.
    assert_eq!(
        traffic::send_numbered_udp(&udp.sender, udp.dest(), 5, 16),
        5
    );
    assert_eq!(queue.run_nonblocking(accept_all).unwrap(), 5);
    assert_eq!(queue.run_nonblocking(accept_all).unwrap(), 0);
    assert_eq!(arrived_seqs(&udp.receiver), (0..5).collect());
    counters::assert_queue_drained(7);
}

#[test]
fn run_returns_when_stopped_and_receives_then_fail() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 8);
    let queue = bound_queue(8);
    let stop = queue.stop_handle();
    let (started, running) = mpsc::channel();
    let (finished, done) = mpsc::channel();
    let runner = thread::spawn(move || {
        let mut queue = queue;
        let mut handled = 0;
        let result = queue.run(|packet| {
            handled += 1;
            packet.accept().unwrap();
            let _ = started.send(());
        });
        let _ = finished.send(());
        (queue, result, handled)
    });

    udp.sender.send_to(b"while running", udp.dest()).unwrap();
    running
        .recv_timeout(PACKET_TIMEOUT)
        .expect("run did not handle the packet");
    assert_eq!(recv_datagram(&udp.receiver), b"while running");
    // Now blocked in poll; stop it from this thread.
    thread::sleep(Duration::from_millis(100));
    assert!(!stop.is_stopped());
    stop.stop();
    assert!(stop.is_stopped());
    done.recv_timeout(Duration::from_secs(5))
        .expect("run did not return after stop");
    let (mut queue, result, handled) = runner.join().unwrap();
    result.expect("run returns Ok when stopped");
    assert_eq!(handled, 1);

    // Stopped for good: blocking receives fail at once, also with traffic waiting.
    udp.sender.send_to(b"after stop", udp.dest()).unwrap();
    assert!(matches!(queue.recv(), Err(Error::Stopped)));
    assert!(matches!(
        queue.recv_timeout(Duration::from_secs(1)),
        Err(Error::Stopped)
    ));
    // A non-blocking receive still drains what is waiting.
    queue
        .try_recv()
        .unwrap()
        .expect("a packet waits")
        .accept()
        .unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"after stop");
    counters::assert_queue_drained(8);
}

#[test]
fn run_stops_between_packets_while_more_are_waiting() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 9);
    let mut queue = bound_queue(9);
    assert_eq!(
        traffic::send_numbered_udp(&udp.sender, udp.dest(), 3, 16),
        3
    );
    // Under steady traffic the socket never runs dry: the stop must be seen
    // between packets, not only when a receive would block.
    let stop = queue.stop_handle();
    let mut handled = Vec::new();
    queue
        .run(|packet| {
            handled.push(traffic::seq_of(udp_data(packet.payload())).unwrap());
            packet.accept().unwrap();
            stop.stop();
        })
        .unwrap();
    assert_eq!(handled, [0]);
    assert_eq!(queue.run_nonblocking(|p| p.accept().unwrap()).unwrap(), 2);
    assert_eq!(arrived_seqs(&udp.receiver), (0..3).collect());
    counters::assert_queue_drained(9);
}

#[test]
fn binding_errors_name_the_cause() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 20);
    let mut first = bound_queue(20);

    let mut second = Queue::open().unwrap();
    match second.bind(20, &QueueConfig::default()) {
        Err(Error::QueueTaken {
            queue: 20,
            owner_portid,
        }) => assert_eq!(owner_portid, first.portid()),
        other => panic!("expected QueueTaken, got {other:?}"),
    }
    assert!(second.bound_queues().is_empty());

    // Binding twice on one socket: found by this handle, and by the kernel
    // (EBUSY) for another handle on the same socket.
    assert!(matches!(
        first.bind(20, &QueueConfig::default()),
        Err(Error::AlreadyBound { queue: 20 })
    ));
    let dup = std::os::fd::AsFd::as_fd(&first)
        .try_clone_to_owned()
        .unwrap();
    let mut same_socket = Queue::from_fd(dup).unwrap();
    assert_eq!(same_socket.portid(), first.portid());
    assert!(matches!(
        same_socket.bind(20, &QueueConfig::default()),
        Err(Error::AlreadyBound { queue: 20 })
    ));
    drop(same_socket);

    // The owner keeps working.
    udp.sender.send_to(b"still mine", udp.dest()).unwrap();
    next_packet(&mut first).accept().unwrap();
    assert_eq!(recv_datagram(&udp.receiver), b"still mine");
    assert_eq!(
        counters::queue_line(20).map(|l| l.peer_portid),
        Some(first.portid())
    );

    match first.configure(
        20,
        &QueueConfig::default().copy_mode(CopyMode::Packet(70_000)),
    ) {
        Err(Error::OutOfRange { .. }) => {}
        other => panic!("expected OutOfRange, got {other:?}"),
    }
    // A bind whose settings are refused leaves the queue unbound.
    match second.bind(
        21,
        &QueueConfig::default().copy_mode(CopyMode::Packet(70_000)),
    ) {
        Err(Error::OutOfRange { .. }) => {}
        other => panic!("expected OutOfRange, got {other:?}"),
    }
    assert_eq!(counters::queue_line(21), None);
    assert!(second.bound_queues().is_empty());

    first.unbind(20).unwrap();
    assert!(matches!(
        first.configure(20, &QueueConfig::default()),
        Err(Error::NotBound { queue: 20 })
    ));
    assert!(matches!(
        first.unbind(20),
        Err(Error::NotBound { queue: 20 })
    ));
    assert_eq!(counters::queue_line(20), None);
}

#[test]
fn a_verdict_after_unbind_is_refused() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 30);
    let other = udp_through_queue(false, 31);
    let mut queue = bound_queue(30);
    queue.bind(31, &QueueConfig::default()).unwrap();

    udp.sender.send_to(b"orphan", udp.dest()).unwrap();
    let pending = next_packet(&mut queue).defer();
    let id = pending.id();
    // Unbinding drops the packets still waiting.
    queue.unbind(30).unwrap();
    assert_eq!(counters::queue_line(30), None);
    // Its binding has ended: the verdict is refused here, and not sent.
    match pending.accept() {
        Err(Error::StaleBinding {
            queue: 30,
            packet_id,
        }) => assert_eq!(packet_id, id),
        other => panic!("expected StaleBinding, got {other:?}"),
    }
    assert_eq!(queue.stats().stale_verdicts, 1);
    assert_eq!(queue.stats().rejected_verdicts, 0);
    assert_no_datagram(&udp.receiver);

    // Queue 31 goes on.
    other.sender.send_to(b"other", other.dest()).unwrap();
    let packet = next_packet(&mut queue);
    assert_eq!(packet.queue(), 31);
    packet.verdict(&Verdict::accept()).unwrap();
    assert_eq!(recv_datagram(&other.receiver), b"other");
    counters::assert_queue_drained(31);
}

#[test]
fn binding_without_cap_net_admin_is_refused() {
    let _ns = enter_new_netns();
    let mut queue = Queue::open().unwrap();
    match without_capabilities(|| queue.bind(22, &QueueConfig::default())) {
        Err(err @ Error::PermissionDenied { .. }) => {
            assert!(err.to_string().contains("CAP_NET_ADMIN"), "{err}")
        }
        other => panic!("expected PermissionDenied, got {other:?}"),
    }
    assert!(queue.bound_queues().is_empty());
    assert_eq!(counters::queue_line(22), None);

    // nfnetlink checks the capabilities of the socket's opener only for
    // messages without a destination address (write, or send on a connected
    // socket). Requests here go out with sendmsg to the kernel's address, so the
    // sending thread's capabilities decide: a socket opened without any still
    // binds when a capable thread asks.
    let fd = without_capabilities(netfilter_socket).unwrap();
    let mut adopted = Queue::from_fd(fd).unwrap();
    adopted.bind(22, &QueueConfig::default()).unwrap();
    assert_eq!(
        counters::queue_line(22).map(|l| l.peer_portid),
        Some(adopted.portid())
    );
}

/// CPU time the calling thread has used.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec, which `now` is.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(rc, 0);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// A socket handed over in non-blocking mode (as an event loop leaves it):
/// a blocking receive still sleeps until a packet comes, rather than spin on
/// `EAGAIN`, and still sees a stop.
#[test]
fn an_adopted_nonblocking_socket_blocks_without_spinning() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 10);
    let fd = netfilter_socket().unwrap();
    // SAFETY: F_SETFL on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    assert_eq!(rc, 0);
    let mut queue = Queue::from_fd(fd).unwrap();
    queue.bind(10, &QueueConfig::default()).unwrap();
    let stop = queue.stop_handle();
    let (results, received) = mpsc::channel();
    let runner = thread::spawn(move || {
        let start = thread_cpu_time();
        let data = queue.recv().map(|packet| {
            let data = udp_data(packet.payload()).to_vec();
            packet.accept().unwrap();
            data
        });
        let cpu = thread_cpu_time() - start;
        let _ = results.send((data.map_err(|e| e.to_string()), cpu));
        let after_stop = queue.recv().map(|_| ()).map_err(|e| e.to_string());
        let _ = results.send((after_stop.map(|()| Vec::new()), Duration::ZERO));
    });

    thread::sleep(Duration::from_secs(1));
    udp.sender.send_to(b"after a second", udp.dest()).unwrap();
    let (data, cpu) = received.recv_timeout(PACKET_TIMEOUT).expect("no packet");
    assert_eq!(data.unwrap(), b"after a second");
    assert_eq!(recv_datagram(&udp.receiver), b"after a second");
    assert!(
        cpu < Duration::from_millis(50),
        "{cpu:?} of CPU in a receive that waited 1 s"
    );
    thread::sleep(Duration::from_millis(50));
    stop.stop();
    let (after_stop, _) = received
        .recv_timeout(Duration::from_millis(500))
        .expect("the stop was not seen at once");
    assert_eq!(after_stop.unwrap_err(), Error::Stopped.to_string());
    runner.join().unwrap();
    counters::assert_queue_drained(10);
}

/// Whether `fd` is readable now.
fn readable(fd: &impl AsRawFd) -> bool {
    let mut pollfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no waiting.
    unsafe { libc::poll(&mut pollfd, 1, 0) == 1 }
}

/// Packets that arrive while a configuration request waits for the kernel's
/// answer are read with it and kept: `poll` cannot see them any more, so the
/// queue tells an event loop with `has_buffered`, and its non-blocking
/// receives take them first.
#[test]
fn packets_kept_while_configuring_are_shown_to_event_loops() {
    let _ns = enter_new_netns();
    let udp = udp_through_queue(false, 11);
    let mut queue = bound_queue(11);
    assert!(!queue.has_buffered());
    assert_eq!(
        traffic::send_numbered_udp(&udp.sender, udp.dest(), 3, 16),
        3
    );
    assert!(readable(&queue));
    queue
        .configure(11, &QueueConfig::default().max_len(100))
        .unwrap();
    assert!(!readable(&queue), "read while waiting for the answer");
    assert!(queue.has_buffered());
    assert_eq!(queue.run_nonblocking(|p| p.accept().unwrap()).unwrap(), 3);
    assert!(!queue.has_buffered());
    assert_eq!(arrived_seqs(&udp.receiver), (0..3).collect());
    counters::assert_queue_drained(11);
}
