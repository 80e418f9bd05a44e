//! Check records: what each verify and restore drill found, kept in the repository so that
//! status, metrics and reports can show the history ("document results", as the runbook
//! asks) on any host that can read the repository.
//!
//! ```text
//! <root>/records/verify/<finished>-<rand>.json   one verify of one backup
//! <root>/records/drill/<finished>-<rand>.json    one restore drill
//! ```
//!
//! `<finished>` is the UTC finish time (`20261201T013000.123Z`), so names sort by time. A
//! record is small (a few hundred bytes plus the check's own report in `details`) and written
//! once; nothing rewrites it. Prune leaves records alone: they describe checks, not data.
//! Failed checks are recorded too (`passed: false` with the reasons), which is the point.

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::names::{host_name, random_hex};
use crate::repo::Repository;
use crate::series::Series;
use crate::storage::{PutOptions, StorageExt};

/// Prefix under which check records live.
pub const RECORDS_PREFIX: &str = "records/";
/// The record format this version writes; readers skip newer ones.
pub const RECORD_FORMAT: u32 = 1;

/// Which check a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// Every stored byte read back and checked (checksums, tags, row counts).
    Verify,
    /// The backup restored into a scratch database and checked; RTO and RPO measured.
    Drill,
}

impl CheckKind {
    /// `verify` or `drill`: the folder under `records/`.
    pub fn as_str(&self) -> &'static str {
        match self {
            CheckKind::Verify => "verify",
            CheckKind::Drill => "drill",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CheckKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<CheckKind> {
        match s {
            "verify" => Ok(CheckKind::Verify),
            "drill" => Ok(CheckKind::Drill),
            other => Err(Error::invalid(format!(
                "'{other}' is not a check kind (verify or drill)"
            ))),
        }
    }
}

/// One verify or drill, as stored in `records/<kind>/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckRecord {
    /// Record format ([`RECORD_FORMAT`]).
    pub format: u32,
    /// Verify or drill.
    pub kind: CheckKind,
    /// The backup checked.
    pub backup_id: String,
    /// Its series.
    pub series: Series,
    /// When the check started.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// Whether it passed: a verify found nothing wrong; a drill restored a consistent
    /// database within its objectives.
    pub passed: bool,
    /// What was wrong with the data or the check itself, one reason each: a bad tag, a
    /// row count, orphaned rows, a restore that failed. Missed objectives are not listed
    /// here: they follow from the measured figures and the objectives below (a drill that
    /// only missed its RTO has `passed: false` and no failures).
    #[serde(default)]
    pub failures: Vec<String>,
    /// Drills: the measured recovery time (restore and checks), in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_time_ms: Option<u64>,
    /// Drills: the measured recovery point (the backup's data age when the drill ran), in
    /// seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_point_secs: Option<i64>,
    /// The recovery time objective the check was judged against, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_secs: Option<u64>,
    /// The recovery point objective the check was judged against, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_secs: Option<u64>,
    /// The host that ran it.
    pub host: String,
    /// The check's own report (a drill's tables, foreign keys and other checks; a verify's
    /// bytes and rows), for readers that want everything.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl CheckRecord {
    /// A record of a `kind` check of backup `backup_id` in `series`, started at
    /// `started_at` and finished now, on this host; passed until a failure is added.
    pub fn new(
        kind: CheckKind,
        backup_id: impl Into<String>,
        series: Series,
        started_at: DateTime<Utc>,
    ) -> CheckRecord {
        CheckRecord {
            format: RECORD_FORMAT,
            kind,
            backup_id: backup_id.into(),
            series,
            started_at,
            finished_at: Utc::now(),
            passed: true,
            failures: Vec::new(),
            recovery_time_ms: None,
            recovery_point_secs: None,
            rto_secs: None,
            rpo_secs: None,
            host: host_name(),
            details: serde_json::Value::Null,
        }
    }

    /// Mark it failed for `reason` (added to the reasons).
    pub fn failed(mut self, reason: impl Into<String>) -> CheckRecord {
        self.passed = false;
        self.failures.push(reason.into());
        self
    }

