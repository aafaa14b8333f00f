//! `cargo xtask bench --callgrind PACKETS [--callgrind-size S]...`: each
//! consumer's user-space instructions and simulated cache misses per packet,
//! counted by valgrind's callgrind. Unlike packets per second, the figures do
//! not move with the host's load, so a change of a few percent in the
//! per-packet path shows in them.
//!
//! Each consumer runs twice under callgrind (with its cache simulator)
//! against a saturated queue of UDP datagrams of each size asked for, until it
//! has accepted about `PACKETS`, then about twice that. The difference of the
//! two runs' totals over the difference of their packet counts (as the
//! consumer counted them) is the cost of one more packet: starting, binding
//! and exiting cancel out. A run that falls short of its packets (the flood
//! of a loaded host sometimes does), or a second run that did not see clearly
//! more packets than the first, is run again.
//!
//! The simulated caches see only the consumer's own loads and stores, not the
//! kernel's: the bytes `recv` copies into the consumer's buffer are not
//! counted as writes, and the lines they evict are not seen to go.

use crate::consumer::{self, Consumer, Programs};
use crate::measure;
use crate::options::Options;
use crate::running::{self, Running};
use crate::scenario;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use xtask_support::cmd::{find_program, Result};

/// The consumers measured: those of the UDP scenarios but the Python ones,
/// the first (the classic C one) the baseline of the ratios.
pub fn consumers() -> Vec<&'static str> {
    scenario::ALL
        .iter()
        .copied()
        .filter(|name| !consumer::is_python(name))
        .collect()
}

/// The consumers of [`consumers`] that `opts` asks for (all when it names
/// none), and always the first, the baseline of the ratios; and the
/// variants it names.
pub fn consumers_of(opts: &Options) -> Vec<&'static str> {
    let named = |c: &str| opts.consumers.iter().any(|w| w == c);
    consumers()
        .into_iter()
        .enumerate()
        .filter(|(i, c)| *i == 0 || opts.consumers.is_empty() || named(c))
        .map(|(_, c)| c)
        .chain(scenario::VARIANTS.iter().copied().filter(|c| named(c)))
        .collect()
}

/// The CPU the consumer runs on (the sender has the other).
const CONSUMER_CPU: &str = "1";

/// Packets a consumer accepts per second under callgrind, at the least, for
/// the time limit of one run.
const SLOWEST_PPS: u64 = 1_000;

/// Times one run is tried before the measurement fails.
pub const ATTEMPTS: u32 = 3;

/// The longest one run may take to accept `packets`.
pub fn run_limit(packets: u64) -> Duration {
    Duration::from_secs(30 + packets / SLOWEST_PPS)
}

/// The events counted, in the order of the report's columns: instructions,
/// then first-level data cache read and write misses, then last-level ones.
pub const EVENTS: [&str; 5] = ["Ir", "D1mr", "D1mw", "DLmr", "DLmw"];

/// The totals of one run: the consumer's packet count and [`EVENTS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Totals {
    packets: u64,
    events: [u64; EVENTS.len()],
}

/// One consumer's two runs at one size.
#[derive(Debug, Clone)]
struct Counted {
    name: &'static str,
    runs: [Totals; 2],
}

impl Counted {
    /// Each of [`EVENTS`] per packet, when the second run saw more packets.
    /// A count of misses may come out a little below zero: the misses of
    /// starting and exiting vary a little from run to run, and a consumer
    /// that misses nothing per packet shows that noise alone.
    fn per_packet(&self) -> Option<[f64; EVENTS.len()]> {
        let [first, second] = self.runs;
        let packets = second.packets.checked_sub(first.packets)?;
        if packets == 0 {
            return None;
        }
        let mut per = [0.0; EVENTS.len()];
        for (i, p) in per.iter_mut().enumerate() {
            *p = (second.events[i] as f64 - first.events[i] as f64) / packets as f64;
        }
        Some(per)
    }
}

