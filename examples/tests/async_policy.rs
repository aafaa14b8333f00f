//! The `async_policy` example against the kernel: a hung lookup holds up only
//! its own packet, which gets the timeout verdict; the others pass as the
//! service says.

mod common;

use common::Running;
use nfqueue_testkit::rules::queue_udp;
use nfqueue_testkit::{counters, enter_new_netns, traffic};
use std::net::UdpSocket;
use std::time::{Duration, Instant};

/// The lookup timeout the example is given.
const TIMEOUT_MS: u64 = 400;

/// A receiver on its own port, queued to queue 0 from OUTPUT.
fn queued_receiver() -> UdpSocket {
    let receiver = traffic::udp_receiver("127.0.0.1".parse().unwrap());
    queue_udp(false, "OUTPUT", receiver.local_addr().unwrap().port(), 0);
    receiver
}

fn port(sock: &UdpSocket) -> u16 {
    sock.local_addr().unwrap().port()
}

/// Runs the example with `on_timeout`; a packet to the hung port, then five to
/// the normal one and one to the denied one. Returns whether the hung one
/// arrived, after how long, and what the example printed.
fn hung_lookup(on_timeout: &str) -> (Option<Duration>, String) {
    let _ns = enter_new_netns();
    let (normal, hung, denied) = (queued_receiver(), queued_receiver(), queued_receiver());
    let sender = traffic::udp_sender("127.0.0.1".parse().unwrap());
    let timeout = TIMEOUT_MS.to_string();
    let (hang_port, deny_port) = (port(&hung).to_string(), port(&denied).to_string());
    let mut example = Running::start(
        "async_policy",
        &[
            "--timeout-ms",
            &timeout,
            "--on-timeout",
            on_timeout,
            "--hang-port",
            &hang_port,
            "--deny-port",
            &deny_port,
            "0",
        ],
    );
    example.wait_for_stderr("bound queue 0");

    let start = Instant::now();
    sender.send_to(b"hung", hung.local_addr().unwrap()).unwrap();
    for n in 0..5u8 {
        sender.send_to(&[n], normal.local_addr().unwrap()).unwrap();
    }
    sender
        .send_to(b"denied", denied.local_addr().unwrap())
        .unwrap();
    // The others pass while the hung lookup waits: well before its timeout.
    let mut others = traffic::recv_all_until_idle(&normal, Duration::from_millis(150), 5);
    let others_took = start.elapsed();
    // Each lookup is a task of its own: they finish in any order.
    others.sort();
    assert_eq!(others, (0..5u8).map(|n| vec![n]).collect::<Vec<_>>());
    assert!(
        others_took < Duration::from_millis(TIMEOUT_MS),
        "the other packets waited for the hung lookup: {others_took:?}"
    );
    hung.set_read_timeout(Some(Duration::from_millis(3 * TIMEOUT_MS)))
        .unwrap();
    let mut buf = [0u8; 16];
    let arrived = hung.recv(&mut buf).ok().map(|_| start.elapsed());
    assert!(
        traffic::recv_all_until_idle(&denied, Duration::from_millis(200), 1).is_empty(),
        "the denied packet was dropped"
    );
    let finished = example.stop();
    assert!(finished.status.success(), "{}", finished.stderr);
    counters::assert_queue_unbound(0);
    (arrived, finished.stdout_text())
}

#[test]
fn a_hung_lookup_gets_the_timeout_verdict_drop() {
    let (arrived, printed) = hung_lookup("drop");
    assert_eq!(arrived, None, "dropped on timeout");
    let hung_line = printed
        .lines()
        .find(|l| l.contains("timeout"))
        .unwrap_or_else(|| panic!("no timeout line in:\n{printed}"));
    assert!(hung_line.contains("Drop"), "{hung_line}");
    assert_eq!(printed.lines().filter(|l| l.contains("allowed")).count(), 5);
    assert_eq!(printed.lines().filter(|l| l.contains("denied")).count(), 1);
}

#[test]
fn a_hung_lookup_gets_the_timeout_verdict_accept() {
    let (arrived, printed) = hung_lookup("accept");
    let took = arrived.expect("accepted on timeout");
    assert!(
        took >= Duration::from_millis(TIMEOUT_MS),
        "it passed after the timeout, not before: {took:?}"
    );
    assert!(
        printed.lines().any(|l| l.contains("Accept: timeout")),
        "{printed}"
    );
}
