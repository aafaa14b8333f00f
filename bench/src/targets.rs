//! The targets the issues set, checked against one run. Every ratio that
//! decides a target is paired by round (consumer A's number over consumer B's
//! in the same round) and given as median [min-max]; a target is met when the
//! median is. Where a run cannot tell (the sender was the limit, the latency
//! client did not reach its rate, the queues split unevenly), the line says so.

use crate::latency::LatencyPoint;
use crate::measure::{Measured, Sample};
use crate::scenario::Traffic;
use crate::stats::{median, spread_text, Spread};
use std::fmt::Write as _;

/// `a`'s number over `b`'s, round by round (rounds where `b` measured 0 do not
/// count).
pub fn paired_samples(a: &[Sample], b: &[Sample], traffic: Traffic) -> Option<Spread> {
    Spread::of(
        a.iter()
            .filter_map(|sa| {
                let sb = b.iter().find(|sb| sb.round == sa.round)?;
                let base = sb.metric(traffic);
                (base > 0.0).then(|| sa.metric(traffic) / base)
            })
            .collect(),
    )
}

/// `a` over `b` in one scenario, paired by round.
pub fn paired(measured: &Measured, a: &str, b: &str) -> Option<Spread> {
    paired_samples(measured.of(a)?, measured.of(b)?, measured.scenario.traffic)
}

fn scenario<'a>(measured: &'a [Measured], name: &str) -> Option<&'a Measured> {
    measured.iter().find(|m| m.scenario.name == name)
}

/// What a target asks of a ratio's median.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    fn met(self, value: f64) -> bool {
        match self {
            Goal::AtLeast(t) => value >= t,
            Goal::AtMost(t) => value <= t,
        }
    }

    fn text(self) -> String {
        match self {
            Goal::AtLeast(t) => format!(">= {t:.2}x"),
            Goal::AtMost(t) => format!("<= {t:.2}x"),
        }
    }
}

/// The lines of the Targets section, and the ones missed.
#[derive(Debug, Default)]
struct Checks {
    lines: String,
    missed: Vec<String>,
    unmeasured: Vec<String>,
    measured: usize,
}

impl Checks {
    /// One target: `value` (paired ratios, or one ratio of medians) against
    /// `goal`, with notes on what may make the number unfit to decide.
    fn check(&mut self, what: &str, value: Option<Spread>, goal: Goal, notes: &[String]) {
        let Some(v) = value else {
            self.unmeasured.push(what.to_string());
            return;
        };
        self.measured += 1;
        let met = goal.met(v.median);
        let numbers = if v.n > 1 {
            format!("{} over {} rounds", spread_text(&v, 2), v.n)
        } else {
            format!("{:.2}", v.median)
        };
        let _ = write!(
            self.lines,
            "- {what}: {numbers}, target {}: {}",
            goal.text(),
            if met { "met" } else { "MISSED" }
        );
        if !notes.is_empty() {
            let _ = write!(self.lines, " ({})", notes.join("; "));
        }
        self.lines.push('\n');
        if !met {
            self.missed.push(what.to_string());
        }
    }
}

/// Why a UDP ratio may show the sender rather than the consumers: the rounds
/// in which a consumer's queue never overflowed.
fn sender_notes(measured: &Measured, consumers: &[&str]) -> Vec<String> {
    if !matches!(measured.scenario.traffic, Traffic::Udp { .. }) {
        return Vec::new();
    }
    consumers
        .iter()
        .filter_map(|c| {
            let runs = measured.of(c)?;
            let limited = runs
                .iter()
                .filter(|s| s.queue_full + s.user_drops == 0)
                .count();
            (limited > 0).then(|| {
                format!(
                    "{c} sender-limited in {limited}/{} rounds: the queue never overflowed",
                    runs.len()
                )
            })
        })
        .collect()
}

/// A paired ratio in `scenario`, checked.
fn check_pair(
    checks: &mut Checks,
    measured: &[Measured],
    (name, a, b): (&str, &str, &str),
    label: &str,
    goal: Goal,
) {
    let what = format!("{name} {a} / {b} ({label})");
    let m = scenario(measured, name);
    let value = m.and_then(|m| paired(m, a, b));
    let notes = m.map_or(Vec::new(), |m| sender_notes(m, &[a, b]));
    checks.check(&what, value, goal, &notes);
}