/// Whether a second run of `second` packets is far enough past a first of
/// `first` for the difference to be the cost of packets: at least half the
/// packets asked for more.
fn enough_apart(first: u64, second: u64, asked: u64) -> bool {
    second >= first + asked / 2
}

/// Measures every consumer of `names` at every size of `sizes` and returns
/// the report (markdown).
pub fn run(
    programs: &Programs,
    names: &[&'static str],
    packets: u64,
    sizes: &[usize],
    segments: u32,
) -> Result<String> {
    let valgrind = find_program("valgrind")
        .ok_or("bench: --callgrind needs valgrind (apt-get install valgrind)")?;
    let dir = programs.dir.join("..").join("callgrind");
    fs::create_dir_all(&dir)?;
    running::set_udp_queues(1)?;
    let mut runner = Runner {
        programs,
        valgrind,
        dir,
        segments,
        caches: String::new(),
    };
    let mut tables = Vec::new();
    for &size in sizes {
        let mut counted = Vec::new();
        for &name in names {
            let first = attempt(|| runner.once(name, size, 1, packets))?;
            let second = attempt(|| {
                let second = runner.once(name, size, 2, 2 * packets)?;
                if enough_apart(first.packets, second.packets, packets) {
                    Ok(second)
                } else {
                    Err(format!(
                        "bench: callgrind {name} {size} B: run 2 counted {} packets, \
                         too few past run 1's {}",
                        second.packets, first.packets
                    )
                    .into())
                }
            })?;
            counted.push(Counted {
                name,
                runs: [first, second],
            });
        }
        tables.push((size, counted));
    }
    Ok(report(packets, &tables, &runner.caches))
}

/// What every run needs, and the caches the first one simulated.
struct Runner<'a> {
    programs: &'a Programs,
    valgrind: PathBuf,
    dir: PathBuf,
    segments: u32,
    caches: String,
}

impl Runner<'_> {
    /// Runs consumer `name` under callgrind until it has accepted about
    /// `target` datagrams of `size` bytes; its totals.
    fn once(&mut self, name: &'static str, size: usize, run: usize, target: u64) -> Result<Totals> {
        let plain = self.programs.consumer(name);
        let out = self.dir.join(format!("{name}-{size}-{run}.out"));
        let consumer = Consumer {
            program: self.valgrind.clone(),
            args: [
                "--tool=callgrind".to_string(),
                "--cache-sim=yes".to_string(),
                format!("--callgrind-out-file={}", out.display()),
                plain.program.display().to_string(),
            ]
            .into_iter()
            .chain(plain.args.iter().cloned())
            .collect(),
            ..plain.clone()
        };
        let running = Running::start(self.programs, &consumer, CONSUMER_CPU, false)?;
        let deadline = Instant::now() + run_limit(target);
        let seen = measure::flood_until(self.programs, target, size, self.segments, deadline)?;
        let count = running.stop(name)?;
        if seen < target {
            return Err(format!(
                "bench: callgrind {name} {size} B: {seen} of {target} packets in {}s",
                run_limit(target).as_secs()
            )
            .into());
        }
        let (events, desc) = totals(&out)?;
        if self.caches.is_empty() {
            self.caches = desc;
        }
        eprintln!(
            "bench: callgrind {name} {size} B run {run}: {count} packets, {events:?} ({})",
            EVENTS.join(" ")
        );
        Ok(Totals {
            packets: count,
            events,
        })
    }
}

