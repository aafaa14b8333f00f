//! Measuring: one consumer once (start it, read the counters, make traffic,
//! read them again, stop it), every consumer of a throughput scenario round
//! by round, and the soak run.

use crate::consumer::{Consumer, Programs};
use crate::options::Options;
use crate::running::{
    queue_lines, set_udp_queues, QueueLine, Running, TCP_PORT, UDP_DST, UDP_PORT,
};
use crate::scenario::{Scenario, Traffic, SENDER_CPU};
use std::fs;
use std::io::Read;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};
use xtask_support::cmd::{self, ChildGuard, Result};

/// The name the dispatcher gives its receive threads (`nfq-recv-QUEUE`).
const RECV_THREAD: &str = "nfq-recv";

/// The samples of one throughput scenario: `samples[i]` are those of
/// `consumers[i]`, one per round.
#[derive(Debug)]
pub struct Measured {
    pub scenario: &'static Scenario,
    pub consumers: Vec<&'static str>,
    pub samples: Vec<Vec<Sample>>,
}

impl Measured {
    /// The samples of `consumer`, if it ran.
    pub fn of(&self, consumer: &str) -> Option<&[Sample]> {
        let i = self.consumers.iter().position(|c| *c == consumer)?;
        Some(&self.samples[i])
    }
}

/// The numbers of one run of one consumer.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub consumer: String,
    pub round: usize,
    /// Length of the measured window (while traffic ran).
    pub secs: f64,
    /// Packets the source sent (UDP) in that window.
    pub sent: u64,
    /// Packets counted by the rule after the queue.
    pub accepted: u64,
    /// Bytes counted by the rule after the queue.
    pub accepted_bytes: u64,
    /// The consumer's own count (printed on exit), whole run.
    pub consumer_count: u64,
    /// user+system time of the consumer process (all threads) in the window.
    pub proc_cpu: f64,
    /// Busy time (all but idle and iowait) of the consumer's CPUs in the window:
    /// includes the kworkers and softirqs that run there on its behalf.
    pub cpus_busy: f64,
    /// The kernel's drops: queue full, and socket (receive buffer) full.
    pub queue_full: u64,
    pub user_drops: u64,
    /// iperf3's received bits per second (TCP scenarios).
    pub tcp_bps: Option<f64>,
    /// user+system time of the consumer's receive threads (`nfq-recv*`) in the
    /// window; `None` for a consumer that has none.
    pub recv_cpu: Option<f64>,
    /// Packets queued to each of the consumer's queues in the window.
    pub queued: Vec<u64>,
}

impl Sample {
    pub fn accepted_pps(&self) -> f64 {
        self.accepted as f64 / self.secs
    }

    pub fn offered_pps(&self) -> f64 {
        self.sent as f64 / self.secs
    }

    /// Accepted packets per CPU-second of the consumer: its CPUs' busy time when
    /// it has them to itself (that counts the kernel's work on its behalf),
    /// else its own CPU time.
    pub fn pps_per_cpu(&self, exclusive_cpus: bool) -> f64 {
        let cpu = if exclusive_cpus {
            self.cpus_busy.max(self.proc_cpu)
        } else {
            self.proc_cpu
        };
        if cpu > 0.0 {
            self.accepted as f64 / cpu
        } else {
            0.0
        }
    }

    /// The number compared between consumers: accepted pps, or Gbit/s for TCP.
    pub fn metric(&self, traffic: Traffic) -> f64 {
        match traffic {
            Traffic::Tcp { .. } => self.tcp_bps.unwrap_or(0.0) / 1e9,
            Traffic::Udp { .. } | Traffic::Latency => self.accepted_pps(),
        }
    }

    /// CPU nanoseconds of the receive threads per accepted packet.
    pub fn recv_ns_per_packet(&self) -> Option<f64> {
        let cpu = self.recv_cpu?;
        (self.accepted > 0).then(|| cpu * 1e9 / self.accepted as f64)
    }

    /// The share of the packets that went to the first queue, when the consumer
    /// has several.
    pub fn first_queue_share(&self) -> Option<f64> {
        let total: u64 = self.queued.iter().sum();
        (self.queued.len() > 1 && total > 0).then(|| self.queued[0] as f64 / total as f64)
    }

