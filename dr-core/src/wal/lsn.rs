//! Positions in the write-ahead log, and segment sizes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A position in the write-ahead log (PostgreSQL's `pg_lsn`): a byte offset into the
/// cluster's WAL stream, written `X/Y` in hexadecimal (`16/B374D848`), as the server does.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// The start of the WAL stream.
    pub const ZERO: Lsn = Lsn(0);

    /// The number of the segment holding this position.
    pub fn segment(self, size: SegmentSize) -> u64 {
        self.0 / size.bytes()
    }

    /// The offset of this position inside its segment.
    pub fn segment_offset(self, size: SegmentSize) -> u64 {
        self.0 % size.bytes()
    }

    /// The number of the last segment a range of WAL ending (exclusively) at this position
    /// touches: the segment before, when the position is the first byte of a segment.
    ///
    /// A backup that stops at `0/5000000` needs segments up to `…04`, not `…05`.
    pub fn last_segment_before(self, size: SegmentSize) -> u64 {
        if self.0 > 0 && self.segment_offset(size) == 0 {
            self.segment(size) - 1
        } else {
            self.segment(size)
        }
    }

    /// This position plus `bytes`, or `None` past the end of the address space.
    pub fn checked_add(self, bytes: u64) -> Option<Lsn> {
        self.0.checked_add(bytes).map(Lsn)
    }

    /// Bytes from `earlier` to this position (zero if `earlier` is later).
    pub fn bytes_since(self, earlier: Lsn) -> u64 {
        self.0.saturating_sub(earlier.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl fmt::Debug for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Lsn({self})")
    }
}

impl FromStr for Lsn {
    type Err = Error;

    /// `X/Y`, each half 1 to 8 hexadecimal digits (either case), as PostgreSQL accepts.
    fn from_str(s: &str) -> Result<Lsn> {
        let bad = || {
            Error::invalid(format!(
                "'{s}' is not a WAL position (expected two hexadecimal numbers such as 16/B374D848)"
            ))
        };
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let half = |h: &str| -> Result<u64> {
            if h.is_empty() || h.len() > 8 || !h.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u64::from_str_radix(h, 16).map_err(|_| bad())
        };
        Ok(Lsn((half(hi)? << 32) | half(lo)?))
    }
}

impl Serialize for Lsn {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.message().to_string()))
    }
}

/// The size of a cluster's WAL segments: chosen at `initdb` (`--wal-segsize`), a power of two
/// from 1 MiB to 1 GiB, 16 MiB by default. Read it from the server or a segment's header,
/// never assume it: segment names mean different positions under different sizes.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SegmentSize(u64);

impl SegmentSize {
    /// PostgreSQL's default, 16 MiB.
    pub const DEFAULT: SegmentSize = SegmentSize(16 << 20);

    /// A segment size of `bytes`: a power of two from 1 MiB to 1 GiB.
    pub fn new(bytes: u64) -> Result<SegmentSize> {
        if bytes.is_power_of_two() && ((1 << 20)..=(1 << 30)).contains(&bytes) {
            Ok(SegmentSize(bytes))
        } else {
            Err(Error::invalid(format!(
                "{bytes} bytes is not a WAL segment size (a power of two from 1 MiB to 1 GiB)"
            )))
        }
    }

    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }

    /// Segments per 4 GiB "log id", the middle part of a segment name.
    pub fn segments_per_id(self) -> u64 {
        0x1_0000_0000 / self.0
    }
}

impl Default for SegmentSize {
    fn default() -> Self {
        SegmentSize::DEFAULT
    }
}

impl fmt::Debug for SegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentSize({} MiB)", self.0 >> 20)
    }
}

impl fmt::Display for SegmentSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} MiB", self.0 >> 20)
    }
}

impl Serialize for SegmentSize {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for SegmentSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let n = u64::deserialize(d)?;
        SegmentSize::new(n).map_err(|e| serde::de::Error::custom(e.message().to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_text_round_trips_like_postgres_prints_it() {
        for (text, value) in [
            ("0/0", 0u64),
            ("0/3000148", 0x0300_0148),
            ("16/B374D848", 0x16_B374_D848),
            ("FFFFFFFF/FFFFFFFF", u64::MAX),
        ] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn.0, value);
            assert_eq!(lsn.to_string(), text);
        }
        assert_eq!("16/b374d848".parse::<Lsn>().unwrap().0, 0x16_B374_D848);
        for bad in ["", "0", "/1", "1/", "1/2/3", "123456789/0", "g/0", " 1/ 2"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn segments_of_positions() {
        let size = SegmentSize::DEFAULT;
        let lsn: Lsn = "1/5000028".parse().unwrap();
        assert_eq!(lsn.segment(size), 0x100 + 5);
        assert_eq!(lsn.segment_offset(size), 0x28);
        let boundary: Lsn = "0/5000000".parse().unwrap();
        assert_eq!(boundary.last_segment_before(size), 4);
        assert_eq!(lsn.last_segment_before(size), 0x105);
        assert_eq!(Lsn::ZERO.last_segment_before(size), 0);
    }

    #[test]
    fn segment_sizes_are_powers_of_two_in_range() {
        assert!(SegmentSize::new(1 << 20).is_ok());
        assert!(SegmentSize::new(1 << 30).is_ok());
        assert!(SegmentSize::new(1 << 19).is_err());
        assert!(SegmentSize::new(3 << 20).is_err());
        assert_eq!(SegmentSize::DEFAULT.segments_per_id(), 256);
        assert_eq!(SegmentSize::new(1 << 30).unwrap().segments_per_id(), 4);
    }
}
