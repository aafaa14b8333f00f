//! `cargo xtask bench --callgrind PACKETS`: each consumer's user-space
//! instructions per packet, counted by valgrind's callgrind. Unlike packets per
//! second, the figure does not move with the host's noise, so a change of a
//! few percent in the per-packet path shows in it.
//!
//! Each consumer runs twice under callgrind against a saturated queue, until it
//! has accepted about `PACKETS`, then about twice that. The difference of the
//! two runs' instruction totals over the difference of their packet counts
//! (as the consumer counted them) is the cost of one more packet: starting,
//! binding and exiting cancel out.

use crate::consumer::{self, Consumer, Programs};
use crate::measure;
use crate::running::{self, Running};
use crate::scenario;
use std::fs;
use std::path::Path;
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

/// The CPU the consumer runs on (the sender has the other).
const CONSUMER_CPU: &str = "1";

/// Packets a consumer accepts per second under callgrind, at the least, for
/// the time limit of one run.
const SLOWEST_PPS: u64 = 1_000;

/// The longest one run may take to accept `packets`.
pub fn run_limit(packets: u64) -> Duration {
    Duration::from_secs(30 + packets / SLOWEST_PPS)
}

/// One consumer's two runs.
struct Counted {
    name: &'static str,
    packets: [u64; 2],
    instructions: [u64; 2],
}

impl Counted {
    fn per_packet(&self) -> Option<f64> {
        let packets = self.packets[1].checked_sub(self.packets[0])?;
        let instructions = self.instructions[1].checked_sub(self.instructions[0])?;
        (packets > 0).then(|| instructions as f64 / packets as f64)
    }
}

/// Measures every consumer and returns the report (markdown).
pub fn run(programs: &Programs, packets: u64, segments: u32) -> Result<String> {
    let valgrind = find_program("valgrind")
        .ok_or("bench: --callgrind needs valgrind (apt-get install valgrind)")?;
    let dir = programs.dir.join("..").join("callgrind");
    fs::create_dir_all(&dir)?;
    running::set_udp_queues(1)?;
    let mut counted = Vec::new();
    for name in consumers() {
        let plain = programs.consumer(name);
        let mut one = Counted {
            name,
            packets: [0; 2],
            instructions: [0; 2],
        };
        for (run, target) in [packets, 2 * packets].into_iter().enumerate() {
            let out = dir.join(format!("{name}-{}.out", run + 1));
            let consumer = Consumer {
                program: valgrind.clone(),
                args: [
                    "--tool=callgrind".to_string(),
                    format!("--callgrind-out-file={}", out.display()),
                    plain.program.display().to_string(),
                ]
                .into_iter()
                .chain(plain.args.iter().cloned())
                .collect(),
                ..plain.clone()
            };
            let running = Running::start(programs, &consumer, CONSUMER_CPU, false)?;
            let deadline = Instant::now() + run_limit(target);
            let seen = measure::flood_until(programs, target, segments, deadline)?;
            let count = running.stop(name)?;
            if seen < target {
                return Err(format!(
                    "bench: callgrind {name}: {seen} of {target} packets in {}s",
                    run_limit(target).as_secs()
                )
                .into());
            }
            one.packets[run] = count;
            one.instructions[run] = instructions(&out)?;
            eprintln!(
                "bench: callgrind {name} run {}: {count} packets, {} instructions",
                run + 1,
                one.instructions[run]
            );
        }
        counted.push(one);
    }
    Ok(report(packets, &counted))
}

/// The total of the `Ir` event in a callgrind output file.
fn instructions(out: &Path) -> Result<u64> {
    let text = fs::read_to_string(out)?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("bench: no instruction total in {}", out.display()).into())
}

fn report(packets: u64, counted: &[Counted]) -> String {
    let mut text = format!(
        "## User-space instructions per packet (callgrind)\n\n\
         UDP 64 B into a saturated queue; each consumer ran twice under \
         `valgrind --tool=callgrind`, to about {packets} and {} accepted packets; \
         per packet = the difference of the instruction totals over the difference \
         of the packet counts. Kernel work is not counted.\n\n\
         | consumer | packets (runs 1, 2) | instructions per packet | ratio to {} |\n\
         |---|---:|---:|---:|\n",
        2 * packets,
        counted.first().map_or("the first", |c| c.name)
    );
    let base = counted.first().and_then(Counted::per_packet);
    for c in counted {
        let per = c.per_packet();
        let cell = per.map_or("-".into(), |p| format!("{p:.0}"));
        let ratio = per
            .zip(base)
            .map_or("-".into(), |(p, b)| format!("{:.2}x", p / b));
        text += &format!(
            "| {} | {}, {} | {cell} | {ratio} |\n",
            c.name, c.packets[0], c.packets[1]
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_is_read_from_the_summary_line() {
        let dir = std::env::temp_dir().join(format!("bench-callgrind-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let out = dir.join("a.out");
        fs::write(
            &out,
            "version: 1\nevents: Ir\nfl=x\n1 5\nsummary: 123456\ntotals: 1\n",
        )
        .unwrap();
        assert_eq!(instructions(&out).unwrap(), 123456);
        fs::write(&out, "events: Ir\n").unwrap();
        assert!(instructions(&out).is_err());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn per_packet_is_the_difference_of_two_runs() {
        let c = Counted {
            name: "core",
            packets: [1_000, 3_000],
            instructions: [5_000_000, 6_400_000],
        };
        assert_eq!(c.per_packet(), Some(700.0));
        let backwards = Counted {
            packets: [3_000, 1_000],
            ..c
        };
        assert_eq!(backwards.per_packet(), None);
        let text = report(1_000, &[c]);
        assert!(
            text.contains("| core | 1000, 3000 | 700 | 1.00x |"),
            "{text}"
        );
    }
}
