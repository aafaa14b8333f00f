//! Running a consumer in the namespace: the interfaces, the rules that queue
//! the traffic to it and count what it accepted, and the consumer itself,
//! started on its CPUs until it has bound its queues and stopped for the
//! count it printed.

use crate::consumer::{Consumer, Programs};
use std::fs;
use std::io::Read;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};
use xtask_support::cmd::{self, ChildGuard, Result};

/// The queue every consumer binds (the first, when it binds several).
pub const QUEUE: u16 = 0;
/// Sent over loopback, and dropped by a raw PREROUTING rule when it comes back
/// in: no listener, no ICMP errors, no sink process.
pub const UDP_DST: &str = "127.0.0.1";
pub const UDP_PORT: &str = "9";
pub const TCP_PORT: &str = "5201";
/// How long a consumer may take to bind its queues, and to exit after SIGTERM.
/// Long enough for a consumer under valgrind too.
const START_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The namespace's interfaces and rules. The NFQUEUE rules use the iptables
/// target: nft's own `queue` statement needs CONFIG_NFT_QUEUE. The UDP rule is
/// the first of mangle OUTPUT ([`set_udp_queues`] replaces it).
pub fn setup() -> Result<()> {
    let ip = |args: &[&str]| cmd::run_ok(cmd::program("ip").args(args));
    ip(&["link", "set", "lo", "up"])?;
    // At loopback's 64 KiB MTU every TCP segment is a whole GSO packet already;
    // at 1500 the GSO setting of the queue decides whether it is segmented.
    ip(&["link", "set", "lo", "mtu", "1500"])?;
    for (proto, port) in [("udp", UDP_PORT), ("tcp", TCP_PORT)] {
        let rule = ["-o", "lo", "-p", proto, "--dport", port];
        cmd::run_ok(
            cmd::program("iptables")
                .args(["-t", "mangle", "-A", "OUTPUT"])
                .args(rule)
                .args(nfqueue_target(1)),
        )?;
        // filter OUTPUT runs after mangle OUTPUT: it sees only accepted packets.
        cmd::run_ok(
            cmd::program("iptables")
                .args(["-t", "filter", "-A", "OUTPUT"])
                .args(rule)
                .args(["-j", "ACCEPT"]),
        )?;
    }
    cmd::run_ok(cmd::program("iptables").args([
        "-t",
        "raw",
        "-A",
        "PREROUTING",
        "-i",
        "lo",
        "-p",
        "udp",
        "--dport",
        UDP_PORT,
        "-j",
        "DROP",
    ]))
}

/// The NFQUEUE target for a consumer of `queues` queues from [`QUEUE`] on.
pub fn nfqueue_target(queues: u16) -> Vec<String> {
    let mut target = vec!["-j".to_string(), "NFQUEUE".into()];
    if queues > 1 {
        let last = QUEUE + queues - 1;
        target.extend(["--queue-balance".into(), format!("{QUEUE}:{last}")]);
    } else {
        target.extend(["--queue-num".into(), QUEUE.to_string()]);
    }
    target
}

/// Makes the UDP rule (the first of mangle OUTPUT) queue to `queues` queues,
/// to match what the next consumer binds.
pub fn set_udp_queues(queues: u16) -> Result<()> {
    cmd::run_ok(
        cmd::program("iptables")
            .args(["-t", "mangle", "-R", "OUTPUT", "1"])
            .args(["-o", "lo", "-p", "udp", "--dport", UDP_PORT])
            .args(nfqueue_target(queues)),
    )
}

/// A started consumer: killed if still running when dropped.
pub struct Running {
    child: ChildGuard,
}

impl Running {
    /// Starts `consumer` on `cpus` and waits until it bound all its queues.
    pub fn start(programs: &Programs, consumer: &Consumer, cpus: &str, gso: bool) -> Result<Self> {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(programs.dir.join("..").join("consumers.log"))?;
        let mut command = cmd::program("taskset");
        command
            .args(["-c", cpus])
            .arg(&consumer.program)
            .args(&consumer.args);
        if gso && consumer.gso {
            command.arg("--gso");
        }
        command
            .arg(QUEUE.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = ChildGuard(cmd::spawn(&mut command)?);
        let deadline = Instant::now() + START_TIMEOUT;
        while queue_lines(consumer.queues)?.len() < usize::from(consumer.queues) {
            if let Some(status) = child.0.try_wait()? {
                return Err(
                    format!("bench: {} exited before binding: {status}", consumer.name).into(),
                );
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "bench: {} did not bind its {} queue(s) from {QUEUE} on in {}s",
                    consumer.name,
                    consumer.queues,
                    START_TIMEOUT.as_secs()
                )
                .into());
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(Running { child })
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// SIGTERM, wait, and the packet count it printed.
    pub fn stop(mut self, name: &str) -> Result<u64> {
        cmd::terminate(&self.child.0);
        let status = cmd::wait_until(&mut self.child.0, Instant::now() + STOP_TIMEOUT)?
            .ok_or_else(|| format!("bench: {name} did not exit after SIGTERM"))?;
        let mut out = String::new();
        if let Some(mut stdout) = self.child.0.stdout.take() {
            stdout.read_to_string(&mut out)?;
        }
        if !status.success() {
            return Err(format!("bench: {name} exited with {status}").into());
        }
        out.trim()
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .ok_or_else(|| format!("bench: {name} printed no packet count: {out:?}").into())
    }
}

/// A line of /proc/net/netfilter/nfnetlink_queue.
#[derive(Debug, Default, Clone, Copy)]
pub struct QueueLine {
    pub queue: u64,
    pub queue_full: u64,
    pub user_drops: u64,
    /// The last packet id given out: packets queued so far.
    pub id_sequence: u64,
}

/// The lines of queues [`QUEUE`]..[`QUEUE`]+`queues`-1 that are bound.
pub fn queue_lines(queues: u16) -> Result<Vec<QueueLine>> {
    let text = fs::read_to_string("/proc/net/netfilter/nfnetlink_queue")?;
    let ours = u64::from(QUEUE)..u64::from(QUEUE) + u64::from(queues);
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<u64> = l
                .split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect();
            (f.len() >= 8 && ours.contains(&f[0])).then(|| QueueLine {
                queue: f[0],
                queue_full: f[5],
                user_drops: f[6],
                id_sequence: f[7],
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_queue_or_a_balanced_range() {
        assert_eq!(
            nfqueue_target(2),
            ["-j", "NFQUEUE", "--queue-balance", "0:1"]
        );
        assert_eq!(nfqueue_target(1), ["-j", "NFQUEUE", "--queue-num", "0"]);
    }
}
