//! Physical base backups as the pipeline stores them, read back as [`BaseBackup`]s.
//!
//! A physical base backup is an ordinary backup (one payload through compress → encrypt →
//! store, one manifest) of kind [`PHYSICAL_KIND`]. Its series is `postgres-physical:<system
//! id>:cluster`, the same origin as the cluster's WAL archive (`wal/<system id>/`). Where it
//! starts and stops in the WAL is known only once the backup ended, so the dumper reports it
//! in the manifest's `stats.properties` under the names below.

use chrono::{DateTime, Utc};

use crate::error::{Error, Result};
use crate::manifest::Manifest;
use crate::wal::index::BaseBackup;
use crate::wal::lsn::Lsn;

/// The source kind of a physical base backup.
pub const PHYSICAL_KIND: &str = "postgres-physical";
/// The series name of a physical base backup: the whole cluster.
pub const PHYSICAL_NAME: &str = "cluster";

/// Property: the cluster's system identifier (decimal).
pub const PROP_SYSTEM_ID: &str = "system_identifier";
/// Property: the timeline the backup was taken on.
pub const PROP_TIMELINE: &str = "timeline";
/// Property: where its WAL starts (`START WAL LOCATION` of `backup_label`).
pub const PROP_START_LSN: &str = "start_lsn";
/// Property: where it becomes consistent (`pg_backup_stop`'s position).
pub const PROP_STOP_LSN: &str = "stop_lsn";
/// Property: when it started (RFC 3339).
pub const PROP_START_TIME: &str = "start_time";
/// Property: when it became consistent (RFC 3339).
pub const PROP_STOP_TIME: &str = "stop_time";
/// Property: the text of its `backup_label`.
pub const PROP_BACKUP_LABEL: &str = "backup_label";
/// Property: the text of its `tablespace_map` (`<oid> <path>` per line), when the cluster
/// has tablespaces (copy mode).
pub const PROP_TABLESPACE_MAP: &str = "tablespace_map";
/// Property: every file of a copy-mode backup, one `<sha256> <size> <path>` line each,
/// checked by `drctl verify`.
pub const PROP_FILES: &str = "files";

/// Whether `m` is a physical base backup.
pub fn is_physical(m: &Manifest) -> bool {
    m.source.kind == PHYSICAL_KIND
}

/// The cluster a physical backup belongs to.
pub fn system_identifier(m: &Manifest) -> Result<u64> {
    prop(m, PROP_SYSTEM_ID)?
        .parse()
        .map_err(|_| malformed(m, PROP_SYSTEM_ID))
}

/// Read a physical backup's manifest as a [`BaseBackup`] for restore planning.
pub fn base_backup(m: &Manifest) -> Result<BaseBackup> {
    if !is_physical(m) {
        return Err(Error::invalid(format!(
            "backup {} is a {} backup, not a physical base backup",
            m.id, m.source.kind
        )));
    }
    let lsn = |k| -> Result<Lsn> { prop(m, k)?.parse().map_err(|_| malformed(m, k)) };
    let time = |k| -> Result<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(prop(m, k)?)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| malformed(m, k))
    };
    Ok(BaseBackup {
        id: m.id.clone(),
        timeline: prop(m, PROP_TIMELINE)?
            .parse()
            .map_err(|_| malformed(m, PROP_TIMELINE))?,
        start_lsn: lsn(PROP_START_LSN)?,
        stop_lsn: lsn(PROP_STOP_LSN)?,
        start_time: time(PROP_START_TIME)?,
        stop_time: time(PROP_STOP_TIME)?,
        next_xid: None,
    })
}

fn prop<'a>(m: &'a Manifest, key: &str) -> Result<&'a str> {
    m.stats
        .properties
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| {
            Error::corrupt(format!(
                "the manifest of physical backup {} lacks its {key}",
                m.id
            ))
        })
}

fn malformed(m: &Manifest, key: &str) -> Error {
    Error::corrupt(format!(
        "the manifest of physical backup {} has a malformed {key}",
        m.id
    ))
}
