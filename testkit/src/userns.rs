//! Whether the tests run in the initial user namespace, for the few that cannot
//! hold elsewhere.

/// True when this process is in the initial user namespace: its
/// `/proc/self/uid_map` maps all ids onto themselves (`0 0 4294967295`).
pub fn in_initial_user_ns() -> bool {
    std::fs::read_to_string("/proc/self/uid_map").map_or(true, |map| {
        map.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"]
    })
}

/// Outside the initial user namespace: prints `SKIPPED: <why>` and returns true,
/// so a test that cannot hold there returns early. Inside it: false.
///
/// On this kernel build a verdict that carries a payload, sent from a
/// non-initial user namespace, makes the kernel drop the packet silently: the
/// tests of payload verdicts skip there.
pub fn skip_outside_initial_user_ns(why: &str) -> bool {
    if in_initial_user_ns() {
        return false;
    }
    println!("SKIPPED: {why} (not in the initial user namespace)");
    true
}
