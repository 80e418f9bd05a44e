//! Drills of physical base backups: the point-in-time restore a disaster would need, done for
//! real on a scratch directory, measured, checked and thrown away.
//!
//! [`physical_drill`] restores the base backup into a new scratch directory
//! ([`crate::pitr::restore_to_point`]: planned against the archive first), starts a server on
//! it ([`dr_db::server::ScratchServer`]: no TCP, archiving off), waits until recovery has
//! replayed the archived WAL to the target and promoted, runs the drill checks (`amcheck`
//! and sequences in every database, the user's queries in
//! [`PhysicalDrillOptions::checks_database`]), stops the server and removes the directory.
//!
//! It measures the recovery time as a disaster would feel it — from the first byte fetched
//! to the server accepting queries at the target — and the recovery point it achieved: how
//! old the newest recovered transaction was when the drill started. For a drill to the end
//! of the archive it also checks that recovery replayed everything the archive holds (a
//! recovery that stopped early is a failure, not an RPO).
//!
//! ```no_run
//! # async fn run(repo: dr::core::Repository, key: dr::crypto::Identity, m: dr::core::Manifest) -> dr::core::Result<()> {
//! use dr::physical_drill::{physical_drill, PhysicalDrillOptions};
//!
//! let opts = PhysicalDrillOptions::new(
//!     "drctl wal-fetch --repo /srv/dr-repo --key-file /etc/dr/repo.key %f %p",
//! );
//! let report = physical_drill(&repo, &m, &dr::keys::decryptor(key), &opts).await?;
//! println!("recovered in {} ms, {} s of data lost", report.recovery_ms, report.recovery_point_secs);
//! # Ok(()) }
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

use dr_core::wal::{RecoveryTarget, TargetTimeline};
use dr_core::{Decryptor, Error, ErrorKind, Manifest, ReadOptions, Repository, Result};
use dr_db::checks::{run_checks, CheckOutcome, IntegrityChecks};
use dr_db::server::ScratchServer;
use dr_db::wal::TargetAction;

use crate::drill::{shared_failures, Measured, Objectives};
use crate::pitr::{restore_to_point, PitrRequest};
use crate::records::{record_drill, DrillMeasures, DrillOutcome};

/// How to run a physical drill.
#[derive(Debug, Clone)]
pub struct PhysicalDrillOptions {
    /// The `restore_command` the recovering server runs (`drctl wal-fetch … %f %p`).
    pub restore_command: String,
    /// Where recovery stops (default: the end of the archive).
    pub target: RecoveryTarget,
    /// Which timeline recovery follows (default: the latest).
    pub timeline: TargetTimeline,
    /// The objectives the drill is judged against (none: it only measures).
    pub objectives: Objectives,
    /// The checks: `amcheck` and sequences run in every database, the user's queries in
    /// [`PhysicalDrillOptions::checks_database`].
    pub checks: IntegrityChecks,
    /// The database the user's queries run in (`None`: every database).
    pub checks_database: Option<String>,
    /// A superuser of the backed-up cluster, which the drill connects as.
    pub user: String,
    /// The directory the scratch directory is made in (default: the system's temporary
    /// directory). It needs room for the whole cluster and its WAL.
    pub scratch_parent: Option<PathBuf>,
    /// How long recovery may take before the drill gives up.
    pub recovery_timeout: Duration,
    /// Keep the scratch directory (the server is stopped either way).
    pub keep: bool,
    /// Reading the base backup.
    pub read: ReadOptions,
}

impl PhysicalDrillOptions {
    /// A drill to the end of the archive, on the latest timeline, as `postgres`, with the
    /// default checks, fetching WAL with `restore_command`.
    pub fn new(restore_command: impl Into<String>) -> Self {
        PhysicalDrillOptions {
            restore_command: restore_command.into(),
            target: RecoveryTarget::Latest,
            timeline: TargetTimeline::Latest,
            objectives: Objectives::default(),
            checks: IntegrityChecks::default(),
            checks_database: None,
            user: "postgres".to_string(),
            scratch_parent: None,
            recovery_timeout: Duration::from_secs(3600),
            keep: false,
            read: ReadOptions::default(),
        }
    }
}

