//! The last failed WAL push, kept in the repository so that `drctl status` and `/metrics`
//! show a stuck archiver on any host that reads the repository, not only in the database
//! host's PostgreSQL log.
//!
//! ```text
//! wal/<system id>/push-failure.json    the newest failed push of the cluster (overwritten)
//! ```
//!
//! PostgreSQL retries a failed `archive_command` forever and never skips a file, so one
//! failure that lasts (a segment of another cluster, a different file under an archived name,
//! a repository that refuses writes) stops archiving for good while the database keeps
//! working and `pg_wal` fills up. The failure is written where it happens (best effort: the
//! repository may be what failed). The host that wrote it removes it after its next
//! successful push of a file at or after the failed one in PostgreSQL's order (PostgreSQL
//! archives in that order, so the failed file is then archived or was never PostgreSQL's);
//! and a reader judges it **resolved** anyway once the file it names is archived, or, when
//! it names none, once a file was archived after it ([`PushFailure::is_resolved`]): the usual
//! end of a failure (PostgreSQL's retry succeeds) needs no removal at all. One object,
//! overwritten, so a failure retried every minute costs one small write a minute and no
//! listing.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::names::host_name;
use crate::repo::Repository;
use crate::storage::{PutOptions, StorageExt};
use crate::wal::layout::{cluster_prefix, u64_text, WAL_FORMAT};

/// `wal/<system id>/push-failure.json`.
pub fn push_failure_path(system_identifier: u64) -> String {
    format!("{}push-failure.json", cluster_prefix(system_identifier))
}

/// One failed push of a WAL file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushFailure {
    /// [`WAL_FORMAT`].
    pub format: u32,
    /// The cluster whose file failed (decimal text).
    #[serde(with = "u64_text")]
    pub system_identifier: u64,
    /// The file that failed, when the failure was about one file.
    pub file: Option<String>,
    /// [`ErrorKind::as_str`] of the error.
    pub kind: String,
    /// The error's report (errors never carry secrets).
    pub message: String,
    /// When it failed.
    pub at: DateTime<Utc>,
    /// The host that pushed.
    pub host: String,
}

impl PushFailure {
    /// A failure of `file` (if about one file) in cluster `system_identifier`, now, on this
    /// host.
    pub fn new(system_identifier: u64, file: Option<&str>, error: &Error) -> PushFailure {
        PushFailure {
            format: WAL_FORMAT,
            system_identifier,
            file: file.map(str::to_string),
            kind: error.kind().as_str().to_string(),
            message: error.report(),
            at: Utc::now(),
            host: host_name(),
        }
    }

    /// Whether archiving got past it: the file it names is archived (`is_archived`), or it
    /// names none and a file was archived after it (`newest_archived_at`).
    pub fn is_resolved(
        &self,
        is_archived: impl Fn(&str) -> bool,
        newest_archived_at: Option<DateTime<Utc>>,
    ) -> bool {
        match &self.file {
            Some(file) => is_archived(file),
            None => newest_archived_at.is_some_and(|t| t > self.at),
        }
    }

    /// Store it as the cluster's newest failure.
    pub async fn write(&self, repo: &Repository) -> Result<()> {
        let path = push_failure_path(self.system_identifier);
        let mut json = serde_json::to_vec_pretty(self).expect("a push failure serializes");
        json.push(b'\n');
        repo.storage()
            .put_bytes(&path, Bytes::from(json), PutOptions::default())
            .await
            .map_err(|e| e.with_context("object", path))
    }

    /// Remove cluster `system_identifier`'s stored failure (a later push succeeded). Missing
    /// already is fine.
    pub async fn remove(repo: &Repository, system_identifier: u64) -> Result<()> {
        let path = push_failure_path(system_identifier);
        repo.storage()
            .delete(&path)
            .await
            .map_err(|e| e.with_context("object", path))
    }

    /// The cluster's newest failure, if one was ever stored. A malformed or newer-format
    /// object reads as none (with a warning): it must not hide the rest of a status.
    pub async fn read(repo: &Repository, system_identifier: u64) -> Result<Option<PushFailure>> {
        let path = push_failure_path(system_identifier);
        let bytes = match repo.storage().get_bytes(&path).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.with_context("object", path)),
        };
        match serde_json::from_slice::<PushFailure>(&bytes) {
            Ok(f) if f.format <= WAL_FORMAT && f.system_identifier == system_identifier => {
                Ok(Some(f))
            }
            Ok(_) => {
                tracing::warn!(
                    path,
                    "skipping a push failure of a newer format or another cluster"
                );
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(path, error = %e, "skipping a malformed push failure");
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(file: Option<&str>, at: &str) -> PushFailure {
        PushFailure {
            at: at.parse().unwrap(),
            ..PushFailure::new(7, file, &Error::invalid("refused"))
        }
    }

    #[test]
    fn a_failure_naming_a_file_is_resolved_only_once_that_file_is_archived() {
        let f = failure(Some("000000010000000000000003"), "2026-12-01T10:00:00Z");
        let later = Some("2026-12-01T11:00:00Z".parse().unwrap());
        // A later file archived by a parallel pusher does not resolve it: the file is still missing.
        assert!(!f.is_resolved(|n| n == "000000010000000000000004", later));
        assert!(f.is_resolved(|n| n == "000000010000000000000003", None));
    }

    #[test]
    fn a_failure_naming_no_file_is_resolved_by_any_later_archived_file() {
        let f = failure(None, "2026-12-01T10:00:00Z");
        assert!(!f.is_resolved(|_| true, None));
        assert!(!f.is_resolved(|_| true, Some("2026-12-01T09:59:00Z".parse().unwrap())));
        assert!(f.is_resolved(|_| false, Some("2026-12-01T10:00:01Z".parse().unwrap())));
    }

    #[test]
    fn the_object_lies_beside_the_cluster_file_and_is_not_part_of_the_archive_layout() {
        let path = push_failure_path(7);
        assert_eq!(path, "wal/7/push-failure.json");
        let size = crate::wal::SegmentSize::new(16 << 20).unwrap();
        assert_eq!(crate::wal::layout::parse_object_path(7, size, &path), None);
    }
}
