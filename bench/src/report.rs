//! The benchmark's report: medians, ranges and paired ratios per consumer as
//! markdown tables (throughput, receive-thread CPU, scaling, latency), closed
//! by the targets (`targets.rs`), and CSVs of every run and of every latency
//! point. `chart.rs` charts the same numbers.

use crate::consumer;
use crate::latency::{CapacityFrom, LatencyPoint};
use crate::measure::{Measured, Sample};
use crate::options::Options;
use crate::scenario::{Traffic, LATENCY_LOADS};
use crate::stats::{median, spread_text, Spread};
use crate::targets;
use std::fmt::Write as _;

/// One consumer in one scenario, summed up over the rounds.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: &'static str,
    pub traffic: Traffic,
    pub consumer: &'static str,
    pub rounds: usize,
    /// Median, min and max of the compared number (pps, or Gbit/s for TCP).
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// Median over rounds of this consumer's number divided by the first
    /// consumer's in the same round.
    pub ratio: f64,
    pub offered_pps: f64,
    pub queued_pps: f64,
    pub pps_per_cpu: f64,
    /// Consumer CPU seconds per second, and its CPUs' busy seconds per second.
    pub proc_load: f64,
    pub cpus_load: f64,
    pub queue_full: f64,
    pub user_drops: f64,
    /// Rounds in which the kernel dropped packets (queue or socket full).
    pub overflow_rounds: usize,
}

impl Row {
    pub fn unit(&self) -> &'static str {
        match self.traffic {
            Traffic::Tcp { .. } => "Gbit/s",
            Traffic::Udp { .. } | Traffic::Latency => "pps",
        }
    }

    fn format(&self, value: f64) -> String {
        match self.traffic {
            Traffic::Tcp { .. } => format!("{value:.2}"),
            Traffic::Udp { .. } | Traffic::Latency => format!("{value:.0}"),
        }
    }

    /// What limited the run: the consumer only if the queue overflowed.
    pub fn limit(&self) -> String {
        match self.traffic {
            Traffic::Tcp { .. } => "TCP, closed loop (no overflow by design)".into(),
            _ if self.overflow_rounds == 0 => "SENDER-LIMITED: the queue never overflowed".into(),
            _ => format!(
                "consumer (queue overflowed in {}/{} rounds)",
                self.overflow_rounds, self.rounds
            ),
        }
    }
}

fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(&mut samples.iter().map(f).collect::<Vec<_>>())
}

/// The rows of one scenario, one per consumer.
pub fn rows(measured: &Measured) -> Vec<Row> {
    let scenario = measured.scenario;
    let exclusive = !scenario.shares_sender_cpu();
    let traffic = scenario.traffic;
    let base = &measured.samples[0];
    measured
        .consumers
        .iter()
        .zip(&measured.samples)
        .map(|(consumer, runs)| {
            let metrics: Vec<f64> = runs.iter().map(|s| s.metric(traffic)).collect();
            let spread = Spread::of(metrics.clone()).unwrap_or_default();
            Row {
                scenario: scenario.name,
                traffic,
                consumer,
                rounds: runs.len(),
                median: spread.median,
                min: spread.min,
                max: spread.max,
                ratio: targets::paired_samples(runs, base, traffic).map_or(0.0, |r| r.median),
                offered_pps: median_of(runs, Sample::offered_pps),
                queued_pps: median_of(runs, Sample::accepted_pps),
                pps_per_cpu: median_of(runs, |s| s.pps_per_cpu(exclusive)),
                proc_load: median_of(runs, |s| s.proc_cpu / s.secs),
                cpus_load: median_of(runs, |s| s.cpus_busy / s.secs),
                queue_full: median_of(runs, |s| s.queue_full as f64),
                user_drops: median_of(runs, |s| s.user_drops as f64),
                overflow_rounds: runs
                    .iter()
                    .filter(|s| s.queue_full + s.user_drops > 0)
                    .count(),
            }
        })
        .collect()
}

fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown CPU")
        .trim()
        .to_string();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    format!("Linux {}, {cpus} x {model}", kernel.trim())
}

