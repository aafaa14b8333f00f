//! Every example takes `--help` and `-h`, prints its usage and exits 0.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;

/// Every example's binary name: the file stem of each `examples/*.rs`, or the
/// name an `[[example]]` section of Cargo.toml gives that path.
fn example_names() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let manifest = fs::read_to_string(dir.join("Cargo.toml")).expect("Cargo.toml");
    let mut names: Vec<String> = fs::read_dir(dir.join("examples"))
        .expect("examples/")
        .map(|entry| entry.expect("a directory entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "rs"))
        .map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            renamed(&manifest, &file)
                .unwrap_or_else(|| path.file_stem().unwrap().to_string_lossy().into_owned())
        })
        .collect();
    names.sort();
    names
}

/// The `name = "..."` of the `[[example]]` section whose path is
/// `examples/<file>`.
fn renamed(manifest: &str, file: &str) -> Option<String> {
    manifest.split("[[example]]").skip(1).find_map(|section| {
        let value = |key: &str| {
            section.lines().find_map(|line| {
                let rest = line
                    .trim()
                    .strip_prefix(key)?
                    .trim_start()
                    .strip_prefix('=')?;
                Some(rest.trim().trim_matches('"').to_string())
            })
        };
        (value("path")? == format!("examples/{file}")).then(|| value("name"))?
    })
}

#[test]
fn every_example_takes_help_and_h() {
    let names = example_names();
    assert!(names.len() >= 10, "found only {names:?}");
    assert!(names.iter().any(|n| n == "nfq-dump"), "{names:?}");
    for name in &names {
        for flag in ["--help", "-h"] {
            let out = Command::new(common::example(name))
                .arg(flag)
                .output()
                .unwrap_or_else(|e| panic!("running {name}: {e}"));
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{name} {flag}: {}\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(stdout.contains("Usage: "), "{name} {flag}: {stdout}");
        }
    }
}

#[test]
fn a_bad_argument_fails_with_status_2_and_says_why() {
    let out = Command::new(common::example("firewall"))
        .args(["--first", "0", "0"])
        .output()
        .expect("firewall runs");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--first"), "{stderr}");
    let out = Command::new(common::example("nfq-dump"))
        .arg("7:1")
        .output()
        .expect("nfq-dump runs");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the range is empty"));
}
