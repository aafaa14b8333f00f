//! `nfq-dump --pcap` on known traffic, read back by a second, independent
//! pcapng parser (pcap-parser): every packet with its bytes, its timestamp and
//! its comment; a truncated copy shows as a short capture length with the
//! original length kept.

mod common;

use common::{stat_line, Running, TempFile};
use nfqueue_testkit::rules::queue_udp;
use nfqueue_testkit::{counters, enter_new_netns};
use pcap_parser::pcapng::{Block, EnhancedPacketBlock, InterfaceDescriptionBlock};
use pcap_parser::{Linktype, PcapNGCapture};
use std::collections::HashMap;
use std::io;
use std::mem;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const QUEUE: u16 = 0;
const COPY_RANGE: usize = 100;
const MARK: &str = "0x2a";

/// A UDP socket on `ip` that reads with a timeout.
fn receiver(ip: std::net::IpAddr) -> UdpSocket {
    let socket = UdpSocket::bind((ip, 0)).expect("binding UDP");
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("a read timeout");
    socket
}

/// Asks for the kernel's receive timestamp (`SO_TIMESTAMP`). While any socket
/// asks, the kernel stamps arriving packets when they enter the stack; the
/// packet queued at INPUT carries that stamp, and so does the socket's copy.
fn want_timestamps(socket: &UdpSocket) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt on an open socket with a pointer to a live c_int and
    // its size.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMP,
            (&on as *const libc::c_int).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_TIMESTAMP: {}", io::Error::last_os_error());
}

/// One datagram and its `SCM_TIMESTAMP` (microseconds since the epoch).
fn recv_with_timestamp(socket: &UdpSocket) -> (Vec<u8>, Option<u64>) {
    let mut data = vec![0u8; 65536];
    let mut control = [0u64; 16];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: msghdr is plain data; the fields set below point at live buffers.
    let mut msg: libc::msghdr = unsafe { mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = mem::size_of_val(&control);
    // SAFETY: `msg` describes `data` and `control`, which outlive the call.
    let n = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) };
    assert!(n >= 0, "recvmsg: {}", io::Error::last_os_error());
    data.truncate(n as usize);
    let mut stamp = None;
    // SAFETY: the CMSG_* walk stays within `msg.msg_controllen` bytes of
    // `control`, as the kernel filled it; SCM_TIMESTAMP carries a timeval.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMP {
                let tv: libc::timeval = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    (data, stamp)
}

