//! An IP packet (an NFQUEUE payload): parse it, read every field, and check
//! what the views promise: slices inside the packet, flows that reverse.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nfqueue_net::{self as net, FlowKey, TransportView};
use std::hint::black_box;

/// True when `inner` lies within `outer`.
fn within(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr() as usize, inner.as_ptr() as usize);
    inner.is_empty() || (i >= o && i + inner.len() <= o + outer.len())
}

fuzz_target!(|data: &[u8]| {
    let Ok(ip) = net::parse(data) else {
        return;
    };
    black_box((ip.version(), ip.src(), ip.dst(), ip.protocol()));
    black_box((ip.hop_limit(), ip.total_len(), ip.fragment()));
    black_box((
        ip.is_first_fragment(),
        ip.is_truncated(),
        ip.headers_complete(),
    ));
    assert!(within(data, ip.bytes()));
    assert!(within(data, ip.ip_payload()));
    assert!(ip.header_len() <= data.len() || !ip.headers_complete());
    if let Some(payload) = ip.payload() {
        assert!(within(data, payload));
    }
    if let Some(transport) = ip.transport() {
        black_box((
            transport.protocol(),
            transport.src_port(),
            transport.dst_port(),
        ));
        black_box(transport.header_len());
        assert!(within(data, transport.payload()));
        match transport {
            TransportView::Tcp(tcp) => {
                black_box((tcp.seq(), tcp.ack(), tcp.flags(), tcp.window()));
                black_box((tcp.checksum(), tcp.urgent_ptr(), tcp.header_len()));
                assert!(within(data, tcp.options()) && within(data, tcp.bytes()));
            }
            TransportView::Udp(udp) => {
                black_box((udp.src_port(), udp.dst_port(), udp.length(), udp.checksum()));
                assert!(within(data, udp.payload()) && within(data, udp.bytes()));
            }
            TransportView::Icmpv4(icmp) | TransportView::Icmpv6(icmp) => {
                black_box((icmp.icmp_type(), icmp.code(), icmp.checksum()));
                black_box((icmp.rest_of_header(), icmp.is_v6(), icmp.is_echo()));
                black_box((icmp.echo_id(), icmp.echo_seq()));
                assert!(within(data, icmp.payload()) && within(data, icmp.bytes()));
            }
            other => {
                black_box(format!("{other:?}"));
            }
        }
    }
    let flow = ip.flow();
    assert_eq!(flow.reversed().reversed(), flow);
    assert_eq!(flow.flow_hash(), flow.reversed().flow_hash());
    assert_eq!(
        flow.hash_by(FlowKey::Addresses),
        flow.reversed().hash_by(FlowKey::Addresses)
    );
    assert!(flow.canonical().is_canonical());
    let _ = black_box(net::mangle::verify_checksums(data));
});
