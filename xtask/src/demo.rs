//! `cargo xtask demo [nfq-dump|print_and_accept]`: run the `nfq-dump` example
//! (default) or `print_and_accept` on real traffic in a throwaway network
//! namespace.
//!
//! xtask re-runs itself as `__demo-inner` inside `unshare --net --pid --fork`. The
//! namespace then lives exactly as long as the processes in it: when the inner
//! process exits (or is killed, also by Ctrl-C), the kernel kills the rest of its PID
//! namespace and the network namespace with its rules disappears. Nothing to delete.

use crate::cmd::{self, find_program, ChildGuard, Result};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// The hidden command that runs inside the namespace.
pub const INNER: &str = "__demo-inner";
/// The examples the demo can run, the first by default, with their arguments
/// before the queue number.
const EXAMPLES: [(&str, &[&str]); 2] = [
    (
        "nfq-dump",
        &["--count", "1000", "--uid-gid", "--mark", "0x1"],
    ),
    ("print_and_accept", &["--count", "1000"]),
];
const PACKAGE: &str = "nfqueue-examples";
const QUEUE: &str = "0";
const UDP_PORT: u16 = 9999;
const TCP_PORT: u16 = 9998;
/// Time for the whole run inside the namespace; the outside waits a little longer.
const BUDGET: Duration = Duration::from_secs(20);

pub fn run(args: &[String]) -> Result<u8> {
    let name = match args {
        [] => EXAMPLES[0].0,
        [name] if EXAMPLES.iter().any(|(known, _)| known == name) => name.as_str(),
        _ => {
            return Err(format!(
                "usage: cargo xtask demo [{}]",
                EXAMPLES.map(|(name, _)| name).join("|")
            )
            .into())
        }
    };
    let example = build_example(name)?;
    let mut unshare = cmd::program("unshare");
    if !cmd::is_root() {
        unshare.args(["--user", "--map-root-user"]);
    }
    unshare
        .args(["--net", "--pid", "--fork", "--kill-child"])
        .arg(std::env::current_exe()?)
        .arg(INNER)
        .arg(name)
        .arg(&example);
    let mut child = ChildGuard(cmd::spawn(&mut unshare)?);
    let deadline = Instant::now() + BUDGET + Duration::from_secs(5);
    match cmd::wait_until(&mut child.0, deadline)? {
        Some(status) => Ok(cmd::exit_code(status)),
        None => Err(format!("demo: timed out after {}s", BUDGET.as_secs() + 5).into()),
    }
}

/// Builds the example with cargo and finds its executable in cargo's JSON output, so
/// it does not matter whether it is an `[[example]]` or a `[[bin]]`.
fn build_example(name: &str) -> Result<std::path::PathBuf> {
    let mut build = cmd::cargo();
    build.current_dir(cmd::workspace_root()).args([
        "build",
        "--package",
        PACKAGE,
        "--bins",
        "--examples",
    ]);
    cmd::cargo_artifacts(&mut build)?
        .into_iter()
        .find(|a| a.name == name)
        .map(|a| a.executable)
        .ok_or_else(|| {
            format!("demo: the example `{name}` was not found in package {PACKAGE}").into()
        })
}

/// Inside the namespace: set up rules, start the example, send traffic, stop it.
pub fn inner(args: &[String]) -> Result<u8> {
    let [name, example] = args else {
        return Err(format!("usage: xtask {INNER} <example name> <example binary>").into());
    };
    let name = name.as_str();
    let example_args = EXAMPLES
        .iter()
        .find(|(known, _)| *known == name)
        .map(|(_, args)| *args)
        .ok_or_else(|| format!("demo: unknown example `{name}`"))?;
    let deadline = Instant::now() + BUDGET;
    setup()?;

    let mut example = Command::new(example);
    example.args(example_args).arg(QUEUE).stdout(Stdio::piped());
    let mut child = ChildGuard(cmd::spawn(&mut example)?);
    let stdout = child.0.stdout.take().expect("stdout is piped");
    let lines = Arc::new(AtomicUsize::new(0));
    let printer = thread::spawn({
        let lines = Arc::clone(&lines);
        let name = name.to_string();
        move || {
            for line in BufReader::new(stdout)
                .lines()
                .map_while(std::result::Result::ok)
            {
                println!("  [{name}] {line}");
                lines.fetch_add(1, Ordering::SeqCst);
            }
        }
    });

    let probed = wait_for_bind(&mut child, &lines, deadline)?;
    let sent = probed + traffic(deadline);
    // Let the last verdicts and lines through before stopping the example.
    thread::sleep(Duration::from_millis(300));
    cmd::terminate(&child.0);
    let status = cmd::wait_until(
        &mut child.0,
        deadline.max(Instant::now()) + Duration::from_secs(2),
    )?;
    let _ = printer.join();
    let lines = lines.load(Ordering::SeqCst);

    for tool in ["iptables", "ip6tables"] {
        let _ = cmd::run(cmd::program(tool).args(["-L", "OUTPUT", "-v", "-n"]));
    }
    let status = status.ok_or("demo: the example did not exit after SIGTERM")?;
    println!(
        "demo: {name} printed {lines} lines for {sent} packets expected at least, exited with {status}"
    );
    if !status.success() {
        return Ok(cmd::exit_code(status));
    }
    if lines < sent {
        return Err("demo: the example printed fewer lines than packets queued".into());
    }
    Ok(0)
}

