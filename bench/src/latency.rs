//! The latency scenario: `bench_latency` (on the sender's CPU) paces UDP
//! request/response pairs to its own echo socket at 10%, 50% and 90% of each
//! consumer's capacity, once with the requests' port queued to the consumer and
//! once without the rule, back to back, so that the difference is what the
//! queue adds to the round trip.
//!
//! One CPU sends, echoes and receives every request, and the queue's own work
//! on the sending side lands there too: through the queue, the client reaches
//! fewer requests per second than a batching consumer can take. Its ceiling is
//! measured first, flat out through the queue to each consumer; where it is
//! below the consumer's capacity, the loads are shares of the ceiling instead,
//! so that no point measures the client's own backlog, and the report says so.

use crate::consumer::{Consumer, Programs};
use crate::measure::{self, Measured};
use crate::options::Options;
use crate::running::{self, Running};
use crate::scenario::{self, LATENCY_LOADS, SENDER_CPU};
use crate::stats::median;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};
use xtask_support::cmd::{self, ChildGuard, Result};

/// The port of the client's echo socket: only packets to it are queued, not
/// the echoes.
const PORT: &str = "7";
/// Requests first that do not count, and the wait for the last echoes.
const WARMUP_SECS: f64 = 0.2;
const DRAIN_SECS: f64 = 0.5;
/// The saturation run that finds a consumer's capacity when udp-64 did not
/// run in the same invocation, and the client's run as fast as it can through
/// the queue.
pub const SATURATION_SECS: f64 = 1.0;
/// A rate beyond any client: it sends what is due as fast as it can.
const FLAT_OUT: f64 = 10_000_000.0;
/// The consumer's CPU (the client runs on the sender's).
const CONSUMER_CPU: &str = "1";

/// Seconds one client run takes at most, for a window of `secs`.
pub fn run_secs(secs: f64) -> f64 {
    WARMUP_SECS + secs + DRAIN_SECS
}

/// What one client run printed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rtt {
    /// Requests sent in the measured window, and echoes of them received.
    pub sent: u64,
    pub received: u64,
    /// Requests per second achieved.
    pub rate: f64,
    /// Round-trip percentiles in nanoseconds (`None`: no echo came back).
    pub p50_ns: Option<f64>,
    pub p99_ns: Option<f64>,
    pub max_ns: Option<f64>,
}

impl Rtt {
    /// Parses `sent=N received=N secs=S rate=R p50_ns=N p99_ns=N max_ns=N`.
    fn parse(line: &str) -> Option<Rtt> {
        let field = |key: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        };
        let number = |key: &str| field(key).and_then(|v| v.parse::<f64>().ok());
        Some(Rtt {
            sent: field("sent")?.parse().ok()?,
            received: field("received")?.parse().ok()?,
            rate: number("rate")?,
            p50_ns: number("p50_ns"),
            p99_ns: number("p99_ns"),
            max_ns: number("max_ns"),
        })
    }

    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

/// Where a consumer's capacity came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapacityFrom {
    /// Its median in this run's udp-64 scenario.
    Udp64,
    /// A saturation run of its own before the latency rounds.
    Saturation,
}

/// One consumer at one load in one round: the round trip with the queue and
/// without it, at the same rate.
#[derive(Debug, Clone)]
pub struct LatencyPoint {
    pub consumer: &'static str,
    pub round: usize,
    pub load_pct: u32,
    /// The consumer's capacity (accepted pps) and where it came from.
    pub capacity: f64,
    pub capacity_from: CapacityFrom,
    /// Requests per second the client reached flat out through the queue to
    /// this consumer: above about half of it, the client's own queueing shows
    /// in the round trips.
    pub client_ceiling: f64,
    /// The rate asked for: `load_pct` of the capacity, or of the client's
    /// ceiling where that is lower.
    pub target_rate: f64,
    pub queued: Rtt,
    pub direct: Rtt,
}

impl LatencyPoint {
    /// The p50 the queue added, in nanoseconds.
    pub fn added_p50(&self) -> Option<f64> {
        Some(self.queued.p50_ns? - self.direct.p50_ns?)
    }

    /// The p99 the queue added, in nanoseconds.
    pub fn added_p99(&self) -> Option<f64> {
        Some(self.queued.p99_ns? - self.direct.p99_ns?)
    }

