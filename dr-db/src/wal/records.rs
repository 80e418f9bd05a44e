//! Reading the records of a WAL segment, as far as dr needs: when transactions ended and
//! where named restore points are. This places each archived segment in time (the PITR
//! window, choosing a base backup for a target time) and finds `--target-name`s without
//! reading WAL at restore time.
//!
//! The segment is read as PostgreSQL's "usable bytes": the pages' contents without their
//! headers, in which records follow each other at 8-byte alignment and may cross pages. A
//! page whose header does not carry the expected address (a recycled file's stale page),
//! a record whose back-link (`xl_prev`) does not point at the record before, a zero length
//! or a switch record ends the reading: what comes after is not WAL of this segment. The
//! scan never fails on odd bytes; it reports what it could read.

use chrono::{DateTime, TimeZone, Utc};
use dr_core::wal::{Lsn, RestorePoint, WalContents};

use crate::wal::header::{SegmentHeader, LONG_HEADER_BYTES, SHORT_HEADER_BYTES};

const XLP_FIRST_IS_CONTRECORD: u16 = 0x0001;
const RECORD_HEADER_BYTES: usize = 24;
const RM_XLOG_ID: u8 = 0;
const RM_XACT_ID: u8 = 1;
const XLOG_SWITCH: u8 = 0x40;
const XLOG_RESTORE_POINT: u8 = 0x70;
const XLOG_XACT_OPMASK: u8 = 0x70;
const XLOG_XACT_COMMIT: u8 = 0x00;
const XLOG_XACT_ABORT: u8 = 0x20;
const XLOG_XACT_COMMIT_PREPARED: u8 = 0x30;
const XLOG_XACT_ABORT_PREPARED: u8 = 0x40;
const XLR_BLOCK_ID_DATA_SHORT: u8 = 255;
const XLR_BLOCK_ID_DATA_LONG: u8 = 254;
const XLR_BLOCK_ID_ORIGIN: u8 = 253;
const XLR_BLOCK_ID_TOPLEVEL_XID: u8 = 252;
const XLR_MAX_BLOCK_ID: u8 = 32;
const BKPBLOCK_HAS_IMAGE: u8 = 0x10;
const BKPBLOCK_SAME_REL: u8 = 0x80;
/// Seconds from the Unix epoch to PostgreSQL's (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_UNIX: i64 = 946_684_800;

/// Read the records of one segment (`bytes`, from its first page; a partial segment may be
/// shorter than the segment size). `header` is its parsed long header.
pub fn scan_segment(bytes: &[u8], header: &SegmentHeader) -> WalContents {
    let page = header.page_size as usize;
    let start = header.page_address.0;
    // The usable bytes, and where each page's part of them begins.
    let mut usable: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut page_starts: Vec<(usize, u64)> = Vec::new(); // (usable offset, LSN of that byte)
    let mut first_skip = 0usize;
    for (i, p) in bytes.chunks(page).enumerate() {
        let hdr = if i == 0 {
            LONG_HEADER_BYTES
        } else {
            SHORT_HEADER_BYTES
        };
        if p.len() < hdr {
            break;
        }
        let magic = u16::from_le_bytes([p[0], p[1]]);
        let info = u16::from_le_bytes([p[2], p[3]]);
        let addr = u64::from_le_bytes(p[8..16].try_into().expect("8 bytes"));
        if magic != header.magic || addr != start + (i * page) as u64 {
            break;
        }
        if i == 0 && info & XLP_FIRST_IS_CONTRECORD != 0 {
            // The end of a record that began in the previous segment.
            first_skip = u32::from_le_bytes(p[16..20].try_into().expect("4 bytes")) as usize;
        }
        page_starts.push((usable.len(), start + (i * page + hdr) as u64));
        usable.extend_from_slice(&p[hdr..]);
    }
    let lsn_of = |offset: usize| -> Lsn {
        let idx = page_starts.partition_point(|(o, _)| *o <= offset) - 1;
        let (o, l) = page_starts[idx];
        Lsn(l + (offset - o) as u64)
    };

    let mut contents = WalContents::default();
    if page_starts.is_empty() {
        return contents;
    }
    let mut pos = align(first_skip);
    let mut prev: Option<Lsn> = None;
    while pos + RECORD_HEADER_BYTES <= usable.len() {
        let rec = &usable[pos..];
        let tot_len = u32::from_le_bytes(rec[0..4].try_into().expect("4 bytes")) as usize;
        if tot_len < RECORD_HEADER_BYTES || tot_len > rec.len() {
            break;
        }
        let lsn = lsn_of(pos);
        let xl_prev = Lsn(u64::from_le_bytes(rec[8..16].try_into().expect("8 bytes")));
        if prev.is_some_and(|p| p != xl_prev) {
            break;
        }
        let info = rec[16];
        let rmid = rec[17];
        let record = &rec[..tot_len];
        prev = Some(lsn);
        pos += align(tot_len);
        contents.end_lsn = Some(lsn_of(pos.min(usable.len() - 1)).max(lsn));

        match rmid {
            RM_XACT_ID => {
                let op = info & XLOG_XACT_OPMASK;
                let ends = matches!(
                    op,
                    XLOG_XACT_COMMIT
                        | XLOG_XACT_ABORT
                        | XLOG_XACT_COMMIT_PREPARED
                        | XLOG_XACT_ABORT_PREPARED
                );
                if !ends {
                    continue;
                }
                let Some(data) = main_data(record, header.pg_version) else {
                    continue;
                };
                let Some(time) = data.get(0..8).and_then(timestamp) else {
                    continue;
                };
                if op == XLOG_XACT_COMMIT || op == XLOG_XACT_COMMIT_PREPARED {
                    contents.commits += 1;
                }
                contents.first_commit = Some(contents.first_commit.map_or(time, |t| t.min(time)));
                contents.last_commit = Some(contents.last_commit.map_or(time, |t| t.max(time)));
            }
            RM_XLOG_ID if info & 0xF0 == XLOG_RESTORE_POINT => {
                let Some(data) = main_data(record, header.pg_version) else {
                    continue;
                };
                let (Some(time), Some(name)) = (data.get(0..8).and_then(timestamp), data.get(8..))
                else {
                    continue;
                };
                let name = name.split(|b| *b == 0).next().unwrap_or_default();
                contents.restore_points.push(RestorePoint {
                    name: String::from_utf8_lossy(name).into_owned(),
                    lsn,
                    time,
                });
            }
            RM_XLOG_ID if info & 0xF0 == XLOG_SWITCH => break,
            _ => {}
        }
    }
    contents
}

