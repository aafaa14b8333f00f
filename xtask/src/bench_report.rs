//! The benchmark's report: medians, ranges and paired ratios per consumer, as a
//! markdown table, a CSV of every run, and an SVG bar chart of the same numbers.

use crate::bench::{consumer_description, Consumer, Options, Scenario, Traffic, SCENARIOS};
use crate::bench_measure::Sample;
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
            Traffic::Udp(_) => "pps",
            Traffic::Tcp { .. } => "Gbit/s",
        }
    }

    fn format(&self, value: f64) -> String {
        match self.traffic {
            Traffic::Udp(_) => format!("{value:.0}"),
            Traffic::Tcp { .. } => format!("{value:.2}"),
        }
    }

    /// What limited the run: the consumer only if the queue overflowed.
    pub fn limit(&self) -> String {
        match self.traffic {
            Traffic::Tcp { .. } => "TCP, closed loop (no overflow by design)".into(),
            Traffic::Udp(_) if self.overflow_rounds == 0 => {
                "SENDER-LIMITED: the queue never overflowed".into()
            }
            Traffic::Udp(_) => format!(
                "consumer (queue overflowed in {}/{} rounds)",
                self.overflow_rounds, self.rounds
            ),
        }
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn median_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    median(&mut samples.iter().map(f).collect::<Vec<_>>())
}

