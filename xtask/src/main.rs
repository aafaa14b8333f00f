//! Developer commands for the nfqueue workspace, run as `cargo xtask <command>`.
//!
//! xtask depends on no library crate of the workspace: `prereqs` must be able to
//! install the system libraries those crates need before they can build.

mod asan;
mod bindings;
mod demo;
mod fuzz;
mod links;
mod package;
mod prereqs;
mod python;
mod soak;
mod test_netns;
mod wheel;

use nfqueue_bench as bench;
use std::process::ExitCode;
use xtask_support::cmd;

/// Every command with its usage text, as `help` lists them and
/// `cargo xtask <command> --help` prints one.
const COMMANDS: &[(&str, &str)] = &[
    (
        "prereqs",
        "  prereqs [-v] [--bench]       check (and as root on Debian, install) system packages;
                               one line when all are there, -v lists each with who uses
                               it; --bench adds what `bench` needs
",
    ),
    (
        "test-netns",
        "  test-netns [--no-userns] [--require-userns] [-- <cargo test args> [-- <libtest args>]]
                               run the workspace tests against the kernel: as root, then
                               as user nobody in a user+net namespace (skipped with
                               --no-userns, or, with the reason, where user namespaces
                               are refused, unless --require-userns); as an ordinary
                               user, in a user+net namespace
",
    ),
    (
        "demo",
        "  demo [nfq-dump|print_and_accept]
                               run an example (default nfq-dump) on real traffic in a
                               throwaway network namespace
",
    ),
    (
        "fuzz",
        "  fuzz [--secs N] [--runs N] [--jobs N] [--sanitizer address|none] [TARGET...]
                               run the cargo-fuzz targets of fuzz/ (message, net_parse,
                               mangle, verdict) for N seconds (default 60) each
",
    ),
    (
        "asan",
        "  asan [-- <libtest args>]     the tests of nfqueue-sys, nfqueue-core and nfqueue built
                               with AddressSanitizer (nightly flag, RUSTC_BOOTSTRAP=1)
",
    ),
    (
        "soak",
        "  soak [--packets N]           push N packets (default 200000) through the dispatcher in a
                               throwaway network namespace; check verdicts and flat usage
",
    ),
    ("bench", bench::USAGE),
    (
        "bindings",
        "  bindings [--check]           regenerate nfqueue-sys/src/bindings.rs (the bindings docs.rs
                               and the feature pregenerated-bindings use), or check it
",
    ),
    (
        "package",
        "  package                      cargo package nfqueue-sys, nfqueue-core and nfqueue, and
                               build nfqueue-sys's docs as docs.rs does (no libclang)
",
    ),
    ("wheel", wheel::USAGE),
    ("links", links::USAGE),
    (
        "help",
        "  help                         this list (also -h, --help; `<command> --help` for one)
",
    ),
];

/// The usage of every command.
fn usage() -> String {
    let commands: String = COMMANDS.iter().map(|(_, usage)| *usage).collect();
    format!("usage: cargo xtask <command>\n\ncommands:\n{commands}")
}

/// The usage of `command` when its arguments ask for help (`-h` or `--help`
/// before any `--`, after which arguments belong to other programs).
fn help_asked(command: &str, args: &[String]) -> Option<&'static str> {
    let asked = args
        .iter()
        .take_while(|a| *a != "--")
        .any(|a| a == "-h" || a == "--help");
    let usage = COMMANDS.iter().find(|(name, _)| *name == command)?.1;
    asked.then_some(usage)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => ("help", &[][..]),
    };
    if let Some(usage) = help_asked(command, rest) {
        print!("usage: cargo xtask {}", usage.trim_start());
        return ExitCode::SUCCESS;
    }
    let result = match command {
        "prereqs" => prereqs::main(rest),
        "test-netns" => prereqs::run().and_then(|()| test_netns::run(rest)),
        "demo" => prereqs::run().and_then(|()| demo::run(rest)),
        "fuzz" => prereqs::run().and_then(|()| fuzz::run(rest)),
        "soak" => prereqs::run().and_then(|()| soak::run(rest)),
        "asan" => prereqs::run().and_then(|()| asan::run(rest)),
        // Internal: the part of the demo that runs inside the namespace.
        demo::INNER => demo::inner(rest),
        "bench" => prereqs::run().and_then(|()| bench::run(rest, prereqs::run_bench)),
        "bindings" => prereqs::run().and_then(|()| bindings::run(rest)),
        "package" => prereqs::run().and_then(|()| package::run(rest)),
        // No prereqs: the wheel needs neither the -dev packages nor libclang.
        "wheel" => wheel::run(rest),
        // No prereqs: it reads Markdown and nothing else.
        "links" => links::run(rest),
        bench::INNER => bench::inner(rest),
        "help" | "-h" | "--help" => {
            print!("{}", usage());
            Ok(0)
        }
        other => {
            eprint!("xtask: unknown command `{other}`\n\n{}", usage());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn help_is_asked_before_a_double_dash_only() {
        assert!(help_asked("soak", &args(&["--help"])).is_some());
        assert!(help_asked("soak", &args(&["--packets", "5", "-h"])).is_some());
        // After `--`, arguments belong to cargo test or the test binaries.
        assert!(help_asked("test-netns", &args(&["--", "--help"])).is_none());
        assert!(help_asked("asan", &args(&["--", "-h"])).is_none());
        assert!(help_asked("soak", &args(&["--packets", "5"])).is_none());
        // Hidden and unknown commands have no usage of their own.
        assert!(help_asked(demo::INNER, &args(&["--help"])).is_none());
        assert!(help_asked("nope", &args(&["--help"])).is_none());
    }
}
