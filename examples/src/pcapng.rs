//! Queued packets as a pcapng capture, for Wireshark, tshark or tcpdump.
//!
//! Written with the `pcap-file` crate, which reads and writes both pcap and
//! pcapng and takes blocks and their options as data, so nothing here encodes
//! blocks by hand.
//!
//! The file has one interface per queue, named `nfqueue:N`, of link type
//! `LINKTYPE_RAW` (101): a queued packet starts at its IP header, and readers
//! tell IPv4 from IPv6 by its first byte. Timestamps are in nanoseconds
//! (`if_tsresol` 9). Each packet carries
//! - `epb_flags` with its direction, inbound for PREROUTING and INPUT,
//!   outbound for OUTPUT and POSTROUTING (FORWARD says neither);
//! - a comment (`opt_comment`, which Wireshark shows as `frame.comment`) with
//!   the queue, the packet id, what the kernel said and the verdict given:
//!   `queue=0 id=7 hook=OUTPUT in=- out=lo mark=0x0 uid=0 gid=0 time=kernel verdict=accept verdict_mark=0x1`
//!   (`time=received` when the kernel gave no timestamp and the time of
//!   receipt stands in).
//!
//! pcapng's `epb_verdict` has codes for hardware, TC and XDP verdicts only, so
//! the netfilter verdict goes in the comment; the queue is the interface, and
//! the id is in the comment too (`pcap-file` 2 cannot write `epb_queue` or
//! `epb_packetid`).
//!
//! A truncated copy (`--copy-range`) keeps the packet's full length as the
//! original length, so readers show it as cut short.

use nfqueue_core::{Hook, Packet, Verdict, VerdictKind};
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::{DataLink, PcapError};
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `epb_flags` direction bits: inbound, outbound.
const INBOUND: u32 = 0b01;
const OUTBOUND: u32 = 0b10;

/// A pcapng stream being written: a section header and one interface per
/// queue first, then a block per packet.
pub struct Capture<W: Write> {
    writer: PcapNgWriter<W>,
    /// The queue number of each interface id.
    queues: Vec<u16>,
}

impl<W: Write> std::fmt::Debug for Capture<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl<W: Write> Capture<W> {
    /// Starts a capture of `queues` on `out`, where each packet is cut at
    /// `snaplen` bytes (the copy range).
    ///
    /// # Errors
    /// When `out` cannot be written.
    pub fn new(out: W, queues: &[u16], snaplen: u32) -> io::Result<Self> {
        let mut writer = PcapNgWriter::new(out).map_err(into_io)?;
        for &queue in queues {
            writer
                .write_pcapng_block(InterfaceDescriptionBlock {
                    linktype: DataLink::RAW,
                    snaplen,
                    options: vec![
                        InterfaceDescriptionOption::IfName(format!("nfqueue:{queue}").into()),
                        InterfaceDescriptionOption::IfDescription(
                            format!("NFQUEUE queue {queue}").into(),
                        ),
                        // pcap-file writes timestamps in nanoseconds; say so, or
                        // readers take them for microseconds.
                        InterfaceDescriptionOption::IfTsResol(9),
                    ],
                })
                .map_err(into_io)?;
        }
        Ok(Capture {
            writer,
            queues: queues.to_vec(),
        })
    }

