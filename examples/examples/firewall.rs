//! A multi-core firewall: drops packets to listed ports or from/to listed
//! addresses, accepts the rest, on every core. Ctrl-C prints the statistics.
//!
//! ```text
//! nft add table inet filter
//! nft 'add chain inet filter forward { type filter hook forward priority 0; }'
//! nft add rule inet filter forward queue num 0-1      # or, with iptables:
//! iptables -A FORWARD -j NFQUEUE --queue-balance 0:1
//! firewall --drop-port 23 --drop-port 445 --drop-host 192.0.2.66 --workers 2 0:1
//! ```
//!
//! `--install-rules` installs the queue rules for the time it runs, and
//! `--first N` makes them queue only the first N packets of each connection
//! in each direction, so that the kernel passes the rest without asking
//! (`ct original packets <= N` in nft, `-m connbytes` in iptables, one rule
//! per direction); it prints the rules either way. Packets after the first N
//! are never inspected; see `nfqueue_examples::queue_rules` for the
//! trade-off.
//!
//! ```text
//! firewall --first 3 --install-rules --drop-port 23 0
//! ```
//!
//! `--ruleset nft` installs an nftables table (`inet nfqueue_firewall`, IPv4
//! and IPv6), `--ruleset iptables` iptables and ip6tables rules; by default
//! (`auto`) it asks the doctor whether nft's `queue` statement works here
//! (kernels without `CONFIG_NFT_QUEUE` refuse it), says so when it does not,
//! and falls back to iptables. An explicit `--ruleset nft` that the kernel
//! refuses stops the firewall with the reason. `--bypass` lets packets pass
//! while the firewall is not running (`bypass`, `--queue-bypass`).
//!
//! `--metrics 127.0.0.1:9101` serves the dispatcher's and the kernel's
//! counters in the Prometheus text format at `http://127.0.0.1:9101/metrics`.

use clap::Parser;
use nfqueue::doctor::{self, Feature, Options, Status};
use nfqueue::net::{self, FlowKey};
use nfqueue::prometheus::{Exposition, CONTENT_TYPE};
use nfqueue::{Dispatcher, PacketView, StatsHandle, StopHandle, Verdict};
use nfqueue_examples::cli::QueueRange;
use nfqueue_examples::queue_rules::{QueueRules, Ruleset};
use nfqueue_examples::{metrics_http, report, stop_on_signals, summary};
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;

/// A port and address firewall on every core.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The queue number, or a range FIRST:LAST (as --queue-balance).
    queues: QueueRange,
    /// Drop packets to this destination port (TCP, UDP); repeatable.
    #[arg(long = "drop-port", value_name = "PORT")]
    drop_ports: Vec<u16>,
    /// Drop packets from or to this address; repeatable.
    #[arg(long = "drop-host", value_name = "ADDR")]
    drop_hosts: Vec<IpAddr>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    workers: Option<usize>,
    /// Queue only the first N packets of each connection in each direction
    /// (connbytes rules); later packets are never inspected.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    first: Option<u64>,
    /// The chain of the queue rules printed and installed.
    #[arg(long, default_value = "FORWARD")]
    chain: String,
    /// Install the queue rules while running; they are deleted on exit.
    #[arg(long)]
    install_rules: bool,
    /// The rules to print and install: nft, iptables, or auto (nft where its
    /// queue statement works, else iptables).
    #[arg(long, value_enum, default_value_t = RulesetChoice::Auto)]
    ruleset: RulesetChoice,
    /// Let packets pass while nothing has bound the queues (nft's bypass,
    /// iptables' --queue-bypass), instead of dropping them.
    #[arg(long)]
    bypass: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics (port 0 picks one).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<SocketAddr>,
}

/// What to drop.
struct Rules {
    ports: HashSet<u16>,
    hosts: HashSet<IpAddr>,
}

