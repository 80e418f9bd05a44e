//! Continuous archiving and point-in-time recovery: the storage-agnostic part.
//!
//! PostgreSQL writes its changes to a write-ahead log (WAL) in segments of a fixed size
//! (16 MiB by default) and hands each completed segment to `archive_command`. A physical base
//! backup plus every segment from its start onwards lets a server be recovered to any moment
//! after the backup: a time, a position, a transaction or a named restore point. This module
//! holds what dr knows about that without talking to PostgreSQL or to storage:
//!
//! - [`Lsn`], [`SegmentSize`], [`SegmentId`] and [`WalFile`]: positions and the names of the
//!   files PostgreSQL archives;
//! - [`TimelineHistory`]: timeline history files, and whether a backup can reach a timeline;
//! - [`layout`]: where archived files lie in a repository and the record that commits each;
//!   [`WalArchive`] reads and writes them (pushing each file once, checking every byte back),
//!   including the [streamed partial copies](StreamedCopy) of a WAL receiver, and the
//!   cluster's last [failed push](PushFailure), which status shows until archiving gets past it;
//! - [`base`]: physical base backups' manifests read as [`BaseBackup`]s;
//! - [`ArchiveIndex`]: an archive's contents as a value — ranges, gaps, how far a backup
//!   rolls forward, the PITR window;
//! - [`plan_restore`]: choosing a base backup for a target and refusing unreachable targets
//!   before anything is written;
//! - [`retention`]: WAL-aware retention with a PITR window separate from backup retention.
//!
//! Everything but [`WalArchive`] is a pure function of its inputs. Reading segments and talking to the
//! server (headers, `pg_backup_start`, recovery settings) is dr-db's business.

pub mod archive;
pub mod base;
mod failure;
mod history;
mod index;
pub mod layout;
mod lsn;
mod name;
mod plan;
pub mod prune;
pub mod retention;
mod stream;

pub use archive::{PushOptions, PushOutcome, WalArchive};
pub use base::{base_backup, is_physical, PHYSICAL_KIND};
pub use failure::{push_failure_path, PushFailure};
pub use history::{HistoryEntry, TimelineHistory, TimelineSpan, Unreachable};
pub use index::{
    ArchiveIndex, BackupReach, BaseBackup, Chain, FileInfo, Gap, Recoverable, SegmentRange,
};
pub use layout::{RestorePoint, WalCluster, WalContents, WalRecord};
pub use lsn::{Lsn, SegmentSize};
pub use name::{SegmentId, TimelineId, WalFile};
pub use plan::{plan_restore, RecoveryTarget, RestorePlan, TargetTimeline};
pub use stream::StreamedCopy;