fn micros(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// A datagram the test sent, and what it expects of its capture.
struct Sent {
    payload: Vec<u8>,
    dst: SocketAddr,
    hook: &'static str,
    verdict: &'static str,
    /// The receiver's timestamp, for packets queued at INPUT.
    kernel_stamp: Option<u64>,
    /// When it was sent and when it arrived (or was given up on).
    window: (u64, u64),
}

/// The `key=value` words of a packet comment.
fn comment_fields(comment: &str) -> HashMap<&str, &str> {
    comment
        .split_whitespace()
        .filter_map(|word| word.split_once('='))
        .collect()
}

/// Waits until the queue is bound, so that no packet meets an unbound queue.
fn wait_bound(program: &mut Running) {
    program.wait_for_stderr("Ctrl-C stops");
    assert!(
        counters::queue_line(QUEUE).is_some(),
        "queue {QUEUE} is not bound"
    );
}

#[test]
fn every_packet_reaches_the_capture_with_bytes_time_and_comment() {
    let _netns = enter_new_netns();
    let stamped = receiver(Ipv4Addr::LOCALHOST.into());
    let stamped6 = receiver(Ipv6Addr::LOCALHOST.into());
    want_timestamps(&stamped);
    want_timestamps(&stamped6);
    let plain = receiver(Ipv4Addr::LOCALHOST.into());
    let blocked = receiver(Ipv4Addr::LOCALHOST.into());
    let port = |s: &UdpSocket| s.local_addr().unwrap().port();
    // Arriving packets (INPUT) carry the kernel's stamp; sent ones (OUTPUT) do not.
    queue_udp(false, "INPUT", port(&stamped), 0);
    queue_udp(true, "INPUT", port(&stamped6), 0);
    queue_udp(false, "OUTPUT", port(&plain), 0);
    queue_udp(false, "OUTPUT", port(&blocked), 0);

    let file = TempFile::new("capture.pcapng");
    let path = file.0.to_str().unwrap();
    let copy_range = COPY_RANGE.to_string();
    let blocked_port = port(&blocked).to_string();
    let mut dump = Running::start(
        "nfq-dump",
        &[
            "--json",
            "--pcap",
            path,
            "--copy-range",
            &copy_range,
            "--mark",
            MARK,
            "--drop-port",
            &blocked_port,
            "0",
        ],
    );
    wait_bound(&mut dump);

    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let sender6 = UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).unwrap();
    let mut sent = Vec::new();
    // A short one, and one longer than the copy range; over IPv4 and IPv6;
    // stamped and not; accepted and dropped.
    let plan: [(&UdpSocket, &UdpSocket, usize, &str, &str); 6] = [
        (&sender, &stamped, 12, "INPUT", "accept"),
        (&sender, &stamped, 700, "INPUT", "accept"),
        (&sender6, &stamped6, 33, "INPUT", "accept"),
        (&sender, &plain, 5, "OUTPUT", "accept"),
        (&sender, &plain, 300, "OUTPUT", "accept"),
        (&sender, &blocked, 20, "OUTPUT", "drop"),
    ];
    for (i, (from, to, len, hook, verdict)) in plan.into_iter().enumerate() {
        let payload: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
        let dst = to.local_addr().unwrap();
        let before = micros(SystemTime::now());
        from.send_to(&payload, dst).unwrap();
        let kernel_stamp = if verdict == "drop" {
            blocked
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = [0u8; 64];
            assert!(
                blocked.recv(&mut buf).is_err(),
                "a dropped datagram arrived"
            );
            None
        } else {
            let (got, stamp) = recv_with_timestamp(to);
            assert_eq!(got, payload, "datagram {i} arrived changed");
            if hook == "INPUT" {
                assert!(stamp.is_some(), "no SO_TIMESTAMP on datagram {i}");
            }
            stamp.filter(|_| hook == "INPUT")
        };
        let after = micros(SystemTime::now());
        sent.push(Sent {
            payload,
            dst,
            hook,
            verdict,
            kernel_stamp,
            window: (before, after),
        });
    }
    let done = dump.stop();
    assert!(
        done.status.success(),
        "nfq-dump: {}\n{}",
        done.status,
        done.stderr
    );
    counters::assert_queue_drained(QUEUE);

    // The JSON lines, one per packet, name the ids the capture must carry.
    let lines: Vec<serde_json::Value> = done
        .stdout_text()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), sent.len(), "{}", done.stdout_text());
    // --json turns the closing statistics into one JSON object on stderr.
    let closing: serde_json::Value = done
        .stderr
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("closing JSON"))
        .expect("closing statistics");
    assert_eq!(closing["packets"], sent.len());
    assert_eq!(closing["handle"]["verdicts"], sent.len());

    let bytes = std::fs::read(path).expect("the capture file");
    let capture = PcapNGCapture::from_file(&bytes).expect("a pcapng file");
    let blocks: Vec<&Block> = capture
        .sections
        .iter()
        .flat_map(|s| s.blocks.iter())
        .collect();
    let interfaces: Vec<&InterfaceDescriptionBlock> = blocks
        .iter()
        .filter_map(|b| match b {
            Block::InterfaceDescription(idb) => Some(idb),
            _ => None,
        })
        .collect();
    assert_eq!(interfaces.len(), 1);
    let idb = interfaces[0];
    assert_eq!(idb.linktype, Linktype::RAW);
    assert_eq!(idb.snaplen as usize, COPY_RANGE);
    assert_eq!(idb.ts_resolution(), Some(1_000_000_000));
    let if_name = idb.options.iter().find(|o| o.code.0 == 2).expect("if_name");
    assert_eq!(&if_name.value[..if_name.len as usize], b"nfqueue:0");

    let packets: Vec<&EnhancedPacketBlock> = blocks
        .iter()
        .filter_map(|b| match b {
            Block::EnhancedPacket(epb) => Some(epb),
            _ => None,
        })
        .collect();
    assert_eq!(packets.len(), sent.len());
    for (i, ((epb, sent), json)) in packets.iter().zip(&sent).zip(&lines).enumerate() {
        let v6 = sent.dst.is_ipv6();
        let header = if v6 { 40 + 8 } else { 20 + 8 };
        let whole = header + sent.payload.len();
        // Truncated at the copy range, the original length kept.
        assert_eq!(epb.origlen as usize, whole, "packet {i}");
        assert_eq!(epb.caplen as usize, whole.min(COPY_RANGE), "packet {i}");
        let data = &epb.data[..epb.caplen as usize];
        assert_eq!(data[0] >> 4, if v6 { 6 } else { 4 }, "packet {i}: raw IP");
        let dport = u16::from_be_bytes([data[header - 6], data[header - 5]]);
        assert_eq!(dport, sent.dst.port(), "packet {i}");
        assert_eq!(
            data[header..],
            sent.payload[..data.len() - header],
            "packet {i}"
        );

        let (secs, frac) = epb.decode_ts(idb.ts_offset() as u64, 1_000_000_000);
        let stamp = u64::from(secs) * 1_000_000 + u64::from(frac) / 1000;
        match sent.kernel_stamp {
            // The kernel's stamp, exactly as the receiving socket saw it.
            Some(kernel) => assert_eq!(stamp, kernel, "packet {i}"),
            None => assert!(
                (sent.window.0..=sent.window.1).contains(&stamp),
                "packet {i}: {stamp} outside {:?}",
                sent.window
            ),
        }

        let comment = epb
            .options
            .iter()
            .find(|o| o.code.0 == 1)
            .expect("a comment");
        let comment = std::str::from_utf8(&comment.value[..comment.len as usize]).unwrap();
        let fields = comment_fields(comment);
        assert_eq!(fields["queue"], "0", "{comment}");
        assert_eq!(fields["id"], json["id"].to_string(), "{comment}");
        assert_eq!(fields["hook"], sent.hook, "{comment}");
        assert_eq!(fields["verdict"], sent.verdict, "{comment}");
        let (device, direction) = if sent.hook == "INPUT" {
            ("in", 1)
        } else {
            ("out", 2)
        };
        assert_eq!(fields[device], "lo", "{comment}");
        if sent.verdict == "accept" {
            assert_eq!(fields["verdict_mark"], MARK, "{comment}");
        } else {
            assert!(!fields.contains_key("verdict_mark"), "{comment}");
        }
        if sent.kernel_stamp.is_some() {
            assert_eq!(fields["time"], "kernel", "{comment}");
        }
        let flags = epb
            .options
            .iter()
            .find(|o| o.code.0 == 2)
            .expect("epb_flags");
        let flags = u32::from_ne_bytes(flags.value[..4].try_into().unwrap());
        assert_eq!(flags & 0b11, direction, "{comment}");
    }
}