pub fn markdown(opts: &Options, measured: &[Measured], points: &[LatencyPoint]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# nfqueue benchmark\n");
    let _ = writeln!(
        md,
        "{}. {} rounds x {} s per consumer per scenario, consumers interleaved round by \
         round, each round starting one consumer later; medians, min-max, and the median of per-round ratios to the first \
         consumer of each scenario. UDP sender: sendmmsg, 64 messages per call, {} \
         datagrams per message (UDP GSO when > 1), SO_SNDBUFFORCE 32 MiB, \
         on CPU 0, consumer on CPU 1 unless said otherwise. Accepted packets are counted \
         by a filter OUTPUT rule after the mangle OUTPUT NFQUEUE rule. CPU-s = busy time \
         of the consumer's CPU (its process, kworkers, softirqs) when it has the CPU to \
         itself, else the process's CPU time. Drops are the kernel's counters \
         (/proc/net/netfilter/nfnetlink_queue) at the end of the run.\n",
        machine(),
        opts.rounds,
        opts.secs,
        opts.segments
    );
    let all_rows: Vec<Row> = measured.iter().flat_map(rows).collect();
    for m in measured {
        let these: Vec<&Row> = all_rows
            .iter()
            .filter(|r| r.scenario == m.scenario.name)
            .collect();
        let Some(first) = these.first() else { continue };
        let _ = writeln!(
            md,
            "## {}: {}\n\n| consumer | median {} | min | max | ratio to {} | offered pps | queued pps | pps per CPU-s | consumer CPU | its CPUs busy | queue-full drops | socket drops | limited by |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            m.scenario.name,
            m.scenario.description,
            first.unit(),
            first.consumer
        );
        for r in &these {
            let offered = match r.traffic {
                Traffic::Tcp { .. } => "-".into(),
                _ => format!("{:.0}", r.offered_pps),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.2}x | {} | {:.0} | {:.0} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
                r.consumer,
                r.format(r.median),
                r.format(r.min),
                r.format(r.max),
                r.ratio,
                offered,
                r.queued_pps,
                r.pps_per_cpu,
                r.proc_load,
                r.cpus_load,
                r.queue_full,
                r.user_drops,
                r.limit()
            );
        }
        md.push('\n');
    }
    md += &recv_threads(measured);
    md += &scaling(measured);
    md += &latency(points);
    let _ = writeln!(md, "## Consumers\n");
    let mut seen = Vec::new();
    let names = measured
        .iter()
        .flat_map(|m| m.consumers.iter().copied())
        .chain(points.iter().map(|p| p.consumer));
    for name in names {
        if !seen.contains(&name) {
            seen.push(name);
            let _ = writeln!(md, "- `{name}`: {}", consumer::description(name));
        }
    }
    md.push('\n');
    md += &targets::section(measured, points);
    md
}

/// The receive threads' CPU time per accepted packet, for every consumer that
/// has receive threads (the dispatcher's).
fn recv_threads(measured: &[Measured]) -> String {
    let mut md = String::from(
        "## Receive thread CPU per packet\n\n\
         user+system time of the dispatcher's receive threads (`nfq-recv-*`, from \
         /proc/PID/task/TID/stat, 10 ms ticks) over the measured window, divided by \
         the packets accepted in it; median [min-max] over the rounds. With the \
         handler on the receive thread (dispatch-0, dispatch-2q) that includes the \
         handler's work.\n\n\
         | scenario | consumer | ns per packet | receive threads' CPU (s per s) |\n|---|---|---:|---:|\n",
    );
    let mut any = false;
    for m in measured {
        for (consumer, runs) in m.consumers.iter().zip(&m.samples) {
            let per_packet: Vec<f64> = runs.iter().filter_map(Sample::recv_ns_per_packet).collect();
            let Some(spread) = Spread::of(per_packet) else {
                continue;
            };
            let load = median_of(runs, |s| s.recv_cpu.unwrap_or(0.0) / s.secs);
            let _ = writeln!(
                md,
                "| {} | {consumer} | {} | {load:.2} |",
                m.scenario.name,
                spread_text(&spread, 0)
            );
            any = true;
        }
    }
    md.push('\n');
    if any {
        md
    } else {
        String::new()
    }
}

