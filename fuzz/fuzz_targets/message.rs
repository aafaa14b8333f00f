//! A netlink datagram as the kernel would send it on a queue socket: parse it
//! as a packet message, read every attribute through every getter, print it,
//! and parse its payload as an IP packet. The same bytes are also read as the
//! value of an `NFQA_CT` attribute (a conntrack entry), which a packet
//! message rarely carries whole.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nfqueue_core::net;
use nfqueue_core::{Conntrack, PacketView};
use std::hint::black_box;

/// Reads a conntrack entry through every getter.
fn read_conntrack(ct: &Conntrack<'_>) {
    black_box(format!("{ct:?}"));
    for tuple in [ct.original(), ct.reply(), ct.master()]
        .into_iter()
        .flatten()
    {
        black_box(tuple.to_string());
    }
    black_box((ct.status(), ct.state(), ct.mark(), ct.id(), ct.zone()));
    black_box((ct.timeout(), ct.labels().map(|l| l.iter().count())));
    // What parsed was checked whole.
    assert!(ct.attributes().all(|a| a.is_ok()));
}

fuzz_target!(|data: &[u8]| {
    if let Ok(ct) = Conntrack::parse(data, Some(u32::from(data.first().copied().unwrap_or(0)))) {
        read_conntrack(&ct);
    }
    let Ok(view) = PacketView::from_message(data) else {
        return;
    };
    black_box((view.queue(), view.id(), view.hw_protocol(), view.hook()));
    black_box((view.mark(), view.timestamp(), view.indev(), view.outdev()));
    black_box((view.physindev(), view.physoutdev(), view.hw_addr()));
    black_box((
        view.original_len(),
        view.is_truncated(),
        view.uid(),
        view.gid(),
    ));
    black_box((
        view.secctx(),
        view.skb_info(),
        view.vlan(),
        view.l2_header(),
    ));
    black_box((view.priority(), view.conntrack(), view.conntrack_info()));
    black_box(view.conntrack_expectation());
    if let Ok(Some(ct)) = view.conntrack_view() {
        assert_eq!(Some(ct.raw()), view.conntrack());
        assert_eq!(ct.state(), view.conntrack_state());
        read_conntrack(&ct);
    }
    if let Some(hw) = view.hw_addr() {
        assert!(hw.len() <= 8);
    }
    let attrs = view.attribute_bytes();
    for attr in view.attributes().flatten() {
        assert!(view.attribute(attr.kind).is_some());
    }
    // The getters and the generic lookup agree (NFQA_PAYLOAD is 10).
    assert_eq!(view.attribute(10).unwrap_or_default(), view.payload());
    // The attribute bytes parse again to the same packet.
    let again = PacketView::parse(view.queue(), attrs).expect("attributes parse twice");
    assert_eq!(again.id(), view.id());
    assert_eq!(again.payload(), view.payload());
    black_box(format!("{view} {view:?}"));

    let payload = view.payload();
    if let Ok(ip) = net::parse(payload) {
        black_box(format!("{ip:?} {:?} {:?}", ip.transport(), ip.flow()));
        let _ = black_box(net::mangle::verify_checksums(payload));
    }
});
