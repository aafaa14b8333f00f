//! One line per packet, as a packet dump shows it: time, hook, interfaces,
//! protocol, addresses and ports, length, mark.

use crate::ifname::InterfaceName;
use crate::net::{self, TransportView};
use crate::packet::Packet;
use crate::view::PacketView;
use std::fmt;
use std::net::IpAddr;
use std::time::UNIX_EPOCH;

/// Writes the line of `view`, naming interfaces with `name_of` where it can
/// (their indices otherwise).
fn write_line(
    f: &mut fmt::Formatter<'_>,
    view: &PacketView<'_>,
    name_of: &dyn Fn(u32) -> Option<InterfaceName>,
) -> fmt::Result {
    match view
        .timestamp()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
    {
        Some(since_epoch) => {
            let secs = since_epoch.as_secs();
            write!(
                f,
                "{:02}:{:02}:{:02}.{:06} ",
                secs / 3600 % 24,
                secs / 60 % 60,
                secs % 60,
                since_epoch.subsec_micros()
            )?;
        }
        None => f.write_str("-               ")?,
    }
    write!(f, "{} ", view.hook())?;
    let dev = |index: Option<u32>| -> String {
        match index {
            None => "*".to_string(),
            Some(index) => name_of(index).map_or_else(|| format!("if{index}"), |n| n.to_string()),
        }
    };
    write!(f, "{}>{} ", dev(view.indev()), dev(view.outdev()))?;

    match net::parse(view.payload()) {
        Ok(ip) => write_ip(f, &ip)?,
        Err(_) if view.payload().is_empty() => write!(f, "proto {:#06x}", view.hw_protocol())?,
        Err(err) if matches!(view.hw_protocol(), 0x0800 | 0x86dd) => {
            write!(f, "proto {:#06x} ({err})", view.hw_protocol())?
        }
        Err(_) => write!(f, "proto {:#06x}", view.hw_protocol())?,
    }
    write!(f, " len {}", view.original_len())?;
    if view.is_truncated() {
        write!(f, " (copied {})", view.payload().len())?;
    }
    if view.mark() != 0 {
        write!(f, " mark {:#x}", view.mark())?;
    }
    Ok(())
}

fn write_ip(f: &mut fmt::Formatter<'_>, ip: &net::IpView<'_>) -> fmt::Result {
    let endpoint = |addr: IpAddr, port: Option<u16>| match (addr, port) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    };
    let transport = ip.transport();
    let (src_port, dst_port) = match &transport {
        Some(t) => (t.src_port(), t.dst_port()),
        None => (None, None),
    };
    let name = match (&transport, ip.protocol()) {
        (Some(TransportView::Icmpv6(_)), _) | (None, 58) => "ICMPv6".to_string(),
        (_, 6) => "TCP".to_string(),
        (_, 17) => "UDP".to_string(),
        (_, 1) => "ICMP".to_string(),
        (_, 132) => "SCTP".to_string(),
        (_, other) => format!("proto {other}"),
    };
    let echo = |icmp: &net::IcmpView<'_>| -> String {
        if icmp.is_echo() {
            format!(" echo id {} seq {}", icmp.echo_id(), icmp.echo_seq())
        } else {
            format!(" type {} code {}", icmp.icmp_type(), icmp.code())
        }
    };
    write!(
        f,
        "{name} {} > {}",
        endpoint(ip.src(), src_port),
        endpoint(ip.dst(), dst_port)
    )?;
    match &transport {
        Some(TransportView::Tcp(tcp)) => write!(f, " [{}]", tcp_flags(tcp.flags()))?,
        Some(TransportView::Icmpv4(icmp) | TransportView::Icmpv6(icmp)) => {
            f.write_str(&echo(icmp))?
        }
        _ => {}
    }
    if let Some(fragment) = ip.fragment() {
        write!(
            f,
            " frag id {} offset {}{}",
            fragment.id,
            fragment.offset,
            if fragment.more { "+" } else { "" }
        )?;
    }
    Ok(())
}

/// TCP flags as tcpdump writes them: `S`, `S.`, `P.`, `F.`, `R`, ...
fn tcp_flags(flags: net::TcpFlags) -> String {
    use net::TcpFlags as F;
    let mut out = String::new();
    for (flag, c) in [
        (F::SYN, 'S'),
        (F::FIN, 'F'),
        (F::RST, 'R'),
        (F::PSH, 'P'),
        (F::URG, 'U'),
        (F::ECE, 'E'),
        (F::CWR, 'W'),
        (F::ACK, '.'),
    ] {
        if flags.contains(flag) {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push_str("none");
    }
    out
}

/// One line: time (the kernel's timestamp, UTC, or `-` without one), hook,
/// `in>out` interface indices, protocol, addresses and ports, length and mark.
///
/// ```text
/// 10:42:07.123456 INPUT if2>* UDP 10.0.0.1:5353 > 10.0.0.2:53 len 61
/// ```
impl fmt::Display for PacketView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_line(f, self, &|_| None)
    }
}

