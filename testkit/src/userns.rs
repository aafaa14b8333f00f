//! The user namespace the tests run in, and what the kernel lets a queue do
//! from there.
//!
//! Some kernels (6.18 builds among them) drop a packet whose verdict carries a
//! payload (`NFQA_PAYLOAD`) when the verdict comes from a socket in a
//! non-initial user namespace: no error comes back, the packet is simply gone.
//! Whether this kernel does is found out once per test process, by trying it:
//! [`payload_verdict_arrives`] sends one such verdict in a throwaway network
//! namespace, with its own netlink code (not the library's, so that a bug of
//! the library cannot make its tests skip).

use crate::{cmd, Netns};
use std::io::{self, Write};
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether this process runs in the initial user namespace: there, and only
/// there, `/proc/self/uid_map` maps every uid to itself (`0 0 4294967295`).
///
/// Comparing `/proc/self/ns/user` with `/proc/1/ns/user` would not do: PID 1
/// may itself be in a user namespace (a container), or be another process's
/// (a PID namespace). When the file cannot be read this says `true`, so that
/// nothing is skipped on a guess.
pub fn in_initial_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => is_identity_map(&map),
        Err(_) => true,
    }
}

/// Whether a `uid_map` maps all of 0..2^32-1 to itself in one line.
fn is_identity_map(map: &str) -> bool {
    let lines: Vec<Vec<&str>> = map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .filter(|fields: &Vec<&str>| !fields.is_empty())
        .collect();
    matches!(lines.as_slice(), [only] if only.as_slice() == ["0", "0", "4294967295"])
}

/// Why a test that gives verdicts with a payload cannot run in this process,
/// or `None` when it can.
///
/// In the initial user namespace this is always `None` (no probe is made):
/// there a payload verdict must work, and a test that finds otherwise fails.
/// Elsewhere it runs [`payload_verdict_arrives`] once per process and caches
/// the answer; an inconclusive probe (it could not set itself up, or a plain
/// accept did not arrive either) is printed and also gives `None`, so the
/// tests run and show what is wrong.
pub fn payload_verdicts_dropped() -> Option<&'static str> {
    static DROPPED: OnceLock<bool> = OnceLock::new();
    let dropped = *DROPPED.get_or_init(|| {
        if in_initial_user_namespace() {
            return false;
        }
        payload_verdict_arrives().map_or_else(
            |why| {
                // Past libtest's capture, as the tests it lets run may pass.
                let note =
                    format!("nfqueue-testkit: the payload-verdict probe could not tell: {why}\n");
                let _ = std::io::stderr().write_all(note.as_bytes());
                false
            },
            |arrives| !arrives,
        )
    });
    dropped.then_some(REASON)
}

/// Why the tests that replace payloads are skipped where the probe saw the
/// packet dropped.
pub const REASON: &str = "the kernel drops a packet whose verdict carries a payload when the \
     verdict comes from a non-initial user namespace (probed here: the payload verdict got no \
     error, yet its packet never arrived; a plain accept did)";

/// Queue number of the probe, in its own namespace.
const QUEUE: u16 = 0;
/// How long the probe waits for a packet, from the queue or at the receiver.
const WAIT: Duration = Duration::from_secs(2);

/// Gives one packet a verdict with a payload, from this process's user
/// namespace, and says whether it arrived: `Ok(false)` when the kernel
/// dropped it.
///
/// In a new network namespace it queues UDP to a port of 127.0.0.1 from
/// `OUTPUT` (with `iptables`), binds the queue on a netlink socket of its own,
/// and sends two datagrams: the first gets a plain accept (which must arrive,
/// else the probe proves nothing), the second an accept that carries the
/// packet's own bytes back. Each wait is bounded by 2 seconds; it takes
/// milliseconds when the packets arrive.
///
/// # Errors
///
/// A message when the probe cannot tell: the namespace, the rule, the
/// socket or the bind failed, no packet was queued, the kernel answered a
/// verdict with an error, or the plain accept did not arrive.
pub fn payload_verdict_arrives() -> Result<bool, String> {
    let ns = Netns::try_new().map_err(|e| format!("creating a network namespace: {e}"))?;
    ns.run(probe_here)
}