    pub fn summary(&self, traffic: Traffic) -> String {
        let main = match traffic {
            Traffic::Udp { .. } | Traffic::Latency => format!(
                "{:.0} pps accepted of {:.0} offered",
                self.accepted_pps(),
                self.offered_pps()
            ),
            Traffic::Tcp { .. } => format!(
                "{:.2} Gbit/s, {:.0} queued pps",
                self.metric(traffic),
                self.accepted_pps()
            ),
        };
        let recv = self.recv_ns_per_packet().map_or(String::new(), |ns| {
            format!(", receive threads {ns:.0} ns/packet")
        });
        let split = if self.queued.len() > 1 {
            format!("; queued per queue {:?}", self.queued)
        } else {
            String::new()
        };
        format!(
            "{main}; consumer cpu {:.2}s{recv}, its cpus busy {:.2}s of {:.2}s; drops: queue full {}, socket {}{split}",
            self.proc_cpu, self.cpus_busy, self.secs, self.queue_full, self.user_drops
        )
    }
}

/// Counters read before and after the traffic.
#[derive(Debug, Clone)]
struct Snapshot {
    at: Instant,
    packets: u64,
    bytes: u64,
    proc_cpu: f64,
    cpus_busy: f64,
    recv_cpu: Option<f64>,
    queues: Vec<QueueLine>,
}

fn snapshot(pid: u32, cpus: &[usize], traffic: Traffic, queues: u16) -> Result<Snapshot> {
    let (packets, bytes) = accept_counter(traffic)?;
    Ok(Snapshot {
        at: Instant::now(),
        packets,
        bytes,
        proc_cpu: process_cpu(pid)?,
        cpus_busy: cpus_busy(cpus)?,
        recv_cpu: threads_cpu(pid, RECV_THREAD)?,
        queues: queue_lines(queues)?,
    })
}

/// Measures one consumer once, for `secs` seconds of traffic.
pub fn one(
    programs: &Programs,
    scenario: &Scenario,
    consumer: &Consumer,
    secs: f64,
    segments: u32,
) -> Result<Sample> {
    let gso = matches!(scenario.traffic, Traffic::Tcp { gso: true });
    if matches!(scenario.traffic, Traffic::Udp { .. }) {
        set_udp_queues(consumer.queues)?;
    }
    let running = Running::start(programs, consumer, scenario.consumer_cpus, gso)?;
    let cpus = parse_cpus(scenario.consumer_cpus);
    let pid = running.pid();
    let before = snapshot(pid, &cpus, scenario.traffic, consumer.queues)?;
    let (sent, tcp_bps) = match scenario.traffic {
        Traffic::Udp { size, sources } => {
            let sender = Sender {
                size,
                sources,
                segments,
                // Where the consumer may use CPU 0 too, the sender yields it.
                nice: scenario.shares_sender_cpu(),
            };
            (sender.run(programs, secs, None)?.0, None)
        }
        Traffic::Tcp { .. } => (0, Some(iperf3(secs)?)),
        Traffic::Latency => unreachable!("the latency scenario measures no throughput"),
    };
    let after = snapshot(pid, &cpus, scenario.traffic, consumer.queues)?;
    let consumer_count = running.stop(consumer.name)?;
    let queued = after
        .queues
        .iter()
        .map(|a| {
            let b = before.queues.iter().find(|b| b.queue == a.queue);
            a.id_sequence.wrapping_sub(b.map_or(0, |b| b.id_sequence))
        })
        .collect();
    Ok(Sample {
        consumer: consumer.name.to_string(),
        round: 0,
        secs: after.at.duration_since(before.at).as_secs_f64(),
        sent,
        accepted: after.packets - before.packets,
        accepted_bytes: after.bytes - before.bytes,
        consumer_count,
        proc_cpu: after.proc_cpu - before.proc_cpu,
        cpus_busy: after.cpus_busy - before.cpus_busy,
        queue_full: after.queues.iter().map(|q| q.queue_full).sum(),
        user_drops: after.queues.iter().map(|q| q.user_drops).sum(),
        tcp_bps,
        recv_cpu: after.recv_cpu.zip(before.recv_cpu).map(|(a, b)| a - b),
        queued,
    })
}

