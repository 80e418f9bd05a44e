//! Restore drills: the runbook's monthly "restore it somewhere and see" as one call. A
//! drill restores a backup into a scratch database that it creates, checks it (row counts
//! against the manifest, every foreign key for orphaned rows, then `amcheck`, sequences and
//! the user's queries: [`DrillOptions::checks`]), measures the recovery time
//! and the recovery point it achieved, compares them with the objectives, and drops the
//! scratch database.
//!
//! ```no_run
//! # async fn run(repo: dr::core::Repository, key: dr::crypto::Identity) -> dr::core::Result<()> {
//! use std::time::Duration;
//! use dr::drill::{drill, DrillOptions, Objectives};
//!
//! let scratch: tokio_postgres::Config = "host=127.0.0.1 user=postgres dbname=app_drill".parse().unwrap();
//! let opts = DrillOptions {
//!     objectives: Objectives { rpo: Some(Duration::from_secs(3600)), rto: Some(Duration::from_secs(1800)) },
//!     ..Default::default()
//! };
//! // The newest database backup (the repository may hold directory backups too).
//! let latest = repo.latest(&dr::core::SeriesSelector::kind(dr::db::SOURCE_KIND)).await?;
//! let report = drill(&repo, &latest, &dr::keys::decryptor(key), scratch, &opts).await?;
//! println!("restored in {} ms; passed: {}", report.restore_ms, report.passed);
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use dr_core::{Decryptor, Error, ErrorKind, Manifest, ReadOptions, Repository, Result};
use dr_db::checks::{
    foreign_key_orphans, run_checks, CheckOutcome, ForeignKeyCheck, IntegrityChecks,
};
use dr_db::PgRestorer;

use crate::records::{record_drill, DrillMeasures, DrillOutcome};

/// The recovery point and time objectives a drill is judged against (dr.toml's
/// `[objectives]`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Objectives {
    /// Recovery point objective: the most data (in time) that may be lost. Each job outcome
    /// says whether the newest complete backup is within it.
    pub rpo: Option<Duration>,
    /// Recovery time objective: how long a restore may take. Drills fail when they take longer.
    pub rto: Option<Duration>,
}

/// How to run a drill.
#[derive(Debug, Clone, Default)]
pub struct DrillOptions {
    /// The objectives the drill is judged against (none: it only measures).
    pub objectives: Objectives,
    /// Keep the scratch database afterwards (for a look inside) instead of dropping it.
    pub keep: bool,
    /// The checks run on the restored database after the foreign keys (`[checks]` in
    /// dr.toml); by default `amcheck` and sequences.
    pub checks: IntegrityChecks,
    /// Restore ownership with `--no-owner` (roles of the source may not exist here).
    pub no_owner: bool,
    /// Reading the backup.
    pub read: ReadOptions,
}

/// What a drill found. `passed` is the verdict; the rest says why.
#[derive(Debug, Clone, Serialize)]
pub struct DrillReport {
    /// The backup restored.
    pub id: String,
    /// The scratch database it was restored into.
    pub scratch_database: String,
    /// When the drill ran.
    pub at: DateTime<Utc>,
    /// Recovery time: wall time of the restore and its foreign-key check, in milliseconds
    /// (the [`DrillReport::checks`] after it carry their own durations).
    pub restore_ms: u64,
    /// Recovery point: how old the backup's data was when the drill ran, in seconds (what a
    /// disaster at that moment would have lost).
    pub backup_age_secs: i64,
    /// Tables whose row counts matched the manifest.
    pub tables_checked: usize,
    /// Rows in those tables.
    pub rows_checked: u64,
    /// Every foreign key, with its orphaned rows.
    pub foreign_keys: Vec<ForeignKeyCheck>,
    /// The outcome of each of [`DrillOptions::checks`], in order: `amcheck`, sequences, the
    /// user's queries.
    pub checks: Vec<CheckOutcome>,
    /// Whether the restore met the RTO (`None` without one).
    pub rto_met: Option<bool>,
    /// Whether the backup's age met the RPO (`None` without one).
    pub rpo_met: Option<bool>,
    /// Whether the scratch database was kept.
    pub kept: bool,
    /// No orphaned rows, every check passed, and every objective met.
    pub passed: bool,
}

impl DrillReport {
    /// Rows breaking a foreign key, over all keys.
    pub fn orphans(&self) -> u64 {
        self.foreign_keys.iter().map(|k| k.orphans).sum()
    }

    /// Why the drill did not pass, one reason a line; empty when it passed.
    pub fn failures(&self, objectives: &Objectives) -> Vec<String> {
        let mut out = Vec::new();
        for k in self.foreign_keys.iter().filter(|k| k.orphans > 0) {
            out.push(format!(
                "{} rows of {} reference missing rows of {} (foreign key {})",
                k.orphans, k.table, k.references, k.constraint
            ));
        }
        out.extend(shared_failures(
            &self.checks,
            objectives,
            Measured {
                rto_met: self.rto_met,
                took: format!("the restore took {:.1} s", self.restore_ms as f64 / 1000.0),
                rpo_met: self.rpo_met,
                age: format!("the backup was {} s old", self.backup_age_secs),
            },
        ));
        out
    }
}

impl DrillOutcome for DrillReport {
    fn measures(&self) -> DrillMeasures {
        DrillMeasures {
            passed: self.passed,
            failures: self.failures(&Objectives::default()),
            recovery_time_ms: self.restore_ms,
            recovery_point_secs: self.backup_age_secs,
        }
    }
}

