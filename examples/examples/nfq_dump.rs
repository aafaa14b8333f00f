//! `nfq-dump`: binds one or more queues and prints one line per packet (or a
//! JSON object per line), giving each a verdict by simple policy flags; with
//! `--pcap FILE` it also writes the packets as a pcapng capture. Ctrl-C (or
//! `--count`) ends it with full statistics, this program's and the kernel's,
//! as aligned `name: value` lines on stderr (one JSON object with `--json`).
//!
//! ```text
//! nft add table inet nfq
//! nft 'add chain inet nfq input { type filter hook input priority 0; }'
//! nft add rule inet nfq input queue num 0-1
//! # or with iptables, where the kernel lacks CONFIG_NFT_QUEUE (nfq-doctor tells):
//! iptables -A INPUT -j NFQUEUE --queue-balance 0:1
//! nfq-dump --drop-port 23 --mark 0x10 0 1
//! nfq-dump --json --count 100 0:1
//! nfq-dump --pcap capture.pcapng 0
//! nfq-dump --pcap - 0 | wireshark -k -i -
//! ```
//!
//! With `--pcap -` the capture goes to stdout and the lines to stderr
//! (`--quiet` leaves them out). See `nfqueue_examples::pcapng` for what the
//! capture holds.

use clap::Parser;
use nfqueue_core::net;
use nfqueue_core::{CopyMode, Packet, Queue, QueueConfig, QueueFlags, Verdict, MAX_COPY_RANGE};
use nfqueue_examples::cli::{parse_mark, QueueRange};
use nfqueue_examples::pcapng::{verdict_name, Capture};
use nfqueue_examples::{report, stop_on_signals, summary};
use serde_json::json;
use std::collections::HashSet;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

/// Print and judge the packets of NFQUEUE queues.
#[derive(Debug, Parser)]
#[command(name = "nfq-dump", version)]
struct Args {
    /// Queue numbers to bind: `N` or a range `FIRST:LAST` (as --queue-balance).
    #[arg(required = true)]
    queues: Vec<QueueRange>,
    /// One JSON object per line instead of text; the closing statistics as
    /// one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write the packets to this pcapng file (`-`: stdout, and the lines
    /// go to stderr).
    #[arg(long, value_name = "FILE")]
    pcap: Option<PathBuf>,
    /// No line per packet (the capture and the closing statistics only).
    #[arg(short, long)]
    quiet: bool,
    /// Drop packets to this destination port (TCP, UDP); repeatable.
    #[arg(long = "drop-port", value_name = "PORT")]
    drop_ports: Vec<u16>,
    /// Drop packets from or to this address; repeatable.
    #[arg(long = "drop-host", value_name = "ADDR")]
    drop_hosts: Vec<IpAddr>,
    /// Set this mark on every accepted packet (decimal or 0x hex).
    #[arg(long, value_parser = parse_mark)]
    mark: Option<u32>,
    /// Accept everything, whatever the drop flags say.
    #[arg(long)]
    accept_all: bool,
    /// Stop after this many packets.
    #[arg(long)]
    count: Option<u64>,
    /// Bytes of each packet to copy (at most 65531).
    #[arg(long, default_value_t = MAX_COPY_RANGE)]
    copy_range: u32,
    /// Most packets waiting in each queue before the kernel drops (or, with
    /// --fail-open, accepts) new ones.
    #[arg(long)]
    max_len: Option<u32>,
    /// Accept packets instead of dropping them when a queue is full.
    #[arg(long)]
    fail_open: bool,
    /// Receive GSO super-packets whole.
    #[arg(long)]
    gso: bool,
    /// Show the uid and gid of local senders.
    #[arg(long)]
    uid_gid: bool,
}

/// The verdict policy of the command line.
struct Policy {
    ports: HashSet<u16>,
    hosts: HashSet<IpAddr>,
    mark: Option<u32>,
    accept_all: bool,
}

