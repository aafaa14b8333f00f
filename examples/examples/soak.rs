//! A soak run of the dispatcher: pushes N numbered UDP datagrams over loopback
//! through queue 0 with mixed verdicts (accept, drop, accept with a mark, accept
//! with a rewritten payload), checks every one at the far end and in the
//! kernel's counters, and reports memory, descriptors and threads at the start
//! and at the end: they must stay flat.
//!
//! It changes the network namespace it runs in (brings `lo` up, adds iptables
//! rules): run it in a throwaway one, as `cargo xtask soak --packets N` does:
//! `unshare --net target/release/examples/soak --packets 200000`.

use clap::Parser;
use nfqueue::net::{self, mangle};
use nfqueue::{Dispatcher, PacketView, Verdict};
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const QUEUE: u16 = 0;
const PORT: u16 = 9099;
const MARK: u32 = 0x50a4;
/// Datagram: 8-byte sequence number, then this many bytes.
const BODY: usize = 24;
const ORIGINAL: &[u8; BODY] = b"original body of a soak.";
const REWRITTEN: &[u8; BODY] = b"REWRITTEN by the handler";
/// Packets sent but not yet verdicted, at most: keeps every socket buffer on the
/// way from overflowing, so any loss is a bug.
const WINDOW: u64 = 128;

/// What the handler does with packet `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Accept,
    Drop,
    Mark,
    Rewrite,
}

fn action(seq: u64) -> Action {
    match seq % 10 {
        0 => Action::Drop,
        1 | 5 => Action::Mark,
        2 | 7 => Action::Rewrite,
        _ => Action::Accept,
    }
}

fn handle(packet: &PacketView<'_>) -> Verdict<'static> {
    let Some(seq) = net::parse(packet.payload())
        .ok()
        .and_then(|ip| ip.payload())
        .and_then(|data| Some(u64::from_be_bytes(data.get(..8)?.try_into().ok()?)))
    else {
        return Verdict::drop();
    };
    match action(seq) {
        Action::Accept => Verdict::accept(),
        Action::Drop => Verdict::drop(),
        Action::Mark => Verdict::accept().with_mark(MARK),
        Action::Rewrite => {
            let mut bytes = packet.payload().to_vec();
            let mut data = seq.to_be_bytes().to_vec();
            data.extend_from_slice(REWRITTEN);
            match mangle::set_l4_payload(&mut bytes, &data) {
                Ok(()) => Verdict::accept().with_payload(bytes),
                Err(_) => Verdict::drop(),
            }
        }
    }
}

/// Resident memory (KiB), open descriptors and threads of this process.
#[derive(Debug, Clone, Copy)]
struct Usage {
    rss_kib: u64,
    fds: usize,
    threads: u64,
}

fn usage() -> Usage {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Usage {
        rss_kib: field("VmRSS:"),
        fds: std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()),
        threads: field("Threads:"),
    }
}

/// Runs a command in this namespace (found in the sbin directories too, which
/// an ordinary user's PATH lacks).
fn run(program: &str, args: &[&str]) -> Result<String, String> {
    nfqueue_testkit::cmd::try_run(program, args)
}

/// Packets counted by the mangle POSTROUTING rule with `comment`.
fn rule_packets(comment: &str) -> u64 {
    let listing = run(
        "iptables",
        &["-t", "mangle", "-L", "POSTROUTING", "-v", "-n", "-x"],
    )
    .unwrap_or_default();
    listing
        .lines()
        .find(|l| l.contains(&format!("/* {comment} */")))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn setup() -> Result<(), String> {
    run("ip", &["link", "set", "lo", "up"])?;
    let port = PORT.to_string();
    let queue = QUEUE.to_string();
    run(
        "iptables",
        &[
            "-A",
            "OUTPUT",
            "-p",
            "udp",
            "--dport",
            &port,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ],
    )?;
    let mark = format!("{MARK:#x}");
    for (comment, extra) in [
        ("delivered", &[][..]),
        ("marked", &["-m", "mark", "--mark", &mark][..]),
    ] {
        let mut args = vec![
            "-t",
            "mangle",
            "-A",
            "POSTROUTING",
            "-p",
            "udp",
            "--dport",
            &port,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["-m", "comment", "--comment", comment]);
        run("iptables", &args)?;
    }
    Ok(())
}

/// What the receiving end saw.
#[derive(Debug, Default)]
struct Arrivals {
    count: u64,
    rewritten: u64,
    wrong: u64,
    unexpected: u64,
}

/// Push numbered datagrams through the dispatcher and check every one.
///
/// It changes the network namespace it runs in: run it in a throwaway one
/// (`cargo xtask soak` does).
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Datagrams to send.
    #[arg(long, default_value_t = 200_000, value_parser = clap::value_parser!(u64).range(1..))]
    packets: u64,
}

