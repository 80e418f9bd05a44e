//! Continuous archiving and point-in-time recovery: the PostgreSQL side.
//!
//! - [`SegmentHeader`] and [`ControlFile`]: which cluster, version and segment size a WAL
//!   segment or a data directory belongs to, so that a segment from another cluster is
//!   refused before it is archived;
//! - [`scan_segment`]: when the transactions in a segment ended and which restore points it
//!   holds, recorded with each archived segment.
//!
//! The storage-agnostic rules (names, timelines, continuity, retention) are in
//! [`dr_core::wal`].

mod header;
mod records;

pub use header::{version_of_magic, ControlFile, SegmentHeader};
pub use records::scan_segment;
