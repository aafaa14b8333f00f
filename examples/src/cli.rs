//! Value parsers shared by the examples' command lines (clap derive).

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;

/// Queue numbers as iptables writes them: `N`, or a range `FIRST:LAST` as in
/// `--queue-balance FIRST:LAST`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueRange {
    /// The first queue number.
    pub first: u16,
    /// The last queue number (equal to `first` for one queue).
    pub last: u16,
}

impl QueueRange {
    /// Every queue number of the range.
    pub fn numbers(self) -> RangeInclusive<u16> {
        self.first..=self.last
    }

    /// The NFQUEUE target's options that send packets to these queues:
    /// `--queue-num N`, or `--queue-balance FIRST:LAST`.
    pub fn target_args(self) -> Vec<String> {
        if self.first == self.last {
            vec!["--queue-num".into(), self.first.to_string()]
        } else {
            vec!["--queue-balance".into(), self.to_string()]
        }
    }
}

impl FromStr for QueueRange {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, String> {
        let number = |s: &str| {
            s.parse::<u16>()
                .map_err(|e| format!("{s:?} is not a queue number (0-65535): {e}"))
        };
        let (first, last) = match spec.split_once(':') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => (number(spec)?, number(spec)?),
        };
        if first > last {
            return Err(format!("{spec}: the range is empty"));
        }
        Ok(QueueRange { first, last })
    }
}

impl fmt::Display for QueueRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}:{}", self.first, self.last)
        }
    }
}

/// A mark as iptables writes it: decimal, or hexadecimal after `0x`.
///
/// # Errors
/// A message naming the text when it is neither.
pub fn parse_mark(text: &str) -> Result<u32, String> {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    }
    .map_err(|e| format!("{text:?} is not a mark (decimal or 0x hex): {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_queue_numbers_and_ranges() {
        assert_eq!("3".parse(), Ok(QueueRange { first: 3, last: 3 }));
        assert_eq!("0:7".parse(), Ok(QueueRange { first: 0, last: 7 }));
        assert!("7:0".parse::<QueueRange>().unwrap_err().contains("empty"));
        assert!("x".parse::<QueueRange>().is_err());
        assert!("65536".parse::<QueueRange>().is_err());
        let range: QueueRange = "2:4".parse().unwrap();
        assert_eq!(range.numbers().collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(range.target_args(), ["--queue-balance", "2:4"]);
        assert_eq!(
            "5".parse::<QueueRange>().unwrap().target_args(),
            ["--queue-num", "5"]
        );
    }

    #[test]
    fn parses_marks() {
        assert_eq!(parse_mark("16"), Ok(16));
        assert_eq!(parse_mark("0x10"), Ok(16));
        assert_eq!(parse_mark("0XfF"), Ok(255));
        assert!(parse_mark("0x").is_err());
        assert!(parse_mark("ten").is_err());
    }
}
