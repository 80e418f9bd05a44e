//! dr-files: trees of files as a backup source for dr.
//!
//! A directory tree (user uploads, exported files) streams as a POSIX tar archive through
//! the same compress → encrypt → store pipeline as a database, and restores into an empty
//! (or, when asked, replaced) directory:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dr_core::Result<()> {
//! use dr_core::{Dumper, Restorer};
//! use dr_files::{DirDumper, DirRestorer};
//!
//! let uploads = tempfile::tempdir().unwrap();
//! std::fs::write(uploads.path().join("logo.png"), b"\x89PNG...").unwrap();
//!
//! // The identity pipeline, through memory; a real backup puts compression, encryption and
//! // storage between the two halves (dr-core's pipelines).
//! let dump = DirDumper::new(uploads.path()).start().await?;
//! let payload = dr_core::stage::collect(dump.stream).await?;
//! let stats = dump.completion.finish().await?;
//!
//! let copy = tempfile::tempdir().unwrap();
//! let target = copy.path().join("uploads");
//! let report = DirRestorer::new(&target)
//!     .restore(&dump.source, &stats, dr_core::stage::once_bytes(payload.into(), 1 << 20))
//!     .await?;
//! assert_eq!(report.rows_checked, 1); // one file, counted again in what was unpacked
//! assert_eq!(std::fs::read(target.join("logo.png")).unwrap(), b"\x89PNG...");
//! # Ok(()) }
//! ```
//!
//! * [`DirDumper`] — walks the tree (sorted, links never followed) and writes the archive on
//!   a blocking thread; the manifest records the regular files and their bytes.
//! * [`DirRestorer`] — unpacks beside the target, counts the files and bytes again, and only
//!   then moves the tree into place.
//! * [`TarCounter`] — re-counts the files and bytes of a stored archive without unpacking it:
//!   the [`dr_core::PayloadCheck`] that `verify` runs for [`PAYLOAD_FORMAT`].
//!
//! The archive is standard: `drctl cat ID | tar -x` restores without dr. Regular files,
//! directories and symbolic links (as links, never followed) are stored with their modes
//! and times; sockets and devices are skipped with a warning. A directory is not a snapshot:
//! a file written during the backup is stored as it was read, and a file that changes size
//! while it is read fails the backup rather than storing a torn copy.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod counter;
pub mod dedup;
mod dump;
mod restore;

pub use counter::TarCounter;
pub use dump::DirDumper;
pub use restore::DirRestorer;

use dr_core::{DumpStats, TableStats};

/// `SourceInfo::kind` of a directory backup.
pub const SOURCE_KIND: &str = "files";
/// `SourceInfo::format` of its payload: a POSIX (ustar, GNU extensions) tar archive.
pub const PAYLOAD_FORMAT: &str = "tar";

/// The one entry of `DumpStats::tables` of a directory backup: regular files (`rows`) and
/// their bytes.
const FILES_ENTRY: &str = "<files>";

/// Statistics in the shape a directory backup records them.
fn files_stats(files: u64, bytes: u64) -> DumpStats {
    DumpStats {
        tables: vec![TableStats {
            schema: String::new(),
            name: FILES_ENTRY.into(),
            rows: files,
            bytes,
        }],
        ..Default::default()
    }
}

/// The files and bytes a directory backup's statistics record, if they record them.
fn recorded_files(stats: &DumpStats) -> Option<(u64, u64)> {
    stats
        .tables
        .iter()
        .find(|t| t.name == FILES_ENTRY)
        .map(|t| (t.rows, t.bytes))
}