impl Policy {
    fn verdict(&self, packet: &Packet<'_>) -> Verdict<'static> {
        let ip = net::parse(packet.payload()).ok();
        // Ports of TCP and UDP only (the flow tuple puts ICMP echo ids
        // there), and none in later fragments.
        let dst_port = ip.and_then(|ip| ip.transport()).and_then(|t| t.dst_port());
        let blocked = !self.accept_all
            && ip.is_some_and(|ip| {
                self.hosts.contains(&ip.src())
                    || self.hosts.contains(&ip.dst())
                    || dst_port.is_some_and(|port| self.ports.contains(&port))
            });
        match (blocked, self.mark) {
            (true, _) => Verdict::drop(),
            (false, Some(mark)) => Verdict::accept().with_mark(mark),
            (false, None) => Verdict::accept(),
        }
    }
}

/// The JSON form of a packet and its verdict.
fn to_json(packet: &Packet<'_>, verdict: &Verdict<'_>) -> serde_json::Value {
    let ip = net::parse(packet.payload()).ok();
    let transport = ip.and_then(|ip| ip.transport());
    let time = packet
        .timestamp()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64());
    json!({
        "queue": packet.queue(),
        "id": packet.id(),
        "time": time,
        "hook": packet.hook().to_string(),
        "indev": packet.indev_name().map(|n| n.to_string()),
        "outdev": packet.outdev_name().map(|n| n.to_string()),
        "hw_protocol": packet.hw_protocol(),
        "hw_addr": packet.hw_addr().map(|a| a.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")),
        "protocol": ip.map(|ip| ip.protocol()),
        "src": ip.map(|ip| ip.src().to_string()),
        "dst": ip.map(|ip| ip.dst().to_string()),
        "src_port": transport.as_ref().and_then(|t| t.src_port()),
        "dst_port": transport.as_ref().and_then(|t| t.dst_port()),
        "fragment": ip.and_then(|ip| ip.fragment()).map(|f| json!({"id": f.id, "offset": f.offset, "more": f.more})),
        "len": packet.original_len(),
        "copied": packet.payload().len(),
        "mark": packet.mark(),
        "uid": packet.uid(),
        "gid": packet.gid(),
        "verdict": verdict_name(verdict.kind()),
        "verdict_mark": verdict.mark(),
    })
}

fn main() -> ExitCode {
    report(run(Args::parse()))
}

/// An output stream: stdout, stderr or a file, buffered.
type Output = Box<dyn Write>;

/// Where the lines and the capture go: the capture to stdout only with
/// `--pcap -`, which moves the lines to stderr.
fn outputs(args: &Args, queues: &[u16]) -> io::Result<(Option<Output>, Option<Capture<Output>>)> {
    let capture_on_stdout = args.pcap.as_deref().is_some_and(|p| p.as_os_str() == "-");
    let lines: Option<Output> = match (args.quiet, capture_on_stdout) {
        (true, _) => None,
        (false, false) => Some(Box::new(BufWriter::new(io::stdout()))),
        (false, true) => Some(Box::new(BufWriter::new(io::stderr()))),
    };
    let capture = match &args.pcap {
        None => None,
        Some(path) => {
            let out: Output = if capture_on_stdout {
                Box::new(BufWriter::new(io::stdout()))
            } else {
                let file = File::create(path)
                    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
                Box::new(BufWriter::new(file))
            };
            Some(Capture::new(out, queues, args.copy_range)?)
        }
    };
    Ok((lines, capture))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut flags = QueueFlags::empty();
    flags.set(QueueFlags::FAIL_OPEN, args.fail_open);
    flags.set(QueueFlags::GSO, args.gso);
    flags.set(QueueFlags::UID_GID, args.uid_gid);
    let mut config = QueueConfig::default()
        .copy_mode(CopyMode::Packet(args.copy_range))
        .flags(flags);
    if let Some(max_len) = args.max_len {
        config = config.max_len(max_len);
    }

    // One socket binds every queue: the lines come out in the order the
    // packets arrive.
    let mut queue = Queue::open()?;
    stop_on_signals(queue.stop_handle())?;
    let numbers: Vec<u16> = args.queues.iter().flat_map(|q| q.numbers()).collect();
    for &number in &numbers {
        queue.bind(number, &config)?;
    }
    // Room for bursts; forced when privileged.
    queue.set_recv_buffer_size(8 << 20)?;
    // Opened before the first packet, so that a bad path fails at once.
    let (mut lines, mut capture) = outputs(&args, &numbers)?;
    eprintln!("nfq-dump: queues {numbers:?}; Ctrl-C stops");

    let policy = Policy {
        ports: args.drop_ports.into_iter().collect(),
        hosts: args.drop_hosts.into_iter().collect(),
        mark: args.mark,
        accept_all: args.accept_all,
    };
    let stop = queue.stop_handle();
    let mut seen = 0u64;
    let mut write_error = None;
    queue.run(|packet| {
        let received = SystemTime::now();
        let verdict = policy.verdict(&packet);
        let mut written = Ok(());
        if let Some(out) = lines.as_mut() {
            written = if args.json {
                writeln!(out, "{}", to_json(&packet, &verdict))
            } else {
                writeln!(out, "{packet} -> {}", describe(&verdict))
            }
            // Flush per packet so a pipe sees lines as they come.
            .and_then(|()| out.flush());
        }
        if let Some(capture) = capture.as_mut() {
            written = written
                .and_then(|()| capture.write(&packet, &verdict, received))
                .and_then(|()| capture.flush());
        }
        // The verdict goes out whatever became of the output.
        if let Err(err) = packet.verdict(&verdict) {
            eprintln!("nfq-dump: verdict failed: {err}");
        }
        seen += 1;
        if let Err(err) = written {
            write_error.get_or_insert(err);
            stop.stop();
        }
        if args.count.is_some_and(|count| seen >= count) {
            stop.stop();
        }
    })?;
    drop((lines, capture));
    if let Some(err) = write_error {
        // A reader that went away (`| head`, Wireshark closed) ends the dump.
        if err.kind() != io::ErrorKind::BrokenPipe {
            return Err(err.into());
        }
    }

    let stats = summary::of_queue([("packets", seen)], &queue);
    summary::write(&mut io::stderr().lock(), &stats, args.json)?;
    Ok(())
}

fn describe(verdict: &Verdict<'_>) -> String {
    let kind = verdict_name(verdict.kind());
    match verdict.mark() {
        Some(mark) => format!("{kind} mark {mark:#x}"),
        None => kind,
    }
}
