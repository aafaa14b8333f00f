//! Netlink attributes (TLVs): a bounds-checked walk and a table by attribute kind.

use crate::error::MalformedError;

/// Size of `struct nlattr`.
pub(crate) const NLA_HDRLEN: usize = 4;
/// The `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` flag bits of `nla_type`.
const NLA_TYPE_MASK: u16 = 0x3fff;

/// Rounds `len` up to the netlink alignment of 4 bytes.
pub(crate) const fn align4(len: usize) -> usize {
    (len + 3) & !3
}

/// One attribute: its kind (flag bits removed) and its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attribute<'a> {
    /// The attribute type, e.g. `NFQA_PAYLOAD`.
    pub kind: u16,
    /// The attribute's value, without padding.
    pub value: &'a [u8],
}

/// Iterator over the attributes in a byte range; stops with an error at the first
/// malformed one.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    rest: &'a [u8],
}

impl<'a> Attributes<'a> {
    /// Walks the attributes in `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Attributes { rest: bytes }
    }
}

impl<'a> Iterator for Attributes<'a> {
    type Item = Result<Attribute<'a>, MalformedError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.len() < NLA_HDRLEN {
            // Up to 3 bytes of trailing padding are allowed; anything else is junk.
            return if self.rest.iter().all(|&b| b == 0) {
                self.rest = &[];
                None
            } else {
                let got = self.rest.len();
                self.rest = &[];
                Some(Err(MalformedError::Truncated {
                    what: "attribute header",
                    needed: NLA_HDRLEN,
                    got,
                }))
            };
        }
        let len = usize::from(u16::from_ne_bytes([self.rest[0], self.rest[1]]));
        let kind = u16::from_ne_bytes([self.rest[2], self.rest[3]]) & NLA_TYPE_MASK;
        if len < NLA_HDRLEN || len > self.rest.len() {
            let got = self.rest.len();
            self.rest = &[];
            return Some(Err(MalformedError::Truncated {
                what: "attribute",
                needed: len.max(NLA_HDRLEN),
                got,
            }));
        }
        let value = &self.rest[NLA_HDRLEN..len];
        self.rest = self.rest.get(align4(len)..).unwrap_or(&[]);
        Some(Ok(Attribute { kind, value }))
    }
}

/// Highest attribute kind kept in an [`AttrIndex`]; covers every `NFQA_*` of the
/// kernel header this crate was built against, with room for a few newer ones.
pub(crate) const TABLE_SIZE: usize = 32;

/// Marks a kind that the message does not have.
const ABSENT: u16 = u16::MAX;
/// Marks a kind whose value starts beyond 16-bit offsets (see [`AttrIndex`]).
const FAR: u16 = u16::MAX - 1;

/// Where each attribute of one message lies, by kind (the last one of a kind
/// wins), built in one pass without allocating. It holds offsets, not
/// references, so that it can be kept beside an owned copy of the bytes.
///
/// It is small, as it is moved with every packet: a 16-bit offset per kind,
/// of the attribute's header, whose length field (checked when the index was
/// made) gives the value's end. Only an attribute after a payload of nearly
/// 64 KiB starts further out; it is marked, and found by a walk of the
/// attributes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttrIndex {
    /// Where each kind's attribute header starts; `ABSENT` or `FAR`.
    slots: [u16; TABLE_SIZE],
}

impl AttrIndex {
    /// Indexes every attribute of `bytes`, failing on the first malformed one.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, MalformedError> {
        let mut index = AttrIndex {
            slots: [ABSENT; TABLE_SIZE],
        };
        for attr in Attributes::new(bytes) {
            let attr = attr?;
            if let Some(slot) = index.slots.get_mut(usize::from(attr.kind)) {
                let start = attr.value.as_ptr() as usize - NLA_HDRLEN - bytes.as_ptr() as usize;
                *slot = match u16::try_from(start) {
                    Ok(start) if start < FAR => start,
                    _ => FAR,
                };
            }
        }
        Ok(index)
    }

    /// The value of attribute `kind` in `bytes` (the bytes this was built
    /// from), if present.
    #[inline]
    pub(crate) fn get<'a>(&self, bytes: &'a [u8], kind: u32) -> Option<&'a [u8]> {
        match *self.slots.get(kind as usize)? {
            ABSENT => None,
            FAR => Attributes::new(bytes)
                .filter_map(Result::ok)
                .filter(|a| u32::from(a.kind) == kind)
                .last()
                .map(|a| a.value),
            start => {
                let start = usize::from(start);
                let header = bytes.get(start..start + NLA_HDRLEN)?;
                let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
                bytes.get(start + NLA_HDRLEN..start + len)
            }
        }
    }
}

