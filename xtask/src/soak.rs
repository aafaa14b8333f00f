//! `cargo xtask soak --packets N`: push N packets through the dispatcher in a
//! throwaway network namespace and check that every one got its verdict and that
//! memory, descriptors and threads stayed flat.
//!
//! xtask cannot depend on the library crates, so the soak itself is the example
//! `examples/examples/soak.rs`; this builds it (release) and runs it in
//! `unshare --net` (with `--user --map-root-user` when not root). The namespace
//! and its rules go with the process. The example's exit status is passed on.

use crate::cmd::{self, ChildGuard, Result};
use std::time::{Duration, Instant};

const EXAMPLE: &str = "soak";
const PACKAGE: &str = "nfqueue-examples";

pub fn run(args: &[String]) -> Result<u8> {
    let mut packets: u64 = 200_000;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--packets" => {
                packets = args
                    .next()
                    .ok_or("soak: --packets needs a number")?
                    .parse()?
            }
            other => {
                return Err(
                    format!("soak: unknown argument `{other}` (usage: soak --packets N)").into(),
                )
            }
        }
    }
    let mut build = cmd::cargo();
    build.current_dir(cmd::workspace_root()).args([
        "build",
        "--release",
        "--package",
        PACKAGE,
        "--example",
        EXAMPLE,
    ]);
    let example = cmd::cargo_artifacts(&mut build)?
        .into_iter()
        .find(|a| a.name == EXAMPLE)
        .map(|a| a.executable)
        .ok_or("soak: cargo built no `soak` example")?;

    let mut unshare = cmd::program("unshare");
    if !cmd::is_root() {
        unshare.args(["--user", "--map-root-user"]);
    }
    unshare
        .args(["--net", "--pid", "--fork", "--kill-child"])
        .arg(&example)
        .args(["--packets", &packets.to_string()]);
    // Far more than the ~50k packets per second seen on two cores.
    let budget = Duration::from_secs(120) + Duration::from_micros(packets * 100);
    let started = Instant::now();
    let mut child = ChildGuard(cmd::spawn(&mut unshare)?);
    match cmd::wait_until(&mut child.0, started + budget)? {
        Some(status) => {
            eprintln!(
                "soak: {packets} packets, finished in {:.1} s: {status}",
                started.elapsed().as_secs_f64()
            );
            Ok(cmd::exit_code(status))
        }
        None => Err(format!("soak: timed out after {} s", budget.as_secs()).into()),
    }
}