/// What a physical drill found. `passed` is the verdict; the rest says why.
#[derive(Debug, Clone, Serialize)]
pub struct PhysicalDrillReport {
    /// The base backup restored.
    pub id: String,
    /// When the drill started.
    pub at: DateTime<Utc>,
    /// The recovery target, in words.
    pub target: String,
    /// The timeline recovery followed.
    pub timeline: u32,
    /// The scratch directory (gone unless kept).
    pub scratch_dir: PathBuf,
    /// Fetching and unpacking the base backup, in milliseconds.
    pub restore_ms: u64,
    /// Recovery time: from the start of the fetch to the server accepting queries at the
    /// target, in milliseconds (the checks after it carry their own durations).
    pub recovery_ms: u64,
    /// The newest transaction recovery replayed (its commit time), if any.
    pub recovered_to: Option<DateTime<Utc>>,
    /// The newest commit the archive holds, as its index tells (for a drill to the end).
    pub archive_reaches: Option<DateTime<Utc>>,
    /// Recovery point achieved: how old the recovered data was when the drill started, in
    /// seconds (what a disaster at that moment would have lost).
    pub recovery_point_secs: i64,
    /// The databases checked.
    pub databases: Vec<String>,
    /// Each check's outcome, named `<database>: <check>`.
    pub checks: Vec<CheckOutcome>,
    /// Whether recovery stopped before the end of the archive (a drill to the end only).
    pub stopped_early: bool,
    /// Whether the recovery met the RTO (`None` without one).
    pub rto_met: Option<bool>,
    /// Whether the recovery point met the RPO (`None` without one).
    pub rpo_met: Option<bool>,
    /// Whether the scratch directory was kept.
    pub kept: bool,
    /// Every check passed, recovery replayed what it should have, and every objective met.
    pub passed: bool,
}

impl PhysicalDrillReport {
    /// Why the drill did not pass, one reason a line; empty when it passed.
    pub fn failures(&self, objectives: &Objectives) -> Vec<String> {
        let mut out = Vec::new();
        if self.stopped_early {
            out.push(format!(
                "recovery stopped at {} although the archive reaches {}",
                fmt_time(self.recovered_to),
                fmt_time(self.archive_reaches)
            ));
        }
        out.extend(shared_failures(
            &self.checks,
            objectives,
            Measured {
                rto_met: self.rto_met,
                took: format!("recovery took {:.1} s", self.recovery_ms as f64 / 1000.0),
                rpo_met: self.rpo_met,
                age: format!("the recovered data was {} s old", self.recovery_point_secs),
            },
        ));
        out
    }
}

/// Recovery time: fetch to the server accepting queries at the target; recovery point: the
/// age of the newest recovered transaction.
impl DrillOutcome for PhysicalDrillReport {
    fn measures(&self) -> DrillMeasures {
        DrillMeasures {
            passed: self.passed,
            failures: self.failures(&Objectives::default()),
            recovery_time_ms: self.recovery_ms,
            recovery_point_secs: self.recovery_point_secs,
        }
    }
}

fn fmt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string())
        .unwrap_or_else(|| "no transaction".to_string())
}

/// Drill `manifest` (a physical base backup): see the module docs. A restore, recovery or
/// check that cannot run is an error (the scratch directory is removed unless kept);
/// problems found and missed objectives are a report with `passed` false. Either way the
/// outcome is stored as a drill record ([`dr_core::records`]) that `drctl status` shows.
pub async fn physical_drill(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    opts: &PhysicalDrillOptions,
) -> Result<PhysicalDrillReport> {
    let started_at = Utc::now();
    let result = drill_unrecorded(repo, manifest, decryptor, opts, started_at).await;
    let objectives = (opts.objectives.rto, opts.objectives.rpo);
    record_drill(repo, manifest, started_at, objectives, &result).await;
    result
}

