//! The names PostgreSQL gives the files it archives.
//!
//! ```text
//! 000000010000000A000000FE                  segment: timeline, then the segment number in two halves
//! 000000010000000A000000FE.partial          the last, incomplete segment of a timeline (or a stream)
//! 00000002.history                          the history of timeline 2: where it forked from its parents
//! 000000010000000A000000FE.00000028.backup  a backup history file: a base backup started at offset 0x28
//! ```
//!
//! The two halves of a segment number depend on the segment size (16 MiB segments: 256 per
//! "log id"), so a name is parsed together with the cluster's [`SegmentSize`].

use std::cmp::Ordering;
use std::fmt;

use crate::error::{Error, Result};
use crate::wal::lsn::{Lsn, SegmentSize};

/// A timeline id (PostgreSQL's `TimeLineID`): 1 for a new cluster, one more for each
/// promotion or point-in-time recovery that ends with a new history.
pub type TimelineId = u32;

/// One segment of one timeline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SegmentId {
    /// The timeline the segment belongs to.
    pub timeline: TimelineId,
    /// The segment number: its first byte is at `number × segment size`.
    pub number: u64,
}

impl SegmentId {
    /// Segment `number` of `timeline`.
    pub fn new(timeline: TimelineId, number: u64) -> Self {
        SegmentId { timeline, number }
    }

    /// The 24-character file name, e.g. `000000010000000A000000FE`.
    pub fn name(&self, size: SegmentSize) -> String {
        let per = size.segments_per_id();
        format!(
            "{:08X}{:08X}{:08X}",
            self.timeline,
            self.number / per,
            self.number % per
        )
    }

    /// The position of the segment's first byte.
    pub fn start(&self, size: SegmentSize) -> Lsn {
        Lsn(self.number.saturating_mul(size.bytes()))
    }

    /// Parse a 24-character segment name.
    pub fn parse(name: &str, size: SegmentSize) -> Result<SegmentId> {
        let bad = |why: &str| Error::invalid(format!("'{name}' is not a WAL segment name: {why}"));
        if name.len() != 24 || !name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
            return Err(bad("expected 24 upper-case hexadecimal digits"));
        }
        let part = |i: usize| u64::from_str_radix(&name[i * 8..i * 8 + 8], 16).expect("hex");
        let (timeline, log, seg) = (part(0), part(1), part(2));
        if timeline == 0 {
            return Err(bad("timeline 0 does not exist"));
        }
        if seg >= size.segments_per_id() {
            return Err(bad(&format!(
                "its last 8 digits exceed the {} segments per log id of {size} segments",
                size.segments_per_id()
            )));
        }
        Ok(SegmentId {
            timeline: timeline as TimelineId,
            number: log * size.segments_per_id() + seg,
        })
    }
}

impl fmt::Debug for SegmentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SegmentId(tl {}, #{:X})", self.timeline, self.number)
    }
}

/// A file PostgreSQL archives, by kind.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum WalFile {
    /// A complete segment.
    Segment(SegmentId),
    /// The incomplete last segment of a timeline (archived at promotion), or the segment a
    /// WAL receiver is writing.
    Partial(SegmentId),
    /// The history file of a timeline.
    History(TimelineId),
    /// A backup history file: the segment and offset at which a base backup started.
    Backup {
        /// The segment holding the backup's start.
        segment: SegmentId,
        /// The start's offset in that segment.
        offset: u32,
    },
}