/// `once()`, tried up to [`ATTEMPTS`] times while it fails.
fn attempt<T>(mut once: impl FnMut() -> Result<T>) -> Result<T> {
    let mut tries = 1;
    loop {
        match once() {
            Ok(value) => return Ok(value),
            Err(err) if tries < ATTEMPTS => {
                eprintln!("{err}; trying again ({}/{ATTEMPTS})", tries + 1);
                tries += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

/// The totals of [`EVENTS`] in a callgrind output file, and the caches it
/// simulated (its `desc:` lines).
fn totals(out: &Path) -> Result<([u64; EVENTS.len()], String)> {
    let text = fs::read_to_string(out)?;
    parse_totals(&text).ok_or_else(|| {
        format!(
            "bench: no totals of {} in {}",
            EVENTS.join(" "),
            out.display()
        )
        .into()
    })
}

fn parse_totals(text: &str) -> Option<([u64; EVENTS.len()], String)> {
    let names: Vec<&str> = text
        .lines()
        .find_map(|l| l.strip_prefix("events:"))?
        .split_whitespace()
        .collect();
    let values: Vec<u64> = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })?
        .split_whitespace()
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    let mut events = [0; EVENTS.len()];
    for (slot, event) in events.iter_mut().zip(EVENTS) {
        // A count left out at the end of the line is 0.
        let at = names.iter().position(|n| *n == event)?;
        *slot = values.get(at).copied().unwrap_or(0);
    }
    let desc = text
        .lines()
        .filter_map(|l| l.strip_prefix("desc:"))
        .map(str::trim)
        .filter(|d| d.contains("cache"))
        .collect::<Vec<_>>()
        .join("; ");
    Some((events, desc))
}

fn report(packets: u64, tables: &[(usize, Vec<Counted>)], caches: &str) -> String {
    let mut text = format!(
        "## User-space instructions and cache misses per packet (callgrind)\n\n\
         UDP datagrams into a saturated queue; each consumer ran twice under \
         `valgrind --tool=callgrind --cache-sim=yes`, to about {packets} and {} \
         accepted packets; per packet = the difference of the totals over the \
         difference of the packet counts. Kernel work is not counted, and the \
         simulated caches see only the consumer's own loads and stores (not the \
         kernel's copy into its buffer). Simulated caches: {}.\n",
        2 * packets,
        if caches.is_empty() { "-" } else { caches }
    );
    for (size, counted) in tables {
        text += &format!(
            "\n### UDP {size} B\n\n\
             | consumer | packets (runs 1, 2) | instructions | ratio to {} | D1 read misses | D1 write misses | LL read misses | LL write misses |\n\
             |---|---:|---:|---:|---:|---:|---:|---:|\n",
            counted.first().map_or("the first", |c| c.name)
        );
        let base = counted.first().and_then(Counted::per_packet);
        for c in counted {
            let per = c.per_packet();
            let cell = |i: usize, digits: usize| per.map_or("-".into(), |p| fixed(p[i], digits));
            let ratio = per
                .zip(base)
                .map_or("-".into(), |(p, b)| format!("{:.2}x", p[0] / b[0]));
            text += &format!(
                "| {} | {}, {} | {} | {ratio} | {} | {} | {} | {} |\n",
                c.name,
                c.runs[0].packets,
                c.runs[1].packets,
                cell(0, 0),
                cell(1, 2),
                cell(2, 2),
                cell(3, 2),
                cell(4, 2),
            );
        }
    }
    text
}

/// `value` with `digits` decimals; noise just below zero prints as 0, not
/// -0.
fn fixed(value: f64, digits: usize) -> String {
    let text = format!("{value:.digits$}");
    match text.strip_prefix('-') {
        Some(abs) if abs.chars().all(|c| c == '0' || c == '.') => abs.to_string(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUT: &str = "version: 1\n\
        desc: I1 cache: 32768 B, 64 B, 8-way associative\n\
        desc: D1 cache: 32768 B, 64 B, 8-way associative\n\
        desc: LL cache: 33554432 B, 64 B, 16-way associative\n\
        events: Ir Dr Dw I1mr D1mr D1mw ILmr DLmr DLmw\n\
        fl=x\n1 5\n\
        summary: 123456 50 40 7 6 5 4 3\n\
        totals: 1\n";

    #[test]
    fn the_totals_are_read_by_event_name() {
        let (events, desc) = parse_totals(OUT).unwrap();
        // DLmw is left out of the line: 0.
        assert_eq!(events, [123456, 6, 5, 3, 0]);
        assert!(desc.starts_with("I1 cache: 32768 B"), "{desc}");
        assert!(desc.contains("LL cache: 33554432 B"), "{desc}");
        assert!(parse_totals("events: Ir\n").is_none());
        // Instructions alone (no cache simulation) do not make a table.
        assert!(parse_totals("events: Ir\nsummary: 5\n").is_none());
    }

    #[test]
    fn the_totals_are_read_from_a_file() {
        let dir = std::env::temp_dir().join(format!("bench-callgrind-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("a.out");
        fs::write(&out, OUT).unwrap();
        assert_eq!(totals(&out).unwrap().0[0], 123456);
        fs::write(&out, "events: Ir\n").unwrap();
        assert!(totals(&out).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    fn counted(packets: [u64; 2], ir: [u64; 2]) -> Counted {
        let run = |i: usize| Totals {
            packets: packets[i],
            events: [ir[i], 10 * packets[i], 0, packets[i], 0],
        };
        Counted {
            name: "core",
            runs: [run(0), run(1)],
        }
    }

    #[test]
    fn per_packet_is_the_difference_of_two_runs() {
        let c = counted([1_000, 3_000], [5_000_000, 6_400_000]);
        assert_eq!(c.per_packet(), Some([700.0, 10.0, 0.0, 1.0, 0.0]));
        assert_eq!(counted([3_000, 1_000], [5, 6]).per_packet(), None);
        // Fewer misses in the longer run: noise, shown as it is.
        let mut noisy = counted([1_000, 2_000], [5_000, 6_000]);
        noisy.runs[1].events[1] = noisy.runs[0].events[1] - 10;
        assert_eq!(noisy.per_packet().unwrap()[1], -0.01);
        assert_eq!(counted([1_000, 1_000], [5, 6]).per_packet(), None);
        let text = report(1_000, &[(1400, vec![c])], "D1 cache: 32768 B");
        assert!(text.contains("### UDP 1400 B"), "{text}");
        assert!(
            text.contains("| core | 1000, 3000 | 700 | 1.00x | 10.00 | 0.00 | 1.00 | 0.00 |"),
            "{text}"
        );
        assert!(
            text.contains("Simulated caches: D1 cache: 32768 B."),
            "{text}"
        );
    }

    #[test]
    fn noise_below_zero_prints_as_zero() {
        assert_eq!(fixed(-0.001, 2), "0.00");
        assert_eq!(fixed(-0.25, 2), "-0.25");
        assert_eq!(fixed(812.4, 0), "812");
    }

    #[test]
    fn a_second_run_counts_only_well_past_the_first() {
        assert!(enough_apart(1_000, 1_500, 1_000));
        assert!(!enough_apart(1_000, 1_499, 1_000));
        assert!(!enough_apart(2_000, 1_000, 1_000));
    }

    #[test]
    fn a_consumer_filter_keeps_the_baseline() {
        let args = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let opts =
            Options::parse(&args(&["--callgrind", "100", "--consumer", "nfq,core"])).unwrap();
        assert_eq!(consumers_of(&opts), ["c-classic", "core", "nfq"]);
        let all = Options::parse(&args(&["--callgrind", "100"])).unwrap();
        assert_eq!(consumers_of(&all), consumers());
        let variant =
            Options::parse(&args(&["--callgrind", "100", "--consumer", "core-at16"])).unwrap();
        assert_eq!(consumers_of(&variant), ["c-classic", "core-at16"]);
    }

    #[test]
    fn a_failing_run_is_tried_again_up_to_the_limit() {
        let mut calls = 0;
        let value = attempt(|| {
            calls += 1;
            if calls < ATTEMPTS {
                Err("short".into())
            } else {
                Ok(calls)
            }
        })
        .unwrap();
        assert_eq!(value, ATTEMPTS);
        let mut calls = 0;
        let err = attempt(|| -> Result<()> {
            calls += 1;
            Err("short".into())
        })
        .unwrap_err();
        assert_eq!(calls, ATTEMPTS);
        assert_eq!(err.to_string(), "short");
    }
}