/// `lo` up and NFQUEUE rules for UDP, TCP and ICMP over IPv4 and IPv6. This uses the
/// iptables NFQUEUE target: nft's own `queue` statement needs CONFIG_NFT_QUEUE.
fn setup() -> Result<()> {
    cmd::run_ok(cmd::program("ip").args(["link", "set", "lo", "up"]))?;
    let udp = UDP_PORT.to_string();
    let tcp = TCP_PORT.to_string();
    for (tool, icmp) in [("iptables", "icmp"), ("ip6tables", "ipv6-icmp")] {
        for proto in [
            &["-p", "udp", "--dport", &udp][..],
            &["-p", "tcp", "--dport", &tcp],
            &["-p", icmp],
        ] {
            cmd::run_ok(
                cmd::program(tool)
                    .args(["-A", "OUTPUT", "-o", "lo"])
                    .args(proto)
                    .args(["-j", "NFQUEUE", "--queue-num", QUEUE]),
            )?;
        }
    }
    Ok(())
}

/// Waits until the example has bound the queue: until then queued packets are
/// dropped. /proc/net/netfilter/nfnetlink_queue would tell, but in a user namespace
/// it belongs to the initial namespace's root (mode 0440) and cannot be read, so
/// probe instead: send a datagram to the queued port until the example prints a line.
fn wait_for_bind(child: &mut ChildGuard, lines: &AtomicUsize, deadline: Instant) -> Result<usize> {
    let bound = (Instant::now() + Duration::from_secs(5)).min(deadline);
    let socket = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    let mut probes = 0;
    while lines.load(Ordering::SeqCst) == 0 {
        if let Some(status) = child.0.try_wait()? {
            return Err(
                format!("demo: the example exited before binding queue {QUEUE}: {status}").into(),
            );
        }
        if Instant::now() > bound {
            return Err(format!(
                "demo: the example printed nothing within 5s: did it bind queue {QUEUE}?"
            )
            .into());
        }
        socket.send_to(b"probe", (Ipv4Addr::LOCALHOST, UDP_PORT))?;
        probes += 1;
        thread::sleep(Duration::from_millis(100));
    }
    println!("demo: the example is receiving (after {probes} probe datagrams)");
    Ok(1)
}

/// Sends UDP, TCP and ping traffic through the queued ports; returns how many packets
/// were queued at least (lost ones are reported, not fatal: the counters tell).
fn traffic(deadline: Instant) -> usize {
    let mut queued = 0;
    let addrs: [SocketAddr; 2] = [
        (Ipv4Addr::LOCALHOST, 0).into(),
        (Ipv6Addr::LOCALHOST, 0).into(),
    ];
    for addr in addrs {
        match udp(addr, deadline) {
            Ok(n) => queued += n,
            Err(e) => println!("demo: udp {addr}: {e}"),
        }
        match tcp(addr, deadline) {
            // SYN, the request, FIN at least; the replies are not queued (sport 9998).
            Ok(()) => queued += 3,
            Err(e) => println!("demo: tcp {addr}: {e}"),
        }
    }
    queued + ping()
}

fn timeout_until(deadline: Instant) -> Option<Duration> {
    Some(
        deadline
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(3))
            .max(Duration::from_millis(100)),
    )
}

fn udp(local: SocketAddr, deadline: Instant) -> Result<usize> {
    let mut to = local;
    to.set_port(UDP_PORT);
    let receiver = UdpSocket::bind(to)?;
    receiver.set_read_timeout(timeout_until(deadline))?;
    let sender = UdpSocket::bind(local)?;
    let mut buf = [0u8; 2048];
    let sizes = [16, 512, 1400];
    for size in sizes {
        sender.send_to(&vec![b'x'; size][..], to)?;
        let (n, _) = receiver.recv_from(&mut buf)?;
        println!("demo: udp {to}: {n} of {size} bytes arrived");
    }
    Ok(sizes.len())
}

fn tcp(local: SocketAddr, deadline: Instant) -> Result<()> {
    let mut to = local;
    to.set_port(TCP_PORT);
    let listener = TcpListener::bind(to)?;
    let timeout = timeout_until(deadline);
    let server = thread::spawn(move || -> std::io::Result<()> {
        let (mut conn, _) = listener.accept()?;
        conn.set_read_timeout(timeout)?;
        let mut request = [0u8; 64];
        let n = conn.read(&mut request)?;
        conn.write_all(&request[..n])
    });
    let mut conn = TcpStream::connect_timeout(&to, timeout.unwrap_or_default())?;
    conn.set_read_timeout(timeout)?;
    conn.write_all(b"hello through the queue")?;
    let mut reply = Vec::new();
    conn.shutdown(std::net::Shutdown::Write)?;
    conn.read_to_end(&mut reply)?;
    // A stuck accept() ends with the process: the listener thread is not joined then.
    if server.is_finished() {
        server.join().map_err(|_| "tcp server panicked")??;
    }
    println!("demo: tcp {to}: echoed {} bytes", reply.len());
    Ok(())
}

/// Pings both loopback addresses if `ping` (iputils-ping) is installed; returns the
/// number of ICMP packets queued (requests and replies both leave through OUTPUT).
fn ping() -> usize {
    let Some(ping) = find_program("ping") else {
        println!("demo: ping not found (package iputils-ping): no ICMP traffic");
        return 0;
    };
    let mut queued = 0;
    for (flag, addr) in [("-4", "127.0.0.1"), ("-6", "::1")] {
        let ok = cmd::run(Command::new(&ping).args([flag, "-c", "2", "-w", "4", addr]))
            .is_ok_and(|s| s.success());
        if ok {
            queued += 4;
        }
    }
    queued
}
