//! Where archived WAL lies in a repository, and the record that commits each file.
//!
//! ```text
//! wal/<system id>/cluster.json                   the cluster: system identifier, segment size, version
//! wal/<system id>/<TTTTTTTT>/<file>.json         the commit record of <file> (a WalRecord), written LAST
//! wal/<system id>/<TTTTTTTT>/<file>.<push id>    its stored bytes: compressed, then a dr-aead-v1 stream
//! wal/<system id>/<TTTTTTTT>/<segment>.partial.<EEEEEEEE>.json        a streamed partial segment's record
//! wal/<system id>/<TTTTTTTT>/<segment>.partial.<EEEEEEEE>.<push id>   its stored bytes
//! ```
//!
//! `<system id>` is the cluster's system identifier in decimal (the series origin of its
//! physical backups), `<TTTTTTTT>` the file's timeline in 8 upper-case hex digits, `<file>`
//! PostgreSQL's own name (`000000010000000A000000FE`, `00000002.history`, …; see
//! [`WalFile`]) and `<push id>` 16 random lowercase hex digits, fresh for every upload.
//!
//! A file is archived exactly when its record exists. The stored bytes are uploaded first
//! under a name no other push uses; the record is then created with create-if-absent, so two
//! pushes of one file never overwrite each other: the loser compares contents (same SHA-256
//! of the original bytes: success; different: a loud error) and deletes its own upload. The
//! record holds the data key wrapped for the repository's keys, so key rotation rewrites
//! records and never the stored bytes, as it does for backup manifests.
//!
//! Streamed partial segments (`drctl wal-receive`, see [`stream`](super::stream)) are the
//! segment a WAL receiver is still writing, stored again every few seconds as it grows.
//! `<EEEEEEEE>` is how many bytes of the segment hold WAL (8 upper-case hex digits, so names
//! sort by it): a newer copy of the same segment has a larger `E` and a new name, so nothing
//! is ever overwritten or has to be deleted (delete-proof storage works), the newest copy is
//! the one with the largest `E`, and a streamed copy never takes the name of the complete
//! segment it precedes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::crypto::EncryptionInfo;
use crate::error::{Error, Result};
use crate::manifest::ObjectEntry;
use crate::wal::lsn::{Lsn, SegmentSize};
use crate::wal::name::{SegmentId, TimelineId, WalFile};

/// The prefix of everything WAL in a repository.
pub const WAL_PREFIX: &str = "wal/";
/// The format of records and cluster files this version writes.
pub const WAL_FORMAT: u32 = 1;

/// `wal/<system id>/`: everything archived from one cluster.
pub fn cluster_prefix(system_identifier: u64) -> String {
    format!("{WAL_PREFIX}{system_identifier}/")
}

/// `wal/<system id>/cluster.json`.
pub fn cluster_path(system_identifier: u64) -> String {
    format!("{}cluster.json", cluster_prefix(system_identifier))
}

/// `wal/<system id>/<TTTTTTTT>/`.
pub fn timeline_prefix(system_identifier: u64, timeline: TimelineId) -> String {
    format!("{}{timeline:08X}/", cluster_prefix(system_identifier))
}

/// The path of the commit record of the file named `name` on `timeline`.
pub fn record_path(system_identifier: u64, timeline: TimelineId, name: &str) -> String {
    format!(
        "{}{name}.json",
        timeline_prefix(system_identifier, timeline)
    )
}

/// The path of one upload of the file named `name`.
pub fn data_path(
    system_identifier: u64,
    timeline: TimelineId,
    name: &str,
    push_id: &str,
) -> String {
    format!(
        "{}{name}.{push_id}",
        timeline_prefix(system_identifier, timeline)
    )
}

/// The path of the commit record of a streamed partial copy of `segment` whose first `end`
/// bytes hold WAL.
pub fn streamed_record_path(
    system_identifier: u64,
    segment: SegmentId,
    size: SegmentSize,
    end: u32,
) -> String {
    format!(
        "{}{}.partial.{end:08X}.json",
        timeline_prefix(system_identifier, segment.timeline),
        segment.name(size)
    )
}

/// The path of the stored bytes of one streamed partial copy.
pub fn streamed_data_path(
    system_identifier: u64,
    segment: SegmentId,
    size: SegmentSize,
    end: u32,
    push_id: &str,
) -> String {
    format!(
        "{}{}.partial.{end:08X}.{push_id}",
        timeline_prefix(system_identifier, segment.timeline),
        segment.name(size)
    )
}

/// What an object under `wal/<system id>/` is, from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WalObject {
    /// `cluster.json`.
    Cluster,
    /// The commit record of a file.
    Record {
        /// The file.
        file: WalFile,
    },
    /// Stored bytes of one upload of a file (referenced by its record, or left by a push
    /// that did not commit).
    Data {
        /// The file.
        file: WalFile,
        /// The upload's id.
        push_id: String,
    },
    /// The record of a streamed partial copy of a segment.
    StreamedRecord {
        /// The segment.
        segment: SegmentId,
        /// How many of its bytes hold WAL.
        end: u32,
    },
    /// Stored bytes of a streamed partial copy.
    StreamedData {
        /// The segment.
        segment: SegmentId,
        /// How many of its bytes hold WAL.
        end: u32,
    },
}

