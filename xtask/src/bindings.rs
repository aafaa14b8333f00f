//! `cargo xtask bindings [--check]`: regenerate nfqueue-sys's checked-in
//! bindings (`nfqueue-sys/src/bindings.rs`), or check that they are current.
//!
//! The checked-in file is what docs.rs and the feature `pregenerated-bindings`
//! build with. It is the bindgen output of an ordinary build of nfqueue-sys
//! (its build script, against the installed headers), copied from that
//! build's `OUT_DIR`, which cargo reports in its JSON messages.

use crate::cmd::{self, json_str, Result};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;

pub fn run(args: &[String]) -> Result<u8> {
    let check = match args {
        [] => false,
        [flag] if flag == "--check" => true,
        _ => return Err("usage: cargo xtask bindings [--check]".into()),
    };
    let generated = fs::read_to_string(generate()?.join("bindings.rs"))?;
    let checked_in = cmd::workspace_root().join("nfqueue-sys/src/bindings.rs");
    if !check {
        fs::write(&checked_in, &generated)?;
        println!("bindings: wrote {}", checked_in.display());
        return Ok(0);
    }
    if fs::read_to_string(&checked_in).ok().as_deref() == Some(generated.as_str()) {
        println!("bindings: nfqueue-sys/src/bindings.rs is current");
        Ok(0)
    } else {
        eprintln!(
            "bindings: nfqueue-sys/src/bindings.rs differs from what bindgen generates here; \
             run `cargo xtask bindings` and commit the result"
        );
        Ok(1)
    }
}

/// Builds nfqueue-sys with bindgen and returns its build script's `OUT_DIR`.
fn generate() -> Result<PathBuf> {
    let mut build = cmd::cargo();
    build
        .current_dir(cmd::workspace_root())
        .args(["build", "--package", "nfqueue-sys", "--message-format=json"])
        // The docs.rs switch would copy the checked-in file instead.
        .env_remove("DOCS_RS")
        .stdout(Stdio::piped());
    let mut child = cmd::spawn(&mut build)?;
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut out_dir = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line.contains("\"reason\":\"build-script-executed\"")
            && json_str(&line, "package_id").is_some_and(|id| id.contains("nfqueue-sys"))
        {
            out_dir = json_str(&line, "out_dir").map(PathBuf::from);
        }
    }
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("`{}` failed: {status}", cmd::display(&build)).into());
    }
    out_dir.ok_or_else(|| "cargo did not report nfqueue-sys's build script output".into())
}
