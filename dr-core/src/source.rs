//! The source plug-in points: a [`Dumper`] produces a consistent stream, a [`Restorer`]
//! consumes it, a [`PayloadCheck`] re-counts it for `verify`. None assumes PostgreSQL: a
//! directory of user uploads is a source too.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::stage::{ByteStream, StageOptions};

/// What a dump is of, recorded in the manifest when the dump starts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The kind of source (a database, a directory, …): a name owned by the plug-in that
    /// dumps it, like the payload's format.
    pub kind: String,
    /// The payload's format, named by the plug-in that writes it (dr-db's custom-format
    /// archive that `pg_restore` reads, dr-files' tar archive); it picks the [`Restorer`]
    /// and [`PayloadCheck`] that can read the payload.
    pub format: String,
    /// The name of what was dumped (database name, directory).
    pub name: String,
    /// Where the source lives, so that sources of the same name elsewhere are told apart:
    /// a PostgreSQL cluster's system identifier, the host of a directory. Together with
    /// `kind` and `name` it makes the backup's [`Series`](crate::Series).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// The server's version, if the source is a server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_version: Option<String>,
    /// The consistent point the dump reflects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistent_point: Option<ConsistentPoint>,
    /// What a restorer needs to recreate the source faithfully, by the source's own names:
    /// for PostgreSQL the database's `encoding`, `lc_collate`, `lc_ctype`,
    /// `locale_provider` and `locale`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// The moment a dump is consistent with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistentPoint {
    /// Server time at which the snapshot was taken (RFC 3339).
    pub snapshot_time: String,
    /// The write-ahead-log position of the snapshot, e.g. `0/3000148`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lsn: Option<String>,
    /// The server's timeline, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
}

/// Figures a dumper knows only once its stream has ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DumpStats {
    /// Per-table (or per-item) row counts and sizes, in dump order.
    pub tables: Vec<TableStats>,
    /// Facts about the source known only once the dump ended, by the source's own names:
    /// for a physical base backup its stop position and `backup_label`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub properties: std::collections::BTreeMap<String, String>,
}

/// Rows and bytes of one table (or one file, for a directory source).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableStats {
    /// Schema (namespace); empty where the source has none.
    pub schema: String,
    /// Table name.
    pub name: String,
    /// Number of rows in the dump.
    pub rows: u64,
    /// Bytes of this table's data in the payload.
    pub bytes: u64,
}

/// A dump in progress: its metadata, its byte stream, and a handle that reports success.
pub struct Dump {
    /// Known when the dump starts.
    pub source: SourceInfo,
    /// The payload. Must be read to its end before [`DumpCompletion::finish`].
    pub stream: ByteStream,
    /// A generous estimate of the payload's size in bytes, if the source can tell before
    /// it starts. The upload sizes its parts from it, so that a large payload does not run
    /// out of parts (10,000 on S3); an estimate too small only costs that headroom.
    pub size_hint: Option<u64>,
    /// Reports whether the dump succeeded, with its statistics.
    pub completion: Box<dyn DumpCompletion>,
}

impl std::fmt::Debug for Dump {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dump")
            .field("source", &self.source)
            .field("size_hint", &self.size_hint)
            .finish_non_exhaustive()
    }
}

/// The end of a dump: tells whether the producer (a child process, a transaction) ended
/// cleanly. A stream that ended without a successful `finish` is not a complete dump.
#[async_trait]
pub trait DumpCompletion: Send {
    /// Wait for the producer and return the statistics gathered from the stream.
    async fn finish(self: Box<Self>) -> Result<DumpStats>;
}

/// Produces consistent dumps of a data source.
#[async_trait]
pub trait Dumper: Send + Sync {
    /// Start a dump. The stream reflects one consistent point, reported in `source`.
    async fn start(&self) -> Result<Dump>;

    /// The chunk sizes and channel depths the pipeline uses for this source's dumps, given
    /// the ones asked for. A source may ask for less (never needs more): a physical base
    /// backup's one long stream gains no speed from deep queues, only memory.
    fn stage_options(&self, requested: StageOptions) -> StageOptions {
        requested
    }
}

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// Where the data went (database name, directory).
    pub target: String,
    /// Tables whose row counts were checked against the manifest, and matched.
    pub tables_checked: usize,
    /// Total rows restored according to those checks.
    pub rows_checked: u64,
    /// Whether an existing target was replaced.
    pub replaced: bool,
}

/// Restores a payload into a target.
///
/// Contract: refuse a non-empty target unless configured to replace it
/// ([`crate::ErrorKind::NotEmpty`]); if `payload` yields an error or ends early, leave no
/// half-restored target behind; compare what was restored with `expected`.
#[async_trait]
pub trait Restorer: Send + Sync {
    /// Restore `payload`, a stream in the format `source.format`.
    async fn restore(
        &self,
        source: &SourceInfo,
        expected: &DumpStats,
        payload: ByteStream,
    ) -> Result<RestoreReport>;
}

/// Re-counts a payload from its bytes alone, without a target: what `verify` compares with
/// the manifest. The plug-in that writes a payload format implements it for that format, so
/// a backup's statistics can be derived again from what is stored, and no other crate needs
/// to know how the format is laid out.
///
/// Push-style and synchronous (the caller owns the stream and its errors): `feed` every
/// chunk of the decrypted, decompressed payload in order, then `check` once.
pub trait PayloadCheck: Send {
    /// The next bytes of the payload. A [`crate::ErrorKind::Corrupt`] error as soon as they
    /// cannot be part of a well-formed payload, saying where.
    fn feed(&mut self, chunk: &[u8]) -> Result<()>;

    /// For a payload stored as pieces ([`crate::pieces`]): the bytes `feed` gets next, up
    /// to the next `begin_piece` or `check`, are the whole of piece `name`. Pieces come in
    /// manifest order. A format stored as one stream refuses pieces (the default).
    fn begin_piece(&mut self, name: &str) -> Result<()> {
        Err(crate::error::Error::new(
            crate::error::ErrorKind::Unsupported,
            format!("this payload format is one stream; it has no piece '{name}'"),
        ))
    }

    /// The payload has ended: check that it ended where its format says it must, and that
    /// what it holds agrees with `expected` (the manifest's statistics). Returns the
    /// statistics re-counted from the payload; a [`crate::ErrorKind::Corrupt`] error naming
    /// the first difference otherwise.
    fn check(self: Box<Self>, expected: &DumpStats) -> Result<DumpStats>;
}