/// The probe, on a thread inside its namespace.
fn probe_here() -> Result<bool, String> {
    let udp = |what| {
        let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("binding {what}: {e}"))?;
        sock.set_read_timeout(Some(WAIT))
            .map_err(|e| format!("read timeout: {e}"))?;
        Ok::<_, String>(sock)
    };
    let (sender, receiver) = (udp("a sender")?, udp("a receiver")?);
    let dest = receiver.local_addr().map_err(|e| e.to_string())?;
    cmd::try_run(
        "iptables",
        [
            "-A",
            "OUTPUT",
            "-o",
            "lo",
            "-p",
            "udp",
            "--dport",
            &dest.port().to_string(),
            "-j",
            "NFQUEUE",
            "--queue-num",
            &QUEUE.to_string(),
        ],
    )?;
    let mut queue = NfQueue::bind(QUEUE).map_err(|e| format!("binding queue {QUEUE}: {e}"))?;
    let mut through = |datagram: &[u8], with_payload: bool| -> Result<bool, String> {
        sender
            .send_to(datagram, dest)
            .map_err(|e| format!("sending: {e}"))?;
        let (id, packet) = queue.next_packet()?;
        queue.accept(id, with_payload.then_some(&packet[..]))?;
        let mut buf = [0u8; 64];
        Ok(matches!(receiver.recv(&mut buf), Ok(n) if &buf[..n] == datagram))
    };
    if !through(b"plain accept", false)? {
        return Err("a plain accept did not arrive either".into());
    }
    through(b"accept with the same payload", true)
}

// The nfnetlink_queue protocol, as much of it as the probe needs
// (<linux/netfilter/nfnetlink_queue.h>, <linux/netlink.h>).
const NETLINK_NETFILTER: libc::c_int = 12;
const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_PACKET: u8 = 2;
const NF_ACCEPT: u32 = 1;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
/// Netlink header (16 bytes) plus `struct nfgenmsg` (4).
const HEADERS: usize = 20;

/// A netlink socket with one queue bound, closed (and so unbound) on drop.
struct NfQueue {
    fd: OwnedFd,
    queue: u16,
    seq: u32,
}

impl NfQueue {
    fn bind(queue: u16) -> io::Result<NfQueue> {
        // SAFETY: socket takes no pointers; a non-negative result is a new
        // descriptor that nothing else owns.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: see above: `fd` is fresh and owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain old data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: `addr` is a live sockaddr_nl and the length says so.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut q = NfQueue { fd, queue, seq: 0 };
        let mut params = 0xffffu32.to_be_bytes().to_vec();
        params.push(NFQNL_COPY_PACKET);
        q.request(
            NFQNL_MSG_CONFIG,
            &[
                (NFQA_CFG_CMD, &[NFQNL_CFG_CMD_BIND, 0, 0, 0]),
                (NFQA_CFG_PARAMS, &params),
            ],
        )
        .map_err(io::Error::other)?;
        Ok(q)
    }

    /// Sends a message with `attrs` and waits for the kernel's acknowledgement.
    fn request(&mut self, kind: u16, attrs: &[(u16, &[u8])]) -> Result<(), String> {
        self.seq += 1;
        let message = encode(kind, self.seq, self.queue, attrs);
        // SAFETY: the buffer is live and its length is passed with it; send
        // only reads it.
        let sent = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                message.as_ptr().cast(),
                message.len(),
                0,
            )
        };
        if sent < 0 {
            return Err(format!("send: {}", io::Error::last_os_error()));
        }
        let seq = self.seq;
        self.receive(|kind, body| {
            (kind == NLMSG_ERROR && body.len() >= 4 && seq_of_error(body) == Some(seq)).then(|| {
                match i32::from_ne_bytes(body[..4].try_into().expect("4 bytes")) {
                    0 => Ok(()),
                    err => Err(format!(
                        "the kernel answered: {}",
                        io::Error::from_raw_os_error(-err)
                    )),
                }
            })
        })?
    }

    /// The id and the payload of the next queued packet.
    fn next_packet(&mut self) -> Result<(u32, Vec<u8>), String> {
        self.receive(|kind, body| {
            (kind == (NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET)).then(|| {
                let (mut id, mut payload) = (None, Vec::new());
                for (attr, value) in attributes(body.get(4..).unwrap_or_default()) {
                    match attr {
                        NFQA_PACKET_HDR if value.len() >= 4 => {
                            id = Some(u32::from_be_bytes(value[..4].try_into().expect("4")));
                        }
                        NFQA_PAYLOAD => payload = value.to_vec(),
                        _ => {}
                    }
                }
                Ok((id.ok_or("a packet message without an id")?, payload))
            })
        })?
    }

    /// Accepts packet `id`, with `payload` as its new content if given.
    fn accept(&mut self, id: u32, payload: Option<&[u8]>) -> Result<(), String> {
        let mut header = NF_ACCEPT.to_be_bytes().to_vec();
        header.extend_from_slice(&id.to_be_bytes());
        let mut attrs: Vec<(u16, &[u8])> = vec![(NFQA_VERDICT_HDR, &header)];
        attrs.extend(payload.map(|p| (NFQA_PAYLOAD, p)));
        self.request(NFQNL_MSG_VERDICT, &attrs)
    }

    /// Reads messages until `pick` takes one (returns `Some`), for at most
    /// [`WAIT`]. `pick` gets each message's type and what follows its
    /// netlink header.
    fn receive<T>(&mut self, mut pick: impl FnMut(u16, &[u8]) -> Option<T>) -> Result<T, String> {
        let deadline = Instant::now() + WAIT;
        let mut buf = vec![0u8; 1 << 17];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("nothing came from the queue within {WAIT:?}"));
            }
            let mut poll = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
            // SAFETY: one live pollfd, and the count says one.
            if unsafe { libc::poll(&mut poll, 1, ms) } <= 0 {
                continue;
            }
            // SAFETY: the buffer is live and writable for its whole length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            let Ok(n) = usize::try_from(n) else {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::WouldBlock
                    || err.kind() == io::ErrorKind::Interrupted
                {
                    continue;
                }
                return Err(format!("recv: {err}"));
            };
            let mut rest = &buf[..n];
            while rest.len() >= 16 {
                let len = u32::from_ne_bytes(rest[..4].try_into().expect("4")) as usize;
                let kind = u16::from_ne_bytes(rest[4..6].try_into().expect("2"));
                if len < 16 || len > rest.len() {
                    break;
                }
                if let Some(found) = pick(kind, &rest[16..len]) {
                    return Ok(found);
                }
                rest = &rest[align4(len).min(rest.len())..];
            }
        }
    }
}