fn main() -> ExitCode {
    let Args { packets } = Args::parse();
    match soak(packets) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soak: FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn soak(packets: u64) -> Result<(), String> {
    setup()?;
    let dest = SocketAddr::from((Ipv4Addr::LOCALHOST, PORT));
    let receiver = UdpSocket::bind(dest).map_err(|e| e.to_string())?;
    receiver
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    let expected = (0..packets).filter(|&s| action(s) != Action::Drop).count() as u64;

    let dispatcher = Dispatcher::builder()
        .queue(QUEUE)
        .workers(2)
        .build(handle)
        .map_err(|e| e.to_string())?;
    let arrived = Arc::new(AtomicU64::new(0));
    let measured = Arc::new(AtomicBool::new(false));
    let collector = thread::spawn({
        let arrived = Arc::clone(&arrived);
        let measured = Arc::clone(&measured);
        move || {
            let mut seen = Arrivals::default();
            let mut buf = [0u8; 2048];
            while seen.count < expected {
                let Ok(len) = receiver.recv(&mut buf) else {
                    break; // nothing for 2 s
                };
                seen.count += 1;
                arrived.fetch_add(1, Ordering::Relaxed);
                let data = &buf[..len];
                let seq = u64::from_be_bytes(data[..8].try_into().unwrap_or_default());
                match action(seq) {
                    Action::Drop => seen.unexpected += 1,
                    Action::Rewrite if data[8..] == REWRITTEN[..] => seen.rewritten += 1,
                    Action::Accept | Action::Mark if data[8..] == ORIGINAL[..] => {}
                    _ => seen.wrong += 1,
                }
            }
            // Stay (with the socket) until the end's usage is measured.
            let until = Instant::now() + Duration::from_secs(10);
            while !measured.load(Ordering::Acquire) && Instant::now() < until {
                thread::sleep(Duration::from_millis(1));
            }
            seen
        }
    });

    let started = Instant::now();
    let deadline = started + Duration::from_secs(60) + Duration::from_micros(packets * 50);
    let mut datagram = [0u8; 8 + BODY];
    datagram[8..].copy_from_slice(ORIGINAL);
    let verdicted = |d: &Dispatcher| {
        let s = d.stats();
        s.accepted + s.dropped
    };
    let mut first: Option<Usage> = None;
    let warmup = (packets / 20).clamp(1, 100_000);
    let report_every = (packets / 10).max(1);
    for seq in 0..packets {
        if seq == warmup {
            first = Some(usage());
        }
        let mut spins = 0u32;
        // In flight: not verdicted yet, or accepted and not read by the
        // collector yet (one in ten is dropped).
        let drops_before = seq.div_ceil(10);
        while seq >= verdicted(&dispatcher) + WINDOW
            || seq >= arrived.load(Ordering::Relaxed) + drops_before + WINDOW
        {
            if Instant::now() > deadline {
                return Err(format!("stalled at {seq} sent, {:?}", dispatcher.stats()));
            }
            spins += 1;
            if spins > 64 {
                thread::sleep(Duration::from_micros(20));
            } else {
                std::hint::spin_loop();
            }
        }
        datagram[..8].copy_from_slice(&seq.to_be_bytes());
        sender.send_to(&datagram, dest).map_err(|e| e.to_string())?;
        if (seq + 1) % report_every == 0 {
            let u = usage();
            println!(
                "soak: {:>10} sent, {:>10} arrived, {:.0} pps, rss {} KiB, fds {}, threads {}",
                seq + 1,
                arrived.load(Ordering::Relaxed),
                (seq + 1) as f64 / started.elapsed().as_secs_f64(),
                u.rss_kib,
                u.fds,
                u.threads
            );
        }
    }
    let settle = Instant::now() + Duration::from_secs(10);
    while (verdicted(&dispatcher) < packets || arrived.load(Ordering::Relaxed) < expected)
        && Instant::now() < settle
    {
        thread::sleep(Duration::from_millis(1));
    }
    let secs = started.elapsed().as_secs_f64();
    let end = usage();
    measured.store(true, Ordering::Release);
    let seen = collector.join().map_err(|_| "the collector panicked")?;
    let first = first.unwrap_or(end);
    // In a user namespace the /proc file belongs to the initial namespace's
    // root and cannot be read: the far end and the rule counters still tell.
    let line = match dispatcher.kernel_stats() {
        Ok(kernel) => Some(kernel.first().copied()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => None,
        Err(e) => return Err(format!("reading the kernel's queue counters: {e}")),
    };
    let stats = dispatcher.stop_and_join().map_err(|e| e.to_string())?;
    let (delivered, marked) = (rule_packets("delivered"), rule_packets("marked"));
    let count = |a: Action| (0..packets).filter(|&s| action(s) == a).count() as u64;

    println!(
        "soak: {packets} packets in {secs:.1} s ({:.0} pps)",
        packets as f64 / secs
    );
    println!(
        "soak: start (after {warmup} packets): rss {} KiB, fds {}, threads {}",
        first.rss_kib, first.fds, first.threads
    );
    println!(
        "soak: end:                          rss {} KiB, fds {}, threads {}",
        end.rss_kib, end.fds, end.threads
    );
    println!("soak: dispatcher {stats:?}");
    println!("soak: kernel {line:?}");
    println!("soak: far end {seen:?}; rule counters: delivered {delivered}, marked {marked}");

    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            failures.push(what);
        }
    };
    check(
        stats.packets == packets,
        format!("{} packets read of {packets}", stats.packets),
    );
    check(
        stats.accepted + stats.dropped == packets,
        format!(
            "{} verdicts for {packets} packets",
            stats.accepted + stats.dropped
        ),
    );
    check(
        stats.dropped == count(Action::Drop),
        format!("{} drops", stats.dropped),
    );
    check(
        stats.payloads == count(Action::Rewrite),
        format!("{} rewrites", stats.payloads),
    );
    check(
        stats.receive_overflows
            + stats.receive_errors
            + stats.handler_panics
            + stats.invalid_verdicts
            + stats.fallback_drops
            + stats.failed_sends
            == 0,
        "errors in the dispatcher".into(),
    );
    match line {
        Some(line) => check(
            line.is_some_and(|l| l.waiting == 0 && l.queue_dropped == 0 && l.user_dropped == 0),
            format!("kernel queue not drained or dropping: {line:?}"),
        ),
        None => println!("soak: the kernel's queue counters are unreadable here (user namespace)"),
    }
    check(
        seen.count == expected,
        format!("{} arrived, {expected} expected", seen.count),
    );
    check(
        seen.rewritten == count(Action::Rewrite),
        format!("{} rewritten arrived", seen.rewritten),
    );
    check(
        seen.wrong + seen.unexpected == 0,
        format!("wrong datagrams: {seen:?}"),
    );
    check(
        delivered == expected,
        format!("{delivered} delivered by the kernel's count"),
    );
    check(
        marked == count(Action::Mark),
        format!("{marked} marked by the kernel's count"),
    );
    check(
        end.fds == first.fds,
        format!("fds {} -> {}", first.fds, end.fds),
    );
    check(
        end.threads == first.threads,
        format!("threads {} -> {}", first.threads, end.threads),
    );
    // Flat: allocator noise only, not growth with the packet count.
    check(
        end.rss_kib <= first.rss_kib + 4096,
        format!("rss grew from {} to {} KiB", first.rss_kib, end.rss_kib),
    );
    if failures.is_empty() {
        println!("soak: OK");
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}