/// The UDP traffic source (bench/udp_sender.c), on [`SENDER_CPU`].
#[derive(Debug, Clone, Copy)]
struct Sender {
    size: usize,
    /// Source addresses, one socket each (0: one socket, unbound).
    sources: u32,
    /// Datagrams per UDP GSO message (1: plain).
    segments: u32,
    /// At nice 19, yielding its CPU to a consumer that shares it.
    nice: bool,
}

impl Sender {
    /// Sends for `secs` (or until `max` packets); returns packets sent and its
    /// seconds.
    fn run(&self, programs: &Programs, secs: f64, max: Option<u64>) -> Result<(u64, f64)> {
        let mut command = cmd::program("taskset");
        command.args(["-c", SENDER_CPU]);
        if self.nice {
            command.args(["nice", "-n", "19"]);
        }
        command.arg(programs.path("udp_sender")).args([
            UDP_DST,
            UDP_PORT,
            &self.size.to_string(),
            &secs.to_string(),
        ]);
        if let Some(max) = max {
            command.arg(max.to_string());
        }
        let out = command
            .env("UDP_SEGMENTS", self.segments.to_string())
            .env("UDP_SOURCES", self.sources.to_string())
            .stderr(Stdio::inherit())
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut words = text.split_whitespace();
        match (
            out.status.success(),
            words.next().map(str::parse),
            words.next().map(str::parse),
        ) {
            (true, Some(Ok(sent)), Some(Ok(secs))) => Ok((sent, secs)),
            _ => Err(format!("bench: udp_sender failed ({}): {text}", out.status).into()),
        }
    }
}

/// Runs iperf3 server and client on the sender's CPU; returns the received bits
/// per second.
fn iperf3(secs: f64) -> Result<f64> {
    let mut server = cmd::program("taskset");
    server
        .args(["-c", SENDER_CPU, "iperf3", "-s", "-1", "-p", TCP_PORT])
        .stdout(Stdio::null());
    let mut server = ChildGuard(server.spawn()?);
    thread::sleep(Duration::from_millis(300));
    let seconds = (secs.ceil() as u64).max(1).to_string();
    let mut client = cmd::program("taskset");
    client.args([
        "-c",
        SENDER_CPU,
        "iperf3",
        "-c",
        "127.0.0.1",
        "-p",
        TCP_PORT,
        "-t",
        &seconds,
        "-J",
        "--connect-timeout",
        "3000",
    ]);
    let mut client = ChildGuard(client.stdout(Stdio::piped()).spawn()?);
    let mut json = String::new();
    client
        .0
        .stdout
        .take()
        .expect("stdout is piped")
        .read_to_string(&mut json)?;
    let deadline = Instant::now() + Duration::from_secs_f64(secs + 10.0);
    let status = cmd::wait_until(&mut client.0, deadline)?.ok_or("bench: iperf3 client hung")?;
    let _ = cmd::wait_until(&mut server.0, Instant::now() + Duration::from_secs(3));
    if !status.success() {
        return Err(format!("bench: iperf3 client failed: {status}: {json}").into());
    }
    json_number_after(&json, "\"sum_received\"", "\"bits_per_second\"")
        .ok_or_else(|| format!("bench: no sum_received in iperf3's output: {json}").into())
}

/// The first number after `key` that follows `section` in iperf3's JSON.
fn json_number_after(json: &str, section: &str, key: &str) -> Option<f64> {
    let rest = &json[json.find(section)?..];
    let rest = &rest[rest.find(key)? + key.len()..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start();
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || ".eE+-".contains(c)))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// UDP datagrams of `size` bytes from one socket, and their sender, for the
/// runs that count packets rather than time them (soak, callgrind).
fn plain_udp(size: usize, segments: u32) -> (Traffic, Sender) {
    let traffic = Traffic::Udp { size, sources: 0 };
    let sender = Sender {
        size,
        sources: 0,
        segments,
        nice: false,
    };
    (traffic, sender)
}

/// Floods the UDP rule with datagrams of `size` bytes until the counting rule
/// has seen `packets` more than when called or `deadline` passes; returns how
/// many it saw. It sends half a second at a time, and then, once the rate is
/// known, for about the time the rest takes, so that it stops close to
/// `packets` (the consumer still takes what the queue holds at the end).
pub fn flood_until(
    programs: &Programs,
    packets: u64,
    size: usize,
    segments: u32,
    deadline: Instant,
) -> Result<u64> {
    let (traffic, sender) = plain_udp(size, segments);
    let (first, _) = accept_counter(traffic)?;
    let start = Instant::now();
    let mut seen = 0;
    while seen < packets && Instant::now() < deadline {
        sender.run(programs, chunk_secs(seen, start.elapsed(), packets), None)?;
        seen = accept_counter(traffic)?.0 - first;
    }
    Ok(seen)
}

