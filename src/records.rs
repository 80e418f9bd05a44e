//! Check records of dr's own checks: how a drill's report becomes a
//! [`CheckRecord`](dr_core::records::CheckRecord) in the repository (verify builds its own in
//! [`crate::verify`]). Reading them back is [`dr_core::records::list`].

use chrono::{DateTime, Utc};

use dr_core::records::{CheckKind, CheckRecord};
use dr_core::{ErrorKind, Manifest, Result};

use crate::drill::DrillReport;
use crate::drill::Objectives;
use crate::physical_drill::PhysicalDrillReport;

/// The record of a drill of `manifest` that started at `started_at`: its verdict, reasons,
/// measured recovery time and point, the objectives, and the whole report; or, when the
/// drill could not finish (restore failed), a failed record with the error. `None` when the
/// drill never reached the backup because it was asked wrongly (a scratch database that
/// exists or is the source): that says nothing about recoverability.
pub fn of_drill(
    manifest: &Manifest,
    started_at: DateTime<Utc>,
    objectives: &Objectives,
    result: &Result<DrillReport>,
) -> Option<CheckRecord> {
    drill_record(manifest, started_at, objectives, result, |report| {
        Measured {
            passed: report.passed,
            failures: report.failures(&Objectives::default()),
            recovery_time_ms: report.restore_ms,
            recovery_point_secs: report.backup_age_secs,
        }
    })
}

/// The record of a drill of the physical base backup `manifest`, like [`of_drill`]'s: the
/// recovery time is the fetch to the server accepting queries at the target, the recovery
/// point the age of the newest recovered transaction.
pub fn of_physical_drill(
    manifest: &Manifest,
    started_at: DateTime<Utc>,
    objectives: &Objectives,
    result: &Result<PhysicalDrillReport>,
) -> Option<CheckRecord> {
    drill_record(manifest, started_at, objectives, result, |report| {
        Measured {
            passed: report.passed,
            failures: report.failures(&Objectives::default()),
            recovery_time_ms: report.recovery_ms,
            recovery_point_secs: report.recovery_point_secs,
        }
    })
}

/// What a drill report says about recoverability, whatever kind of drill made it.
struct Measured {
    passed: bool,
    failures: Vec<String>,
    recovery_time_ms: u64,
    recovery_point_secs: i64,
}

fn drill_record<R: serde::Serialize>(
    manifest: &Manifest,
    started_at: DateTime<Utc>,
    objectives: &Objectives,
    result: &Result<R>,
    measured: impl FnOnce(&R) -> Measured,
) -> Option<CheckRecord> {
    let mut record = CheckRecord::new(
        CheckKind::Drill,
        &manifest.id,
        manifest.series.clone(),
        started_at,
    );
    record.rto_secs = objectives.rto.map(|d| d.as_secs());
    record.rpo_secs = objectives.rpo.map(|d| d.as_secs());
    match result {
        Ok(report) => {
            let m = measured(report);
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

/// Errors that come from how a check was asked for, not from the backup.
fn is_usage_error(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::InvalidInput | ErrorKind::AlreadyExists | ErrorKind::NotEmpty
    )
}