/// As [`PacketView`]'s line, with interface names looked up in the queue
/// socket's namespace:
///
/// ```text
/// 10:42:07.123456 FORWARD veth0>veth1 TCP [fd00::1]:40522 > [fd00::2]:80 [S] len 80 mark 0x2a
/// ```
impl fmt::Display for Packet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_line(f, self, &|index| self.interface_name(index))
    }
}

#[cfg(test)]
mod tests {
    use crate::net::testutil::{icmp6_echo, tcp4, udp4, udp6};
    use crate::view::PacketView;
    use nfqueue_sys::nfqnl_attr_type as nfqa;

    /// The attributes of a packet message: header (id 7, hook `hook`), the
    /// payload, and the extra attributes given.
    fn attrs(hook: u8, hw_protocol: u16, payload: &[u8], extra: &[(u32, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut put = |kind: u32, value: &[u8]| {
            out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
            out.extend_from_slice(&(kind as u16).to_ne_bytes());
            out.extend_from_slice(value);
            out.resize((out.len() + 3) & !3, 0);
        };
        let mut header = 7u32.to_be_bytes().to_vec();
        header.extend_from_slice(&hw_protocol.to_be_bytes());
        header.push(hook);
        put(nfqa::NFQA_PACKET_HDR, &header);
        put(nfqa::NFQA_PAYLOAD, payload);
        for (kind, value) in extra {
            put(*kind, value);
        }
        out
    }

    fn line(attrs: &[u8]) -> String {
        PacketView::parse(0, attrs).unwrap().to_string()
    }

    #[test]
    fn an_ipv4_udp_packet_with_time_interfaces_and_mark() {
        let mut stamp = (3600 * 10 + 60 * 42 + 7u64).to_be_bytes().to_vec();
        stamp.extend_from_slice(&123_456u64.to_be_bytes());
        let a = attrs(
            1,
            0x0800,
            &udp4(b"hello"),
            &[
                (nfqa::NFQA_TIMESTAMP, stamp),
                (nfqa::NFQA_IFINDEX_INDEV, 2u32.to_be_bytes().to_vec()),
                (nfqa::NFQA_MARK, 42u32.to_be_bytes().to_vec()),
            ],
        );
        assert_eq!(
            line(&a),
            "10:42:07.123456 INPUT if2>* UDP 192.0.2.1:5000 > 198.51.100.7:53 len 33 mark 0x2a"
        );
    }

    #[test]
    fn ipv6_brackets_addresses_with_ports() {
        let a = attrs(
            3,
            0x86dd,
            &udp6(b"x"),
            &[(nfqa::NFQA_IFINDEX_OUTDEV, 1u32.to_be_bytes().to_vec())],
        );
        assert_eq!(
            line(&a),
            "-               OUTPUT *>if1 UDP [2001:db8::1]:5000 > [2001:db8::2]:53 len 49"
        );
        let a = attrs(3, 0x86dd, &icmp6_echo(b"ping"), &[]);
        assert!(
            line(&a).contains("ICMPv6 2001:db8::1 > 2001:db8::2 echo id"),
            "{}",
            line(&a)
        );
    }

    #[test]
    fn tcp_flags_truncation_and_fragments() {
        let packet = tcp4(&[0; 100]);
        let a = attrs(
            2,
            0x0800,
            &packet[..60],
            &[(
                nfqa::NFQA_CAP_LEN,
                (packet.len() as u32).to_be_bytes().to_vec(),
            )],
        );
        let text = line(&a);
        assert!(
            text.contains(
                "FORWARD *>* TCP 192.0.2.1:40000 > 198.51.100.7:80 [S.] len 140 (copied 60)"
            ),
            "{text}"
        );

        let mut fragment = udp4(&[0; 64]);
        crate::net::testutil::fragment4(&mut fragment, 1480 / 8, false);
        let text = line(&attrs(0, 0x0800, &fragment, &[]));
        assert!(
            text.contains("UDP 192.0.2.1 > 198.51.100.7 frag id"),
            "later fragments have no ports: {text}"
        );
        assert!(text.contains("offset 1480"), "{text}");
    }

    #[test]
    fn non_ip_payloads_show_the_link_protocol() {
        assert_eq!(
            line(&attrs(0, 0x0806, &[1, 2, 3], &[])),
            "-               PREROUTING *>* proto 0x0806 len 3"
        );
        let garbled = line(&attrs(0, 0x0800, &[0x45, 0], &[]));
        assert!(
            garbled.starts_with("-               PREROUTING *>* proto 0x0800 ("),
            "the parse error is shown: {garbled}"
        );
        assert!(line(&attrs(0, 0x0800, &[], &[])).contains("proto 0x0800 len 0"));
    }
}