/// The Targets section of the report.
pub fn section(measured: &[Measured], points: &[LatencyPoint]) -> String {
    let mut c = Checks::default();
    for name in ["udp-64", "udp-1400"] {
        let coalescing = if name == "udp-64" { 1.85 } else { 1.9 };
        for d in ["dispatch-0", "dispatch-1", "dispatch-2"] {
            let pair = (name, d, "c-classic");
            check_pair(
                &mut c,
                measured,
                pair,
                "coalescing",
                Goal::AtLeast(coalescing),
            );
        }
        let rows: [(&str, &str, &str, f64); 7] = [
            (
                "dispatch-0",
                "c-batch",
                "inline level with hand-batched C",
                1.0,
            ),
            (
                "dispatch-1",
                "dispatch-0",
                "a worker costs what inline costs",
                0.9,
            ),
            ("core", "c-classic", "per packet, ahead of C", 1.03),
            ("core", "nfq", "per packet, at or above the nfq crate", 1.0),
            ("async", "core", "async within 10% of sync", 0.9),
            ("py-nfqueue", "py-reference", "same script", 1.5),
            (
                "py-nfqueue-batch",
                "py-reference",
                "same script, run(batch=True)",
                1.5,
            ),
        ];
        for (a, b, label, target) in rows {
            check_pair(&mut c, measured, (name, a, b), label, Goal::AtLeast(target));
        }
    }
    for name in ["tcp-gso", "tcp-nogso"] {
        let pair = (name, "async", "core");
        check_pair(
            &mut c,
            measured,
            pair,
            "async within 10% of sync",
            Goal::AtLeast(0.9),
        );
    }
    for consumer in ["dispatch-0", "dispatch-1", "dispatch-2", "core"] {
        let pair = ("tcp-gso", consumer, "c-classic");
        check_pair(&mut c, measured, pair, "both with GSO", Goal::AtLeast(1.4));
        let across = scenario(measured, "tcp-gso")
            .and_then(|m| m.of(consumer))
            .zip(scenario(measured, "tcp-nogso").and_then(|m| m.of("c-classic")))
            .and_then(|(gso, nogso)| {
                let traffic = Traffic::Tcp { gso: true };
                let median_of = |runs: &[Sample]| {
                    median(&mut runs.iter().map(|s| s.metric(traffic)).collect::<Vec<_>>())
                };
                let base = median_of(nogso);
                (base > 0.0).then(|| Spread {
                    median: median_of(gso) / base,
                    n: 1,
                    ..Spread::default()
                })
            });
        let what = format!(
            "tcp-gso {consumer} / tcp-nogso c-classic (GSO against none, ratio of medians)"
        );
        c.check(&what, across, Goal::AtLeast(1.4), &[]);
    }
    if let Some(m) = scenario(measured, "scale-50") {
        let mut notes = sender_notes(m, &["dispatch-1", "dispatch-2"]);
        if let Some(share) = m.of("dispatch-2q").and_then(|runs| {
            Spread::of(runs.iter().filter_map(Sample::first_queue_share).collect())
        }) {
            notes.push(format!(
                "2-queue consumer: queue 0 took {:.0}% of the packets",
                share.median * 100.0
            ));
        }
        let what = "scale-50 dispatch-2 / dispatch-1 (50 us of work: 2 workers against 1)";
        c.check(
            what,
            paired(m, "dispatch-2", "dispatch-1"),
            Goal::AtLeast(1.7),
            &notes,
        );
    } else {
        c.check(
            "scale-50 dispatch-2 / dispatch-1",
            None,
            Goal::AtLeast(1.7),
            &[],
        );
    }
    for d in ["dispatch-0", "dispatch-2"] {
        let (value, notes) = latency_ratio(points, d, "core", 50);
        let what = format!("latency at 50% load: added p99 of {d} / of core");
        c.check(&what, value, Goal::AtMost(2.0), &notes);
    }

    let mut out = format!(
        "## Targets\n\nPaired by round: median [min-max] of the per-round ratios; \
         met when the median is. {} of {} measured targets missed{}\n\n",
        c.missed.len(),
        c.measured,
        if c.missed.is_empty() {
            ".".to_string()
        } else {
            format!(": {}.", c.missed.join("; "))
        }
    );
    out += &c.lines;
    if !c.unmeasured.is_empty() {
        let _ = writeln!(
            out,
            "\nNot measured in this run: {}.",
            c.unmeasured.join("; ")
        );
    }
    out
}

