//! The dispatcher across namespaces and interfaces, against the real kernel:
//! its queues in a router's namespace while the test thread stays elsewhere,
//! handlers that see interface names, and counters per queue.

mod common;

use common::{assert_no_queue_left, queue_udp_counted, udp_data};
use nfqueue::{Dispatcher, PacketView, Verdict};
use nfqueue_testkit::{counters, enter_new_netns, rules, traffic, Router};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A dispatcher built in the test's namespace serves queues of the router's
/// namespace (`netns_path`): the FORWARD packets from A to B reach its
/// handlers with the names of the router's interfaces, and its kernel
/// counters are the router's.
#[test]
fn a_dispatcher_serves_another_namespace_and_names_its_interfaces() {
    let _here = enter_new_netns();
    let net = Router::new();
    let receiver = net
        .b
        .ns
        .run(|| traffic::udp_receiver(net.b.iface.ipv4.into()));
    let dest: SocketAddr = receiver.local_addr().unwrap();
    let sender = net
        .a
        .ns
        .run(|| traffic::udp_sender(net.a.iface.ipv4.into()));
    net.r
        .run(|| rules::queue_udp(false, "FORWARD", dest.port(), 4));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let names = Arc::clone(&seen);
    let dispatcher = Dispatcher::builder()
        .queue(4)
        .workers(1)
        .netns_path(net.r.path())
        .build(move |packet: &PacketView<'_>| {
            let name = |n: Option<nfqueue::InterfaceName>| n.map(|n| n.to_string());
            names.lock().unwrap().push((
                name(packet.indev_name()),
                name(packet.outdev_name()),
                udp_data(packet).to_vec(),
            ));
            Verdict::accept()
        })
        .unwrap();
    assert_eq!(counters::queue_line(4), None, "nothing is bound here");

    for n in 0..3u8 {
        sender.send_to(&[n; 8], dest).unwrap();
    }
    let arrived = traffic::recv_all_until_idle(&receiver, Duration::from_millis(300), 10);
    assert_eq!(arrived.len(), 3);
    let kernel = dispatcher.kernel_stats().unwrap();
    assert_eq!(
        kernel.len(),
        1,
        "read in the router's namespace: {kernel:?}"
    );
    assert_eq!((kernel[0].queue, kernel[0].last_id), (4, 3));
    dispatcher.stop_and_join().unwrap();

    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 3);
    for (n, (indev, outdev, data)) in seen.iter().enumerate() {
        assert_eq!(indev.as_deref(), Some("veth-ra"));
        assert_eq!(outdev.as_deref(), Some("veth-rb"));
        assert_eq!(data, &vec![n as u8; 8]);
    }
    net.r.run(|| assert_no_queue_left(&[4]));
}

/// Counters per queue: each queue's own, and totals that are their sums.
#[test]
fn counters_are_kept_per_queue() {
    let _ns = enter_new_netns();
    let (one, two) = (traffic::udp_pair_v4(), traffic::udp_pair_v4());
    for (udp, queue) in [(&one, "1"), (&two, "2")] {
        queue_udp_counted(udp.dest(), &["--queue-num", queue]);
    }
    let dispatcher = Dispatcher::builder()
        .queues([2, 1])
        .workers(2)
        .build(|packet: &PacketView<'_>| {
            if udp_data(packet) == b"drop" {
                Verdict::drop()
            } else {
                Verdict::accept()
            }
        })
        .unwrap();
    traffic::send_numbered_udp(&one.sender, one.dest(), 5, 16);
    traffic::send_numbered_udp(&two.sender, two.dest(), 3, 16);
    two.sender.send_to(b"drop", two.dest()).unwrap();
    assert_eq!(
        traffic::recv_all_until_idle(&one.receiver, Duration::from_millis(300), 10).len(),
        5
    );
    assert_eq!(
        traffic::recv_all_until_idle(&two.receiver, Duration::from_millis(300), 10).len(),
        3
    );
    let by_queue = dispatcher.stats_by_queue();
    let total = dispatcher.stop_and_join().unwrap();

    let queues: Vec<u16> = by_queue.iter().map(|(q, _)| *q).collect();
    assert_eq!(queues, [2, 1], "in the builder's order");
    let (q2, q1) = (by_queue[0].1, by_queue[1].1);
    assert_eq!((q1.packets, q1.accepted, q1.dropped), (5, 5, 0));
    assert_eq!((q2.packets, q2.accepted, q2.dropped), (4, 3, 1));
    assert_eq!(
        (total.packets, total.accepted, total.dropped),
        (9, 8, 1),
        "the totals are the sums"
    );
    assert_no_queue_left(&[1, 2]);
}
