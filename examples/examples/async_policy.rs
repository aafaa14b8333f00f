//! Each packet's verdict waits on an asynchronous lookup, a tokio task standing
//! in for a DNS or policy service, with a timeout, while other packets keep
//! flowing: a slow answer holds up only its own packet. What the service does
//! not answer in time gets the `--on-timeout` verdict.
//!
//! ```text
//! nft add table inet nfq
//! nft 'add chain inet nfq output { type filter hook output priority 0; }'
//! nft add rule inet nfq output meta l4proto udp queue num 0
//! # or with iptables, where the kernel lacks CONFIG_NFT_QUEUE (nfq-doctor tells):
//! iptables -A OUTPUT -p udp -j NFQUEUE --queue-num 0
//! async_policy --deny-port 23 --hang-port 53 --timeout-ms 200 0
//! ```
//!
//! Prints a line per packet: its id, destination port, verdict and why.

use clap::{Parser, ValueEnum};
use nfqueue_core::net;
use nfqueue_core::{AsyncQueue, Error, OwnedPacket, Queue, QueueConfig, Verdict};
use nfqueue_examples::{report, stop_on_signals};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// Give each packet the verdict of an asynchronous policy lookup, with a
/// timeout.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The queue number to bind.
    queue: u16,
    /// How long a packet waits for the policy service.
    #[arg(long, default_value_t = 200)]
    timeout_ms: u64,
    /// The verdict of a packet whose lookup timed out.
    #[arg(long, value_enum, default_value_t = OnTimeout::Drop)]
    on_timeout: OnTimeout,
    /// How long the service takes to answer.
    #[arg(long, default_value_t = 20)]
    delay_ms: u64,
    /// The service says drop for this destination port (repeatable).
    #[arg(long)]
    deny_port: Vec<u16>,
    /// The service never answers for this destination port (repeatable): a
    /// hung lookup.
    #[arg(long)]
    hang_port: Vec<u16>,
    /// Stop after this many packets.
    #[arg(long)]
    count: Option<u64>,
}

/// What a packet gets when its lookup takes too long.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum OnTimeout {
    Accept,
    Drop,
}

/// The service's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    Allow,
    Deny,
}

/// A question to the service: may packets to this port pass?
type Lookup = (Option<u16>, oneshot::Sender<Decision>);

fn main() -> ExitCode {
    report(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let mut queue = Queue::open()?;
    // Before the runtime starts its threads, so that none takes the signals.
    stop_on_signals(queue.stop_handle())?;
    queue.bind(args.queue, &QueueConfig::default())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(serve(queue, args))
}

async fn serve(queue: Queue, args: Args) -> Result<(), Box<dyn std::error::Error>> {
    let service = spawn_service(&args);
    let mut queue = AsyncQueue::new(queue)?;
    eprintln!(
        "bound queue {}; lookups time out after {} ms; Ctrl-C stops",
        args.queue, args.timeout_ms
    );
    let timeout = Duration::from_millis(args.timeout_ms);
    let mut verdicts = JoinSet::new();
    let mut seen = 0u64;
    while !args.count.is_some_and(|count| seen >= count) {
        let packet = match queue.recv_owned().await {
            Ok(packet) => packet,
            Err(Error::Stopped) => break,
            Err(err) if err.is_recoverable() => {
                eprintln!("{err}");
                continue;
            }
            Err(err) => return Err(err.into()),
        };
        seen += 1;
        verdicts.spawn(decide(packet, service.clone(), timeout, args.on_timeout));
        // Reap what is done, so the set does not grow with the traffic.
        while verdicts.try_join_next().is_some() {}
    }
    // Every packet read gets its verdict before the socket closes.
    while verdicts.join_next().await.is_some() {}
    eprintln!("{seen} packets");
    Ok(())
}

/// Asks the service about `packet` and gives the verdict it says, or the
/// timeout verdict.
async fn decide(
    packet: OwnedPacket,
    service: mpsc::Sender<Lookup>,
    timeout: Duration,
    on_timeout: OnTimeout,
) {
    let port = net::parse(packet.view().payload())
        .ok()
        .and_then(|ip| ip.transport())
        .and_then(|transport| transport.dst_port());
    let asked = Instant::now();
    let (reply, answer) = oneshot::channel();
    let answer = async {
        service.send((port, reply)).await.ok()?;
        answer.await.ok()
    };
    let (verdict, why) = match tokio::time::timeout(timeout, answer).await {
        Ok(Some(Decision::Allow)) => (Verdict::accept(), "allowed"),
        Ok(Some(Decision::Deny)) => (Verdict::drop(), "denied"),
        Ok(None) | Err(_) => match on_timeout {
            OnTimeout::Accept => (Verdict::accept(), "timeout"),
            OnTimeout::Drop => (Verdict::drop(), "timeout"),
        },
    };
    let id = packet.id();
    match packet.verdict(&verdict) {
        Ok(()) => println!(
            "#{id} port {} {:?}: {why} after {} ms",
            port.map_or_else(|| "-".into(), |p| p.to_string()),
            verdict.kind(),
            asked.elapsed().as_millis()
        ),
        Err(err) => eprintln!("#{id}: {err}"),
    }
}

/// The stand-in for a policy service: answers each lookup after a delay,
/// never for the hang ports.
fn spawn_service(args: &Args) -> mpsc::Sender<Lookup> {
    let (lookups, mut incoming) = mpsc::channel::<Lookup>(1024);
    let delay = Duration::from_millis(args.delay_ms);
    let (deny, hang) = (args.deny_port.clone(), args.hang_port.clone());
    tokio::spawn(async move {
        // Unanswered questions are kept, not dropped: a hung service does not
        // say no either.
        let mut hung = Vec::new();
        while let Some((port, reply)) = incoming.recv().await {
            if port.is_some_and(|p| hang.contains(&p)) {
                hung.push(reply);
                continue;
            }
            let decision = if port.is_some_and(|p| deny.contains(&p)) {
                Decision::Deny
            } else {
                Decision::Allow
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = reply.send(decision);
            });
        }
    });
    lookups
}
