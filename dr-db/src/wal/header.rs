//! What a WAL segment and a data directory say about their cluster: the long page header at
//! the start of every segment, and the first fields of `global/pg_control`.
//!
//! Both are written in the server's native byte order; dr reads them as little-endian (every
//! platform PostgreSQL ships on today) and refuses anything whose magic does not match, so a
//! big-endian file is reported as unknown rather than misread.

use std::path::Path;

use dr_core::wal::{Lsn, SegmentId, SegmentSize};
use dr_core::{Error, ErrorKind, Result};

/// `XLP_LONG_HEADER`: the page starts a segment and carries the long header.
const XLP_LONG_HEADER: u16 = 0x0002;
/// Bytes of the long page header (`SizeOfXLogLongPHD`, MAXALIGNed).
pub(crate) const LONG_HEADER_BYTES: usize = 40;
/// Bytes of the short page header (`SizeOfXLogShortPHD`, MAXALIGNed).
pub(crate) const SHORT_HEADER_BYTES: usize = 24;

/// `XLOG_PAGE_MAGIC` of each major version: the WAL format changes with it.
const MAGICS: &[(u16, u32)] = &[
    (0xD097, 10),
    (0xD098, 11),
    (0xD101, 12),
    (0xD106, 13),
    (0xD10D, 14),
    (0xD110, 15),
    (0xD113, 16),
    (0xD116, 17),
    (0xD118, 18),
];

/// The PostgreSQL major version whose WAL pages carry `magic`.
pub fn version_of_magic(magic: u16) -> Option<u32> {
    MAGICS.iter().find(|(m, _)| *m == magic).map(|(_, v)| *v)
}

/// The long page header at the start of a WAL segment (`XLogLongPageHeaderData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The page magic.
    pub magic: u16,
    /// The PostgreSQL major version the magic belongs to.
    pub pg_version: u32,
    /// The timeline of the first page.
    pub timeline: u32,
    /// The WAL position of the first page: the segment's start.
    pub page_address: Lsn,
    /// The cluster's system identifier: which cluster wrote this segment.
    pub system_identifier: u64,
    /// The segment size.
    pub segment_size: SegmentSize,
    /// The WAL page size (`XLOG_BLCKSZ`).
    pub page_size: u32,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl SegmentHeader {
    /// Parse the long header from the first bytes of a segment.
    pub fn parse(bytes: &[u8]) -> Result<SegmentHeader> {
        if bytes.len() < LONG_HEADER_BYTES {
            return Err(Error::corrupt(format!(
                "too short for a WAL segment: {} bytes",
                bytes.len()
            )));
        }
        let magic = u16_at(bytes, 0);
        let pg_version = version_of_magic(magic).ok_or_else(|| {
            Error::corrupt(format!(
                "not a WAL segment this dr knows: page magic 0x{magic:04X} belongs to no \
                 PostgreSQL version from 10 to 18"
            ))
        })?;
        let info = u16_at(bytes, 2);
        if info & XLP_LONG_HEADER == 0 {
            return Err(Error::corrupt(
                "the first WAL page has no long header: not the start of a segment",
            ));
        }
        let segment_size = SegmentSize::new(u64::from(u32_at(bytes, 32))).map_err(|_| {
            Error::corrupt(format!(
                "the WAL header names an impossible segment size of {} bytes",
                u32_at(bytes, 32)
            ))
        })?;
        let page_size = u32_at(bytes, 36);
        if !page_size.is_power_of_two() || !(1024..=65536).contains(&page_size) {
            return Err(Error::corrupt(format!(
                "the WAL header names an impossible page size of {page_size} bytes"
            )));
        }
        Ok(SegmentHeader {
            magic,
            pg_version,
            timeline: u32_at(bytes, 4),
            page_address: Lsn(u64_at(bytes, 8)),
            system_identifier: u64_at(bytes, 24),
            segment_size,
            page_size,
        })
    }

    /// Check that the header belongs to the segment named `id`: same timeline, and the first
    /// page's address is the segment's start. A renamed or recycled file fails here.
    pub fn check_segment(&self, id: SegmentId) -> Result<()> {
        let name = id.name(self.segment_size);
        if self.timeline != id.timeline || self.page_address != id.start(self.segment_size) {
            let actual =
                SegmentId::new(self.timeline, self.page_address.segment(self.segment_size));
            return Err(Error::corrupt(format!(
                "file {name} holds segment {} (its header says timeline {}, position {})",
                actual.name(self.segment_size),
                self.timeline,
                self.page_address
            )));
        }
        Ok(())
    }
}

