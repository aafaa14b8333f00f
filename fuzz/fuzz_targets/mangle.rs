//! Random edits of a packet with the mangling helpers. Properties, beyond not
//! crashing:
//! - an edit that fails leaves the bytes as they were;
//! - an edit that succeeds on a packet whose checksums were right leaves them
//!   right (`verify_checksums` says OK) and does what it says (the address, port,
//!   hop limit or transport payload reads back);
//! - `fix_checksums` that succeeds leaves checksums that verify.
//!
//! Input: byte 0 gives the number of edits (low bits, `% 5`) and whether to fix
//! the checksums first (bit 7); then 17 bytes per edit (an operation byte and
//! 16 bytes of argument); the rest is the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nfqueue_net::{self as net, mangle};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const EDIT_LEN: usize = 17;

fn checksums_ok(packet: &[u8]) -> bool {
    mangle::verify_checksums(packet).is_ok_and(|s| s.is_ok())
}

fn address(arg: &[u8; 16]) -> IpAddr {
    if arg[15] & 0x80 == 0 {
        Ipv4Addr::new(arg[0], arg[1], arg[2], arg[3]).into()
    } else {
        Ipv6Addr::from(*arg).into()
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let edits = usize::from(first & 0x7f) % 5;
    if rest.len() < edits * EDIT_LEN {
        return;
    }
    let (ops, packet) = rest.split_at(edits * EDIT_LEN);
    let mut packet = packet.to_vec();

    if first & 0x80 != 0 {
        let before = packet.clone();
        match mangle::fix_checksums(&mut packet) {
            Ok(()) => assert!(
                checksums_ok(&packet),
                "fix_checksums succeeded but {:?}",
                mangle::verify_checksums(&packet)
            ),
            Err(_) => assert_eq!(packet, before, "fix_checksums failed and changed bytes"),
        }
    }

    for edit in ops.chunks_exact(EDIT_LEN) {
        let op = edit[0];
        let arg: [u8; 16] = edit[1..].try_into().unwrap();
        let port = u16::from_be_bytes([arg[0], arg[1]]);
        let was_ok = checksums_ok(&packet);
        let before = packet.clone();
        let (result, name) = match op & 0x7f {
            0 => (
                mangle::set_src_addr(&mut packet, address(&arg)),
                "set_src_addr",
            ),
            1 => (
                mangle::set_dst_addr(&mut packet, address(&arg)),
                "set_dst_addr",
            ),
            2 => (mangle::set_src_port(&mut packet, port), "set_src_port"),
            3 => (mangle::set_dst_port(&mut packet, port), "set_dst_port"),
            4 => (mangle::set_hop_limit(&mut packet, arg[0]), "set_hop_limit"),
            5 => {
                // Bit 7 of the operation asks for a long payload (up to 65535
                // bytes: some too long for a verdict to carry, or for IP).
                let len = if op & 0x80 != 0 {
                    usize::from(port)
                } else {
                    usize::from(arg[0])
                };
                let payload: Vec<u8> = arg[1..].iter().copied().cycle().take(len).collect();
                let result = mangle::set_l4_payload(&mut packet, &payload);
                if result.is_ok() {
                    assert!(
                        packet.len() <= mangle::MAX_PACKET_LEN,
                        "a packet no verdict carries"
                    );
                    let ip = net::parse(&packet).expect("an edited packet parses");
                    let got = ip.transport().map(|t| t.payload());
                    assert_eq!(got, Some(&payload[..]), "set_l4_payload did not read back");
                }
                (result, "set_l4_payload")
            }
            _ => (mangle::fix_checksums(&mut packet), "fix_checksums"),
        };
        match result {
            Err(err) => assert_eq!(packet, before, "{name} failed ({err}) and changed bytes"),
            Ok(()) => {
                let ip = net::parse(&packet).expect("an edited packet parses");
                match op & 0x7f {
                    0 => assert_eq!(ip.src(), address(&arg)),
                    1 => assert_eq!(ip.dst(), address(&arg)),
                    2 => assert_eq!(ip.flow().src_port, port),
                    3 => assert_eq!(ip.flow().dst_port, port),
                    4 => assert_eq!(ip.hop_limit(), arg[0]),
                    _ => {}
                }
                if was_ok || name == "fix_checksums" {
                    assert!(
                        checksums_ok(&packet),
                        "{name} succeeded but {:?}",
                        mangle::verify_checksums(&packet)
                    );
                }
            }
        }
    }
});
