//! Every xtask command takes `--help` and `-h`, prints its usage and exits 0,
//! without running anything (prereqs included).

use std::process::Command;

fn xtask(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .output()
        .expect("xtask runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The commands `help` lists: the first word of each line indented by exactly
/// two spaces.
fn listed_commands() -> Vec<String> {
    let (code, help, _) = xtask(&["help"]);
    assert_eq!(code, 0, "{help}");
    help.lines()
        .filter_map(|line| line.strip_prefix("  "))
        .filter(|rest| rest.starts_with(|c: char| c.is_ascii_lowercase()))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(String::from)
        .collect()
}

#[test]
fn every_command_takes_help_and_h() {
    let commands = listed_commands();
    for known in [
        "prereqs",
        "test-netns",
        "demo",
        "fuzz",
        "asan",
        "soak",
        "bench",
        "wheel",
        "links",
        "help",
    ] {
        assert!(
            commands.iter().any(|c| c == known),
            "help does not list {known}: {commands:?}"
        );
    }
    for command in &commands {
        for flag in ["--help", "-h"] {
            let (code, stdout, stderr) = xtask(&[command, flag]);
            assert_eq!(code, 0, "xtask {command} {flag}: {stdout}{stderr}");
            assert!(
                stdout.starts_with(&format!("usage: cargo xtask {command}")),
                "xtask {command} {flag} printed {stdout:?}"
            );
            // Help is answered before anything runs, prereqs included.
            assert!(
                !stderr.contains("prereqs:"),
                "xtask {command} {flag}: {stderr}"
            );
        }
    }
}

#[test]
fn an_unknown_command_fails_with_the_list() {
    let (code, _, stderr) = xtask(&["no-such-command"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("unknown command `no-such-command`"),
        "{stderr}"
    );
    assert!(stderr.contains("  bench "), "{stderr}");
}
