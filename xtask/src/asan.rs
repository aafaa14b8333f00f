//! `cargo xtask asan`: the library and kernel tests of the crates that cross
//! into C (nfqueue-sys, nfqueue-core, nfqueue) built with AddressSanitizer.
//!
//! `-Zsanitizer=address` is a nightly flag: `RUSTC_BOOTSTRAP=1` unlocks it on a
//! stable toolchain. With an explicit `--target`, RUSTFLAGS reach only the target
//! code, not build scripts and proc macros, so no `-Zbuild-std` is needed: our
//! crates and their Rust dependencies are instrumented, the standard library and
//! libnetfilter_queue/libmnl are not, but every allocation goes through ASan's
//! malloc (heap overflows and use-after-free in our code, leaks anywhere). The
//! verdict encoder's byte-for-byte cross-check against libnetfilter_queue and the
//! socket code run under it. Doctests are left out (they would need rustdoc
//! flags of their own and cross no code the tests do not).
//!
//! As root the tests run as they are (they make their own namespaces); otherwise
//! each test binary runs in `unshare --user --map-root-user --net`.

use crate::cmd::{self, Result};
use std::path::PathBuf;

const TARGET: &str = "x86_64-unknown-linux-gnu";
const PACKAGES: &[&str] = &["nfqueue-sys", "nfqueue-core", "nfqueue"];

pub fn run(args: &[String]) -> Result<u8> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| cmd::workspace_root().join("target"), PathBuf::from)
        .join("asan");
    let mut test = cmd::cargo();
    test.current_dir(cmd::workspace_root())
        .env("RUSTC_BOOTSTRAP", "1")
        .env("RUSTFLAGS", "-Zsanitizer=address")
        .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1")
        .args(["test", "--target", TARGET, "--lib", "--tests"])
        .arg("--target-dir")
        .arg(&target_dir);
    for package in PACKAGES {
        test.args(["--package", package]);
    }
    if !cmd::is_root() {
        test.env(
            format!(
                "CARGO_TARGET_{}_RUNNER",
                TARGET.to_uppercase().replace('-', "_")
            ),
            "unshare --user --map-root-user --net",
        );
    }
    test.arg("--").args(args);
    let (status, counts) = cmd::run_counted(&mut test)?;
    println!(
        "asan: {} passed, {} failed under AddressSanitizer: {status}",
        counts.passed, counts.failed
    );
    Ok(cmd::exit_code(status))
}