fn is_push_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `<segment>.partial.<EEEEEEEE>.json` or `.<push id>` on timeline `tli`.
fn parse_streamed(name: &str, tli: TimelineId, size: SegmentSize) -> Option<WalObject> {
    let (seg, rest) = name.split_once(".partial.")?;
    let segment = SegmentId::parse(seg, size).ok()?;
    let (end, tail) = rest.split_once('.')?;
    if segment.timeline != tli
        || end.len() != 8
        || !end.bytes().all(|b| matches!(b, b'0'..=b'9' | b'A'..=b'F'))
    {
        return None;
    }
    let end = u32::from_str_radix(end, 16).ok()?;
    match tail {
        "json" => Some(WalObject::StreamedRecord { segment, end }),
        id if is_push_id(id) => Some(WalObject::StreamedData { segment, end }),
        _ => None,
    }
}

/// Classify `path` (relative to the repository root) under cluster `system_identifier`'s
/// prefix; `None` for anything that is not part of the layout.
pub fn parse_object_path(
    system_identifier: u64,
    size: SegmentSize,
    path: &str,
) -> Option<WalObject> {
    let rest = path.strip_prefix(&cluster_prefix(system_identifier))?;
    if rest == "cluster.json" {
        return Some(WalObject::Cluster);
    }
    let (tli, name) = rest.split_once('/')?;
    if tli.len() != 8 {
        return None;
    }
    let tli = u32::from_str_radix(tli, 16).ok()?;
    if let Some(streamed) = parse_streamed(name, tli, size) {
        return Some(streamed);
    }
    let belongs = |f: WalFile| (f.timeline() == tli).then_some(f);
    if let Some(file) = name.strip_suffix(".json") {
        let file = belongs(WalFile::parse(file, size).ok()?)?;
        return Some(WalObject::Record { file });
    }
    let (file, push_id) = name.rsplit_once('.')?;
    if !is_push_id(push_id) {
        return None;
    }
    let file = belongs(WalFile::parse(file, size).ok()?)?;
    Some(WalObject::Data {
        file,
        push_id: push_id.to_string(),
    })
}

/// `wal/<system id>/cluster.json`: which cluster an archive belongs to. Created by the first
/// push; every later push must agree with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalCluster {
    /// [`WAL_FORMAT`].
    pub format: u32,
    /// The cluster's system identifier (decimal text: it does not fit a JSON number).
    #[serde(with = "u64_text")]
    pub system_identifier: u64,
    /// The cluster's WAL segment size in bytes.
    pub segment_bytes: SegmentSize,
    /// The PostgreSQL major version that wrote the first segment.
    pub pg_version: u32,
    /// When the archive was started.
    pub created_at: DateTime<Utc>,
}

/// The commit record of one archived file (`<file>.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WalRecord {
    /// [`WAL_FORMAT`].
    pub format: u32,
    /// PostgreSQL's name of the file.
    pub name: String,
    /// The cluster's system identifier (decimal text).
    #[serde(with = "u64_text")]
    pub system_identifier: u64,
    /// The file's timeline.
    pub timeline: TimelineId,
    /// When it was stored.
    pub pushed_at: DateTime<Utc>,
    /// Length of the original file.
    pub raw_bytes: u64,
    /// SHA-256 of the original file, lowercase hex: how a re-push is recognised without
    /// reading the stored bytes back.
    pub raw_sha256: String,
    /// Compression before encryption.
    pub codec: Codec,
    /// Encryption and the wrapped data key (rewritten by key rotation).
    pub encryption: EncryptionInfo,
    /// The stored bytes.
    pub object: ObjectEntry,
    /// What a reading of the WAL records found, if it was read (segments and partials).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contents: Option<WalContents>,
    /// For a timeline history: its text, so that the archive's timelines are known without
    /// a key (it holds positions and PostgreSQL's reasons, no data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<String>,
}

impl WalRecord {
    /// Parse and check a record read from `path`.
    pub fn from_json(bytes: &[u8], path: &str) -> Result<WalRecord> {
        let r: WalRecord = serde_json::from_slice(bytes).map_err(|e| {
            Error::corrupt(format!(
                "WAL record '{path}' is not valid JSON of the expected shape"
            ))
            .with_source(e)
        })?;
        if r.format > WAL_FORMAT {
            return Err(Error::new(
                crate::ErrorKind::Unsupported,
                format!(
                    "WAL record '{path}' has format {}, newer than this dr understands ({WAL_FORMAT}): upgrade dr",
                    r.format
                ),
            ));
        }
        crate::storage::check_path(&r.object.path)?;
        let hex64 = |s: &str| s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if !hex64(&r.raw_sha256) || !hex64(&r.object.sha256) {
            return Err(Error::corrupt(format!(
                "WAL record '{path}' has a malformed SHA-256"
            )));
        }
        Ok(r)
    }