    /// The loads are shares of the client's ceiling, not of the consumer's
    /// capacity.
    pub fn client_limited(&self) -> bool {
        self.client_ceiling < self.capacity
    }

    /// The share of the consumer's capacity offered, in percent.
    pub fn consumer_load_pct(&self) -> f64 {
        100.0 * self.target_rate / self.capacity.max(1.0)
    }

    /// The client reached at least 95% of the rate asked for, with and without
    /// the queue.
    pub fn rate_reached(&self) -> bool {
        self.queued.rate >= 0.95 * self.target_rate && self.direct.rate >= 0.95 * self.target_rate
    }
}

/// Runs the scenario: capacities and client ceilings first, then round by
/// round each consumer at each load, with and without the queue.
pub fn run(
    programs: &Programs,
    consumers: &[Consumer],
    opts: &Options,
    measured: &[Measured],
) -> Result<Vec<LatencyPoint>> {
    let mut capacities = Vec::new();
    for consumer in consumers {
        let capacity = match capacity_in(measured, consumer.name) {
            Some(pps) => (pps, CapacityFrom::Udp64),
            None => {
                eprintln!("bench: latency: capacity of {}", consumer.name);
                let udp64 = scenario::scenario("udp-64").expect("udp-64 is a scenario");
                let sample =
                    measure::one(programs, udp64, consumer, SATURATION_SECS, opts.segments)?;
                eprintln!("bench:   {}", sample.summary(udp64.traffic));
                (sample.accepted_pps(), CapacityFrom::Saturation)
            }
        };
        let running = Running::start(programs, consumer, CONSUMER_CPU, false)?;
        let ceiling = with_rule(|| client(programs, FLAT_OUT, SATURATION_SECS))?.rate;
        running.stop(consumer.name)?;
        eprintln!(
            "bench: latency: {} capacity {:.0} pps, the client's ceiling through it {ceiling:.0} req/s",
            consumer.name, capacity.0
        );
        capacities.push((capacity.0, capacity.1, ceiling));
    }
    let mut points = Vec::new();
    for round in 1..=opts.rounds {
        for (consumer, &(capacity, capacity_from, client_ceiling)) in
            consumers.iter().zip(&capacities)
        {
            eprintln!(
                "bench: latency round {round}/{}: {} (capacity {capacity:.0} pps)",
                opts.rounds, consumer.name
            );
            let running = Running::start(programs, consumer, CONSUMER_CPU, false)?;
            for &load_pct in LATENCY_LOADS {
                let target_rate = target_rate(capacity, client_ceiling, load_pct);
                let queued = with_rule(|| client(programs, target_rate, opts.secs))?;
                let direct = client(programs, target_rate, opts.secs)?;
                let point = LatencyPoint {
                    consumer: consumer.name,
                    round,
                    load_pct,
                    capacity,
                    capacity_from,
                    client_ceiling,
                    target_rate,
                    queued,
                    direct,
                };
                eprintln!("bench:   {}", point.summary());
                points.push(point);
            }
            running.stop(consumer.name)?;
        }
    }
    Ok(points)
}

impl LatencyPoint {
    fn summary(&self) -> String {
        let us = |v: Option<f64>| v.map_or("-".into(), |ns| format!("{:.0}", ns / 1000.0));
        let of = if self.client_limited() {
            "of the client's ceiling"
        } else {
            "of capacity"
        };
        format!(
            "{}% {of}, {:.0} req/s asked: queued {:.0} req/s p50 {} us p99 {} us lost {}; \
             without the queue {:.0} req/s p50 {} us p99 {} us lost {}",
            self.load_pct,
            self.target_rate,
            self.queued.rate,
            us(self.queued.p50_ns),
            us(self.queued.p99_ns),
            self.queued.lost(),
            self.direct.rate,
            us(self.direct.p50_ns),
            us(self.direct.p99_ns),
            self.direct.lost()
        )
    }
}

/// Requests per second for `load_pct`: a share of the consumer's capacity, or
/// of the client's ceiling where that is lower (at least 100).
fn target_rate(capacity: f64, client_ceiling: f64, load_pct: u32) -> f64 {
    (capacity.min(client_ceiling) * f64::from(load_pct) / 100.0).max(100.0)
}