async fn drill_unrecorded(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    opts: &PhysicalDrillOptions,
    at: DateTime<Utc>,
) -> Result<PhysicalDrillReport> {
    if !dr_core::wal::base::is_physical(manifest) {
        return Err(Error::invalid(format!(
            "backup {} is not a physical base backup (a database backup's drill restores into a scratch database: drctl drill --db)",
            manifest.id
        )));
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix("dr-drill-");
    let scratch = match &opts.scratch_parent {
        Some(parent) => builder.tempdir_in(parent),
        None => builder.tempdir(),
    }
    .map_err(|e| Error::io("cannot create the drill's scratch directory", e))?;
    let scratch_dir = scratch.path().to_path_buf();
    let result = recover_and_check(repo, manifest, decryptor, opts, at, scratch_dir).await;
    if opts.keep {
        let _ = scratch.keep();
    } else if let Err(e) = scratch.close() {
        tracing::warn!(error = %e, "cannot remove the drill's scratch directory");
    }
    result
}

async fn recover_and_check(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    opts: &PhysicalDrillOptions,
    at: DateTime<Utc>,
    scratch_dir: PathBuf,
) -> Result<PhysicalDrillReport> {
    let req = PitrRequest {
        backup: Some(manifest.id.clone()),
        series: Default::default(),
        pgdata: scratch_dir.join("pgdata"),
        target: opts.target.clone(),
        action: TargetAction::Promote,
        timeline: opts.timeline,
        archive: false,
        restore_command: opts.restore_command.clone(),
        // Tablespaces land beside the scratch pgdata (`pgdata-tablespace-<oid>`), inside the
        // scratch directory that is removed afterwards.
        tablespaces: Vec::new(),
    };
    let started = Instant::now();
    let restored = restore_to_point(repo, decryptor, &req, &opts.read).await?;
    let restore_ms = started.elapsed().as_millis() as u64;
    let server = ScratchServer::start(&scratch_dir).await?;
    let checked = async {
        server
            .wait_until_promoted(&opts.user, opts.recovery_timeout)
            .await?;
        let recovery_ms = started.elapsed().as_millis() as u64;
        let recovered = server.recovered(&opts.user).await?;
        let (recovered_to, databases) = (recovered.replayed_to, recovered.databases);
        let mut checks = Vec::new();
        for db in &databases {
            let mut these = opts.checks.clone();
            if opts.checks_database.as_ref().is_some_and(|c| c != db) {
                these.sql.clear();
            }
            let outcomes = run_checks(&server.config(&opts.user, db), &these)
                .await
                .map_err(|e| e.with_context("database", db))?;
            checks.extend(outcomes.into_iter().map(|mut c| {
                c.name = format!("{db}: {}", c.name);
                c
            }));
        }
        Ok::<_, Error>((recovery_ms, recovered_to, databases, checks))
    }
    .await;
    let stopped = server.stop().await;
    let (recovery_ms, recovered_to, databases, checks) = checked?;
    stopped?;

    let archive_reaches = restored.plan.reaches;
    let stopped_early = matches!(opts.target, RecoveryTarget::Latest)
        && match (recovered_to, archive_reaches) {
            (Some(got), Some(want)) => got + chrono::Duration::seconds(1) < want,
            (None, Some(_)) => true,
            _ => false,
        };
    let data_time = recovered_to.unwrap_or_else(|| manifest.data_time());
    let recovery_point_secs = (at - data_time).num_seconds().max(0);
    let rto_met = opts
        .objectives
        .rto
        .map(|rto| u128::from(recovery_ms) <= rto.as_millis());
    let rpo_met = opts
        .objectives
        .rpo
        .map(|rpo| recovery_point_secs <= rpo.as_secs() as i64);
    let passed = !stopped_early
        && checks.iter().all(|c| c.passed)
        && rto_met != Some(false)
        && rpo_met != Some(false);
    tracing::info!(backup = %manifest.id, restore_ms, recovery_ms, recovery_point_secs, passed, "physical drill finished");
    Ok(PhysicalDrillReport {
        id: manifest.id.clone(),
        at,
        target: opts.target.to_string(),
        timeline: restored.plan.timeline,
        scratch_dir,
        restore_ms,
        recovery_ms,
        recovered_to,
        archive_reaches,
        recovery_point_secs,
        databases,
        checks,
        stopped_early,
        rto_met,
        rpo_met,
        kept: opts.keep,
        passed,
    })
}

/// The error a failed physical drill reports (after its report was shown), for exit codes
/// and job outcomes.
pub fn failure(report: &PhysicalDrillReport, objectives: &Objectives) -> Option<Error> {
    if report.passed {
        return None;
    }
    let kind = if report.stopped_early || report.checks.iter().any(|c| !c.passed) {
        ErrorKind::Corrupt
    } else {
        ErrorKind::Other
    };
    Some(
        Error::new(
            kind,
            format!(
                "physical drill failed: {}",
                report.failures(objectives).join("; ")
            ),
        )
        .with_context("backup", &report.id),
    )
}
