//! The benchmark's chart, one SVG: a bar panel per throughput scenario, the
//! scaling curve (pps against handler work per packet, a line per consumer),
//! and the latency the queue adds per consumer and load.

use crate::latency::LatencyPoint;
use crate::measure::Measured;
use crate::report::{latency_points, rows, Row};
use crate::scenario::LATENCY_LOADS;
use crate::stats::Spread;
use crate::targets::paired;
use std::fmt::Write as _;

/// Every consumer's colour, in the order of the report.
const COLORS: &[(&str, &str)] = &[
    ("c-classic", "#7f7f7f"),
    ("c-batch", "#bcbd22"),
    ("core", "#1f77b4"),
    ("async", "#aec7e8"),
    ("nfq", "#9467bd"),
    ("dispatch-0", "#ff7f0e"),
    ("dispatch-1", "#d62728"),
    ("dispatch-2", "#2ca02c"),
    ("dispatch-2q", "#8c564b"),
    ("py-reference", "#e377c2"),
    ("py-nfqueue", "#17becf"),
    ("py-nfqueue-batch", "#9edae5"),
];

fn color(consumer: &str) -> &'static str {
    COLORS
        .iter()
        .find(|(c, _)| *c == consumer)
        .map_or("#000000", |(_, color)| color)
}

const LEFT: f64 = 70.0;
const PANEL_H: f64 = 260.0;
/// Room between panels for a panel's labels and the next one's title.
const PANEL_GAP: f64 = 70.0;

