//! Netlink messages as the kernel sends them on a queue socket: packets, and
//! error or acknowledgement messages for earlier requests.

use crate::attr::{align4, be16, be32, AttrIndex};
use crate::error::MalformedError;
use nfqueue_sys as sys;

/// Size of `struct nlmsghdr`.
pub(crate) const NLMSG_HDRLEN: usize = 16;
/// Size of `struct nfgenmsg`.
pub(crate) const NFGENMSG_LEN: usize = 4;
/// `nlmsg_type` of a queued packet: the queue subsystem's `NFQNL_MSG_PACKET`.
pub(crate) const MSG_PACKET: u16 = msg_type(sys::nfqnl_msg_types::NFQNL_MSG_PACKET);
/// `nlmsg_type` of a verdict.
pub(crate) const MSG_VERDICT: u16 = msg_type(sys::nfqnl_msg_types::NFQNL_MSG_VERDICT);
/// `nlmsg_type` of a batch verdict.
pub(crate) const MSG_VERDICT_BATCH: u16 = msg_type(sys::nfqnl_msg_types::NFQNL_MSG_VERDICT_BATCH);
/// `nlmsg_type` of a configuration request.
pub(crate) const MSG_CONFIG: u16 = msg_type(sys::nfqnl_msg_types::NFQNL_MSG_CONFIG);

const fn msg_type(queue_msg: u32) -> u16 {
    ((sys::NFNL_SUBSYS_QUEUE << 8) | queue_msg) as u16
}

/// The fixed header of one netlink message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) len: u32,
    pub(crate) kind: u16,
    pub(crate) flags: u16,
    pub(crate) seq: u32,
}

impl Header {
    fn parse(bytes: &[u8]) -> Result<Self, MalformedError> {
        if bytes.len() < NLMSG_HDRLEN {
            return Err(MalformedError::Truncated {
                what: "netlink message header",
                needed: NLMSG_HDRLEN,
                got: bytes.len(),
            });
        }
        let ne32 = |at: usize| u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap_or_default());
        let ne16 = |at: usize| u16::from_ne_bytes(bytes[at..at + 2].try_into().unwrap_or_default());
        Ok(Header {
            len: ne32(0),
            kind: ne16(4),
            flags: ne16(6),
            seq: ne32(8),
        })
    }
}

/// One message of a datagram, classified.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Message<'a> {
    /// A queued packet: the queue number and the bytes of its attributes.
    Packet { queue: u16, attrs: &'a [u8] },
    /// An acknowledgement (`errno == 0`) or error for an earlier request.
    Ack(Ack),
    /// Anything else (`NLMSG_NOOP`, `NLMSG_DONE`, unknown types): ignored.
    Other,
}

/// An acknowledgement or error message, with what it says of the request it
/// answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ack {
    /// Zero for success, else a positive errno.
    pub(crate) errno: i32,
    /// `nlmsg_seq` of the request.
    pub(crate) seq: u32,
    /// `nlmsg_type` of the request.
    pub(crate) request_kind: u16,
    /// Queue number of the request, when echoed.
    pub(crate) queue: Option<u16>,
    /// Packet id of a verdict request, when echoed.
    pub(crate) packet_id: Option<u32>,
}

/// Splits `datagram` into its first message and the rest.
pub(crate) fn next_message(datagram: &[u8]) -> Result<(Message<'_>, &[u8]), MalformedError> {
    let header = Header::parse(datagram)?;
    let len = header.len as usize;
    if len < NLMSG_HDRLEN || len > datagram.len() {
        return Err(MalformedError::Truncated {
            what: "netlink message",
            needed: len.max(NLMSG_HDRLEN),
            got: datagram.len(),
        });
    }
    let body = &datagram[NLMSG_HDRLEN..len];
    let rest = datagram.get(align4(len)..).unwrap_or(&[]);
    let message = match header.kind {
        MSG_PACKET => {
            if body.len() < NFGENMSG_LEN {
                return Err(MalformedError::Truncated {
                    what: "nfgenmsg",
                    needed: NFGENMSG_LEN,
                    got: body.len(),
                });
            }
            Message::Packet {
                queue: u16::from_be_bytes([body[2], body[3]]),
                attrs: &body[NFGENMSG_LEN..],
            }
        }
        k if u32::from(k) == sys::NLMSG_ERROR => Message::Ack(parse_ack(body)?),
        _ => Message::Other,
    };
    Ok((message, rest))
}

