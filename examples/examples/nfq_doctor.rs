//! Says what this machine lets an NFQUEUE program do, found by trying each
//! piece in a throwaway network namespace: the queue subsystem, the iptables
//! `NFQUEUE` target, nft's `queue` statement, `br_netfilter`, conntrack on
//! queued packets and in verdicts (`CONFIG_NETFILTER_NETLINK_GLUE_CT`), the
//! GSO and uid/gid flags; `CAP_NET_ADMIN`, unprivileged user namespaces,
//! whether a verdict with a payload survives in a user namespace; the
//! iptables backend and `net.core.rmem_max`. Each missing piece gets a line
//! saying what to do.
//!
//! ```text
//! nfq-doctor                 # as any user; as root it can check more of the caller's rights
//! nfq-doctor --strict        # exit 1 when anything at all is missing
//! ```
//!
//! Exit status: 0 when a program can queue packets here (nfnetlink_queue
//! works, and the iptables target or nft's queue statement does), 1 when it
//! cannot (or, with `--strict`, when anything is missing), 2 for a bad
//! argument. It runs without privilege, and says what it could not check
//! and why.

use clap::Parser;
use nfqueue::doctor::{self, Feature, Options, Status};
use std::process::ExitCode;

/// Check what this machine's kernel and this user allow an NFQUEUE program.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The receive buffer the program will ask for, in bytes, compared with
    /// net.core.rmem_max (default: the dispatcher's 8 MiB).
    #[arg(long, value_name = "BYTES", default_value_t = nfqueue::DEFAULT_RECV_BUFFER)]
    recv_buffer: usize,
    /// Exit 1 when anything is missing, not only what queueing needs.
    #[arg(long)]
    strict: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let report = doctor::diagnose_with(&Options::default().recv_buffer(args.recv_buffer));
    print!("{report}");
    let works = |feature| report.get(feature).map(|c| c.status) == Some(Status::Ok);
    let can_queue = works(Feature::NfnetlinkQueue)
        && (works(Feature::IptablesTarget) || works(Feature::NftQueue));
    if !can_queue || (args.strict && report.missing().next().is_some()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