/// The whole chart.
pub fn chart(measured: &[Measured], points: &[LatencyPoint]) -> String {
    let bars: Vec<&Measured> = measured
        .iter()
        .filter(|m| m.scenario.busy_us == 0)
        .collect();
    let curves: Vec<&Measured> = measured.iter().filter(|m| m.scenario.busy_us > 0).collect();
    let (bar, gap) = (64.0, 16.0);
    let most = bars.iter().map(|m| m.consumers.len()).max().unwrap_or(0) as f64;
    let width = (LEFT + most * (bar + gap) + 40.0).max(820.0);
    let panels = bars.len() + usize::from(!curves.is_empty()) + usize::from(!points.is_empty());
    let height = 40.0 + panels as f64 * (PANEL_H + PANEL_GAP);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"22\" font-size=\"15\">nfqueue benchmark: median per consumer \
         (whiskers: min-max), ratio to the first, paired by round</text>\n"
    );
    let mut y0 = 60.0;
    for m in bars {
        bar_panel(&mut svg, &rows(m), y0, width, (bar, gap));
        y0 += PANEL_H + PANEL_GAP;
    }
    if !curves.is_empty() {
        scaling_panel(&mut svg, &curves, y0, width);
        y0 += PANEL_H + PANEL_GAP;
    }
    if !points.is_empty() {
        latency_panel(&mut svg, points, y0, width);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Horizontal grid lines with labels at `ticks` (value, y).
fn grid(svg: &mut String, ticks: &[(String, f64)], width: f64) {
    for (label, y) in ticks {
        let _ = writeln!(
            svg,
            "<line x1=\"{LEFT}\" y1=\"{y:.1}\" x2=\"{:.0}\" y2=\"{y:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{:.0}\" y=\"{:.1}\" text-anchor=\"end\">{label}</text>",
            width - 20.0,
            LEFT - 6.0,
            y + 4.0
        );
    }
}

fn title(svg: &mut String, text: &str, y0: f64) {
    let _ = writeln!(
        svg,
        "<text x=\"{LEFT}\" y=\"{:.0}\" font-size=\"13\" font-weight=\"bold\">{text}</text>",
        y0 - 8.0
    );
}

fn kilo(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else {
        format!("{:.1}k", v / 1000.0)
    }
}

/// One scenario: a bar per consumer at its median, a whisker from min to max.
fn bar_panel(svg: &mut String, these: &[Row], y0: f64, width: f64, (bar, gap): (f64, f64)) {
    let Some(first) = these.first() else { return };
    let base = y0 + PANEL_H;
    let (step, scale_max) = linear_axis(these.iter().map(|r| r.max).fold(0.0, f64::max) * 1.08);
    let unit = first.unit();
    title(svg, &format!("{} ({unit})", first.scenario), y0);
    let ticks: Vec<(String, f64)> = (0..)
        .map(|tick| f64::from(tick) * step)
        .take_while(|v| *v <= scale_max * 1.0001)
        .map(|v| {
            let label = if unit == "pps" {
                format!("{:.0}k", v / 1000.0)
            } else {
                format!("{v:.1}")
            };
            (label, base - PANEL_H * v / scale_max)
        })
        .collect();
    grid(svg, &ticks, width);
    for (i, r) in these.iter().enumerate() {
        let x = LEFT + gap / 2.0 + i as f64 * (bar + gap);
        let h = PANEL_H * r.median / scale_max;
        let y = |v: f64| base - PANEL_H * v / scale_max;
        let cx = x + bar / 2.0;
        let value = if unit == "pps" {
            kilo(r.median)
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

/// A round step (1, 2 or 5 times a power of 10) that divides `0..=max` into
/// about 4 parts, and the top of the axis: the first step at or above `max`.
fn linear_axis(max: f64) -> (f64, f64) {
    let rough = max.max(1e-9) / 4.0;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * power);
    (step, (max / step).ceil().max(1.0) * step)
}

/// Round values for a log axis from `lo` to `hi`: 1, 2 and 5 times powers of 10.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let v = decade * m;
            if (lo..=hi).contains(&v) {
                ticks.push(v);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// pps against work per packet, both on log scales, a line per consumer, each
/// point labelled with its median (and its speed-up over 1 worker).
fn scaling_panel(svg: &mut String, curves: &[&Measured], y0: f64, width: f64) {
    let base = y0 + PANEL_H;
    title(
        svg,
        "scaling: pps against work per packet, log scales (in brackets: ratio to 1 worker)",
        y0,
    );
    let medians = |m: &Measured, consumer: &str| {
        m.of(consumer).and_then(|runs| {
            Spread::of(runs.iter().map(|s| s.metric(m.scenario.traffic)).collect())
        })
    };
    let all: Vec<f64> = curves
        .iter()
        .flat_map(|m| m.consumers.iter().filter_map(|c| medians(m, c)))
        .flat_map(|s| [s.min, s.max])
        .filter(|v| *v > 0.0)
        .collect();
    let (lo, hi) = (
        all.iter().copied().fold(f64::INFINITY, f64::min) / 1.5,
        all.iter().copied().fold(0.0, f64::max) * 1.5,
    );
    if !(lo.is_finite() && hi > lo) {
        return;
    }
    let y = |v: f64| base - PANEL_H * (v.ln() - lo.ln()) / (hi.ln() - lo.ln());
    let (x_lo, x_hi) = (3.0f64, 80.0f64);
    let plot_w = width - LEFT - 200.0;
    let x = |us: f64| LEFT + 20.0 + plot_w * (us.ln() - x_lo.ln()) / (x_hi.ln() - x_lo.ln());
    let ticks: Vec<(String, f64)> = log_ticks(lo, hi)
        .into_iter()
        .map(|v| (kilo(v), y(v)))
        .collect();
    grid(svg, &ticks, width - 180.0);
    for m in curves {
        let us = f64::from(m.scenario.busy_us);
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{} us</text>",
            x(us),
            base + 16.0,
            m.scenario.busy_us
        );
    }
    let mut consumers: Vec<&str> = Vec::new();
    for c in curves.iter().flat_map(|m| m.consumers.iter()) {
        if !consumers.contains(c) {
            consumers.push(c);
        }
    }
    // Point labels, placed right of their points and pushed apart where
    // they would overlap: (x, y, consumer, text).
    let mut labels: Vec<(f64, f64, &str, String)> = Vec::new();
    for (i, consumer) in consumers.iter().enumerate() {
        let line: Vec<(f64, Spread, Option<Spread>)> = curves
            .iter()
            .filter_map(|m| {
                let spread = medians(m, consumer)?;
                let ratio = (*consumer != "dispatch-1")
                    .then(|| paired(m, consumer, "dispatch-1"))
                    .flatten();
                Some((f64::from(m.scenario.busy_us), spread, ratio))
            })
            .collect();
        let path: Vec<String> = line
            .iter()
            .map(|(us, s, _)| format!("{:.1},{:.1}", x(*us), y(s.median)))
            .collect();
        let _ = writeln!(
            svg,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>",
            path.join(" "),
            color(consumer)
        );
        for (us, s, ratio) in &line {
            let (cx, cy) = (x(*us), y(s.median));
            let _ = writeln!(
                svg,
                "<line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"{}\"/>\
                 <circle cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"3.5\" fill=\"{}\"/>",
                y(s.min),
                y(s.max),
                color(consumer),
                color(consumer),
            );
            let text = match ratio {
                Some(r) => format!("{} ({:.2}x)", kilo(s.median), r.median),
                None => kilo(s.median),
            };
            labels.push((cx + 7.0, cy + 4.0, consumer, text));
        }
        legend(svg, consumer, width - 170.0, y0 + 14.0 + 16.0 * i as f64);
    }
    labels.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    for i in 1..labels.len() {
        let (prev_x, prev_y) = (labels[i - 1].0, labels[i - 1].1);
        if labels[i].0 == prev_x && labels[i].1 < prev_y + 13.0 {
            labels[i].1 = prev_y + 13.0;
        }
    }
    for (lx, ly, consumer, text) in labels {
        let _ = writeln!(
            svg,
            "<text x=\"{lx:.1}\" y=\"{ly:.1}\" fill=\"{}\">{text}</text>",
            color(consumer)
        );
    }
}

fn legend(svg: &mut String, consumer: &str, x: f64, y: f64) {
    let _ = writeln!(
        svg,
        "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"12\" height=\"10\" fill=\"{}\"/>\
         <text x=\"{:.1}\" y=\"{y:.1}\">{consumer}</text>",
        y - 9.0,
        color(consumer),
        x + 16.0
    );
}

/// Added round-trip time per load: a bar per consumer at the median added p99
/// (whisker min-max over the rounds), a black tick at the median added p50.
fn latency_panel(svg: &mut String, points: &[LatencyPoint], y0: f64, width: f64) {
    let base = y0 + PANEL_H;
    title(
        svg,
        "latency: round trip added by the queue, us (bars: p99, whiskers min-max; tick: p50)",
        y0,
    );
    let mut consumers: Vec<&str> = Vec::new();
    for p in points {
        if !consumers.contains(&p.consumer) {
            consumers.push(p.consumer);
        }
    }
    let us = |f: fn(&LatencyPoint) -> Option<f64>, consumer: &str, load: u32| {
        Spread::of(
            latency_points(points, consumer, load)
                .filter_map(f)
                .map(|ns| ns / 1000.0)
                .collect(),
        )
    };
    let (step, top) = linear_axis(
        points
            .iter()
            .filter_map(LatencyPoint::added_p99)
            .fold(1.0, f64::max)
            / 1000.0
            * 1.08,
    );
    let y = |v: f64| base - PANEL_H * v.clamp(0.0, top) / top;
    let ticks: Vec<(String, f64)> = (0..)
        .map(|t| f64::from(t) * step)
        .take_while(|v| *v <= top * 1.0001)
        .map(|v| (format!("{v:.0}"), y(v)))
        .collect();
    grid(svg, &ticks, width - 180.0);
    // The groups share the width left of the legend.
    let group = (width - LEFT - 200.0) / LATENCY_LOADS.len() as f64;
    let gap = 8.0;
    let bar = ((group - 40.0) / consumers.len().max(1) as f64 - gap).min(48.0);
    for (g, &load) in LATENCY_LOADS.iter().enumerate() {
        let gx = LEFT + 20.0 + g as f64 * group;
        let _ = writeln!(
            svg,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{load}% load</text>",
            gx + consumers.len() as f64 * (bar + gap) / 2.0,
            base + 16.0
        );
        for (i, consumer) in consumers.iter().enumerate() {
            let Some(p99) = us(LatencyPoint::added_p99, consumer, load) else {
                continue;
            };
            let x = gx + i as f64 * (bar + gap);
            let cx = x + bar / 2.0;
            let _ = writeln!(
                svg,
                "<rect x=\"{x:.1}\" y=\"{:.1}\" width=\"{bar}\" height=\"{:.1}\" fill=\"{}\"/>\
                 <line x1=\"{cx:.1}\" y1=\"{:.1}\" x2=\"{cx:.1}\" y2=\"{:.1}\" stroke=\"black\"/>\
                 <text x=\"{cx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{:.0}</text>",
                y(p99.median),
                base - y(p99.median),
                color(consumer),
                y(p99.min),
                y(p99.max),
                y(p99.max) - 4.0,
                p99.median
            );
            if let Some(p50) = us(LatencyPoint::added_p50, consumer, load) {
                let _ = writeln!(
                    svg,
                    "<line x1=\"{x:.1}\" y1=\"{py:.1}\" x2=\"{:.1}\" y2=\"{py:.1}\" stroke=\"black\" stroke-width=\"2\"/>",
                    x + bar,
                    py = y(p50.median)
                );
            }
        }
    }
    for (i, consumer) in consumers.iter().enumerate() {
        legend(svg, consumer, width - 170.0, y0 + 14.0 + 16.0 * i as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_axes_have_round_steps_and_cover_the_maximum() {
        assert_eq!(linear_axis(252_000.0), (100_000.0, 300_000.0));
        assert_eq!(linear_axis(10_598.0), (5_000.0, 15_000.0));
        assert_eq!(linear_axis(3.7), (1.0, 4.0));
    }

    #[test]
    fn log_ticks_are_round_and_within_range() {
        assert_eq!(
            log_ticks(15_000.0, 300_000.0),
            vec![20_000.0, 50_000.0, 100_000.0, 200_000.0]
        );
        assert!(log_ticks(3.0, 2.0).is_empty());
    }

    #[test]
    fn every_consumer_has_its_own_colour() {
        for name in crate::scenario::SCENARIOS
            .iter()
            .flat_map(|s| s.consumers.iter())
        {
            assert_ne!(color(name), "#000000", "{name} has no colour");
        }
        let mut colours: Vec<&str> = COLORS.iter().map(|c| c.1).collect();
        colours.sort_unstable();
        colours.dedup();
        assert_eq!(colours.len(), COLORS.len());
    }
}