/// Added p99 of `a` over that of `b` at `load_pct`, paired by round, with
/// notes where the client fell short of the rate or `b` added nothing.
fn latency_ratio(
    points: &[LatencyPoint],
    a: &str,
    b: &str,
    load_pct: u32,
) -> (Option<Spread>, Vec<String>) {
    let at = |consumer: &str| -> Vec<&LatencyPoint> {
        points
            .iter()
            .filter(|p| p.consumer == consumer && p.load_pct == load_pct)
            .collect()
    };
    let (ours, base) = (at(a), at(b));
    let mut notes = Vec::new();
    let mut not_positive = 0;
    let ratios: Vec<f64> = ours
        .iter()
        .filter_map(|p| {
            let q = base.iter().find(|q| q.round == p.round)?;
            let denominator = q.added_p99()?;
            if denominator <= 0.0 {
                not_positive += 1;
                return None;
            }
            Some(p.added_p99()? / denominator)
        })
        .collect();
    if not_positive > 0 {
        notes.push(format!(
            "{not_positive} round(s) left out: {b} added nothing to p99"
        ));
    }
    for (consumer, these) in [(a, &ours), (b, &base)] {
        let Some(first) = these.first() else { continue };
        let short = these.iter().filter(|p| !p.rate_reached()).count();
        if short > 0 {
            let mut reached: Vec<f64> = these.iter().map(|p| p.queued.rate).collect();
            notes.push(format!(
                "the client reached {:.0} of {:.0} req/s for {consumer} ({short}/{} rounds short)",
                median(&mut reached),
                first.target_rate,
                these.len()
            ));
        } else if first.client_limited() {
            notes.push(format!(
                "for {consumer}, {load_pct}% of the client's ceiling ({:.0} req/s, {:.0}% of \
                 its capacity): the client could not offer more",
                first.target_rate,
                first.consumer_load_pct()
            ));
        }
    }
    (Spread::of(ratios), notes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::latency::{CapacityFrom, Rtt};
    use crate::scenario;

    fn sample(consumer: &str, round: usize, accepted: u64, overflowed: bool) -> Sample {
        Sample {
            consumer: consumer.into(),
            round,
            secs: 1.0,
            accepted,
            queue_full: u64::from(overflowed),
            ..Sample::default()
        }
    }

    fn udp64(rounds: &[(&[u64], &[u64])]) -> Measured {
        let scenario = scenario::scenario("udp-64").unwrap();
        let mut samples = vec![Vec::new(), Vec::new()];
        for (a, b) in rounds {
            for (i, (&x, &y)) in a.iter().zip(b.iter()).enumerate() {
                samples[0].push(sample("dispatch-1", i + 1, x, true));
                samples[1].push(sample("dispatch-0", i + 1, y, i != 1));
            }
        }
        Measured {
            scenario,
            consumers: vec!["dispatch-1", "dispatch-0"],
            samples,
        }
    }

    #[test]
    fn ratios_pair_by_round_not_by_medians() {
        // Round by round: 0.5, 1.0, 2.0; the medians alone would say 1.0 too,
        // but min and max show the spread.
        let m = udp64(&[(&[100, 200, 400], &[200, 200, 200])]);
        let r = paired(&m, "dispatch-1", "dispatch-0").unwrap();
        assert_eq!((r.median, r.min, r.max, r.n), (1.0, 0.5, 2.0, 3));
        // Rounds are matched by number, whatever the order of the samples.
        let mut shuffled = udp64(&[(&[100, 200, 400], &[200, 200, 200])]);
        shuffled.samples[1].reverse();
        assert_eq!(paired(&shuffled, "dispatch-1", "dispatch-0"), Some(r));
        assert!(paired(&m, "dispatch-1", "nobody").is_none());
    }

    #[test]
    fn a_missed_target_is_said_with_the_sender_limited_rounds() {
        let m = udp64(&[(&[80, 80, 80], &[100, 100, 100])]);
        let text = section(&[m], &[]);
        let line = text
            .lines()
            .find(|l| l.starts_with("- udp-64 dispatch-1 / dispatch-0"))
            .unwrap();
        assert!(line.contains("0.80 [0.80-0.80] over 3 rounds"), "{line}");
        assert!(line.contains("MISSED"), "{line}");
        assert!(
            line.contains("dispatch-0 sender-limited in 1/3 rounds"),
            "{line}"
        );
        assert!(
            text.contains("Not measured in this run: udp-64 dispatch-0 / c-classic"),
            "{text}"
        );
        assert!(
            text.contains("missed: udp-64 dispatch-1 / dispatch-0"),
            "{text}"
        );
    }

    fn point(consumer: &'static str, round: usize, added_p99_us: f64, rate: f64) -> LatencyPoint {
        let rtt = |p99: f64, rate| Rtt {
            sent: 100,
            received: 100,
            rate,
            p50_ns: Some(10_000.0),
            p99_ns: Some(p99),
            max_ns: None,
        };
        LatencyPoint {
            consumer,
            round,
            load_pct: 50,
            capacity: 2000.0,
            capacity_from: CapacityFrom::Udp64,
            client_ceiling: 5000.0,
            target_rate: 1000.0,
            queued: rtt(20_000.0 + added_p99_us * 1000.0, rate),
            direct: rtt(20_000.0, 1000.0),
        }
    }

    #[test]
    fn latency_ratio_pairs_added_p99_by_round_and_notes_a_short_rate() {
        let points = [
            point("core", 1, 10.0, 1000.0),
            point("core", 2, 20.0, 1000.0),
            point("dispatch-0", 1, 30.0, 1000.0),
            point("dispatch-0", 2, 20.0, 600.0),
        ];
        let (ratio, notes) = latency_ratio(&points, "dispatch-0", "core", 50);
        let ratio = ratio.unwrap();
        assert_eq!((ratio.min, ratio.max, ratio.n), (1.0, 3.0, 2));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("dispatch-0 (1/2 rounds short)"),
            "{notes:?}"
        );
        let text = section(&[], &points);
        assert!(
            text.contains("added p99 of dispatch-0 / of core: 2.00 [1.00-3.00] over 2 rounds, target <= 2.00x: met"),
            "{text}"
        );
    }
}
