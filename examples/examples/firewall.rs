//! A multi-core firewall: drops packets to listed ports or from/to listed
//! addresses, accepts the rest, on every core. Ctrl-C prints the statistics.
//!
//! ```text
//! iptables -A FORWARD -j NFQUEUE --queue-balance 0:1
//! firewall --drop-port 23 --drop-port 445 --drop-host 192.0.2.66 --workers 2 0:1
//! ```
//! The last argument is a queue number or a range `FIRST:LAST`.

use nfqueue::net::{self, FlowKey};
use nfqueue::{Dispatcher, PacketView, StopHandle, Verdict};
use nfqueue_examples::stop_on_signals;
use std::collections::HashSet;
use std::net::IpAddr;
use std::process;

const USAGE: &str =
    "firewall [--drop-port PORT]... [--drop-host ADDR]... [--workers N] QUEUE|FIRST:LAST";

/// What to drop.
struct Rules {
    ports: HashSet<u16>,
    hosts: HashSet<IpAddr>,
}

impl Rules {
    fn verdict(&self, packet: &PacketView<'_>) -> Verdict<'static> {
        let Ok(ip) = net::parse(packet.payload()) else {
            return Verdict::accept();
        };
        let blocked_host = self.hosts.contains(&ip.src()) || self.hosts.contains(&ip.dst());
        // Later fragments carry no ports; with flow affinity by addresses they
        // stay in order behind their first fragment.
        let dst_port = ip.transport().and_then(|t| t.dst_port());
        let blocked_port = dst_port.is_some_and(|port| self.ports.contains(&port));
        if blocked_host || blocked_port {
            Verdict::drop()
        } else {
            Verdict::accept()
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut rules = Rules {
        ports: HashSet::new(),
        hosts: HashSet::new(),
    };
    let mut workers = None;
    let mut rest = args.iter();
    let mut queues = None;
    while let Some(arg) = rest.next() {
        let mut value = || {
            rest.next()
                .unwrap_or_else(|| fail(&format!("{arg} needs a value")))
        };
        match arg.as_str() {
            "--drop-port" => rules
                .ports
                .insert(value().parse().unwrap_or_else(|_| fail("bad port"))),
            "--drop-host" => rules
                .hosts
                .insert(value().parse().unwrap_or_else(|_| fail("bad address"))),
            "--workers" => {
                workers = Some(value().parse().unwrap_or_else(|_| fail("bad worker count")));
                true
            }
            spec => {
                queues = Some(parse_queues(spec));
                true
            }
        };
    }
    let Some((first, last)) = queues else {
        fail("no queue given")
    };

    // Block SIGINT/SIGTERM before any thread starts, so only the signal thread
    // sees them; it then stops the dispatcher.
    let stop = StopHandle::new().unwrap_or_else(|e| fail(&e.to_string()));
    stop_on_signals(stop.clone()).unwrap_or_else(|e| fail(&e.to_string()));
    let mut builder = Dispatcher::builder()
        .queues(first..=last)
        .flow_affinity(FlowKey::Addresses)
        .stop_handle(stop);
    if let Some(workers) = workers {
        builder = builder.workers(workers);
    }
    let dispatcher = builder
        .build(move |packet: &PacketView<'_>| rules.verdict(packet))
        .unwrap_or_else(|e| fail(&e.to_string()));
    eprintln!("filtering queues {first}..={last}; Ctrl-C stops");
    match dispatcher.join() {
        Ok(stats) => {
            println!("{stats:#?}");
            println!(
                "verdict messages per packet: {:.3}",
                stats.messages_per_packet()
            );
        }
        Err(err) => fail(&err.to_string()),
    }
}

fn parse_queues(spec: &str) -> (u16, u16) {
    let parse = |s: &str| {
        s.parse::<u16>()
            .unwrap_or_else(|_| fail(&format!("bad queue number {s:?}")))
    };
    match spec.split_once(':') {
        Some((first, last)) => (parse(first), parse(last)),
        None => (parse(spec), parse(spec)),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("firewall: {message}\nusage: {USAGE}");
    process::exit(2);
}
