//! The `firewall` example against the kernel: `--first N` queues exactly the
//! first N packets of each direction of a connection and the rest passes;
//! `--ruleset` installs nft or iptables rules, and by default picks what the
//! doctor finds works here; `--metrics` serves counters that match the
//! traffic, in a format a Prometheus parser reads.

mod common;

use common::{stat_line, Running};
use nfqueue_core::doctor::{self, Feature, Options, Status};
use nfqueue_testkit::rules::queue_udp;
use nfqueue_testkit::{cmd, counters, enter_new_netns, iptables};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::thread;
use std::time::{Duration, Instant};

const QUEUE: u16 = 0;
const TIMEOUT: Duration = Duration::from_secs(5);

#[test]
fn first_3_queues_three_packets_each_way_and_all_20_segments_arrive() {
    const SEGMENTS: usize = 20;
    const FIRST: u64 = 3;
    let _netns = enter_new_netns();
    let mut firewall = Running::start(
        "firewall",
        &[
            "--first",
            "3",
            "--chain",
            "OUTPUT",
            "--install-rules",
            "--ruleset",
            "iptables",
            "--workers",
            "1",
            "0",
        ],
    );
    firewall.wait_for_stderr("filtering queue 0");

    // An echo server: over loopback both directions leave through OUTPUT.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || -> std::io::Result<Vec<[u8; 16]>> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(Some(TIMEOUT))?;
        conn.set_nodelay(true)?;
        let mut got = Vec::new();
        let mut message = [0u8; 16];
        while got.len() < SEGMENTS {
            conn.read_exact(&mut message)?;
            conn.write_all(&message)?;
            got.push(message);
        }
        // The client's FIN.
        let _ = conn.read(&mut message)?;
        Ok(got)
    });
    let mut client = TcpStream::connect_timeout(&addr, TIMEOUT).unwrap();
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    client.set_nodelay(true).unwrap();
    let mut sent = Vec::new();
    for i in 0..SEGMENTS {
        // One segment each: the next is written after the echo came back.
        let message: [u8; 16] = std::array::from_fn(|b| (i * 16 + b) as u8);
        client.write_all(&message).unwrap();
        let mut echo = [0u8; 16];
        client.read_exact(&mut echo).unwrap();
        assert_eq!(echo, message, "echo {i}");
        sent.push(message);
    }
    client.shutdown(Shutdown::Write).unwrap();
    let received = server.join().unwrap().expect("the server side");
    assert_eq!(received, sent, "all {SEGMENTS} segments arrive, in order");
    drop(client);

    // Exactly 3 packets each way met a queue rule, and the queue handed out
    // exactly 6 ids, although each direction sent more than 20 packets.
    let line = counters::queue_line(QUEUE).expect("queue 0 is bound");
    assert_eq!(u64::from(line.id_sequence), 2 * FIRST, "{line:?}");
    for direction in ["original", "reply"] {
        let comment = format!("firewall:first-{FIRST}:{direction}");
        assert_eq!(
            counters::rule_packets("iptables", "filter", "OUTPUT", &comment),
            FIRST,
            "{direction}"
        );
    }
    counters::assert_queue_drained(QUEUE);

    let done = firewall.stop();
    assert!(done.status.success(), "{}", done.stderr);
    // It printed the rules it installed, and removed them on exit.
    let printed = done.stdout_text();
    assert_eq!(printed.matches("--connbytes 0:3 ").count(), 4, "{printed}");
    assert!(!iptables(["-S", "OUTPUT"]).contains("firewall:"));
    assert_eq!(
        stat_line(&done.stderr, "packets"),
        Some(2 * FIRST),
        "{}",
        done.stderr
    );
}

