//! The Internet checksum (RFC 1071): a one's-complement sum of 16-bit words.
//!
//! Words are added 32 bits at a time from 8-byte chunks into a 64-bit accumulator,
//! which cannot overflow for any IP packet (at most 2^13 chunks, each adding less
//! than 2^33), and folded to 16 bits once at the end. Since 2^16 = 1 modulo
//! 2^16 - 1, the folded sum is the same as adding 16-bit words one by one.

use core::net::IpAddr;

/// Adds `data`, read as big-endian 16-bit words (an odd last byte padded with zero),
/// to `acc`. `data` must start at an even offset of the checksummed stream.
pub(crate) fn sum(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(8);
    for chunk in &mut chunks {
        let word = <[u8; 8]>::try_from(chunk).map_or(0, u64::from_be_bytes);
        acc += (word >> 32) + (word & 0xffff_ffff);
    }
    let mut pairs = chunks.remainder().chunks_exact(2);
    for pair in &mut pairs {
        acc += u64::from(u16::from_be_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

/// Folds a sum to 16 bits with end-around carry.
pub(crate) fn fold(mut acc: u64) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The loop leaves at most 16 bits.
    acc as u16
}

/// The checksum to store for a sum taken with the checksum field zeroed.
pub(crate) fn finish(acc: u64) -> u16 {
    !fold(acc)
}

/// Sum of the transport pseudo-header: addresses, protocol and upper-layer length
/// (RFC 768/793 for IPv4, RFC 8200 section 8.1 for IPv6).
pub(crate) fn pseudo_header(src: IpAddr, dst: IpAddr, protocol: u8, len: usize) -> u64 {
    let mut acc = u64::from(protocol) + len as u64;
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            acc = sum(&s.octets(), acc);
            acc = sum(&d.octets(), acc);
        }
        (s, d) => {
            acc = sum(&v6_octets(s), acc);
            acc = sum(&v6_octets(d), acc);
        }
    }
    acc
}

fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// Sum of `data` leaving out the 16-bit field at even offset `field`.
pub(crate) fn sum_without(data: &[u8], field: usize, acc: u64) -> u64 {
    let head = data.get(..field).unwrap_or(data);
    let tail = data.get(field + 2..).unwrap_or(&[]);
    sum(tail, sum(head, acc))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Rng;

    /// The textbook loop, one 16-bit word at a time.
    fn naive(data: &[u8]) -> u16 {
        let mut acc: u32 = 0;
        for pair in data.chunks(2) {
            let hi = u32::from(pair[0]) << 8;
            let lo = pair.get(1).map_or(0, |&b| u32::from(b));
            acc += hi | lo;
            acc = (acc & 0xffff) + (acc >> 16);
        }
        !(acc as u16)
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the words 0001 f203 f4f5 f6f7 sum to ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(finish(sum(&data, 0)), !0xddf2);
    }

    #[test]
    fn wide_sum_agrees_with_word_sum() {
        let mut rng = Rng::new(7);
        for len in 0..200 {
            let data = rng.bytes(len);
            assert_eq!(finish(sum(&data, 0)), naive(&data), "len {len}");
        }
        let big = rng.bytes(65535);
        assert_eq!(finish(sum(&big, 0)), naive(&big));
        let ones = vec![0xff; 65535];
        assert_eq!(finish(sum(&ones, 0)), naive(&ones));
    }

    #[test]
    fn sum_without_skips_the_field() {
        let mut rng = Rng::new(8);
        let mut data = rng.bytes(64);
        let with = sum_without(&data, 16, 0);
        data[16] = 0;
        data[17] = 0;
        assert_eq!(fold(with), fold(sum(&data, 0)));
    }
}
