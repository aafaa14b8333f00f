//! Finds libnetfilter_queue and libmnl with pkg-config and generates bindings with
//! bindgen against the installed headers, including the kernel's complete
//! `<linux/netfilter/nfnetlink_queue.h>`.

use std::env;
use std::path::PathBuf;
use std::process;

/// Oldest libnetfilter_queue that has the libmnl-based `nfq_nlmsg_*` API we bind.
const NFQ_MIN_VERSION: &str = "1.0.2";
/// Oldest libmnl that libnetfilter_queue's `nfq_nlmsg_*` API builds on.
const MNL_MIN_VERSION: &str = "1.0.3";

fn main() {
    println!("cargo:rerun-if-changed=wrapper.h");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    println!("cargo:rerun-if-env-changed=LIBCLANG_PATH");

    let nfq = probe(
        "libnetfilter_queue",
        NFQ_MIN_VERSION,
        "libnetfilter-queue-dev",
    );
    let mnl = probe("libmnl", MNL_MIN_VERSION, "libmnl-dev");

    let mut builder = bindgen::Builder::default()
        .header("wrapper.h")
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .allowlist_function("nfq_nlmsg_.*")
        .allowlist_function("mnl_.*")
        .allowlist_function("pktb_.*")
        .allowlist_function("nfq_(ip|ip6|tcp|udp)_.*")
        .allowlist_type("nfqnl_.*")
        .allowlist_type("nlmsghdr|nlmsgerr|nlattr|nfgenmsg")
        .allowlist_var("NFQA_.*|NFQNL_.*|NFNL_.*|NFNETLINK_V0|NLM_F_.*|NLMSG_.*|NETLINK_.*|NLA_.*|MNL_.*|NF_(DROP|ACCEPT|STOLEN|QUEUE|REPEAT|STOP|VERDICT_.*)")
        .allowlist_type("nfqnl_attr_type|nfqnl_attr_config|nfqnl_msg_types|nfqnl_config_mode|nfqnl_msg_config_cmds|nfqnl_vlan_attr")
        .constified_enum_module("nfqnl_.*")
        .derive_default(true)
        .layout_tests(false)
        .generate_comments(true);
    for path in nfq.include_paths.iter().chain(mnl.include_paths.iter()) {
        builder = builder.clang_arg(format!("-I{}", path.display()));
    }

    let bindings = builder.generate().unwrap_or_else(|err| {
        fail(&format!(
            "bindgen could not generate the bindings ({err}); it needs libclang: install it with `apt-get install libclang-dev`"
        ))
    });
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .unwrap_or_else(|err| fail(&format!("cannot write bindings.rs: {err}")));

    if let Some(include) = nfq.include_paths.first() {
        println!("cargo:include={}", include.display());
    }
}

/// Probes `name` with pkg-config (which also emits the link flags), or stops the
/// build with one sentence naming the Debian package to install.
fn probe(name: &str, min_version: &str, debian_package: &str) -> pkg_config::Library {
    match pkg_config::Config::new()
        .atleast_version(min_version)
        .probe(name)
    {
        Ok(library) => library,
        Err(err) => fail(&format!(
            "{name} >= {min_version} was not found by pkg-config; install it with `apt-get install {debian_package} pkg-config` ({err})"
        )),
    }
}

fn fail(message: &str) -> ! {
    println!("cargo:warning={message}");
    eprintln!("error: {message}");
    process::exit(1);
}