/// The body of `GET /metrics` at `addr`.
fn scrape(addr: SocketAddr) -> String {
    let mut conn = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connecting to /metrics");
    conn.set_read_timeout(Some(TIMEOUT)).unwrap();
    write!(conn, "GET /metrics HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body.to_string()
}

/// Samples by metric name and sorted labels.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

/// Parses the exposition with a Prometheus parser and checks its shape:
/// every sample documented and typed, counters named `_total`, gauges not.
/// Returns the samples by name and labels.
fn parse_metrics(text: &str) -> Samples {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    assert!(!scrape.samples.is_empty(), "{text}");
    let mut samples = HashMap::new();
    for sample in scrape.samples {
        assert!(
            scrape.docs.contains_key(&sample.metric),
            "no HELP for {}",
            sample.metric
        );
        let value = match sample.value {
            prometheus_parse::Value::Counter(v) => {
                assert!(sample.metric.ends_with("_total"), "{}", sample.metric);
                v
            }
            prometheus_parse::Value::Gauge(v) => {
                assert!(!sample.metric.ends_with("_total"), "{}", sample.metric);
                v
            }
            other => panic!("{} has no counter or gauge type: {other:?}", sample.metric),
        };
        let mut labels: Vec<(String, String)> = sample
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        samples.insert((sample.metric, labels), value);
    }
    samples
}

fn value(samples: &Samples, name: &str, queue: bool) -> u64 {
    let labels = if queue {
        vec![("queue".to_string(), QUEUE.to_string())]
    } else {
        Vec::new()
    };
    samples
        .get(&(name.to_string(), labels))
        .copied()
        .unwrap_or_else(|| panic!("no sample {name}: {samples:?}")) as u64
}

#[test]
fn metrics_scraped_during_traffic_match_the_packets_sent() {
    const ROUNDS: u64 = 3;
    const ACCEPTED: u64 = 40;
    const DROPPED: u64 = 5;
    let _netns = enter_new_netns();
    let open = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    open.set_read_timeout(Some(TIMEOUT)).unwrap();
    let closed = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let closed_port = closed.local_addr().unwrap().port().to_string();
    // UDP only: the scrapes over TCP are not queued.
    queue_udp(false, "OUTPUT", open.local_addr().unwrap().port(), 0);
    queue_udp(false, "OUTPUT", closed.local_addr().unwrap().port(), 0);
    let mut firewall = Running::start(
        "firewall",
        &[
            "--metrics",
            "127.0.0.1:0",
            "--drop-port",
            &closed_port,
            "--workers",
            "1",
            "0",
        ],
    );
    let line = firewall.wait_for_stderr("metrics at http://");
    let addr: SocketAddr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    firewall.wait_for_stderr("filtering queue 0");

    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let mut buf = [0u8; 64];
    for round in 1..=ROUNDS {
        for i in 0..DROPPED {
            sender
                .send_to(&[i as u8; 8], closed.local_addr().unwrap())
                .unwrap();
        }
        for i in 0..ACCEPTED {
            sender
                .send_to(&[i as u8; 8], open.local_addr().unwrap())
                .unwrap();
            if i == ACCEPTED / 2 {
                // In the middle of the traffic: what was counted so far.
                let now = parse_metrics(&scrape(addr));
                let sent = (round - 1) * (ACCEPTED + DROPPED) + DROPPED + i + 1;
                assert!(value(&now, "nfqueue_dispatcher_packets_total", true) <= sent);
            }
        }
        for i in 0..ACCEPTED {
            let (n, _) = open
                .recv_from(&mut buf)
                .expect("an accepted datagram arrives");
            assert_eq!(&buf[..n], &[i as u8; 8]);
        }
        // Every verdict of the round is given once its last packet arrived;
        // the counters of the drops may lag a moment behind.
        let (accepted, dropped) = (round * ACCEPTED, round * DROPPED);
        let deadline = Instant::now() + TIMEOUT;
        let samples = loop {
            let samples = parse_metrics(&scrape(addr));
            let counted = value(&samples, "nfqueue_dispatcher_accepted_total", true)
                + value(&samples, "nfqueue_dispatcher_dropped_total", true);
            if counted >= accepted + dropped || Instant::now() > deadline {
                break samples;
            }
            thread::sleep(Duration::from_millis(20));
        };
        let sent = accepted + dropped;
        assert_eq!(
            value(&samples, "nfqueue_dispatcher_packets_total", true),
            sent
        );
        assert_eq!(
            value(&samples, "nfqueue_dispatcher_accepted_total", true),
            accepted
        );
        assert_eq!(
            value(&samples, "nfqueue_dispatcher_dropped_total", true),
            dropped
        );
        assert_eq!(value(&samples, "nfqueue_kernel_queued_total", true), sent);
        assert_eq!(value(&samples, "nfqueue_kernel_waiting", true), 0);
        assert_eq!(
            value(&samples, "nfqueue_kernel_queue_dropped_total", true),
            0
        );
        assert!(closed.set_nonblocking(true).is_ok());
        assert!(closed.recv(&mut buf).is_err(), "a dropped datagram arrived");
    }
    let done = firewall.stop();
    assert!(done.status.success(), "{}", done.stderr);
    assert_eq!(
        stat_line(&done.stderr, "packets"),
        Some(ROUNDS * (ACCEPTED + DROPPED)),
        "{}",
        done.stderr
    );
}

/// Whether nft's queue statement works here, as the doctor finds.
fn nft_queue_works() -> bool {
    let report = doctor::diagnose_with(&Options::default().only([Feature::NftQueue]));
    report.get(Feature::NftQueue).map(|c| c.status) == Some(Status::Ok)
}

/// A datagram to a port queued by the firewall's rules arrives.
fn udp_passes() {
    let receiver = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    receiver.set_read_timeout(Some(TIMEOUT)).unwrap();
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    sender
        .send_to(b"through the firewall", receiver.local_addr().unwrap())
        .unwrap();
    let mut buf = [0u8; 64];
    let n = receiver.recv(&mut buf).expect("the datagram passes");
    assert_eq!(&buf[..n], b"through the firewall");
}

/// `--ruleset nft` installs the nft table while it runs and deletes it on
/// exit; where the kernel refuses nft's queue statement (no
/// `CONFIG_NFT_QUEUE`), the firewall stops at once and says why, leaving
/// nothing behind.
#[test]
fn ruleset_nft_installs_a_table_or_stops_with_the_reason() {
    let _netns = enter_new_netns();
    let args = [
        "--ruleset",
        "nft",
        "--install-rules",
        "--chain",
        "OUTPUT",
        "--workers",
        "1",
        "0",
    ];
    let table = || cmd::try_run("nft", ["list", "table", "inet", "nfqueue_firewall"]);
    if nft_queue_works() {
        let mut firewall = Running::start("firewall", &args);
        firewall.wait_for_stderr("filtering queue 0");
        let listing = table().expect("the table is installed");
        assert!(listing.contains("queue"), "{listing}");
        udp_passes();
        let done = firewall.stop();
        assert!(done.status.success(), "{}", done.stderr);
        assert!(done.stdout_text().contains("nft -f -"));
    } else {
        let done = Running::start("firewall", &args).wait();
        assert!(!done.status.success());
        assert!(
            done.stderr.contains("nft refused the queue rules")
                && done.stderr.contains("CONFIG_NFT_QUEUE"),
            "{}",
            done.stderr
        );
    }
    assert!(table().is_err(), "the table is gone");
    assert!(!iptables(["-S", "OUTPUT"]).contains("firewall:"));
}

/// By default the firewall installs nft rules where nft's queue statement
/// works, and otherwise says why not and installs iptables rules: either
/// way, packets pass through it, and its rules are gone after it.
#[test]
fn ruleset_auto_picks_what_works_here() {
    let _netns = enter_new_netns();
    let nft = nft_queue_works();
    let mut firewall = Running::start(
        "firewall",
        &[
            "--install-rules",
            "--chain",
            "OUTPUT",
            "--workers",
            "1",
            "0",
        ],
    );
    firewall.wait_for_stderr("filtering queue 0");
    let iptables_rules = iptables(["-S", "OUTPUT"]);
    if nft {
        assert!(!iptables_rules.contains("firewall:"), "{iptables_rules}");
        cmd::run("nft", ["list", "table", "inet", "nfqueue_firewall"]);
    } else {
        assert!(iptables_rules.contains("firewall:all"), "{iptables_rules}");
    }
    udp_passes();
    let done = firewall.stop();
    assert!(done.status.success(), "{}", done.stderr);
    if !nft {
        assert!(
            done.stderr
                .contains("nft's queue statement does not work here"),
            "{}",
            done.stderr
        );
        assert!(done.stdout_text().contains("iptables -A OUTPUT"));
    }
    assert!(!iptables(["-S", "OUTPUT"]).contains("firewall:"));
    assert!(cmd::try_run("nft", ["list", "table", "inet", "nfqueue_firewall"]).is_err());
}
