//! Random verdicts, encoded by the library (through `VerdictBatch`), decoded
//! again by an independent decoder written here from the kernel's message
//! layout: every message must round-trip (queue, id, verdict code, mark,
//! payload, sequence number, lengths and padding), and an empty payload or one
//! over the maximum must be refused with nothing added.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use nfqueue_core::{Binding, Error, Verdict, VerdictBatch, VerdictKind, MAX_PAYLOAD};

#[derive(Debug, Arbitrary)]
enum Kind {
    Accept,
    Drop,
    Repeat,
    Stop,
    Queue { num: u16, bypass: bool },
}

#[derive(Debug, Arbitrary)]
enum Payload {
    None,
    Bytes(Vec<u8>),
    /// A payload of `MAX_PAYLOAD - 2 + n % 4` bytes: around the limit.
    Large(u8),
}

#[derive(Debug, Arbitrary)]
struct Input {
    queue: u16,
    id: u32,
    kind: Kind,
    mark: Option<u32>,
    payload: Payload,
    /// A batch verdict (every id up to `id`); it never carries a payload.
    batch: bool,
}

/// One decoded message.
#[derive(Debug, PartialEq, Eq)]
struct Decoded {
    batch: bool,
    queue: u16,
    id: u32,
    code: u32,
    mark: Option<u32>,
    payload: Option<Vec<u8>>,
}

fn ne16(b: &[u8]) -> u16 {
    u16::from_ne_bytes([b[0], b[1]])
}

fn ne32(b: &[u8]) -> u32 {
    u32::from_ne_bytes(b[..4].try_into().unwrap())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

/// Decodes one verdict message from the front of `bytes`; returns it and the
/// rest. Panics on anything the kernel would not read as we meant it.
fn decode(bytes: &[u8]) -> (Decoded, &[u8]) {
    // struct nlmsghdr { u32 len; u16 type; u16 flags; u32 seq; u32 pid; }
    let len = ne32(bytes) as usize;
    assert!(
        len >= 16 + 4 && len.is_multiple_of(4) && len <= bytes.len(),
        "length {len}"
    );
    let kind = ne16(&bytes[4..]);
    // NFNL_SUBSYS_QUEUE << 8 | NFQNL_MSG_VERDICT (1) or _VERDICT_BATCH (3).
    let batch = match kind {
        0x0301 => false,
        0x0303 => true,
        other => panic!("message type {other:#x}"),
    };
    assert_eq!(ne16(&bytes[6..]), 1, "flags: NLM_F_REQUEST only");
    let seq = ne32(&bytes[8..]);
    assert_eq!(ne32(&bytes[12..]), 0, "port id");
    // struct nfgenmsg { u8 family; u8 version; __be16 res_id; }
    assert_eq!(bytes[16], 0, "AF_UNSPEC");
    assert_eq!(bytes[17], 0, "NFNETLINK_V0");
    let queue = u16::from_be_bytes([bytes[18], bytes[19]]);
    let mut out = Decoded {
        batch,
        queue,
        id: 0,
        code: 0,
        mark: None,
        payload: None,
    };
    let mut header = false;
    let mut at = 20;
    while at < len {
        let alen = usize::from(ne16(&bytes[at..]));
        let akind = ne16(&bytes[at + 2..]);
        assert!(
            alen >= 4 && at + alen <= len,
            "attribute length {alen} at {at}"
        );
        let value = &bytes[at + 4..at + alen];
        match akind {
            2 => {
                // NFQA_VERDICT_HDR: __be32 verdict, __be32 id
                assert!(!header && value.len() == 8);
                header = true;
                out.code = be32(value);
                out.id = be32(&value[4..]);
            }
            3 => {
                // NFQA_MARK
                assert!(out.mark.is_none() && value.len() == 4);
                out.mark = Some(be32(value));
            }
            10 => {
                // NFQA_PAYLOAD
                assert!(out.payload.is_none());
                out.payload = Some(value.to_vec());
            }
            other => panic!("attribute {other}"),
        }
        let next = at + ((alen + 3) & !3);
        assert!(
            bytes[at + alen..next.min(len)].iter().all(|&b| b == 0),
            "padding"
        );
        at = next;
    }
    assert_eq!(at, len, "attributes end with the message");
    assert!(header, "no NFQA_VERDICT_HDR");
    assert_eq!(seq, out.id, "the sequence number is the packet id");
    (out, &bytes[len..])
}

fn verdict_kind(kind: &Kind) -> VerdictKind {
    match *kind {
        Kind::Accept => VerdictKind::Accept,
        Kind::Drop => VerdictKind::Drop,
        Kind::Repeat => VerdictKind::Repeat,
        Kind::Stop => VerdictKind::AcceptFinal,
        Kind::Queue { num, bypass } => VerdictKind::Queue { num, bypass },
    }
}

/// The verdict code as the kernel reads it (include/uapi/linux/netfilter.h).
fn expected_code(kind: &Kind) -> u32 {
    match *kind {
        Kind::Drop => 0,
        Kind::Accept => 1,
        Kind::Repeat => 4,
        Kind::Stop => 5,
        Kind::Queue { num, bypass } => 3 | u32::from(num) << 16 | u32::from(bypass) << 15,
    }
}

fuzz_target!(|inputs: Vec<Input>| {
    let mut batch = VerdictBatch::new();
    let mut expected = Vec::new();
    for input in inputs.iter().take(64) {
        let kind = verdict_kind(&input.kind);
        let payload = match &input.payload {
            Payload::None => None,
            Payload::Bytes(b) => Some(b.clone()),
            Payload::Large(n) => Some(vec![0x45; MAX_PAYLOAD - 2 + usize::from(n % 4)]),
        };
        let before = batch.len();
        let result = if input.batch {
            batch.push_up_to(Binding::detached(input.queue).packet(input.id), kind, input.mark)
        } else {
            let mut verdict = Verdict::new(kind);
            if let Some(mark) = input.mark {
                verdict = verdict.with_mark(mark);
            }
            if let Some(p) = &payload {
                verdict = verdict.with_payload(&p[..]);
            }
            batch.push(Binding::detached(input.queue).packet(input.id), verdict)
        };
        let too_large = !input.batch && payload.as_ref().is_some_and(|p| p.len() > MAX_PAYLOAD);
        let empty = !input.batch && payload.as_ref().is_some_and(|p| p.is_empty());
        match result {
            Ok(()) => {
                assert!(!too_large, "a payload over the maximum was taken");
                assert!(!empty, "an empty payload was taken");
                assert_eq!(batch.len(), before + 1);
                expected.push(Decoded {
                    batch: input.batch,
                    queue: input.queue,
                    id: input.id,
                    code: expected_code(&input.kind),
                    mark: input.mark,
                    payload: if input.batch { None } else { payload },
                });
            }
            Err(Error::PayloadTooLarge { len, max }) => {
                assert!(too_large && max == MAX_PAYLOAD && len > MAX_PAYLOAD);
                assert_eq!(batch.len(), before, "a refused verdict was added");
            }
            Err(Error::EmptyPayload) => {
                assert!(empty);
                assert_eq!(batch.len(), before, "a refused verdict was added");
            }
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    let bytes = batch.to_bytes();
    let mut rest = &bytes[..];
    let mut decoded = Vec::new();
    while !rest.is_empty() {
        let (message, tail) = decode(rest);
        decoded.push(message);
        rest = tail;
    }
    assert_eq!(decoded, expected);
});