/// The queue number and attribute bytes of a packet message that
/// [`next_message`] cannot take whole (cut short by a datagram too large for
/// the buffer, or with a length that does not fit): as much of them as is
/// there, so that the packet's id can still be looked for.
pub(crate) fn packet_prefix(datagram: &[u8]) -> Option<(u16, &[u8])> {
    let header = Header::parse(datagram).ok()?;
    if header.kind != MSG_PACKET {
        return None;
    }
    let end = (header.len as usize).clamp(NLMSG_HDRLEN, datagram.len());
    let body = datagram.get(NLMSG_HDRLEN..end)?;
    let queue = be16(body.get(2..4)?)?;
    Some((queue, body.get(NFGENMSG_LEN..)?))
}

/// Parses the body of an `NLMSG_ERROR` message: `struct nlmsgerr` and as much of
/// the request as the kernel echoed.
fn parse_ack(body: &[u8]) -> Result<Ack, MalformedError> {
    const ERRNO_LEN: usize = 4;
    if body.len() < ERRNO_LEN + NLMSG_HDRLEN {
        return Err(MalformedError::Truncated {
            what: "nlmsgerr",
            needed: ERRNO_LEN + NLMSG_HDRLEN,
            got: body.len(),
        });
    }
    let error = i32::from_ne_bytes([body[0], body[1], body[2], body[3]]);
    let request = &body[ERRNO_LEN..];
    let header = Header::parse(request)?;
    // The kernel echoes the whole request on error unless NETLINK_CAP_ACK is set,
    // and only the header on success; read what is there.
    let echoed_len = (header.len as usize).min(request.len());
    let echoed = request.get(NLMSG_HDRLEN..echoed_len).unwrap_or(&[]);
    let queue = echoed.get(2..4).and_then(be16);
    let packet_id = echoed
        .get(NFGENMSG_LEN..)
        .and_then(|attrs| {
            let index = AttrIndex::parse(attrs).ok()?;
            index.get(attrs, sys::nfqnl_attr_type::NFQA_VERDICT_HDR)
        })
        .and_then(|hdr| hdr.get(4..8))
        .and_then(be32);
    Ok(Ack {
        errno: error.checked_neg().unwrap_or(i32::MAX),
        seq: header.seq,
        request_kind: header.kind,
        queue,
        packet_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: u32, kind: u16, seq: u32) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(&0u16.to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out
    }

    #[test]
    fn parses_an_error_for_a_verdict() {
        // The echoed request: a verdict for packet 42 on queue 7.
        let mut request = header(36, MSG_VERDICT, 42);
        request.extend_from_slice(&[0, 0, 0, 7]);
        request.extend_from_slice(&12u16.to_ne_bytes());
        request.extend_from_slice(&2u16.to_ne_bytes());
        request.extend_from_slice(&1u32.to_be_bytes());
        request.extend_from_slice(&42u32.to_be_bytes());
        let mut message = header(20 + request.len() as u32, sys::NLMSG_ERROR as u16, 0);
        message.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        message.extend_from_slice(&request);
        let (parsed, rest) = next_message(&message).unwrap();
        assert!(rest.is_empty());
        let Message::Ack(ack) = parsed else {
            panic!("not an ack: {parsed:?}")
        };
        assert_eq!(ack.errno, libc::ENOENT);
        assert_eq!(ack.seq, 42);
        assert_eq!(ack.request_kind, MSG_VERDICT);
        assert_eq!(ack.queue, Some(7));
        assert_eq!(ack.packet_id, Some(42));
    }

    #[test]
    fn the_queue_and_attributes_of_a_cut_packet_message_are_found() {
        let mut message = header(400, MSG_PACKET, 0);
        message.extend_from_slice(&[0, 0, 0, 9]);
        message.extend_from_slice(&[8, 0, 1, 0, 0, 0, 0, 5]);
        assert!(next_message(&message).is_err(), "cut short");
        let (queue, attrs) = packet_prefix(&message).unwrap();
        assert_eq!(queue, 9);
        assert_eq!(attrs, [8, 0, 1, 0, 0, 0, 0, 5]);
        assert_eq!(packet_prefix(&header(16, MSG_VERDICT, 0)), None);
        for end in 0..message.len() {
            let _ = packet_prefix(&message[..end]);
        }
    }

    #[test]
    fn rejects_bad_lengths_without_panicking() {
        let mut message = header(16, MSG_PACKET, 0);
        assert!(next_message(&message).is_err(), "packet without nfgenmsg");
        message[0] = 200;
        assert!(next_message(&message).is_err());
        message[0] = 3;
        assert!(next_message(&message).is_err());
        for end in 0..message.len() {
            assert!(next_message(&message[..end]).is_err());
        }
    }
}
