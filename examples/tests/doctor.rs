//! `nfq-doctor` against the kernel: it prints a line per check and a fix
//! under every missing piece, says what it found of the queue's own pieces
//! as the library does, and exits 0 exactly when packets can be queued
//! here; without privilege it still runs.

mod common;

use nfqueue_core::doctor::{self, Feature, Options, Status};
use std::process::Command;

/// Runs `nfq-doctor` with `args`: exit code and standard output.
fn doctor(args: &[&str]) -> (Option<i32>, String) {
    output(Command::new(common::example("nfq-doctor")).args(args))
}

/// Runs `nfq-doctor` without privilege: as user nobody where the tests run
/// as root in the initial user namespace, else (root of a user namespace,
/// which maps no other uid) with every capability dropped for good.
fn doctor_unprivileged(args: &[&str]) -> (Option<i32>, String) {
    let mut setpriv = Command::new("setpriv");
    if nfqueue_testkit::userns::in_initial_user_namespace() && euid() == 0 {
        setpriv.args(["--reuid=65534", "--regid=65534", "--clear-groups"]);
    } else {
        setpriv.args(["--bounding-set=-all", "--inh-caps=-all"]);
    }
    output(setpriv.arg(common::example("nfq-doctor")).args(args))
}

fn euid() -> u32 {
    // SAFETY: geteuid takes nothing and cannot fail.
    unsafe { libc::geteuid() }
}

fn output(command: &mut Command) -> (Option<i32>, String) {
    let out = command.output().expect("nfq-doctor runs");
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn nfq_doctor_reports_every_piece_and_a_fix_for_what_is_missing() {
    let (code, text) = doctor(&[]);
    for feature in Feature::ALL {
        assert!(text.contains(feature.name()), "{feature:?} in\n{text}");
    }
    let lines: Vec<&str> = text.lines().collect();
    for (at, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("MISSING") {
            let next = lines.get(at + 1).copied().unwrap_or_default();
            assert!(
                next.trim_start().starts_with("-> "),
                "no fix after {line:?}"
            );
        }
    }
    // It agrees with the library on what queueing needs.
    let report = doctor::diagnose_with(&Options::default().only([
        Feature::NfnetlinkQueue,
        Feature::IptablesTarget,
        Feature::NftQueue,
    ]));
    let works = |f| report.get(f).map(|c| c.status) == Some(Status::Ok);
    let can_queue = works(Feature::NfnetlinkQueue)
        && (works(Feature::IptablesTarget) || works(Feature::NftQueue));
    assert_eq!(code, Some(if can_queue { 0 } else { 1 }), "{text}");
    for feature in [Feature::NftQueue, Feature::IptablesTarget] {
        let line = lines.iter().find(|l| l.contains(feature.name())).unwrap();
        let expected = if works(feature) { "ok" } else { "MISSING" };
        assert!(line.trim_start().starts_with(expected), "{line}");
    }
    // --strict fails when anything at all is missing.
    let (strict, _) = doctor(&["--strict"]);
    let anything_missing = text.lines().any(|l| l.trim_start().starts_with("MISSING"));
    assert_eq!(
        strict,
        Some(if anything_missing { 1 } else { code.unwrap() })
    );
}

#[test]
fn nfq_doctor_runs_without_privilege() {
    // A capability set dropped in a thread comes back with exec, for root:
    // the program runs as another user, or with an empty bounding set.
    let (code, text) = doctor_unprivileged(&["--recv-buffer", "1"]);
    assert!(
        text.contains("MISSING   CAP_NET_ADMIN"),
        "without capabilities:\n{text}"
    );
    assert!(text.contains("needs CAP_NET_ADMIN in the socket's network namespace"));
    // The kernel's pieces were tried in a user namespace, or said why not.
    assert!(
        text.contains("user and network namespace") || text.contains("unchecked"),
        "{text}"
    );
    assert!(matches!(code, Some(0 | 1)), "{code:?}");
    // One byte of buffer is within any rmem_max.
    let buffer = text
        .lines()
        .find(|l| l.contains("receive buffer (rmem_max)"))
        .unwrap();
    assert!(buffer.trim_start().starts_with("ok"), "{buffer}");
}

#[test]
fn a_bad_argument_exits_with_status_2() {
    let out = Command::new(common::example("nfq-doctor"))
        .arg("--recv-buffer=lots")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