/// How long the next chunk of a flood sends: half a second while the rate is
/// unknown (or low), else about the time the `target - seen` packets left
/// take at the rate so far, but never under 50 ms.
fn chunk_secs(seen: u64, elapsed: Duration, target: u64) -> f64 {
    const LONGEST: f64 = 0.5;
    const SHORTEST: f64 = 0.05;
    let secs = elapsed.as_secs_f64();
    if seen == 0 || secs <= 0.0 {
        return LONGEST;
    }
    let rate = seen as f64 / secs;
    (target.saturating_sub(seen) as f64 / rate).clamp(SHORTEST, LONGEST)
}

/// Packets and bytes of the counting rule in filter OUTPUT.
fn accept_counter(traffic: Traffic) -> Result<(u64, u64)> {
    let port = match traffic {
        Traffic::Udp { .. } | Traffic::Latency => format!("dpt:{UDP_PORT}"),
        Traffic::Tcp { .. } => format!("dpt:{TCP_PORT}"),
    };
    let out = cmd::program("iptables")
        .args(["-t", "filter", "-n", "-v", "-x", "-L", "OUTPUT"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.split_whitespace().any(|w| w == port))
        .and_then(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .ok_or_else(|| format!("bench: no counting rule for {port} in:\n{text}").into())
}

fn clock_ticks() -> f64 {
    // USER_HZ is 100 on every Linux architecture that matters here; getconf
    // would say so at the cost of a process.
    100.0
}

/// user + system time of a process, all its threads, in seconds.
fn process_cpu(pid: u32) -> Result<f64> {
    stat_cpu(&fs::read_to_string(format!("/proc/{pid}/stat"))?)
}

/// user + system time of the threads of process `pid` whose name starts with
/// `prefix`, in seconds; `None` when it has no such thread.
fn threads_cpu(pid: u32, prefix: &str) -> Result<Option<f64>> {
    let mut total = None;
    for entry in fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = entry?.path();
        // A thread may end between the listing and the reads: skip it.
        let Ok(comm) = fs::read_to_string(task.join("comm")) else {
            continue;
        };
        if !comm.starts_with(prefix) {
            continue;
        }
        let Ok(stat) = fs::read_to_string(task.join("stat")) else {
            continue;
        };
        *total.get_or_insert(0.0) += stat_cpu(&stat)?;
    }
    Ok(total)
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn stat_cpu(stat: &str) -> Result<f64> {
    // Fields after the command name in parentheses; utime and stime are the
    // 14th and 15th fields of the line, so the 12th and 13th after ')'.
    let rest = &stat[stat.rfind(')').ok_or("bench: odd /proc/PID/stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.len() < 13 {
        return Err("bench: short /proc/PID/stat".into());
    }
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    Ok(ticks as f64 / clock_ticks())
}

/// Busy time (everything but idle and iowait) of the given CPUs, in seconds.
fn cpus_busy(cpus: &[usize]) -> Result<f64> {
    let stat = fs::read_to_string("/proc/stat")?;
    let mut busy = 0u64;
    for cpu in cpus {
        let name = format!("cpu{cpu}");
        let line = stat
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name.as_str()))
            .ok_or_else(|| format!("bench: no {name} in /proc/stat"))?;
        let f: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|w| w.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal (guest is in user).
        let total: u64 = f.iter().take(8).sum();
        busy += total - f.get(3).unwrap_or(&0) - f.get(4).unwrap_or(&0);
    }
    Ok(busy as f64 / clock_ticks())
}

fn parse_cpus(list: &str) -> Vec<usize> {
    list.split(',')
        .filter_map(|c| c.trim().parse().ok())
        .collect()
}

/// Resident set size of a process, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "bench: no VmRSS".into())
}