impl WalFile {
    /// Parse an archived file's name (see the [module docs](self)).
    pub fn parse(name: &str, size: SegmentSize) -> Result<WalFile> {
        if let Some(seg) = name.strip_suffix(".partial") {
            return Ok(WalFile::Partial(SegmentId::parse(seg, size)?));
        }
        if let Some(tli) = name.strip_suffix(".history") {
            if tli.len() == 8 && tli.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F')) {
                let tli = u32::from_str_radix(tli, 16).expect("hex");
                if tli > 0 {
                    return Ok(WalFile::History(tli));
                }
            }
            return Err(Error::invalid(format!(
                "'{name}' is not a timeline history file name (expected 8 upper-case hexadecimal digits and .history)"
            )));
        }
        if let Some(rest) = name.strip_suffix(".backup") {
            if let Some((seg, offset)) = rest.split_once('.') {
                if offset.len() == 8
                    && offset
                        .bytes()
                        .all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
                {
                    let offset = u32::from_str_radix(offset, 16).expect("hex");
                    if u64::from(offset) < size.bytes() {
                        return Ok(WalFile::Backup {
                            segment: SegmentId::parse(seg, size)?,
                            offset,
                        });
                    }
                }
            }
            return Err(Error::invalid(format!(
                "'{name}' is not a backup history file name (expected SEGMENT.OFFSET.backup)"
            )));
        }
        SegmentId::parse(name, size).map(WalFile::Segment)
    }

    /// The file name PostgreSQL uses.
    pub fn name(&self, size: SegmentSize) -> String {
        match self {
            WalFile::Segment(s) => s.name(size),
            WalFile::Partial(s) => format!("{}.partial", s.name(size)),
            WalFile::History(t) => format!("{t:08X}.history"),
            WalFile::Backup { segment, offset } => {
                format!("{}.{offset:08X}.backup", segment.name(size))
            }
        }
    }

    /// The timeline the file belongs to.
    pub fn timeline(&self) -> TimelineId {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) | WalFile::Backup { segment: s, .. } => {
                s.timeline
            }
            WalFile::History(t) => *t,
        }
    }

    /// The segment the file is or refers to; `None` for a history file.
    pub fn segment(&self) -> Option<SegmentId> {
        match self {
            WalFile::Segment(s) | WalFile::Partial(s) | WalFile::Backup { segment: s, .. } => {
                Some(*s)
            }
            WalFile::History(_) => None,
        }
    }

    /// A short lowercase name of the kind: `segment`, `partial`, `history`, `backup`.
    pub fn kind(&self) -> &'static str {
        match self {
            WalFile::Segment(_) => "segment",
            WalFile::Partial(_) => "partial",
            WalFile::History(_) => "history",
            WalFile::Backup { .. } => "backup",
        }
    }

    fn sort_key(&self) -> (TimelineId, u64, u8, u32) {
        match self {
            WalFile::History(t) => (*t, 0, 0, 0),
            WalFile::Segment(s) => (s.timeline, s.number, 1, 0),
            WalFile::Backup { segment, offset } => (segment.timeline, segment.number, 2, *offset),
            WalFile::Partial(s) => (s.timeline, s.number, 3, 0),
        }
    }
}

impl PartialOrd for WalFile {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for WalFile {
    /// By timeline, then position: a timeline's history first, then its segments in order
    /// (a segment before the backup history files and partial of the same number).
    fn cmp(&self, other: &Self) -> Ordering {
        self.sort_key().cmp(&other.sort_key())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_for_every_kind() {
        let size = SegmentSize::DEFAULT;
        for name in [
            "000000010000000A000000FE",
            "000000010000000A000000FE.partial",
            "0000000A.history",
            "000000020000000000000003.00000028.backup",
        ] {
            let f = WalFile::parse(name, size).unwrap();
            assert_eq!(f.name(size), name);
        }
        assert_eq!(
            WalFile::parse("000000010000000A000000FE", size).unwrap(),
            WalFile::Segment(SegmentId::new(1, 0xA * 256 + 0xFE))
        );
        assert_eq!(
            WalFile::parse("0000000A.history", size).unwrap(),
            WalFile::History(10)
        );
    }

    #[test]
    fn the_segment_size_decides_the_number() {
        let big = SegmentSize::new(1 << 30).unwrap(); // 4 segments per log id
        let s = SegmentId::parse("000000010000000200000003", big).unwrap();
        assert_eq!(s.number, 2 * 4 + 3);
        assert_eq!(s.start(big).to_string(), "2/C0000000");
        assert!(SegmentId::parse("000000010000000200000004", big).is_err());
        let small = SegmentSize::DEFAULT;
        assert_eq!(
            SegmentId::parse("000000010000000200000004", small)
                .unwrap()
                .number,
            2 * 256 + 4
        );
    }

    #[test]
    fn malformed_names_are_refused() {
        let size = SegmentSize::DEFAULT;
        for bad in [
            "",
            "00000001000000000000000",
            "0000000100000000000000001",
            "000000010000000a000000fe",
            "000000000000000000000001",
            "00000000.history",
            "1.history",
            "000000010000000000000003.28.backup",
            "000000010000000000000003.backup",
            "../../etc/passwd",
            "000000010000000000000003.partial.partial",
        ] {
            assert!(WalFile::parse(bad, size).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn files_sort_by_timeline_then_position() {
        let size = SegmentSize::DEFAULT;
        let mut names: Vec<WalFile> = [
            "000000020000000000000001",
            "00000002.history",
            "000000010000000000000002.partial",
            "000000010000000000000002",
            "000000010000000000000001.00000028.backup",
            "000000010000000000000001",
        ]
        .iter()
        .map(|n| WalFile::parse(n, size).unwrap())
        .collect();
        names.sort();
        let sorted: Vec<String> = names.iter().map(|f| f.name(size)).collect();
        assert_eq!(
            sorted,
            [
                "000000010000000000000001",
                "000000010000000000000001.00000028.backup",
                "000000010000000000000002",
                "000000010000000000000002.partial",
                "00000002.history",
                "000000020000000000000001",
            ]
        );
    }
}