/// The scaling scenarios side by side: pps per work size and consumer, and the
/// speed-ups over 1 worker, paired by round.
fn scaling(measured: &[Measured]) -> String {
    let scales: Vec<&Measured> = measured.iter().filter(|m| m.scenario.busy_us > 0).collect();
    if scales.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "## Scaling: handler work per packet\n\n\
         Accepted pps, median [min-max]; speed-ups are per-round ratios to 1 worker, \
         median [min-max]. The sender sends from 32 source addresses (`--queue-balance` \
         hashes addresses); the split is the share of packets the kernel queued to \
         queue 0 for the 2-queue consumer.\n\n\
         | work per packet | 1 worker | 2 workers | 2 queues, inline | 2 workers / 1 | 2 queues / 1 | 2-queue split |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for m in scales {
        let traffic = m.scenario.traffic;
        let pps = |consumer: &str| {
            m.of(consumer)
                .and_then(|runs| Spread::of(runs.iter().map(|s| s.metric(traffic)).collect()))
                .map_or("-".into(), |s| spread_text(&s, 0))
        };
        let ratio = |consumer: &str| {
            targets::paired(m, consumer, "dispatch-1").map_or("-".into(), |s| spread_text(&s, 2))
        };
        let split = m
            .of("dispatch-2q")
            .and_then(|runs| {
                Spread::of(runs.iter().filter_map(Sample::first_queue_share).collect())
            })
            .map_or("-".into(), |s| spread_text(&s, 2));
        let _ = writeln!(
            md,
            "| {} us | {} | {} | {} | {} | {} | {split} |",
            m.scenario.busy_us,
            pps("dispatch-1"),
            pps("dispatch-2"),
            pps("dispatch-2q"),
            ratio("dispatch-2"),
            ratio("dispatch-2q"),
        );
    }
    md.push('\n');
    md
}

/// The latency points of one consumer at one load, over the rounds.
pub fn latency_points<'a>(
    points: &'a [LatencyPoint],
    consumer: &'a str,
    load_pct: u32,
) -> impl Iterator<Item = &'a LatencyPoint> {
    points
        .iter()
        .filter(move |p| p.consumer == consumer && p.load_pct == load_pct)
}