#[test]
fn a_capture_on_stdout_moves_the_lines_away() {
    let _netns = enter_new_netns();
    let to = receiver(Ipv4Addr::LOCALHOST.into());
    queue_udp(false, "OUTPUT", to.local_addr().unwrap().port(), 0);
    let mut dump = Running::start("nfq-dump", &["--pcap", "-", "--quiet", "--count", "3", "0"]);
    wait_bound(&mut dump);
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    for i in 0..3u8 {
        sender.send_to(&[i; 10], to.local_addr().unwrap()).unwrap();
        let (got, _) = recv_with_timestamp(&to);
        assert_eq!(got, [i; 10]);
    }
    // --count 3 ends it.
    let done = dump.wait();
    assert!(done.status.success(), "{}", done.stderr);
    let capture = PcapNGCapture::from_file(&done.stdout).expect("stdout is a pcapng stream");
    let packets = capture
        .sections
        .iter()
        .flat_map(|s| s.blocks.iter())
        .filter(|b| matches!(b, Block::EnhancedPacket(_)))
        .count();
    assert_eq!(packets, 3);
    // No line per packet anywhere, and the closing statistics as aligned lines.
    assert!(!done.stderr.contains("UDP 127.0.0.1"), "{}", done.stderr);
    assert_eq!(
        stat_line(&done.stderr, "packets"),
        Some(3),
        "{}",
        done.stderr
    );
}

#[test]
fn a_capture_reader_that_goes_away_ends_the_dump_cleanly() {
    let _netns = enter_new_netns();
    let to = receiver(Ipv4Addr::LOCALHOST.into());
    queue_udp(false, "OUTPUT", to.local_addr().unwrap().port(), 0);
    // Wireshark closed: the read end of the capture's pipe is gone.
    let mut dump = std::process::Command::new(common::example("nfq-dump"))
        .args(["--pcap", "-", "--quiet", "0"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nfq-dump starts");
    drop(dump.stdout.take());
    let deadline = std::time::Instant::now() + common::PROGRAM_TIMEOUT;
    while counters::queue_line(QUEUE).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "queue 0 was never bound"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let sender = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    // Larger than the output's buffer, so that the capture's own write (not
    // only the flush) meets the closed pipe.
    let big = vec![7u8; 20_000];
    sender.send_to(&big, to.local_addr().unwrap()).unwrap();
    // Its verdict goes out although the capture could not be written.
    let (got, _) = recv_with_timestamp(&to);
    assert_eq!(got, big);
    let status = loop {
        if let Some(status) = dump.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = dump.kill();
            panic!("nfq-dump went on writing to a closed pipe");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut dump.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert_eq!(stat_line(&stderr, "packets"), Some(1), "{stderr}");
    counters::assert_queue_drained(QUEUE);
}