/// The rows of one scenario; `samples[i]` are consumer i's, one per round.
pub fn rows(scenario: &Scenario, consumers: &[Consumer], samples: &[Vec<Sample>]) -> Vec<Row> {
    let exclusive = !scenario.consumer_cpus.contains('0');
    let traffic = scenario.traffic;
    let base = &samples[0];
    consumers
        .iter()
        .zip(samples)
        .map(|(consumer, runs)| {
            let metrics: Vec<f64> = runs.iter().map(|s| s.metric(traffic)).collect();
            let mut ratios: Vec<f64> = runs
                .iter()
                .zip(base)
                .map(|(s, b)| s.metric(traffic) / b.metric(traffic).max(f64::MIN_POSITIVE))
                .collect();
            Row {
                scenario: scenario.name,
                traffic,
                consumer: consumer.name,
                rounds: runs.len(),
                median: median(&mut metrics.clone()),
                min: metrics.iter().copied().fold(f64::INFINITY, f64::min),
                max: metrics.iter().copied().fold(0.0, f64::max),
                ratio: median(&mut ratios),
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

pub fn markdown(opts: &Options, rows: &[Row]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# nfqueue benchmark\n");
    let _ = writeln!(
        md,
        "{}. {} rounds x {} s per consumer per scenario, consumers interleaved round by \
         round; medians, min-max, and the median of per-round ratios to the first \
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
    for scenario in SCENARIOS {
        let these: Vec<&Row> = rows
            .iter()
            .filter(|r| r.scenario == scenario.name)
            .collect();
        let Some(first) = these.first() else { continue };
        let _ = writeln!(
            md,
            "## {}: {}\n\n| consumer | median {} | min | max | ratio to {} | offered pps | queued pps | pps per CPU-s | consumer CPU | its CPUs busy | queue-full drops | socket drops | limited by |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
            scenario.name,
            scenario.description,
            first.unit(),
            first.consumer
        );
        for r in &these {
            let offered = match r.traffic {
                Traffic::Udp(_) => format!("{:.0}", r.offered_pps),
                Traffic::Tcp { .. } => "-".into(),
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
    let _ = writeln!(md, "## Consumers\n");
    let mut seen = Vec::new();
    for r in rows {
        if !seen.contains(&r.consumer) {
            seen.push(r.consumer);
            let _ = writeln!(
                md,
                "- `{}`: {}",
                r.consumer,
                consumer_description(r.consumer)
            );
        }
    }
    md.push('\n');
    md += &targets(rows);
    md
}

fn find<'a>(rows: &'a [Row], scenario: &str, consumer: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.scenario == scenario && r.consumer == consumer)
}

/// The targets, checked against this run.
fn targets(rows: &[Row]) -> String {
    let mut out = String::from("## Targets (ratios to c-classic in the same run)\n\n");
    let mut check = |what: String, value: Option<f64>, target: f64| {
        let line = match value {
            Some(v) => format!(
                "- {what}: {v:.2}x, target >= {target:.2}x: {}\n",
                if v >= target { "met" } else { "MISSED" }
            ),
            None => format!("- {what}: not measured in this run\n"),
        };
        out.push_str(&line);
    };
    for scenario in ["udp-64", "udp-1400"] {
        check(
            format!("{scenario} core (per packet)"),
            find(rows, scenario, "core").map(|r| r.ratio),
            1.0,
        );
        let target = if scenario == "udp-64" { 1.85 } else { 1.9 };
        for consumer in ["dispatch-0", "dispatch-1", "dispatch-2"] {
            check(
                format!("{scenario} {consumer} (coalescing)"),
                find(rows, scenario, consumer).map(|r| r.ratio),
                target,
            );
            if let (Some(d), Some(b)) = (
                find(rows, scenario, consumer),
                find(rows, scenario, "c-batch"),
            ) {
                check(
                    format!("{scenario} {consumer} relative to c-batch"),
                    Some(d.ratio / b.ratio),
                    1.0,
                );
            }
        }
    }
    for scenario in ["udp-64", "udp-1400"] {
        if let (Some(ours), Some(theirs)) = (
            find(rows, scenario, "py-nfqueue"),
            find(rows, scenario, "py-reference"),
        ) {
            check(
                format!("{scenario} py-nfqueue relative to py-reference (same script)"),
                Some(ours.ratio / theirs.ratio),
                1.5,
            );
        }
    }
    for consumer in ["dispatch-0", "dispatch-1", "dispatch-2", "core"] {
        check(
            format!("tcp-gso {consumer} vs c-classic, both with GSO"),
            find(rows, "tcp-gso", consumer).map(|r| r.ratio),
            1.4,
        );
        if let (Some(d), Some(c)) = (
            find(rows, "tcp-gso", consumer),
            find(rows, "tcp-nogso", "c-classic"),
        ) {
            check(
                format!("tcp-gso {consumer} vs c-classic without GSO (ratio of medians)"),
                Some(d.median / c.median),
                1.4,
            );
        }
    }
    check(
        "heavy handler: 2 workers vs 1".into(),
        find(rows, "heavy", "heavy-2").map(|r| r.ratio),
        1.7,
    );
    out
}

pub fn csv(samples: &[(String, Sample)]) -> String {
    let mut out = String::from(
        "scenario,consumer,round,secs,sent,accepted,accepted_bytes,consumer_count,proc_cpu_s,cpus_busy_s,queue_full_drops,socket_drops,tcp_bps\n",
    );
    for (scenario, s) in samples {
        let _ = writeln!(
            out,
            "{scenario},{},{},{:.4},{},{},{},{},{:.2},{:.2},{},{},{}",
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
            s.tcp_bps.map_or(String::new(), |b| format!("{b:.0}"))
        );
    }
    out
}

const COLORS: &[&str] = &[
    "#7f7f7f", "#bcbd22", "#1f77b4", "#9467bd", "#ff7f0e", "#d62728", "#2ca02c", "#17becf",
];

fn color(consumer: &str) -> &'static str {
    let order = [
        "c-classic",
        "c-batch",
        "core",
        "nfq",
        "dispatch-0",
        "dispatch-1",
        "dispatch-2",
        "heavy-1",
        "heavy-2",
    ];
    let i = order.iter().position(|c| *c == consumer).unwrap_or(0);
    COLORS[i % COLORS.len()]
}

/// Grouped bars: one panel per scenario (each with its own scale and unit), a
/// bar per consumer at its median, a whisker from min to max.
pub fn svg(rows: &[Row]) -> String {
    let scenarios: Vec<&str> = SCENARIOS
        .iter()
        .map(|s| s.name)
        .filter(|name| rows.iter().any(|r| r.scenario == *name))
        .collect();
    let (bar, gap, left, panel_h, top) = (64.0, 16.0, 70.0, 260.0, 40.0);
    let most = scenarios
        .iter()
        .map(|s| rows.iter().filter(|r| r.scenario == *s).count())
        .max()
        .unwrap_or(1) as f64;
    let width = left + most * (bar + gap) + 40.0;
    let height = top + scenarios.len() as f64 * (panel_h + 60.0);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\">nfqueue benchmark: median per consumer \
         (whiskers: min-max), ratio to the first</text>\n"
    );
    for (p, scenario) in scenarios.iter().enumerate() {
        let these: Vec<&Row> = rows.iter().filter(|r| r.scenario == *scenario).collect();
        let y0 = top + p as f64 * (panel_h + 60.0) + 20.0;
        let base = y0 + panel_h;
        let scale_max = these.iter().map(|r| r.max).fold(0.0, f64::max).max(1e-9) * 1.1;
        let unit = these[0].unit();
        let _ = writeln!(
            svg,
            "<text x=\"{left}\" y=\"{:.0}\" font-size=\"13\" font-weight=\"bold\">{scenario} ({unit})</text>",
            y0 - 6.0
        );
        for tick in 0..=4 {
            let v = scale_max * tick as f64 / 4.0;
            let y = base - panel_h * tick as f64 / 4.0;
            let label = if unit == "pps" {
                format!("{:.0}k", v / 1000.0)
            } else {
                format!("{v:.1}")
            };
            let _ = writeln!(
                svg,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.0}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
                 <text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
                width - 20.0,
                left - 6.0,
                y + 4.0
            );
        }
        for (i, r) in these.iter().enumerate() {
            let x = left + gap / 2.0 + i as f64 * (bar + gap);
            let h = panel_h * r.median / scale_max;
            let y = |v: f64| base - panel_h * v / scale_max;
            let cx = x + bar / 2.0;
            let value = if unit == "pps" {
                format!("{:.0}k", r.median / 1000.0)
            } else {
                format!("{:.2}", r.median)
            };
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{h:.1}\" fill=\"{}\"/>\
                 <line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\
                 <text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{value} ({:.2}x)</text>\
                 <text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                base - h,
                color(r.consumer),
                y(r.min),
                y(r.max),
                y(r.max) - 4.0,
                r.ratio,
                base + 14.0,
                r.consumer
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}