/// Reads a big-endian u32 from the start of `bytes`.
pub(crate) fn be32(bytes: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?))
}

/// Reads a big-endian u16 from the start of `bytes`.
pub(crate) fn be16(bytes: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?))
}

/// Reads a big-endian u64 from the start of `bytes`.
pub(crate) fn be64(bytes: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(kind: u16, value: &[u8]) -> Vec<u8> {
        let len = (NLA_HDRLEN + value.len()) as u16;
        let mut out = Vec::new();
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(align4(out.len()), 0);
        out
    }

    #[test]
    fn walks_attributes_with_padding() {
        let mut bytes = attr(3, &[1, 2, 3, 4]);
        bytes.extend(attr(10, &[9, 9, 9]));
        bytes.extend(attr(0x8000 | 19, &[]));
        let attrs: Vec<_> = Attributes::new(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(attrs.len(), 3);
        assert_eq!(
            attrs[0],
            Attribute {
                kind: 3,
                value: &[1, 2, 3, 4]
            }
        );
        assert_eq!(
            attrs[1],
            Attribute {
                kind: 10,
                value: &[9, 9, 9]
            }
        );
        assert_eq!(attrs[2].kind, 19, "the nested flag is masked off");
    }

    #[test]
    fn rejects_lengths_beyond_the_buffer() {
        let mut bytes = attr(3, &[1, 2, 3, 4]);
        bytes[0] = 200;
        let first = Attributes::new(&bytes).next().unwrap();
        assert!(matches!(first, Err(MalformedError::Truncated { .. })));
        bytes[0] = 2;
        assert!(Attributes::new(&bytes).next().unwrap().is_err());
    }

    #[test]
    fn every_prefix_parses_or_errors() {
        let mut bytes = attr(3, &[1, 2, 3, 4]);
        bytes.extend(attr(10, &[7; 13]));
        for end in 0..=bytes.len() {
            let _ = AttrIndex::parse(&bytes[..end]);
        }
        let index = AttrIndex::parse(&bytes).unwrap();
        assert_eq!(index.get(&bytes, 3).and_then(be32), Some(0x01020304));
        assert_eq!(index.get(&bytes, 10).map(<[u8]>::len), Some(13));
        assert_eq!(index.get(&bytes, 200), None);
    }

    /// The index finds what the attribute walk finds, and fails where it
    /// fails, on every prefix and every single-byte change of a message.
    #[test]
    fn the_index_agrees_with_the_walk() {
        let mut message = attr(1, &[0, 0, 0, 9, 8, 0, 3]);
        message.extend(attr(3, &[0, 0, 0, 7]));
        message.extend(attr(0x8000 | 19, &attr(1, &[0x81, 0])));
        message.extend(attr(10, &[0x45; 21]));
        let check = |bytes: &[u8]| {
            let walked: Result<Vec<Attribute<'_>>, _> = Attributes::new(bytes).collect();
            match (AttrIndex::parse(bytes), walked) {
                (Ok(index), Ok(attrs)) => {
                    for kind in 0..TABLE_SIZE as u32 {
                        let last = attrs.iter().rfind(|a| u32::from(a.kind) == kind);
                        assert_eq!(index.get(bytes, kind), last.map(|a| a.value), "{bytes:?}");
                    }
                }
                (Err(_), Err(_)) => {}
                (index, walked) => panic!(
                    "{bytes:?}: index {:?}, walk {:?}",
                    index.is_ok(),
                    walked.is_ok()
                ),
            }
        };
        for end in 0..=message.len() {
            check(&message[..end]);
        }
        for at in 0..message.len() {
            for value in [0, 1, 3, 4, 5, 0x7f, 0xff] {
                let mut changed = message.clone();
                changed[at] = value;
                check(&changed);
            }
        }
    }

    /// An attribute after a payload of nearly 64 KiB starts beyond 16-bit
    /// offsets: it is still found.
    #[test]
    fn attributes_beyond_64_kib_are_found() {
        let mut bytes = attr(10, &vec![7; 65_531]);
        bytes.extend(attr(3, &[1, 2, 3, 4]));
        let index = AttrIndex::parse(&bytes).unwrap();
        assert_eq!(index.get(&bytes, 10).map(<[u8]>::len), Some(65_531));
        assert_eq!(index.slots[3], FAR);
        assert_eq!(index.get(&bytes, 3).and_then(be32), Some(0x01020304));
        assert_eq!(index.get(&bytes, 4), None);
    }
}
