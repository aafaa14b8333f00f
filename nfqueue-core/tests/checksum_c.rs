//! Agreement of `net::mangle::fix_checksums` with libnetfilter_queue's own
//! checksum helpers, the C code the kernel-facing examples of NFQUEUE use.
//!
//! It lives here, not in `nfqueue-net`, because that crate has no C in it:
//! `nfqueue-core` links libnetfilter_queue anyway. No kernel needed.

use nfqueue_core::net::mangle::fix_checksums;
use nfqueue_core::net::testutil::{etherparse_checksums_ok, tcp4, tcp6, udp4, udp6};
use nfqueue_sys as sys;

/// A buffer aligned for the C header structs the helpers take.
#[repr(C, align(8))]
struct Aligned([u8; 2048]);

/// Runs `f` on an aligned copy of `packet` and returns the bytes after it.
fn in_c(packet: &[u8], f: impl FnOnce(*mut u8)) -> Vec<u8> {
    let mut buf = Box::new(Aligned([0; 2048]));
    buf.0[..packet.len()].copy_from_slice(packet);
    f(buf.0.as_mut_ptr());
    buf.0[..packet.len()].to_vec()
}

fn zero(p: &mut [u8], at: usize) {
    p[at..at + 2].copy_from_slice(&[0, 0]);
}

#[test]
fn ipv4_header_udp_and_tcp() {
    for (mut p, l4_field) in [(udp4(b"odd payload"), 26), (tcp4(b"0123456789"), 36)] {
        let udp = p[9] == 17;
        zero(&mut p, 10);
        zero(&mut p, l4_field);
        if udp {
            // Nonzero, so the checksum counts as present for us.
            p[l4_field + 1] = 1;
        }
        let c = in_c(&p, |ptr| {
            let iph = ptr.cast::<sys::iphdr>();
            // SAFETY: `ptr` points into an 8-aligned buffer holding the whole
            // packet, an IPv4 header (IHL 5) followed by its transport header, as
            // the helpers expect; they write only the checksum fields, in bounds.
            unsafe {
                sys::nfq_ip_set_checksum(iph);
                let l4 = ptr.add(20);
                if udp {
                    sys::nfq_udp_compute_checksum_ipv4(l4.cast(), iph);
                } else {
                    sys::nfq_tcp_compute_checksum_ipv4(l4.cast(), iph);
                }
            }
        });
        fix_checksums(&mut p).unwrap();
        assert_eq!(p, c);
    }
}

#[test]
fn ipv6_udp_and_tcp() {
    for (mut p, l4_field) in [(udp6(b"odd payload"), 46), (tcp6(b"0123456789"), 56)] {
        zero(&mut p, l4_field);
        let udp = p[6] == 17;
        let c = in_c(&p, |ptr| {
            let ip6h = ptr.cast::<sys::ip6_hdr>();
            // SAFETY: as above, with a 40-byte IPv6 header and no extension
            // headers before the transport header.
            unsafe {
                let l4 = ptr.add(40);
                if udp {
                    sys::nfq_udp_compute_checksum_ipv6(l4.cast(), ip6h);
                } else {
                    sys::nfq_tcp_compute_checksum_ipv6(l4.cast(), ip6h);
                }
            }
        });
        fix_checksums(&mut p).unwrap();
        assert_eq!(p, c);
        assert!(etherparse_checksums_ok(&p));
    }
}