fn align(n: usize) -> usize {
    (n + 7) & !7
}

/// A `TimestampTz` (microseconds since 2000-01-01 UTC) as a time.
fn timestamp(b: &[u8]) -> Option<DateTime<Utc>> {
    let micros = i64::from_le_bytes(b.try_into().ok()?);
    let secs = micros.div_euclid(1_000_000) + POSTGRES_EPOCH_UNIX;
    let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
    Utc.timestamp_opt(secs, nanos).single()
}

/// The main data of a record: its last bytes, whose length the block headers announce.
fn main_data(record: &[u8], pg_version: u32) -> Option<&[u8]> {
    let mut p = RECORD_HEADER_BYTES;
    let mut main_len = 0usize;
    while p < record.len() {
        let id = record[p];
        match id {
            XLR_BLOCK_ID_DATA_SHORT => {
                main_len = *record.get(p + 1)? as usize;
                break;
            }
            XLR_BLOCK_ID_DATA_LONG => {
                main_len = u32::from_le_bytes(record.get(p + 1..p + 5)?.try_into().ok()?) as usize;
                break;
            }
            XLR_BLOCK_ID_ORIGIN => p += 1 + 2,
            XLR_BLOCK_ID_TOPLEVEL_XID => p += 1 + 4,
            0..=XLR_MAX_BLOCK_ID => {
                let fork_flags = *record.get(p + 1)?;
                p += 4; // id, fork_flags, data_length
                if fork_flags & BKPBLOCK_HAS_IMAGE != 0 {
                    // length (2), hole_offset (2), bimg_info (1)
                    let bimg_info = *record.get(p + 4)?;
                    p += 5;
                    let has_hole = bimg_info & 0x01 != 0;
                    let compressed = if pg_version >= 15 {
                        bimg_info & (0x04 | 0x08 | 0x10) != 0
                    } else {
                        bimg_info & 0x02 != 0
                    };
                    if has_hole && compressed {
                        p += 2;
                    }
                }
                if fork_flags & BKPBLOCK_SAME_REL == 0 {
                    p += 12; // RelFileLocator
                }
                p += 4; // BlockNumber
            }
            _ => return None,
        }
    }
    if main_len == 0 || main_len > record.len() {
        return None;
    }
    record.get(record.len() - main_len..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::header::tests::long_header;
    use dr_core::wal::SegmentSize;

    const PAGE: usize = 8192;

    /// A record with main data only (header + DATA_SHORT + data).
    fn record(prev: u64, rmid: u8, info: u8, data: &[u8]) -> Vec<u8> {
        let tot = RECORD_HEADER_BYTES + 2 + data.len();
        let mut r = Vec::with_capacity(tot);
        r.extend_from_slice(&(tot as u32).to_le_bytes());
        r.extend_from_slice(&0u32.to_le_bytes());
        r.extend_from_slice(&prev.to_le_bytes());
        r.push(info);
        r.push(rmid);
        r.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
        r.push(XLR_BLOCK_ID_DATA_SHORT);
        r.push(data.len() as u8);
        r.extend_from_slice(data);
        r
    }

    fn micros(t: DateTime<Utc>) -> [u8; 8] {
        ((t.timestamp() - POSTGRES_EPOCH_UNIX) * 1_000_000 + i64::from(t.timestamp_subsec_micros()))
            .to_le_bytes()
    }

    /// Lay `records` out as PostgreSQL does: 8-byte aligned, crossing pages with short
    /// headers marked as continuations.
    fn segment(records: &[Vec<u8>], start: u64) -> Vec<u8> {
        let mut usable = Vec::new();
        for r in records {
            usable.extend_from_slice(r);
            while usable.len() % 8 != 0 {
                usable.push(0);
            }
        }
        let mut out = long_header(1, start, 99, 16 << 20);
        let mut taken = 0;
        let mut page = 0;
        loop {
            let room = PAGE
                - if page == 0 {
                    LONG_HEADER_BYTES
                } else {
                    SHORT_HEADER_BYTES
                };
            let n = room.min(usable.len() - taken);
            out.extend_from_slice(&usable[taken..taken + n]);
            taken += n;
            out.resize((page + 1) * PAGE, 0);
            if taken == usable.len() {
                break;
            }
            page += 1;
            let mut h = vec![0u8; SHORT_HEADER_BYTES];
            h[0..2].copy_from_slice(&0xD110u16.to_le_bytes());
            h[2..4].copy_from_slice(&XLP_FIRST_IS_CONTRECORD.to_le_bytes());
            h[4..8].copy_from_slice(&1u32.to_le_bytes());
            h[8..16].copy_from_slice(&(start + (page * PAGE) as u64).to_le_bytes());
            out.extend_from_slice(&h);
        }
        out
    }

    /// The LSN of usable byte `o` of a segment starting at `start`.
    fn lsn_of(start: u64, o: usize) -> u64 {
        let first = PAGE - LONG_HEADER_BYTES;
        if o < first {
            return start + (LONG_HEADER_BYTES + o) as u64;
        }
        let rest = PAGE - SHORT_HEADER_BYTES;
        let k = (o - first) / rest + 1;
        start + (k * PAGE + SHORT_HEADER_BYTES + (o - first) % rest) as u64
    }

    /// Set each record's `xl_prev` to the position of the record before it.
    fn link(recs: &mut [Vec<u8>], start: u64) {
        let mut offset = 0;
        let mut prev = 0u64;
        for r in recs.iter_mut() {
            r[8..16].copy_from_slice(&prev.to_le_bytes());
            prev = lsn_of(start, offset);
            offset += align(r.len());
        }
    }

    #[test]
    fn finds_commit_times_and_restore_points_across_pages() {
        let start = 3 * (16u64 << 20);
        let t1 = Utc.with_ymd_and_hms(2026, 11, 25, 1, 2, 3).unwrap();
        let t2 = t1 + chrono::Duration::seconds(30);
        let mut rp = micros(t2).to_vec();
        rp.extend_from_slice(b"before-migration");
        rp.resize(8 + 64, 0);
        let mut commit = micros(t1).to_vec();
        commit.extend_from_slice(&0u32.to_le_bytes());
        // Filler records push the later ones across the first page boundary.
        let mut recs: Vec<Vec<u8>> = (0..60)
            .map(|i| match i {
                10 => record(0, RM_XACT_ID, XLOG_XACT_COMMIT, &commit),
                59 => record(0, RM_XLOG_ID, XLOG_RESTORE_POINT, &rp),
                _ => record(0, 9, 0, &[7u8; 200]),
            })
            .collect();
        link(&mut recs, start);
        let bytes = segment(&recs, start);
        assert!(bytes.len() > PAGE, "the records cross a page");
        let header = SegmentHeader::parse(&bytes).unwrap();
        let c = scan_segment(&bytes, &header);
        assert_eq!(c.commits, 1);
        assert_eq!(c.first_commit, Some(t1));
        assert_eq!(c.last_commit, Some(t1));
        assert_eq!(c.restore_points.len(), 1, "{c:?}");
        assert_eq!(c.restore_points[0].name, "before-migration");
        assert_eq!(c.restore_points[0].time, t2);
        assert_eq!(c.restore_points[0].lsn.segment(SegmentSize::DEFAULT), 3);
    }

    #[test]
    fn a_broken_back_link_or_stale_page_ends_the_scan() {
        let start = 0u64;
        let t1 = Utc.with_ymd_and_hms(2026, 11, 25, 1, 2, 3).unwrap();
        let mut commit = micros(t1).to_vec();
        commit.extend_from_slice(&0u32.to_le_bytes());
        let mut recs = vec![
            record(0, 9, 0, &[1; 16]),
            record(0, RM_XACT_ID, XLOG_XACT_COMMIT, &commit),
        ];
        link(&mut recs, start);
        let bytes = segment(&recs, start);
        let header = SegmentHeader::parse(&bytes).unwrap();
        assert_eq!(
            scan_segment(&bytes, &header).commits,
            1,
            "linked records are read"
        );
        // The second record's xl_prev is wrong: garbage, not WAL.
        recs[1][8..16].copy_from_slice(&12345u64.to_le_bytes());
        let bytes = segment(&recs, start);
        let header = SegmentHeader::parse(&bytes).unwrap();
        assert_eq!(scan_segment(&bytes, &header).commits, 0);
        // Truncated and zeroed input is no reason to panic.
        assert_eq!(scan_segment(&bytes[..100], &header).commits, 0);
        assert_eq!(scan_segment(&vec![0u8; 3 * PAGE], &header).commits, 0);
    }
}