/// The sequence number of the request an `NLMSG_ERROR` body answers.
fn seq_of_error(body: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(body.get(12..16)?.try_into().ok()?))
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// One request of the queue subsystem: netlink header, `nfgenmsg` naming
/// `queue`, then `attrs`, each padded to 4 bytes.
fn encode(kind: u16, seq: u32, queue: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = vec![0u8; HEADERS];
    for (attr, value) in attrs {
        let len = 4 + value.len();
        out.extend_from_slice(&(len as u16).to_ne_bytes());
        out.extend_from_slice(&attr.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align4(out.len()), 0);
    }
    let total = out.len() as u32;
    out[..4].copy_from_slice(&total.to_ne_bytes());
    out[4..6].copy_from_slice(&(NFNL_SUBSYS_QUEUE << 8 | kind).to_ne_bytes());
    out[6..8].copy_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    out[8..12].copy_from_slice(&seq.to_ne_bytes());
    // Port id 0: the kernel fills it in. nfgenmsg: AF_UNSPEC, version 0, queue.
    out[18..20].copy_from_slice(&queue.to_be_bytes());
    out
}

/// The attributes of a message body, as `(type, value)` (the nested and
/// byte-order flags cleared).
fn attributes(mut body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = usize::from(u16::from_ne_bytes(body.get(..2)?.try_into().ok()?));
        let kind = u16::from_ne_bytes(body.get(2..4)?.try_into().ok()?) & 0x3fff;
        let value = body.get(4..len)?;
        body = body.get(align4(len)..).unwrap_or_default();
        Some((kind, value))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_identity_map_is_the_initial_namespace() {
        assert!(is_identity_map("         0          0 4294967295\n"));
        assert!(!is_identity_map("         0          0          1\n"));
        assert!(!is_identity_map("0 1000 1\n1 100000 65536\n"));
        assert!(!is_identity_map(""));
    }

    #[test]
    fn requests_are_laid_out_as_the_kernel_reads_them() {
        let m = encode(NFQNL_MSG_VERDICT, 7, 0x0102, &[(NFQA_PAYLOAD, b"abcde")]);
        assert_eq!(m.len(), 20 + 12, "9 bytes of attribute, padded to 12");
        assert_eq!(u32::from_ne_bytes(m[..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(m[4..6].try_into().unwrap()), 0x0301);
        assert_eq!(u32::from_ne_bytes(m[8..12].try_into().unwrap()), 7);
        assert_eq!(&m[16..20], &[0, 0, 1, 2]);
        let attrs: Vec<_> = attributes(&m[20..]).collect();
        assert_eq!(attrs, [(NFQA_PAYLOAD, &b"abcde"[..])]);
    }
}
