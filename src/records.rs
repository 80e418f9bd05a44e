//! Check records of dr's own checks: how a drill's report becomes a
//! [`CheckRecord`] in the repository (verify builds its own in
//! [`crate::verify`]). Reading them back is [`dr_core::records::list`].

use std::time::Duration;

use chrono::{DateTime, Utc};

use dr_core::records::{CheckKind, CheckRecord};
use dr_core::{ErrorKind, Manifest, Result};

/// A drill's report, of whatever kind of drill: what it says about recoverability.
pub trait DrillOutcome: serde::Serialize {
    /// The verdict and the measured recovery time and point.
    fn measures(&self) -> DrillMeasures;
}

/// What a drill report says about recoverability, whatever kind of drill made it.
#[derive(Debug, Clone)]
pub struct DrillMeasures {
    /// The drill's verdict.
    pub passed: bool,
    /// What was wrong with the data itself (objectives are judged from the figures).
    pub failures: Vec<String>,
    /// Measured recovery time.
    pub recovery_time_ms: u64,
    /// Age of the recovered data.
    pub recovery_point_secs: i64,
}

/// The record of a drill of `manifest` that started at `started_at`, under the objectives
/// `rto` and `rpo`: its verdict, reasons, measured recovery time and point, and the whole
/// report; or, when the drill could not finish (restore failed), a failed record with the
/// error. `None` when the drill never reached the backup because it was asked wrongly (a
/// scratch database that exists or is the source): that says nothing about recoverability.
pub fn drill_record<R: DrillOutcome>(
    manifest: &Manifest,
    started_at: DateTime<Utc>,
    rto: Option<Duration>,
    rpo: Option<Duration>,
    result: &Result<R>,
) -> Option<CheckRecord> {
    let mut record = CheckRecord::new(
        CheckKind::Drill,
        &manifest.id,
        manifest.series.clone(),
        started_at,
    );
    record.rto_secs = rto.map(|d| d.as_secs());
    record.rpo_secs = rpo.map(|d| d.as_secs());
    match result {
        Ok(report) => {
            let m = report.measures();
            record.passed = m.passed;
            // Objectives are judged from the measured figures (against whatever objective
            // the reader has); `failures` keeps what was wrong with the data itself.
            record.failures = m.failures;
            record.recovery_time_ms = Some(m.recovery_time_ms);
            record.recovery_point_secs = Some(m.recovery_point_secs);
            record.details = serde_json::to_value(report).unwrap_or_default();
            Some(record)
        }
        Err(e) if is_usage_error(e.kind()) => None,
        Err(e) => Some(record.failed(format!("the drill did not finish: {}", e.report()))),
    }
}

/// Store the [`drill_record`] of a drill, when there is one, in `repo` (a failed write is a
/// warning: the drill's own result stands).
pub async fn record_drill<R: DrillOutcome>(
    repo: &dr_core::Repository,
    manifest: &Manifest,
    started_at: DateTime<Utc>,
    (rto, rpo): (Option<Duration>, Option<Duration>),
    result: &Result<R>,
) {
    if let Some(record) = drill_record(manifest, started_at, rto, rpo, result) {
        dr_core::records::write_or_warn(repo, &record).await;
    }
}

/// Errors that come from how a check was asked for, not from the backup.
fn is_usage_error(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidInput | ErrorKind::AlreadyExists | ErrorKind::NotEmpty
    )
}
