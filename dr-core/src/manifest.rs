//! The manifest: everything needed to list, retain and verify a backup without reading its
//! data. Written last; its presence is the commit of the backup.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::crypto::EncryptionInfo;
use crate::error::{Error, ErrorKind, Result};
use crate::series::Series;
use crate::source::{DumpStats, SourceInfo};

/// The manifest format of a backup whose payload is one stream; readers refuse newer majors.
pub const MANIFEST_FORMAT: u32 = 1;
/// The manifest format of a backup stored as named pieces ([`ObjectEntry::piece`]), each its
/// own encrypted stream (a `pg_dump -Fd` directory archive): readers that know only
/// [`MANIFEST_FORMAT`] refuse it instead of misreading the objects as one stream.
pub const PIECES_MANIFEST_FORMAT: u32 = 2;

/// A committed backup's description, stored as `backups/<id>/manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version ([`MANIFEST_FORMAT`]).
    pub format: u32,
    /// The backup id: UTC time first, so ids sort by time.
    pub id: String,
    /// `full` for a logical database dump; later kinds add WAL and file backups.
    pub kind: String,
    /// The tool that wrote it, e.g. `dr 0.1.0`.
    pub tool: String,
    /// When the backup started.
    pub started_at: DateTime<Utc>,
    /// When the last object was stored.
    pub finished_at: DateTime<Utc>,
    /// The source this backup belongs to; retention, `latest` and status are per series.
    /// Manifests written before series existed get [`Series::legacy`] when read.
    #[serde(default)]
    pub series: Series,
    /// What was dumped.
    pub source: SourceInfo,
    /// Row and byte counts per table, as read from the payload.
    pub stats: DumpStats,
    /// Compression of the payload before encryption.
    pub codec: Codec,
    /// How the payload was encrypted and the wrapped data keys.
    pub encryption: EncryptionInfo,
    /// The stored objects, in payload order.
    pub objects: Vec<ObjectEntry>,
    /// Payload bytes before compression and encryption.
    pub raw_bytes: u64,
    /// Bytes stored (sum of object sizes).
    pub stored_bytes: u64,
    /// Free-form labels (`daily`, `pre-migration`).
    #[serde(default)]
    pub labels: Vec<String>,
    /// Pinned backups are never deleted by retention.
    #[serde(default)]
    pub pinned: bool,
    /// Free-form metadata for embedders.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// The writer's signature of everything above but the wrapped keys, in a signed
    /// repository (see [`crate::signing`] and FORMAT.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<crate::signing::Signature>,
}

/// One stored object of a backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectEntry {
    /// Path relative to the repository root.
    pub path: String,
    /// Stored size in bytes.
    pub size: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
    /// Storage class it was written with, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
    /// In a payload stored as pieces, the piece's name (a file name of the archive, like
    /// `toc.dat`): the object is a stream of its own, not a part of one stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub piece: Option<String>,
}

impl Manifest {
    /// Wall time of the backup in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        (self.finished_at - self.started_at).num_milliseconds()
    }

    /// The moment the backup's data is from: the snapshot time the dump recorded, else the
    /// start of the backup. Its age is what a disaster now would lose (the recovery point).
    pub fn data_time(&self) -> DateTime<Utc> {
        self.source
            .consistent_point
            .as_ref()
            .and_then(|p| DateTime::parse_from_rfc3339(&p.snapshot_time).ok())
            .map_or(self.started_at, |t| t.with_timezone(&Utc))
    }

    /// Parse and sanity-check a manifest read from storage.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest> {
        let mut m: Manifest = serde_json::from_slice(bytes).map_err(|e| {
            Error::new(
                ErrorKind::Corrupt,
                "manifest is not valid JSON of the expected shape",
            )
            .with_source(e)
        })?;
        if m.format > PIECES_MANIFEST_FORMAT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "manifest format {} is newer than this dr understands ({PIECES_MANIFEST_FORMAT}): upgrade dr",
                    m.format
                ),
            ));
        }
        if m.series.kind.is_empty() {
            m.series = Series::legacy(&m.source);
        }
        if m.objects.is_empty() {
            return Err(Error::corrupt("manifest lists no objects"));
        }
        for o in &m.objects {
            crate::storage::check_path(&o.path)?;
            if o.sha256.len() != 64 || !o.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(Error::corrupt(format!(
                    "manifest has a malformed SHA-256 for object '{}'",
                    o.path
                )));
            }
        }
        check_pieces(&m)?;
        if m.objects.iter().map(|o| o.size).sum::<u64>() != m.stored_bytes {
            return Err(Error::corrupt(
                "manifest's stored_bytes is not the sum of its object sizes",
            ));
        }
        Ok(m)
    }

    /// Whether the payload is stored as named pieces, each its own stream (see
    /// [`crate::pieces`]), rather than as one stream cut into objects.
    pub fn is_pieces(&self) -> bool {
        self.objects.iter().any(|o| o.piece.is_some())
    }

    /// Serialize for storage (pretty, stable field order).
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("a manifest always serializes");
        v.push(b'\n');
        v
    }
}

/// A pieces manifest names every object, each once, with a plain file name; a one-stream
/// manifest names none.
fn check_pieces(m: &Manifest) -> Result<()> {
    let named = m.objects.iter().filter(|o| o.piece.is_some()).count();
    if named == 0 {
        return Ok(());
    }
    if named != m.objects.len() || m.format < PIECES_MANIFEST_FORMAT {
        return Err(Error::corrupt(
            "manifest mixes named pieces with unnamed objects, or names pieces in a one-stream format",
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for o in &m.objects {
        let name = o.piece.as_deref().unwrap_or_default();
        crate::names::check_piece_name(name)?;
        if !seen.insert(name) {
            return Err(Error::corrupt(format!(
                "manifest names piece '{name}' twice"
            )));
        }
    }
    Ok(())
}
