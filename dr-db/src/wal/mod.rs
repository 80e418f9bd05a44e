//! Continuous archiving and point-in-time recovery: the PostgreSQL side.
//!
//! - [`SegmentHeader`] and [`ControlFile`]: which cluster, version and segment size a WAL
//!   segment or a data directory belongs to, so that a segment from another cluster is
//!   refused before it is archived;
//! - [`scan_segment`]: when the transactions in a segment ended and which restore points it
//!   holds, recorded with each archived segment;
//! - [`WalPusher`]: `archive_command` — check, compress, encrypt and store each file once,
//!   with a background pusher working ahead of PostgreSQL's calls, recorded in a [`Spool`];
//! - [`WalReceiver`]: `drctl wal-receive` — streaming WAL with `pg_receivewal` and storing
//!   the growing segment every few seconds, for an RPO of seconds;
//! - [`WalFetcher`]: `restore_command` — every byte checked on the way back, "not found"
//!   told apart from a gap or damage, prefetching ahead;
//! - [`RecoverySettings`]: `recovery.signal` and the recovery target of a restored cluster.
//!
//! The storage-agnostic rules (names, timelines, continuity, retention) are in
//! [`dr_core::wal`].

mod background;
mod fetch;
mod header;
mod push;
mod receive;
mod records;
mod recovery;
mod spool;

pub use background::{PusherCommand, PusherReport};
pub use fetch::{Fetched, WalFetcher};
pub use header::{version_of_magic, ControlFile, SegmentHeader};
pub use push::{PushReport, Pushed, WalPusher};
pub use receive::{check_slot_name, ReceiveReport, WalReceiver, DEFAULT_SLOT};
pub use records::scan_segment;
pub use recovery::{RecoverySettings, TargetAction};
pub use spool::{PusherFailure, Spool};
