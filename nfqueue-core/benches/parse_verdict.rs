//! Micro-benchmarks of the per-packet work done in user space: parsing a
//! packet message as the kernel sends it, and encoding verdicts.
//!
//! `cargo bench -p nfqueue-core --bench parse_verdict`

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use nfqueue_core::{Binding, PacketView, Verdict, VerdictBatch, VerdictKind};
use nfqueue_sys::nfqnl_attr_type as nfqa;
use std::hint::black_box;

/// Appends one netlink attribute, padded to 4 bytes.
fn attr(msg: &mut Vec<u8>, kind: u32, value: &[u8]) {
    msg.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    msg.extend_from_slice(&(kind as u16).to_ne_bytes());
    msg.extend_from_slice(value);
    msg.resize(msg.len().next_multiple_of(4), 0);
}

/// An `NFQNL_MSG_PACKET` message like the kernel's for a locally sent UDP
/// datagram (OUTPUT hook) with `payload` bytes of data: packet header, mark,
/// out interface, UID/GID, SKB info and the IP packet.
fn packet_message(payload: usize) -> Vec<u8> {
    let mut msg = vec![0u8; 16]; // nlmsghdr, filled in below
    msg.extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0]); // nfgenmsg, queue 0
    let mut hdr = Vec::new();
    hdr.extend_from_slice(&12345u32.to_be_bytes()); // packet id
    hdr.extend_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    hdr.push(3); // NF_INET_LOCAL_OUT
    attr(&mut msg, nfqa::NFQA_PACKET_HDR, &hdr);
    attr(&mut msg, nfqa::NFQA_MARK, &7u32.to_be_bytes());
    attr(&mut msg, nfqa::NFQA_IFINDEX_OUTDEV, &1u32.to_be_bytes());
    attr(&mut msg, nfqa::NFQA_UID, &0u32.to_be_bytes());
    attr(&mut msg, nfqa::NFQA_GID, &0u32.to_be_bytes());
    attr(&mut msg, nfqa::NFQA_SKB_INFO, &0u32.to_be_bytes());
    let len = 28 + payload;
    let mut ip = vec![
        0x45,
        0,
        (len >> 8) as u8,
        len as u8,
        0,
        1,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ];
    ip.extend_from_slice(&[127, 0, 0, 1, 127, 0, 0, 1]);
    ip.extend_from_slice(&[
        0x9c,
        0x40,
        0,
        9,
        ((8 + payload) >> 8) as u8,
        (8 + payload) as u8,
        0,
        0,
    ]);
    ip.resize(len, 0xab);
    attr(&mut msg, nfqa::NFQA_PAYLOAD, &ip);
    let total = msg.len() as u32;
    msg[0..4].copy_from_slice(&total.to_ne_bytes());
    // NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_PACKET
    msg[4..6].copy_from_slice(&(3u16 << 8).to_ne_bytes());
    msg
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(1));
    for payload in [64, 1400] {
        let msg = packet_message(payload);
        PacketView::from_message(&msg).expect("a valid message");
        group.bench_function(format!("from_message/{payload}B"), |b| {
            b.iter(|| {
                let view = PacketView::from_message(black_box(&msg)).unwrap();
                black_box((view.id(), view.mark(), view.payload().len()))
            })
        });
    }
    group.finish();
}

fn verdicts(c: &mut Criterion) {
    let mut group = c.benchmark_group("verdict");
    group.throughput(Throughput::Elements(64));
    let mut batch = VerdictBatch::new();
    group.bench_function("VerdictBatch::push x64", |b| {
        b.iter(|| {
            for id in 0..64u32 {
                batch
                    .push(
                        Binding::detached(0).packet(black_box(id)),
                        Verdict::accept(),
                    )
                    .unwrap();
            }
            batch.clear();
        })
    });
    group.bench_function("VerdictBatch::push with mark x64", |b| {
        b.iter(|| {
            for id in 0..64u32 {
                batch
                    .push(
                        Binding::detached(0).packet(black_box(id)),
                        Verdict::accept().with_mark(7),
                    )
                    .unwrap();
            }
            batch.clear();
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function("VerdictBatch::push_up_to", |b| {
        b.iter(|| {
            batch
                .push_up_to(
                    Binding::detached(0).packet(black_box(99)),
                    VerdictKind::Accept,
                    None,
                )
                .unwrap();
            batch.clear();
        })
    });
    let payload = vec![0u8; 1428];
    group.bench_function("VerdictBatch::push with 1428 B payload", |b| {
        b.iter_batched(
            || Verdict::accept().with_payload(&payload[..]),
            |verdict| {
                batch.push(Binding::detached(0).packet(1), verdict).unwrap();
                batch.clear();
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, parse, verdicts);
criterion_main!(benches);