/// The latency scenario: round trips with and without the queue, and what the
/// queue added, per consumer and load.
fn latency(points: &[LatencyPoint]) -> String {
    if points.is_empty() {
        return String::new();
    }
    let mut md = String::from(
        "## Latency: round trip added by the queue\n\n\
         `bench_latency` on CPU 0 sends 64-byte UDP requests at a fixed rate to its own \
         echo socket (one thread: echo, receive, send what is due, sleep), the consumer \
         on CPU 1 accepts them; only the requests' port is queued. Each point runs with \
         the queue rule and then without it at the same rate, in the same round; added = \
         with minus without, per round, median [min-max] in us. Rates are a share of \
         the consumer's capacity (its udp-64 median in this run, or a 1 s saturation \
         run); the achieved rates are medians. The client's ceiling is the rate it \
         reached flat out through the queue to that consumer (one CPU sends, echoes \
         and receives, and takes the queue's work on the sending side): where it is \
         below the consumer's capacity, the loads are shares of the ceiling (marked \
         *), and the consumer's share of its capacity is lower, as the column says.\n\n\
         | consumer | load | capacity pps | client ceiling req/s | asked req/s | share of the consumer's capacity | achieved, queued | achieved, no queue | p50 queued | p99 queued | p50 no queue | p99 no queue | added p50 | added p99 | lost (queued / no queue) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let mut consumers: Vec<&str> = Vec::new();
    for p in points {
        if !consumers.contains(&p.consumer) {
            consumers.push(p.consumer);
        }
    }
    let us = |v: Vec<f64>| {
        Spread::of(v.into_iter().map(|ns| ns / 1000.0).collect())
            .map_or("-".into(), |s| spread_text(&s, 0))
    };
    let us_median = |v: Vec<f64>| {
        Spread::of(v.into_iter().map(|ns| ns / 1000.0).collect())
            .map_or("-".into(), |s| format!("{:.0}", s.median))
    };
    for consumer in consumers {
        for &load in LATENCY_LOADS {
            let these: Vec<&LatencyPoint> = latency_points(points, consumer, load).collect();
            let Some(first) = these.first() else { continue };
            let of = |f: &dyn Fn(&LatencyPoint) -> Option<f64>| -> Vec<f64> {
                these.iter().filter_map(|p| f(p)).collect()
            };
            let rate = |f: &dyn Fn(&LatencyPoint) -> f64| {
                let mut v: Vec<f64> = these.iter().map(|p| f(p)).collect();
                format!("{:.0}", median(&mut v))
            };
            let lost: u64 = these.iter().map(|p| p.queued.lost()).sum();
            let lost_direct: u64 = these.iter().map(|p| p.direct.lost()).sum();
            let limited = if first.client_limited() { "*" } else { "" };
            let from = match first.capacity_from {
                CapacityFrom::Udp64 => "",
                CapacityFrom::Saturation => " (saturation run)",
            };
            let _ = writeln!(
                md,
                "| {consumer} | {load}%{limited} | {:.0}{from} | {:.0} | {:.0} | {:.0}% | {} | {} | {} | {} | {} | {} | {} | {} | {lost} / {lost_direct} |",
                first.capacity,
                first.client_ceiling,
                first.target_rate,
                first.consumer_load_pct(),
                rate(&|p| p.queued.rate),
                rate(&|p| p.direct.rate),
                us_median(of(&|p| p.queued.p50_ns)),
                us_median(of(&|p| p.queued.p99_ns)),
                us_median(of(&|p| p.direct.p50_ns)),
                us_median(of(&|p| p.direct.p99_ns)),
                us(of(&LatencyPoint::added_p50)),
                us(of(&LatencyPoint::added_p99)),
            );
        }
    }
    md.push('\n');
    md
}

/// Every throughput run: one line per scenario, consumer and round.
pub fn csv(measured: &[Measured]) -> String {
    let mut out = String::from(
        "scenario,consumer,round,secs,sent,accepted,accepted_bytes,consumer_count,proc_cpu_s,cpus_busy_s,queue_full_drops,socket_drops,tcp_bps,recv_threads_cpu_s,queued_per_queue\n",
    );
    for m in measured {
        for s in m.samples.iter().flatten() {
            let queued: Vec<String> = s.queued.iter().map(u64::to_string).collect();
            let _ = writeln!(
                out,
                "{},{},{},{:.4},{},{},{},{},{:.2},{:.2},{},{},{},{},{}",
                m.scenario.name,
                s.consumer,
                s.round,
                s.secs,
                s.sent,
                s.accepted,
                s.accepted_bytes,
                s.consumer_count,
                s.proc_cpu,
                s.cpus_busy,
                s.queue_full,
                s.user_drops,
                s.tcp_bps.map_or(String::new(), |b| format!("{b:.0}")),
                s.recv_cpu.map_or(String::new(), |c| format!("{c:.2}")),
                queued.join(";")
            );
        }
    }
    out
}

/// The latency points: one line per consumer, round and load.
pub fn latency_csv(points: &[LatencyPoint]) -> String {
    let mut out = String::from(
        "consumer,round,load_pct,capacity_pps,capacity_from,client_ceiling,target_rate,\
         queued_rate,queued_sent,queued_received,queued_p50_ns,queued_p99_ns,queued_max_ns,\
         direct_rate,direct_sent,direct_received,direct_p50_ns,direct_p99_ns,direct_max_ns\n",
    );
    let ns = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.0}"));
    for p in points {
        let _ = write!(
            out,
            "{},{},{},{:.0},{:?},{:.0},{:.0}",
            p.consumer,
            p.round,
            p.load_pct,
            p.capacity,
            p.capacity_from,
            p.client_ceiling,
            p.target_rate
        );
        for rtt in [&p.queued, &p.direct] {
            let _ = write!(
                out,
                ",{:.0},{},{},{},{},{}",
                rtt.rate,
                rtt.sent,
                rtt.received,
                ns(rtt.p50_ns),
                ns(rtt.p99_ns),
                ns(rtt.max_ns)
            );
        }
        out.push('\n');
    }
    out
}