    /// Writes one packet with the verdict it was given and the time it was
    /// received here, used when the kernel gave no timestamp.
    ///
    /// # Errors
    /// When `out` cannot be written, or the packet's queue is not one of the
    /// capture's.
    pub fn write(
        &mut self,
        packet: &Packet<'_>,
        verdict: &Verdict<'_>,
        received: SystemTime,
    ) -> io::Result<()> {
        let interface_id = self
            .queues
            .iter()
            .position(|&q| q == packet.queue())
            .ok_or_else(|| {
                io::Error::other(format!("queue {} is not in the capture", packet.queue()))
            })?;
        let (time, source) = match packet.timestamp() {
            Some(time) => (time, "kernel"),
            None => (received, "received"),
        };
        let mut comment = format!(
            "queue={} id={} hook={} in={} out={} mark={:#x}",
            packet.queue(),
            packet.id(),
            hook_name(packet.hook()),
            name_or_dash(packet.indev_name().map(|n| n.to_string())),
            name_or_dash(packet.outdev_name().map(|n| n.to_string())),
            packet.mark(),
        );
        if let (Some(uid), Some(gid)) = (packet.uid(), packet.gid()) {
            let _ = write!(comment, " uid={uid} gid={gid}");
        }
        let _ = write!(
            comment,
            " time={source} verdict={}",
            verdict_name(verdict.kind())
        );
        if let Some(mark) = verdict.mark() {
            let _ = write!(comment, " verdict_mark={mark:#x}");
        }
        if let Some(payload) = verdict.payload() {
            let _ = write!(comment, " new_payload={}", payload.len());
        }
        let mut options = vec![EnhancedPacketOption::Comment(Cow::Owned(comment))];
        if let Some(direction) = direction(packet.hook()) {
            options.push(EnhancedPacketOption::Flags(direction));
        }
        self.writer
            .write_pcapng_block(EnhancedPacketBlock {
                interface_id: interface_id as u32,
                timestamp: time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO),
                original_len: u32::try_from(packet.original_len()).unwrap_or(u32::MAX),
                data: Cow::Borrowed(packet.payload()),
                options,
            })
            .map_err(into_io)?;
        Ok(())
    }

    /// Flushes the output, so that a reader on a pipe sees each packet as it
    /// comes.
    ///
    /// # Errors
    /// When `out` cannot be written.
    pub fn flush(&mut self) -> io::Result<()> {
        self.writer.get_mut().flush()
    }
}

/// The I/O error inside, so that its kind (a closed pipe) stays visible.
fn into_io(err: PcapError) -> io::Error {
    match err {
        PcapError::IoError(err) => err,
        other => io::Error::other(other),
    }
}

/// A verdict in one word: `accept`, `drop`, `repeat`, `accept-final`, `queue:N`
/// (`queue:N:bypass` with the bypass flag).
pub fn verdict_name(kind: VerdictKind) -> String {
    match kind {
        VerdictKind::Accept => "accept".into(),
        VerdictKind::Drop => "drop".into(),
        VerdictKind::Repeat => "repeat".into(),
        VerdictKind::AcceptFinal => "accept-final".into(),
        VerdictKind::Queue { num, bypass: false } => format!("queue:{num}"),
        VerdictKind::Queue { num, bypass: true } => format!("queue:{num}:bypass"),
    }
}

/// The hook as iptables names its chain, without spaces.
fn hook_name(hook: Hook) -> String {
    match hook {
        Hook::Other(n) => format!("hook{n}"),
        known => known.to_string(),
    }
}

fn name_or_dash(name: Option<String>) -> String {
    name.unwrap_or_else(|| "-".into())
}

/// The `epb_flags` direction bits of a hook.
fn direction(hook: Hook) -> Option<u32> {
    match hook {
        Hook::PreRouting | Hook::LocalIn => Some(INBOUND),
        Hook::LocalOut | Hook::PostRouting => Some(OUTBOUND),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directions_follow_the_hook() {
        assert_eq!(direction(Hook::LocalIn), Some(INBOUND));
        assert_eq!(direction(Hook::PostRouting), Some(OUTBOUND));
        assert_eq!(direction(Hook::Forward), None);
        assert_eq!(hook_name(Hook::Other(7)), "hook7");
        assert_eq!(hook_name(Hook::LocalOut), "OUTPUT");
        assert_eq!(
            verdict_name(VerdictKind::Queue {
                num: 3,
                bypass: true
            }),
            "queue:3:bypass"
        );
        assert_eq!(verdict_name(VerdictKind::Drop), "drop");
    }

    #[test]
    fn a_capture_starts_with_a_section_and_one_interface_per_queue() {
        let capture = Capture::new(Vec::new(), &[0, 3], 128).unwrap();
        let bytes = capture.writer.into_inner();
        // Section header block, then interface description blocks.
        assert_eq!(&bytes[..4], &0x0A0D_0D0Au32.to_ne_bytes());
        let shb_len = u32::from_ne_bytes(bytes[4..8].try_into().unwrap()) as usize;
        let idb = &bytes[shb_len..];
        assert_eq!(&idb[..4], &1u32.to_ne_bytes());
        assert_eq!(u16::from_ne_bytes([idb[8], idb[9]]), 101, "LINKTYPE_RAW");
        let idb_len = u32::from_ne_bytes(idb[4..8].try_into().unwrap()) as usize;
        assert_eq!(&idb[idb_len..idb_len + 4], &1u32.to_ne_bytes());
        assert_eq!(shb_len + 2 * idb_len, bytes.len());
    }
}