    /// The check's duration in milliseconds.
    pub fn duration_ms(&self) -> i64 {
        (self.finished_at - self.started_at).num_milliseconds()
    }
}

/// Path of a new record of `kind` finished at `finished_at`.
fn record_path(kind: CheckKind, finished_at: DateTime<Utc>) -> Result<String> {
    Ok(format!(
        "{RECORDS_PREFIX}{kind}/{}-{}.json",
        finished_at.format("%Y%m%dT%H%M%S%.3fZ"),
        random_hex(3)?
    ))
}

/// Store `record` under `records/<kind>/`. Returns its path.
pub async fn write(repo: &Repository, record: &CheckRecord) -> Result<String> {
    let path = record_path(record.kind, record.finished_at)?;
    let mut json = serde_json::to_vec_pretty(record).expect("a check record serializes");
    json.push(b'\n');
    repo.storage()
        .put_bytes(&path, Bytes::from(json), PutOptions::default())
        .await?;
    Ok(path)
}

/// Store `record`, logging rather than failing when the store refuses (a host may read a
/// repository it cannot write): a check's result must not be lost to its record.
pub async fn write_or_warn(repo: &Repository, record: &CheckRecord) {
    if let Err(e) = write(repo, record).await {
        tracing::warn!(
            kind = %record.kind,
            backup = %record.backup_id,
            error = %e.report(),
            "could not store the check record in the repository"
        );
    }
}

/// Every record of `kind`, newest first. Records of a newer format, and objects that are
/// not records, are skipped with a warning rather than failing the whole listing.
pub async fn list(repo: &Repository, kind: CheckKind) -> Result<Vec<CheckRecord>> {
    let prefix = format!("{RECORDS_PREFIX}{kind}/");
    let mut paths: Vec<String> = repo
        .storage()
        .list(&prefix)
        .await?
        .into_iter()
        .map(|o| o.path)
        .filter(|p| p.ends_with(".json"))
        .collect();
    paths.sort();
    let mut out = Vec::with_capacity(paths.len());
    for path in paths.iter().rev() {
        let bytes = match repo.storage().get_bytes(path).await {
            Ok(b) => b,
            // Deleted between the listing and the read: no longer a record.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e.with_context("record", path)),
        };
        match serde_json::from_slice::<CheckRecord>(&bytes) {
            Ok(r) if r.format <= RECORD_FORMAT => out.push(r),
            Ok(r) => tracing::warn!(
                path,
                format = r.format,
                "skipping a check record of a newer format"
            ),
            Err(e) => tracing::warn!(path, error = %e, "skipping a malformed check record"),
        }
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.finished_at));
    Ok(out)
}

/// Every record, verifies and drills, newest first.
pub async fn list_all(repo: &Repository) -> Result<Vec<CheckRecord>> {
    let mut all = list(repo, CheckKind::Verify).await?;
    all.extend(list(repo, CheckKind::Drill).await?);
    all.sort_by_key(|r| std::cmp::Reverse(r.finished_at));
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_paths_sort_by_finish_time() {
        let t1: DateTime<Utc> = "2026-12-01T01:30:00.5Z".parse().unwrap();
        let t2: DateTime<Utc> = "2026-12-01T01:30:01Z".parse().unwrap();
        let (a, b) = (
            record_path(CheckKind::Drill, t1).unwrap(),
            record_path(CheckKind::Drill, t2).unwrap(),
        );
        assert!(a.starts_with("records/drill/20261201T013000.500Z-"), "{a}");
        assert!(a < b);
    }

    #[test]
    fn a_failure_makes_a_record_failed_with_its_reason() {
        let r = CheckRecord::new(
            CheckKind::Verify,
            "x",
            "postgres:1:app".parse().unwrap(),
            Utc::now(),
        )
        .failed("bad tag");
        assert!(!r.passed);
        assert_eq!(r.failures, ["bad tag"]);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"kind\":\"verify\""), "{json}");
        assert_eq!(serde_json::from_str::<CheckRecord>(&json).unwrap(), r);
    }
}
