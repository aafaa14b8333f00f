//! The scenarios: how the traffic is made, which consumers take turns, on
//! which CPUs and with how much handler work per packet. Consumers are named
//! here; what each name runs is in `consumer.rs`.

/// The CPU of the traffic source; consumers get the other one.
pub const SENDER_CPU: &str = "0";

/// How traffic is made in a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// The UDP sender with this payload size, from this many source addresses
    /// (0: one socket, the kernel's choice of address).
    Udp { size: usize, sources: u32 },
    /// iperf3 over TCP through loopback, consumers with or without GSO.
    Tcp { gso: bool },
    /// Paced UDP request/response pairs through the queue (`bench_latency`), at
    /// [`LATENCY_LOADS`] of each consumer's capacity.
    Latency,
}

/// One benchmark scenario: traffic, consumers, where the consumer runs.
#[derive(Debug)]
pub struct Scenario {
    pub name: &'static str,
    pub traffic: Traffic,
    /// Consumer names (what each runs is in `consumer.rs`); the first is the
    /// baseline of the ratios.
    pub consumers: &'static [&'static str],
    /// Variants of consumers with one thing changed, run only when named
    /// (`--consumer`), after the others.
    pub variants: &'static [&'static str],
    /// CPUs the consumer may use (the sender always runs on CPU 0).
    pub consumer_cpus: &'static str,
    /// Microseconds of CPU work the handler does per packet (0: none).
    pub busy_us: u32,
    pub description: &'static str,
}

impl Scenario {
    /// A scenario whose consumer shares the sender's CPU (and so the sender
    /// yields it, at nice 19).
    pub fn shares_sender_cpu(&self) -> bool {
        self.consumer_cpus.split(',').any(|c| c == SENDER_CPU)
    }
}

/// Every consumer of the UDP scenarios.
pub const ALL: &[&str] = &[
    "c-classic",
    "c-batch",
    "core",
    "async",
    "nfq",
    "dispatch-0",
    "dispatch-1",
    "dispatch-2",
    "py-reference",
    "py-nfqueue",
    "py-nfqueue-batch",
];

/// Variants of the per-packet consumers with one thing changed each, for
/// runs that compare them with the consumer they vary (`--consumer`).
pub const VARIANTS: &[&str] = &[
    "core-at16",
    "core-noenobufs",
    "core-deadline",
    "c-classic-at16",
    "c-classic-at256",
];

/// The consumers of the scaling scenarios: 1 worker (the baseline), 2 workers,
/// and 2 queues with the handler on each receive thread.
const SCALING: &[&str] = &["dispatch-1", "dispatch-2", "dispatch-2q"];

/// Source addresses of the scaling scenarios' sender: `--queue-balance` hashes
/// addresses, so enough of them spread the packets about evenly over 2 queues.
const SCALING_SOURCES: u32 = 32;

/// Loads of the latency scenario, in percent of each consumer's capacity.
pub const LATENCY_LOADS: &[u32] = &[10, 50, 90];

const fn scaling(name: &'static str, busy_us: u32, description: &'static str) -> Scenario {
    Scenario {
        name,
        traffic: Traffic::Udp {
            size: 64,
            sources: SCALING_SOURCES,
        },
        consumers: SCALING,
        variants: &[],
        consumer_cpus: "0,1",
        busy_us,
        description,
    }
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "udp-64",
        traffic: Traffic::Udp {
            size: 64,
            sources: 0,
        },
        consumers: ALL,
        variants: VARIANTS,
        consumer_cpus: "1",
        busy_us: 0,
        description: "UDP, 64-byte payload, accept",
    },
    Scenario {
        name: "udp-1400",
        traffic: Traffic::Udp {
            size: 1400,
            sources: 0,
        },
        consumers: ALL,
        variants: VARIANTS,
        consumer_cpus: "1",
        busy_us: 0,
        description: "UDP, 1400-byte payload, accept",
    },
    Scenario {
        name: "tcp-gso",
        traffic: Traffic::Tcp { gso: true },
        consumers: ALL,
        variants: &[],
        consumer_cpus: "1",
        busy_us: 0,
        description: "iperf3 TCP over lo (MTU 1500), queue with GSO (super-packets whole)",
    },
    Scenario {
        name: "tcp-nogso",
        traffic: Traffic::Tcp { gso: false },
        consumers: ALL,
        variants: &[],
        consumer_cpus: "1",
        busy_us: 0,
        description: "iperf3 TCP over lo (MTU 1500), queue without GSO (kernel segments first)",
    },
    scaling(
        "scale-5",
        5,
        "UDP 64 B from 32 source addresses, handler busy 5 us per packet; consumer on both CPUs, sender at nice 19 on CPU 0",
    ),
    scaling(
        "scale-20",
        20,
        "UDP 64 B from 32 source addresses, handler busy 20 us per packet; consumer on both CPUs, sender at nice 19 on CPU 0",
    ),
    scaling(
        "scale-50",
        50,
        "UDP 64 B from 32 source addresses, handler busy 50 us per packet; consumer on both CPUs, sender at nice 19 on CPU 0",
    ),
    Scenario {
        name: "latency",
        traffic: Traffic::Latency,
        consumers: &["core", "dispatch-0", "dispatch-2"],
        variants: &[],
        consumer_cpus: "1",
        busy_us: 0,
        description: "UDP request/response pairs (64 B) at a fixed rate, 10%, 50% and 90% of each consumer's capacity (or of the client's ceiling where lower); round-trip time added to the same traffic without the queue rule",
    },
];

/// The scenario named `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Every consumer name of every scenario, once each.
pub fn known_consumers() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = Vec::new();
    let every = SCENARIOS
        .iter()
        .flat_map(|s| s.consumers.iter().chain(s.variants));
    for name in every {
        if !names.contains(name) {
            names.push(name);
        }
    }
    names
}