/// What a drill measured against its objectives, in words for its failures.
pub(crate) struct Measured {
    pub rto_met: Option<bool>,
    /// How long the timed step took, e.g. "the restore took 12.3 s".
    pub took: String,
    pub rpo_met: Option<bool>,
    /// How old the restored data was, e.g. "the backup was 600 s old".
    pub age: String,
}

/// The failures logical and physical drills share: checks that found something, then the
/// RTO and RPO objectives missed.
pub(crate) fn shared_failures(
    checks: &[CheckOutcome],
    objectives: &Objectives,
    measured: Measured,
) -> Vec<String> {
    let mut out: Vec<String> = checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| {
            format!(
                "check {} found {}: {}",
                c.name,
                c.summary,
                c.details.join("; ")
            )
        })
        .collect();
    if let (Some(false), Some(rto)) = (measured.rto_met, objectives.rto) {
        out.push(format!(
            "{}, over the RTO of {} s",
            measured.took,
            rto.as_secs()
        ));
    }
    if let (Some(false), Some(rpo)) = (measured.rpo_met, objectives.rpo) {
        out.push(format!(
            "{}, over the RPO of {} s",
            measured.age,
            rpo.as_secs()
        ));
    }
    out
}

/// Restore `manifest`'s backup into the new database `scratch` names (which must not exist:
/// a drill never touches a database it did not create), check it, measure it, and drop it
/// unless [`DrillOptions::keep`]. A restore or check that fails is an error (and leaves no
/// scratch database); missed objectives and orphaned rows are a report with `passed` false.
/// Either way the outcome is stored as a check record ([`dr_core::records`]).
pub async fn drill(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    scratch: tokio_postgres::Config,
    opts: &DrillOptions,
) -> Result<DrillReport> {
    let started_at = Utc::now();
    let result = drill_unrecorded(repo, manifest, decryptor, scratch, opts).await;
    let objectives = (opts.objectives.rto, opts.objectives.rpo);
    record_drill(repo, manifest, started_at, objectives, &result).await;
    result
}

async fn drill_unrecorded(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    scratch: tokio_postgres::Config,
    opts: &DrillOptions,
) -> Result<DrillReport> {
    let at = Utc::now();
    let scratch_database = scratch
        .get_dbname()
        .ok_or_else(|| Error::invalid("the drill's scratch database URL names no database"))?
        .to_string();
    if scratch_database == manifest.source.name {
        return Err(Error::invalid(format!(
            "the scratch database must not be the backed-up database \"{scratch_database}\": \
             name a new one, e.g. {scratch_database}_drill"
        )));
    }
    let restorer = PgRestorer::new(scratch.clone())
        .create(true)
        .no_owner(opts.no_owner);
    let started = Instant::now();
    let (restored, _) =
        crate::logical::restore(repo, manifest, decryptor, &restorer, 1, &opts.read).await?;
    let foreign_keys = match foreign_key_orphans(&scratch).await {
        Ok(keys) => keys,
        Err(e) => {
            let _ = restorer.drop_target().await;
            return Err(e.with_context("drill", "checking foreign keys"));
        }
    };
    let restore_ms = started.elapsed().as_millis() as u64;
    let checks = match run_checks(&scratch, &opts.checks).await {
        Ok(checks) => checks,
        Err(e) => {
            let _ = restorer.drop_target().await;
            return Err(e.with_context("drill", "checking the restored database"));
        }
    };
    if !opts.keep {
        restorer.drop_target().await?;
    }

    let backup_age_secs = (at - manifest.data_time()).num_seconds();
    let rto_met = opts
        .objectives
        .rto
        .map(|rto| u128::from(restore_ms) <= rto.as_millis());
    let rpo_met = opts
        .objectives
        .rpo
        .map(|rpo| backup_age_secs <= rpo.as_secs() as i64);
    let orphans: u64 = foreign_keys.iter().map(|k| k.orphans).sum();
    let checks_failed = checks.iter().filter(|c| !c.passed).count();
    let passed =
        orphans == 0 && checks_failed == 0 && rto_met != Some(false) && rpo_met != Some(false);
    tracing::info!(backup = %manifest.id, restore_ms, backup_age_secs, orphans, checks_failed, passed, "restore drill finished");
    Ok(DrillReport {
        id: manifest.id.clone(),
        scratch_database,
        at,
        restore_ms,
        backup_age_secs,
        tables_checked: restored.tables_checked,
        rows_checked: restored.rows_checked,
        foreign_keys,
        checks,
        rto_met,
        rpo_met,
        kept: opts.keep,
        passed,
    })
}

/// The error a failed drill reports (after its report was shown), for exit codes and job
/// outcomes: orphaned rows, damage found by `amcheck`, a sequence behind its column or a
/// user's check returning rows mean the backup does not restore a sound database.
pub fn failure(report: &DrillReport, objectives: &Objectives) -> Option<Error> {
    if report.passed {
        return None;
    }
    let kind = if report.orphans() > 0 || report.checks.iter().any(|c| !c.passed) {
        ErrorKind::Corrupt
    } else {
        ErrorKind::Other
    };
    Some(
        Error::new(
            kind,
            format!(
                "restore drill failed: {}",
                report.failures(objectives).join("; ")
            ),
        )
        .with_context("backup", &report.id),
    )
}