    /// Serialize for storage.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a WAL record always serializes");
        v.push(b'\n');
        v
    }
}

/// What the WAL records of a segment say, read when it is pushed: the times of the
/// transactions it ends and the named restore points it holds. This is what places a
/// segment in time (for the PITR window and for choosing a base backup for a target time)
/// and finds `--target-name`s without reading WAL at restore time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalContents {
    /// The commit time of the first transaction that ends in the segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_commit: Option<DateTime<Utc>>,
    /// The commit time of the last transaction that ends in the segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<DateTime<Utc>>,
    /// Transactions committed in it.
    #[serde(default)]
    pub commits: u64,
    /// The position after the last valid record (for partial segments: how far they reach).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_lsn: Option<Lsn>,
    /// Restore points created with `pg_create_restore_point()`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restore_points: Vec<RestorePoint>,
}

/// A named restore point in the WAL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestorePoint {
    /// The name given to `pg_create_restore_point()`.
    pub name: String,
    /// The position of its record.
    pub lsn: Lsn,
    /// When it was created (server clock).
    pub time: DateTime<Utc>,
}

/// A `u64` as decimal text in JSON, for values beyond 2^53 (system identifiers).
pub mod u64_text {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serialize as a decimal string.
    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    /// Deserialize from a decimal string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|_| serde::de::Error::custom(format!("'{s}' is not an unsigned integer")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_round_trip_through_the_parser() {
        let size = SegmentSize::DEFAULT;
        let sys = 7_301_234_567_890_123_456u64;
        let file = WalFile::parse("00000002000000010000000A", size).unwrap();
        let rec = record_path(sys, 2, "00000002000000010000000A");
        assert_eq!(
            rec,
            "wal/7301234567890123456/00000002/00000002000000010000000A.json"
        );
        assert_eq!(
            parse_object_path(sys, size, &rec),
            Some(WalObject::Record { file })
        );
        let data = data_path(sys, 2, "00000002000000010000000A", "0123456789abcdef");
        assert_eq!(
            parse_object_path(sys, size, &data),
            Some(WalObject::Data {
                file,
                push_id: "0123456789abcdef".into()
            })
        );
        let backup = "000000010000000000000002.00000028.backup";
        let b = WalFile::parse(backup, size).unwrap();
        assert_eq!(
            parse_object_path(sys, size, &data_path(sys, 1, backup, "00000000000000ff")),
            Some(WalObject::Data {
                file: b,
                push_id: "00000000000000ff".into()
            })
        );
        assert_eq!(
            parse_object_path(sys, size, &cluster_path(sys)),
            Some(WalObject::Cluster)
        );
        // Streamed partial copies sort by how far they reach and never parse as the segment.
        let seg = file.segment().unwrap();
        let streamed = streamed_record_path(sys, seg, size, 0x0A0000);
        assert_eq!(
            streamed,
            "wal/7301234567890123456/00000002/00000002000000010000000A.partial.000A0000.json"
        );
        assert_eq!(
            parse_object_path(sys, size, &streamed),
            Some(WalObject::StreamedRecord {
                segment: seg,
                end: 0x0A0000
            })
        );
        assert_eq!(
            parse_object_path(
                sys,
                size,
                &streamed_data_path(sys, seg, size, 0x0A0000, "0123456789abcdef")
            ),
            Some(WalObject::StreamedData {
                segment: seg,
                end: 0x0A0000
            })
        );
        let archived_partial = record_path(sys, 2, "00000002000000010000000A.partial");
        assert_eq!(
            parse_object_path(sys, size, &archived_partial),
            Some(WalObject::Record {
                file: WalFile::Partial(seg)
            })
        );
        // A file filed under the wrong timeline, other clusters and strays are not ours.
        for stray in [
            "wal/7301234567890123456/00000001/00000002000000010000000A.json".to_string(),
            "wal/1/00000002/00000002000000010000000A.json".to_string(),
            "wal/7301234567890123456/00000002/notes.txt".to_string(),
            "wal/7301234567890123456/00000002/00000002000000010000000A.XYZ".to_string(),
        ] {
            assert_eq!(parse_object_path(sys, size, &stray), None, "{stray}");
        }
    }

    #[test]
    fn system_identifiers_survive_json() {
        let c = WalCluster {
            format: WAL_FORMAT,
            system_identifier: u64::MAX - 1,
            segment_bytes: SegmentSize::DEFAULT,
            pg_version: 15,
            created_at: Utc::now(),
        };
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"18446744073709551614\""), "{json}");
        assert_eq!(serde_json::from_str::<WalCluster>(&json).unwrap(), c);
    }
}
