//! The command line: which scenarios and consumers, how many rounds of how
//! many seconds, the sender's GSO, and the separate soak and callgrind runs.
//! The outer run passes it on to the inner one as arguments.

use crate::scenario::{known_consumers, Scenario, SCENARIOS};
use xtask_support::cmd::Result;

/// The usage of `cargo xtask bench`, as xtask's list of commands shows it.
pub const USAGE: &str =
    "  bench [--quick] [--rounds N] [--secs S] [--scenario NAME]... [--consumer NAME]...
        [--sender-gso SEGMENTS] [--soak PACKETS]
        [--callgrind PACKETS [--callgrind-size BYTES]...]
                               packets per second through NFQUEUE, nfqueue's consumers
                               side by side with C and Python ones, in a throwaway
                               network namespace; results (results.md, .csv, .svg,
                               latency.csv) in target/bench/. N rounds (default 6)
                               of S seconds (default 2) per consumer and scenario,
                               consumers interleaved (each round starts one
                               later); ratios are paired by round.
                               --quick is 2 rounds of 1 s. Scenarios (default: all,
                               a comma list or the option repeated picks some):
                                 udp-64, udp-1400  UDP through one queue, accept
                                 tcp-gso, tcp-nogso  iperf3 over lo, queue with and
                                                   without GSO
                                 scale-5, scale-20, scale-50  a handler with 5, 20 or
                                   50 us of CPU work per packet: 1 worker, 2 workers,
                                   and 2 queues (--queue-balance 0:1) with the handler
                                   on each receive thread; UDP from 32 source addresses,
                                   the consumer on both CPUs, the sender at nice 19
                                 latency  UDP request/response pairs at 10%, 50% and
                                   90% of each consumer's capacity (its udp-64 median
                                   in this run, else a 1 s saturation run), or of the
                                   client's own ceiling through the queue where that
                                   is lower; round-trip p50/p99 added to the same
                                   traffic without the queue
                               Consumers: c-classic c-batch core async nfq dispatch-0
                               dispatch-1 dispatch-2 dispatch-2q py-reference
                               py-nfqueue py-nfqueue-batch (--consumer keeps each
                               scenario's first, the baseline of its ratios).
                               Variants, run only when named, in udp-64 and
                               udp-1400: core-at16 (datagrams 16 bytes into a
                               page, where malloc put them before), core-noenobufs
                               (NETLINK_NO_ENOBUFS, as nfq), core-deadline (a
                               verdict deadline no packet reaches),
                               c-classic-at16, c-classic-at256. The UDP sender sends SEGMENTS
                               datagrams per UDP GSO message (default 16; 1:
                               plain). --soak runs PACKETS through the Rust
                               consumers instead and reports their RSS (soak.md);
                               --callgrind counts each consumer's user-space
                               instructions and simulated cache misses per packet
                               under valgrind instead, from two runs of about
                               PACKETS and 2 x PACKETS (callgrind.md), with UDP
                               datagrams of each --callgrind-size (default 64; a
                               comma list or the option repeated, up to 1472:
                               loopback's MTU is 1500); --consumer picks consumers
";

/// The largest UDP payload that fits the namespace's loopback MTU (1500)
/// with its IP and UDP headers.
pub const MAX_UDP_SIZE: usize = 1500 - 20 - 8;

/// What the command line asked for; passed on to the inner run as arguments.
#[derive(Debug, Clone)]
pub struct Options {
    pub rounds: usize,
    pub secs: f64,
    pub scenarios: Vec<String>,
    pub consumers: Vec<String>,
    pub soak: Option<u64>,
    pub callgrind: Option<u64>,
    /// UDP payload sizes of the callgrind run (default: 64 alone).
    pub callgrind_sizes: Vec<usize>,
    /// Datagrams per UDP GSO message of the sender (1: no GSO).
    pub segments: u32,
}

impl Options {
    pub fn parse(args: &[String]) -> Result<Self> {
        let mut opts = Options {
            rounds: 6,
            secs: 2.0,
            scenarios: Vec::new(),
            consumers: Vec::new(),
            soak: None,
            callgrind: None,
            callgrind_sizes: Vec::new(),
            segments: 16,
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .cloned()
                    .ok_or_else(|| format!("bench: {name} needs a value"))
            };
            match arg.as_str() {
                "--quick" => {
                    opts.rounds = 2;
                    opts.secs = 1.0;
                }
                "--rounds" => opts.rounds = value("--rounds")?.parse()?,
                "--secs" => opts.secs = value("--secs")?.parse()?,
                "--scenario" => opts
                    .scenarios
                    .extend(value("--scenario")?.split(',').map(String::from)),
                "--consumer" => opts
                    .consumers
                    .extend(value("--consumer")?.split(',').map(String::from)),
                "--soak" => opts.soak = Some(value("--soak")?.parse()?),
                "--callgrind" => opts.callgrind = Some(value("--callgrind")?.parse()?),
                "--callgrind-size" => {
                    for size in value("--callgrind-size")?.split(',') {
                        opts.callgrind_sizes.push(size.parse()?);
                    }
                }
                "--sender-gso" => opts.segments = value("--sender-gso")?.parse()?,
                other => return Err(format!("bench: unknown argument `{other}`").into()),
            }
        }
        if !(1..=100).contains(&opts.rounds) || !(0.2..=60.0).contains(&opts.secs) {
            return Err("bench: --rounds is 1..=100 and --secs 0.2..=60".into());
        }
        if !(1..=64).contains(&opts.segments) {
            return Err("bench: --sender-gso is 1..=64 datagrams per message".into());
        }
        if opts.soak.is_some_and(|n| n == 0 || n > 1_000_000_000) {
            return Err("bench: --soak is 1..=1000000000 packets".into());
        }
        if opts.callgrind.is_some_and(|n| n == 0 || n > 10_000_000) {
            return Err("bench: --callgrind is 1..=10000000 packets".into());
        }
        if !opts.callgrind_sizes.is_empty() && opts.callgrind.is_none() {
            return Err("bench: --callgrind-size goes with --callgrind".into());
        }
        if opts
            .callgrind_sizes
            .iter()
            .any(|s| !(1..=MAX_UDP_SIZE).contains(s))
        {
            return Err(format!(
                "bench: --callgrind-size is 1..={MAX_UDP_SIZE} bytes (loopback's MTU is 1500)"
            )
            .into());
        }
        if opts.callgrind.is_some() && opts.callgrind_sizes.is_empty() {
            opts.callgrind_sizes.push(64);
        }
        if opts.soak.is_some() && opts.callgrind.is_some() {
            return Err("bench: --soak and --callgrind are separate runs".into());
        }
        for name in &opts.scenarios {
            if !SCENARIOS.iter().any(|s| s.name == name) {
                let known: Vec<_> = SCENARIOS.iter().map(|s| s.name).collect();
                return Err(
                    format!("bench: no scenario `{name}` (known: {})", known.join(" ")).into(),
                );
            }
        }
        for name in &opts.consumers {
            if !known_consumers().contains(&name.as_str()) {
                return Err(format!(
                    "bench: no consumer `{name}` (known: {})",
                    known_consumers().join(" ")
                )
                .into());
            }
        }
        Ok(opts)
    }

    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--rounds".into(),
            self.rounds.to_string(),
            "--secs".into(),
            self.secs.to_string(),
            "--sender-gso".into(),
            self.segments.to_string(),
        ];
        for s in &self.scenarios {
            args.extend(["--scenario".into(), s.clone()]);
        }
        for c in &self.consumers {
            args.extend(["--consumer".into(), c.clone()]);
        }
        if let Some(n) = self.soak {
            args.extend(["--soak".into(), n.to_string()]);
        }
        if let Some(n) = self.callgrind {
            args.extend(["--callgrind".into(), n.to_string()]);
        }
        for size in &self.callgrind_sizes {
            args.extend(["--callgrind-size".into(), size.to_string()]);
        }
        args
    }

    pub fn wants(&self, scenario: &str) -> bool {
        self.scenarios.is_empty() || self.scenarios.iter().any(|s| s == scenario)
    }

    /// The consumers of `scenario` to run: those asked for, and always the
    /// first, the baseline of the scenario's ratios; its variants only when
    /// named.
    pub fn consumers_of(&self, scenario: &Scenario) -> Vec<&'static str> {
        let named = |c: &str| self.consumers.iter().any(|w| w == c);
        scenario
            .consumers
            .iter()
            .enumerate()
            .filter(|(i, c)| *i == 0 || self.consumers.is_empty() || named(c))
            .map(|(_, c)| *c)
            .chain(scenario.variants.iter().copied().filter(|c| named(c)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::scenario;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_usage_names_every_scenario_and_consumer() {
        for scenario in SCENARIOS {
            assert!(
                USAGE.contains(scenario.name),
                "{} is not in the usage",
                scenario.name
            );
        }
        for consumer in known_consumers() {
            assert!(USAGE.contains(consumer), "{consumer} is not in the usage");
        }
    }

    #[test]
    fn every_scenario_name_parses_and_unknown_names_fail() {
        for scenario in SCENARIOS {
            let opts = Options::parse(&args(&["--scenario", scenario.name])).unwrap();
            assert!(opts.wants(scenario.name));
            assert_eq!(
                SCENARIOS.iter().filter(|s| opts.wants(s.name)).count(),
                1,
                "{}",
                scenario.name
            );
        }
        let opts = Options::parse(&args(&["--scenario", "scale-5,latency"])).unwrap();
        assert!(opts.wants("latency") && opts.wants("scale-5") && !opts.wants("udp-64"));
        let err = Options::parse(&args(&["--scenario", "heavy"])).unwrap_err();
        assert!(err.to_string().contains("no scenario `heavy`"), "{err}");
        let err = Options::parse(&args(&["--consumer", "dispatch-9"])).unwrap_err();
        assert!(
            err.to_string().contains("no consumer `dispatch-9`"),
            "{err}"
        );
    }

    #[test]
    fn callgrind_sizes_default_to_64_and_go_with_callgrind() {
        let opts = Options::parse(&args(&["--callgrind", "100"])).unwrap();
        assert_eq!(opts.callgrind_sizes, [64]);
        let opts = Options::parse(&args(&[
            "--callgrind",
            "100",
            "--callgrind-size",
            "64,1400",
            "--callgrind-size",
            "1472",
        ]))
        .unwrap();
        assert_eq!(opts.callgrind_sizes, [64, 1400, 1472]);
        let again = Options::parse(&opts.to_args()).unwrap();
        assert_eq!(again.callgrind_sizes, [64, 1400, 1472]);
        assert_eq!(again.callgrind, Some(100));
        for bad in [
            &["--callgrind-size", "1400"][..],
            &["--callgrind", "100", "--callgrind-size", "0"],
            &["--callgrind", "100", "--callgrind-size", "1473"],
            &["--callgrind", "100", "--callgrind-size", "big"],
        ] {
            assert!(Options::parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_consumer_filter_keeps_each_scenarios_baseline() {
        let opts = Options::parse(&args(&["--consumer", "dispatch-2q,async"])).unwrap();
        let scale = scenario("scale-20").unwrap();
        assert_eq!(opts.consumers_of(scale), ["dispatch-1", "dispatch-2q"]);
        let udp = scenario("udp-64").unwrap();
        assert_eq!(opts.consumers_of(udp), ["c-classic", "async"]);
        let latency = scenario("latency").unwrap();
        assert_eq!(opts.consumers_of(latency), ["core"]);
        // Variants run only when named, after the others.
        let all = Options::parse(&[]).unwrap();
        assert!(!all.consumers_of(udp).contains(&"core-at16"));
        let opts = Options::parse(&args(&["--consumer", "core-at16,core"])).unwrap();
        assert_eq!(opts.consumers_of(udp), ["c-classic", "core", "core-at16"]);
        assert_eq!(opts.consumers_of(latency), ["core"]);
    }
}