impl Rules {
    fn verdict(&self, packet: &PacketView<'_>) -> Verdict<'static> {
        let Ok(ip) = net::parse(packet.payload()) else {
            return Verdict::accept();
        };
        let blocked_host = self.hosts.contains(&ip.src()) || self.hosts.contains(&ip.dst());
        // Later fragments carry no ports; with flow affinity by addresses they
        // stay in order behind their first fragment.
        let dst_port = ip.transport().and_then(|t| t.dst_port());
        let blocked_port = dst_port.is_some_and(|port| self.ports.contains(&port));
        if blocked_host || blocked_port {
            Verdict::drop()
        } else {
            Verdict::accept()
        }
    }
}

/// What `--ruleset` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RulesetChoice {
    /// nft where its queue statement works here, else iptables.
    Auto,
    /// An nftables table.
    Nft,
    /// iptables and ip6tables rules.
    Iptables,
}

/// nft where the doctor finds its queue statement works, else iptables,
/// saying why.
fn pick_ruleset() -> Ruleset {
    let report = doctor::diagnose_with(&Options::default().only([Feature::NftQueue]));
    match report.get(Feature::NftQueue) {
        Some(check) if check.status == Status::Ok => Ruleset::Nft,
        Some(check) => {
            eprintln!(
                "firewall: nft's queue statement does not work here ({}); using iptables -j \
                 NFQUEUE instead",
                check.detail
            );
            Ruleset::Iptables
        }
        None => Ruleset::Iptables,
    }
}

fn main() -> ExitCode {
    report(run(Args::parse()))
}

fn run(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    // Block SIGINT/SIGTERM before any thread starts, so only the signal thread
    // sees them; it then stops the dispatcher.
    let stop = StopHandle::new()?;
    stop_on_signals(stop.clone())?;

    let queue_rules = QueueRules::new(&args.chain, args.queues, args.first).bypass(args.bypass);
    let shows_rules = args.first.is_some() || args.install_rules;
    let ruleset = match args.ruleset {
        RulesetChoice::Nft => Ruleset::Nft,
        RulesetChoice::Iptables => Ruleset::Iptables,
        RulesetChoice::Auto if shows_rules => pick_ruleset(),
        RulesetChoice::Auto => Ruleset::Iptables,
    };
    if shows_rules {
        let what = match args.first {
            Some(n) => format!("the first {n} packets of each connection, each way"),
            None => "every packet".into(),
        };
        println!(
            "# queue rules ({ruleset}): {what} of {} to queue {}",
            args.chain, args.queues
        );
        print!("{}", queue_rules.text(ruleset)?);
    }

    let rules = Rules {
        ports: args.drop_ports.into_iter().collect(),
        hosts: args.drop_hosts.into_iter().collect(),
    };
    let mut builder = Dispatcher::builder()
        .queues(args.queues.numbers())
        .flow_affinity(FlowKey::Addresses)
        .stop_handle(stop);
    if let Some(workers) = args.workers {
        builder = builder.workers(workers);
    }
    let dispatcher = builder.build(move |packet: &PacketView<'_>| rules.verdict(packet))?;
    // After binding: a queue nobody has bound drops what the rules send it.
    let installed = args
        .install_rules
        .then(|| queue_rules.install(ruleset))
        .transpose()?;
    if let Some(addr) = args.metrics {
        let stats = dispatcher.stats_handle();
        let bound = metrics_http::serve(addr, CONTENT_TYPE, move || render_metrics(&stats))?;
        eprintln!("firewall: metrics at http://{bound}/metrics");
    }
    eprintln!("firewall: filtering queue {}; Ctrl-C stops", args.queues);

    let result = dispatcher.join();
    drop(installed);
    let stats = result?;
    let mut closing = summary::counters(stats.named());
    closing["messages_per_packet"] = format!("{:.3}", stats.messages_per_packet()).into();
    summary::eprint(closing.as_object().expect("counters are an object"));
    Ok(())
}

/// The dispatcher's counters of each queue (`queue="N"`: sum them for the
/// totals) and the kernel's lines for its queues.
fn render_metrics(stats: &StatsHandle) -> String {
    let mut exposition = Exposition::new();
    for (queue, counters) in stats.stats_by_queue() {
        exposition.add_labeled(&counters, &[("queue", &queue.to_string())]);
    }
    match stats.kernel_stats() {
        Ok(kernel) => {
            exposition.add(&kernel[..]);
        }
        // In a user namespace that does not own the network namespace.
        Err(err) => eprintln!("firewall: metrics: the kernel's counters: {err}"),
    }
    exposition.to_string()
}
