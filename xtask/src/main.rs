//! Developer commands for the nfqueue workspace, run as `cargo xtask <command>`.
//!
//! xtask depends on no library crate of the workspace: `prereqs` must be able to
//! install the system libraries those crates need before they can build.

mod asan;
mod bench;
mod bench_measure;
mod bench_report;
mod cmd;
mod demo;
mod fuzz;
mod prereqs;
mod python;
mod soak;
mod test_netns;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  prereqs                      check (and as root on Debian, install) system packages
  test-netns [--no-userns] [-- <cargo test args>]
                               run the workspace tests against the kernel: as root, then
                               as user nobody in a user+net namespace (skipped with
                               --no-userns); as an ordinary user, in a user+net namespace
  demo [nfq-dump|print_and_accept]
                               run an example (default nfq-dump) on real traffic in a
                               throwaway network namespace
  fuzz [--secs N] [--runs N] [--jobs N] [--sanitizer address|none] [TARGET...]
                               run the cargo-fuzz targets of fuzz/ (message, net_parse,
                               mangle, verdict) for N seconds (default 60) each
  asan [-- <libtest args>]     the tests of nfqueue-sys, nfqueue-core and nfqueue built
                               with AddressSanitizer (nightly flag, RUSTC_BOOTSTRAP=1)
  soak [--packets N]           push N packets (default 200000) through the dispatcher in a
                               throwaway network namespace; check verdicts and flat usage
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("help", &[][..]),
    };
    let result = match command {
        "prereqs" => prereqs::run().map(|()| 0),
        "test-netns" => prereqs::run().and_then(|()| test_netns::run(rest)),
        "demo" => prereqs::run().and_then(|()| demo::run(rest)),
        "fuzz" => prereqs::run().and_then(|()| fuzz::run(rest)),
        "soak" => prereqs::run().and_then(|()| soak::run(rest)),
        "asan" => prereqs::run().and_then(|()| asan::run(rest)),
        // Internal: the part of the demo that runs inside the namespace.
        demo::INNER => demo::inner(rest),
        "bench" => prereqs::run().and_then(|()| bench::run(rest)),
        bench::INNER => bench::inner(rest),
        "help" | "-h" | "--help" => {
            print!("{USAGE}{}", bench::USAGE);
            Ok(0)
        }
        other => {
            eprint!(
                "xtask: unknown command `{other}`

{USAGE}{}",
                bench::USAGE
            );
            Ok(2)
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}