/// The first fields of a data directory's `global/pg_control` (`ControlFileData`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlFile {
    /// The cluster's system identifier, fixed at `initdb`.
    pub system_identifier: u64,
    /// `pg_control_version` (1300 for PostgreSQL 13–16, 1700 for 17, …).
    pub control_version: u32,
    /// `catalog_version_no`.
    pub catalog_version: u32,
}

impl ControlFile {
    /// Parse the start of `pg_control`.
    pub fn parse(bytes: &[u8]) -> Result<ControlFile> {
        if bytes.len() < 16 {
            return Err(Error::corrupt("pg_control is too short"));
        }
        let c = ControlFile {
            system_identifier: u64_at(bytes, 0),
            control_version: u32_at(bytes, 8),
            catalog_version: u32_at(bytes, 12),
        };
        if !(900..=9999).contains(&c.control_version) || c.system_identifier == 0 {
            return Err(Error::corrupt(format!(
                "pg_control is not a PostgreSQL control file this dr knows (version {})",
                c.control_version
            )));
        }
        Ok(c)
    }

    /// Read `global/pg_control` of the data directory `pgdata`.
    pub fn read(pgdata: &Path) -> Result<ControlFile> {
        let path = pgdata.join("global").join("pg_control");
        let bytes = std::fs::read(&path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Io
            };
            Error::new(
                kind,
                format!(
                    "cannot read {}: is {} a PostgreSQL data directory?",
                    path.display(),
                    pgdata.display()
                ),
            )
            .with_source(e)
        })?;
        ControlFile::parse(&bytes).map_err(|e| e.with_context("file", path.display()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A long page header as PostgreSQL 15 writes it.
    pub(crate) fn long_header(tli: u32, pageaddr: u64, sysid: u64, seg: u32) -> Vec<u8> {
        let mut b = vec![0u8; LONG_HEADER_BYTES];
        b[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
        b[2..4].copy_from_slice(&XLP_LONG_HEADER.to_le_bytes());
        b[4..8].copy_from_slice(&tli.to_le_bytes());
        b[8..16].copy_from_slice(&pageaddr.to_le_bytes());
        b[24..32].copy_from_slice(&sysid.to_le_bytes());
        b[32..36].copy_from_slice(&seg.to_le_bytes());
        b[36..40].copy_from_slice(&8192u32.to_le_bytes());
        b
    }

    #[test]
    fn reads_the_long_header_and_checks_the_name() {
        let size = SegmentSize::DEFAULT;
        let b = long_header(2, 5 * (16 << 20), 7_301_234_567_890_123_456, 16 << 20);
        let h = SegmentHeader::parse(&b).unwrap();
        assert_eq!(h.pg_version, 15);
        assert_eq!(h.timeline, 2);
        assert_eq!(h.system_identifier, 7_301_234_567_890_123_456);
        assert_eq!(h.segment_size, size);
        assert!(h.check_segment(SegmentId::new(2, 5)).is_ok());
        let e = h.check_segment(SegmentId::new(2, 6)).unwrap_err();
        assert_eq!(
            e.message(),
            "file 000000020000000000000006 holds segment 000000020000000000000005 (its header says timeline 2, position 0/5000000)"
        );
        assert!(h.check_segment(SegmentId::new(1, 5)).is_err());
    }

    #[test]
    fn refuses_what_is_not_a_segment_start() {
        assert!(SegmentHeader::parse(b"short").is_err());
        let mut b = long_header(1, 0, 1, 16 << 20);
        b[0] = 0x42;
        assert!(SegmentHeader::parse(&b)
            .unwrap_err()
            .message()
            .contains("page magic"));
        let mut b = long_header(1, 0, 1, 16 << 20);
        b[2] = 0;
        assert!(SegmentHeader::parse(&b).is_err());
        let b = long_header(1, 0, 1, 3 << 20);
        assert!(SegmentHeader::parse(&b).is_err());
    }

    #[test]
    fn control_file_fields() {
        let mut b = vec![0u8; 64];
        b[0..8].copy_from_slice(&42u64.to_le_bytes());
        b[8..12].copy_from_slice(&1300u32.to_le_bytes());
        let c = ControlFile::parse(&b).unwrap();
        assert_eq!(c.system_identifier, 42);
        assert!(ControlFile::parse(&[0u8; 64]).is_err());
    }
}