/// The consumer's median accepted pps in this run's udp-64 scenario.
fn capacity_in(measured: &[Measured], consumer: &str) -> Option<f64> {
    let samples = measured
        .iter()
        .find(|m| m.scenario.name == "udp-64")?
        .of(consumer)?;
    Some(median(
        &mut samples.iter().map(|s| s.accepted_pps()).collect::<Vec<_>>(),
    ))
}

/// Runs `f` with the requests' port queued to [`running::QUEUE`].
fn with_rule<T>(f: impl FnOnce() -> Result<T>) -> Result<T> {
    let rule = |action: &str| {
        cmd::run_ok(
            cmd::program("iptables")
                .args(["-t", "mangle", action, "OUTPUT"])
                .args(["-o", "lo", "-p", "udp", "--dport", PORT])
                .args(running::nfqueue_target(1)),
        )
    };
    rule("-A")?;
    let result = f();
    rule("-D")?;
    result
}

/// One run of the client at `rate` requests per second.
fn client(programs: &Programs, rate: f64, secs: f64) -> Result<Rtt> {
    let mut command = cmd::program("taskset");
    command
        .args(["-c", SENDER_CPU])
        .arg(programs.path("bench_latency"))
        .args(["--rate", &format!("{rate:.0}"), "--port", PORT])
        .args(["--secs", &secs.to_string()])
        .args(["--warmup", &WARMUP_SECS.to_string()])
        .args(["--drain", &DRAIN_SECS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = ChildGuard(cmd::spawn(&mut command)?);
    let mut out = String::new();
    if let Some(mut stdout) = child.0.stdout.take() {
        stdout.read_to_string(&mut out)?;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = cmd::wait_until(&mut child.0, deadline)?.ok_or("bench: bench_latency hung")?;
    if !status.success() {
        return Err(format!("bench: bench_latency failed ({status}): {out}").into());
    }
    Rtt::parse(out.trim())
        .ok_or_else(|| format!("bench: bench_latency printed no result: {out:?}").into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_line_parses_and_none_is_no_percentile() {
        let rtt = Rtt::parse(
            "sent=1000 received=990 secs=2.000 rate=500 p50_ns=41000 p99_ns=93000 max_ns=310000",
        )
        .unwrap();
        assert_eq!((rtt.sent, rtt.received, rtt.lost()), (1000, 990, 10));
        assert_eq!((rtt.p50_ns, rtt.p99_ns), (Some(41000.0), Some(93000.0)));
        let none =
            Rtt::parse("sent=5 received=0 secs=1 rate=5 p50_ns=none p99_ns=none max_ns=none")
                .unwrap();
        assert_eq!(none.p99_ns, None);
        assert!(Rtt::parse("garbage").is_none());
    }

    #[test]
    fn loads_are_shares_of_the_capacity_or_of_a_lower_client_ceiling() {
        assert_eq!(target_rate(100_000.0, 300_000.0, 50), 50_000.0);
        assert_eq!(target_rate(500_000.0, 120_000.0, 90), 108_000.0);
        assert_eq!(target_rate(0.0, 120_000.0, 10), 100.0);
    }

    #[test]
    fn added_latency_is_with_the_queue_minus_without() {
        let rtt = |p50, p99, rate| Rtt {
            sent: 10,
            received: 10,
            rate,
            p50_ns: Some(p50),
            p99_ns: Some(p99),
            max_ns: None,
        };
        let point = LatencyPoint {
            consumer: "core",
            round: 1,
            load_pct: 50,
            capacity: 1000.0,
            capacity_from: CapacityFrom::Udp64,
            client_ceiling: 2000.0,
            target_rate: 500.0,
            queued: rtt(50_000.0, 90_000.0, 499.0),
            direct: rtt(20_000.0, 30_000.0, 400.0),
        };
        assert_eq!(point.added_p50(), Some(30_000.0));
        assert_eq!(point.added_p99(), Some(60_000.0));
        // 400 of 500 asked for without the queue: below 95%.
        assert!(!point.rate_reached());
        assert!(!point.client_limited());
        assert_eq!(point.consumer_load_pct(), 50.0);
    }
}
