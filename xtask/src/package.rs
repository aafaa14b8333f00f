//! `cargo xtask package`: the library crates are publishable. `cargo package`
//! builds nfqueue-sys, nfqueue-net, nfqueue-core and nfqueue from the files they would
//! publish, and nfqueue-sys's docs build as docs.rs builds them: `DOCS_RS`
//! set, libclang hidden (`LIBCLANG_PATH` at an empty directory) and no
//! pkg-config, so the checked-in bindings are what they document.

use crate::cmd::{self, Result};
use std::fs;

const CRATES: &[&str] = &["nfqueue-sys", "nfqueue-net", "nfqueue-core", "nfqueue"];

pub fn run(args: &[String]) -> Result<u8> {
    if !args.is_empty() {
        return Err("usage: cargo xtask package".into());
    }
    let root = cmd::workspace_root();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| root.join("target"), |dir| root.join(dir));

    let empty = target.join("no-libclang");
    let _ = fs::remove_dir_all(&empty);
    fs::create_dir_all(&empty)?;
    let mut doc = cmd::cargo();
    doc.current_dir(&root)
        .args(["doc", "--package", "nfqueue-sys", "--no-deps"])
        // Its own target directory: switching DOCS_RS would rebuild the others.
        .arg("--target-dir")
        .arg(target.join("docs-rs"))
        .env("DOCS_RS", "1")
        .env("LIBCLANG_PATH", &empty)
        .env("PKG_CONFIG", empty.join("pkg-config"))
        .env("RUSTDOCFLAGS", "-Dwarnings");
    let docs = cmd::run(&mut doc)?;
    let _ = fs::remove_dir_all(&empty);
    if !docs.success() {
        eprintln!("package: nfqueue-sys's docs do not build without libclang: {docs}");
        return Ok(cmd::exit_code(docs));
    }
    println!("package: nfqueue-sys's docs build without libclang (as on docs.rs)");

    let mut package = cmd::cargo();
    package
        .current_dir(&root)
        .arg("package")
        // Whether the crates package and build, not whether the tree is committed.
        .arg("--allow-dirty");
    for name in CRATES {
        package.args(["--package", name]);
    }
    let packaged = cmd::run(&mut package)?;
    if packaged.success() {
        println!(
            "package: {} package and build from their files",
            CRATES.join(", ")
        );
    }
    Ok(cmd::exit_code(packaged))
}