/// Pushes `packets` packets through each Rust consumer (sending in one-second
/// bursts until the counting rule has seen that many) and reports their RSS.
pub fn soak(programs: &Programs, packets: u64, segments: u32) -> Result<String> {
    let mut text = format!(
        "## Soak: {packets} packets through each consumer (UDP 64 B)\n\n\
         | consumer | packets accepted | seconds | RSS after bind (KiB) | RSS after 1st second | RSS at end | max RSS |\n\
         |---|---:|---:|---:|---:|---:|---:|\n"
    );
    let (traffic, sender) = plain_udp(64, segments);
    set_udp_queues(1)?;
    for name in ["core", "dispatch-1", "dispatch-2", "nfq"] {
        let consumer = programs.consumer(name);
        let running = Running::start(programs, &consumer, "1", false)?;
        let pid = running.pid();
        let rss_start = rss_kib(pid)?;
        let start = Instant::now();
        let (first, _) = accept_counter(traffic)?;
        let deadline = start + Duration::from_secs(900);
        let mut rss_first = None;
        let mut rss_max = rss_start;
        let mut done = 0;
        while done < packets && Instant::now() < deadline {
            sender.run(programs, 1.0, Some(packets - done))?;
            done = accept_counter(traffic)?.0 - first;
            let rss = rss_kib(pid)?;
            rss_first.get_or_insert(rss);
            rss_max = rss_max.max(rss);
            eprintln!("bench: soak {name}: {done} packets, RSS {rss} KiB");
        }
        let rss_end = rss_kib(pid)?;
        let secs = start.elapsed().as_secs_f64();
        let counted = running.stop(name)?;
        eprintln!("bench: soak {name}: the consumer counted {counted}");
        text += &format!(
            "| {name} | {done} | {secs:.1} | {rss_start} | {} | {rss_end} | {rss_max} |\n",
            rss_first.unwrap_or(rss_start)
        );
        if done < packets {
            text += &format!("\n{name}: stopped at the 900 s limit before {packets} packets\n");
        }
    }
    Ok(text)
}

/// Every consumer of a throughput scenario, round by round.
pub fn throughput(
    programs: &Programs,
    scenario: &'static Scenario,
    consumers: &[Consumer],
    opts: &Options,
) -> Result<Measured> {
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); consumers.len()];
    for round in 0..opts.rounds {
        for i in round_order(consumers.len(), round) {
            let consumer = &consumers[i];
            eprintln!(
                "bench: {} round {}/{}: {}",
                scenario.name,
                round + 1,
                opts.rounds,
                consumer.name
            );
            let mut sample = one(programs, scenario, consumer, opts.secs, opts.segments)?;
            sample.round = round + 1;
            eprintln!("bench:   {}", sample.summary(scenario.traffic));
            samples[i].push(sample);
        }
    }
    Ok(Measured {
        scenario,
        consumers: consumers.iter().map(|c| c.name).collect(),
        samples,
    })
}

/// The order of the consumers in round `round`: each round starts one
/// consumer later, so that over the rounds each runs after each of the
/// others and in each place of the round, and what a consumer leaves behind
/// (a cache, a queue torn down, the host's rhythm) does not always fall on
/// the same next one.
fn round_order(consumers: usize, round: usize) -> impl Iterator<Item = usize> {
    let start = if consumers == 0 { 0 } else { round % consumers };
    (0..consumers).map(move |k| (start + k) % consumers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_round_starts_one_consumer_later() {
        let order = |round| round_order(3, round).collect::<Vec<_>>();
        assert_eq!(order(0), [0, 1, 2]);
        assert_eq!(order(1), [1, 2, 0]);
        assert_eq!(order(2), [2, 0, 1]);
        assert_eq!(order(3), [0, 1, 2]);
        assert_eq!(round_order(0, 5).count(), 0);
    }

    #[test]
    fn a_flood_ends_with_a_chunk_the_size_of_the_rest() {
        let second = Duration::from_secs(1);
        assert_eq!(chunk_secs(0, Duration::ZERO, 1_000), 0.5);
        // 10,000 packets per second, 1,000 left: a tenth of a second.
        assert!((chunk_secs(10_000, second, 11_000) - 0.1).abs() < 1e-9);
        assert_eq!(chunk_secs(10_000, second, 100_000), 0.5);
        assert_eq!(chunk_secs(10_000, second, 10_001), 0.05);
    }
}
