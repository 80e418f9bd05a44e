//! Recoverability at a glance: for each backup series, the newest complete backup and its
//! age against the RPO, the last verify and the last drill (its measured recovery time and
//! point against the objectives), plus the repository's size, counts and lease holders; and
//! one verdict that monitoring understands ([`Health`], exit codes 0–3).
//!
//! ```no_run
//! # async fn run(repo: dr::core::Repository) -> dr::core::Result<()> {
//! use std::time::Duration;
//! use dr::drill::Objectives;
//!
//! let objectives = Objectives { rpo: Some(Duration::from_secs(3600)), rto: Some(Duration::from_secs(3600)) };
//! let status = dr::status::status(&repo, &objectives).await?;
//! for s in &status.series {
//!     println!("{}: {:?} {}", s.series, s.health, s.reasons.join("; "));
//! }
//! std::process::exit(status.health.exit_code());
//! # }
//! ```
//!
//! How a series is judged (the worst finding wins):
//!
//! | finding | health |
//! |---|---|
//! | the newest backup's data (a physical series: its newest archived WAL, if newer) is older than the RPO | breached |
//! | the last verify of the series failed | breached |
//! | the last drill found bad data or did not finish | breached |
//! | the last drill's recovery time exceeded the RTO | breached |
//! | the last drill's recovery point exceeded the RPO (then) | warning |
//! | the series was never verified; a database series was never drilled | warning |
//! | a physical series' WAL archive misses segments between archived ones | warning |
//! | a WAL push failed and archiving has not got past it (PostgreSQL keeps retrying) | warning |
//! | everything above is fine, or has no objective to judge by | ok |
//!
//! A repository without any complete backup is `unknown`: there is nothing to judge. The
//! objectives are the reader's (dr.toml, or the command line), not those recorded with the
//! checks, so tightening an objective shows at once which drills no longer meet it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use dr_core::lease::{self, LeaseStatus};
use dr_core::records::{self, CheckKind, CheckRecord};
use dr_core::{Manifest, Repository, Result, Series};

use crate::drill::Objectives;

/// A verdict, ordered from best to worst: `ok < warning < unknown < breached`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Every objective met, every check passed.
    Ok,
    /// Something needs attention soon (a check never ran, a past drill missed the RPO).
    Warning,
    /// Nothing to judge (no complete backups), or the state could not be read.
    Unknown,
    /// An objective is breached or a check failed: recovery is at risk now.
    Breached,
}

impl Health {
    /// The exit code monitoring plugins use: 0 ok, 1 warning, 2 breached (critical), 3
    /// unknown.
    pub fn exit_code(&self) -> i32 {
        match self {
            Health::Ok => 0,
            Health::Warning => 1,
            Health::Breached => 2,
            Health::Unknown => 3,
        }
    }

    /// `ok`, `warning`, `breached` or `unknown`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Warning => "warning",
            Health::Unknown => "unknown",
            Health::Breached => "breached",
        }
    }
}

/// The newest complete backup of a series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupBrief {
    /// Its id.
    pub id: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it was committed.
    pub finished_at: DateTime<Utc>,
    /// The moment its data is from ([`Manifest::data_time`]).
    pub data_at: DateTime<Utc>,
    /// Bytes stored.
    pub stored_bytes: u64,
    /// Bytes before compression and encryption.
    pub raw_bytes: u64,
    /// Its duration in milliseconds.
    pub duration_ms: i64,
}

impl BackupBrief {
    /// The brief of `m`.
    pub fn of(m: &Manifest) -> BackupBrief {
        BackupBrief {
            id: m.id.clone(),
            started_at: m.started_at,
            finished_at: m.finished_at,
            data_at: m.data_time(),
            stored_bytes: m.stored_bytes,
            raw_bytes: m.raw_bytes,
            duration_ms: m.duration_ms(),
        }
    }
}

/// The state of one series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesStatus {
    /// The series.
    pub series: Series,
    /// Its verdict.
    pub health: Health,
    /// Why it is not ok, one finding each.
    pub reasons: Vec<String>,
    /// Its newest complete backup.
    pub newest: BackupBrief,
    /// Age of the newest backup's data, in seconds: what a disaster now would lose.
    pub backup_age_secs: i64,
    /// Whether that age is within the RPO (`None` without one).
    pub rpo_met: Option<bool>,
    /// Complete backups of the series.
    pub backups: usize,
    /// Bytes they store.
    pub stored_bytes: u64,
    /// The last verify of any of its backups (without its details).
    pub last_verify: Option<CheckRecord>,
    /// The last drill of any of its backups (without its details).
    pub last_drill: Option<CheckRecord>,
    /// Whether the last drill's recovery time is within the RTO (`None` without a drill or
    /// an RTO).
    pub rto_met: Option<bool>,
    /// A physical series' archived WAL: its newest segment's age (which the RPO is judged
    /// by when it is newer than the backup) and the PITR window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal: Option<crate::wal_state::WalStatus>,
}

/// Sizes and counts of the whole repository.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepositoryTotals {
    /// Complete backups.
    pub backups: usize,
    /// Uploads without a manifest: running or failed backups.
    pub incomplete: usize,
    /// Series.
    pub series: usize,
    /// Bytes stored by complete backups.
    pub stored_bytes: u64,
    /// Bytes before compression and encryption.
    pub raw_bytes: u64,
    /// Check records (verifies and drills).
    pub records: usize,
}

/// The objectives a status was judged against, in seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ObjectiveSecs {
    /// Recovery point objective.
    pub rpo_secs: Option<u64>,
    /// Recovery time objective.
    pub rto_secs: Option<u64>,
}

impl From<&Objectives> for ObjectiveSecs {
    fn from(o: &Objectives) -> Self {
        ObjectiveSecs {
            rpo_secs: o.rpo.map(|d| d.as_secs()),
            rto_secs: o.rto.map(|d| d.as_secs()),
        }
    }
}

/// The state of a repository against the objectives.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    /// When it was taken.
    pub at: DateTime<Utc>,
    /// The repository (its storage, credentials left out).
    pub repository: String,
    /// The objectives judged against.
    pub objectives: ObjectiveSecs,
    /// The worst health of any series (`unknown` without any).
    pub health: Health,
    /// Each series, in series order.
    pub series: Vec<SeriesStatus>,
    /// Sizes and counts.
    pub totals: RepositoryTotals,
    /// Every lease and its holder.
    pub leases: Vec<LeaseStatus>,
}

impl Status {
    /// Every reason any series is not ok, prefixed with its series.
    pub fn reasons(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .series
            .iter()
            .flat_map(|s| s.reasons.iter().map(move |r| format!("{}: {r}", s.series)))
            .collect();
        if self.series.is_empty() {
            out.push("no complete backups in the repository".into());
        }
        out
    }
}

/// Everything a status is judged from, read from a repository ([`gather`]).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The repository (its storage's description).
    pub repository: String,
    /// Complete backups, newest first.
    pub backups: Vec<Manifest>,
    /// Ids of incomplete uploads.
    pub incomplete: Vec<String>,
    /// Check records, newest first.
    pub records: Vec<CheckRecord>,
    /// Leases.
    pub leases: Vec<LeaseStatus>,
    /// Each archived cluster's WAL, by system identifier.
    pub wal: BTreeMap<u64, crate::wal_state::WalFacts>,
}

/// Read what a status needs from `repo`: backups, incomplete uploads, records and leases.
pub async fn gather(repo: &Repository) -> Result<Facts> {
    let backups = repo.list_backups().await?;
    Ok(Facts {
        repository: repo.storage().describe(),
        wal: crate::wal_state::gather(repo, &backups).await?,
        backups,
        incomplete: repo.list_incomplete().await?,
        records: records::list_all(repo).await?,
        leases: lease::list(repo).await?,
    })
}

/// The status of `repo` now, against `objectives`.
pub async fn status(repo: &Repository, objectives: &Objectives) -> Result<Status> {
    Ok(assess(&gather(repo).await?, objectives, Utc::now()))
}

/// Judge `facts` against `objectives` at `now` (a pure function: see the module docs for
/// the rules).
pub fn assess(facts: &Facts, objectives: &Objectives, now: DateTime<Utc>) -> Status {
    let mut by_series: BTreeMap<&Series, Vec<&Manifest>> = BTreeMap::new();
    for m in &facts.backups {
        by_series.entry(&m.series).or_default().push(m);
    }
    let series: Vec<SeriesStatus> = by_series
        .into_iter()
        .map(|(series, backups)| {
            let wal = (series.kind == dr_core::wal::base::PHYSICAL_KIND)
                .then(|| series.origin.parse::<u64>().ok())
                .flatten()
                .and_then(|sysid| facts.wal.get(&sysid));
            assess_series(series, &backups, &facts.records, wal, objectives, now)
        })
        .collect();
    let health = series
        .iter()
        .map(|s| s.health)
        .max()
        .unwrap_or(Health::Unknown);
    Status {
        at: now,
        repository: facts.repository.clone(),
        objectives: objectives.into(),
        health,
        totals: RepositoryTotals {
            backups: facts.backups.len(),
            incomplete: facts.incomplete.len(),
            series: series.len(),
            stored_bytes: facts.backups.iter().map(|m| m.stored_bytes).sum(),
            raw_bytes: facts.backups.iter().map(|m| m.raw_bytes).sum(),
            records: facts.records.len(),
        },
        series,
        leases: facts.leases.clone(),
    }
}

/// One series: `backups` newest first, `records` newest first (of every series).
fn assess_series(
    series: &Series,
    backups: &[&Manifest],
    records: &[CheckRecord],
    wal: Option<&crate::wal_state::WalFacts>,
    objectives: &Objectives,
    now: DateTime<Utc>,
) -> SeriesStatus {
    let newest = BackupBrief::of(backups[0]);
    let backup_age = now - newest.data_at;
    let backup_age_secs = backup_age.num_seconds();
    let wal = wal.map(|w| crate::wal_state::WalStatus::of(w, now));
    // With archived WAL newer than the backup, a disaster loses only what came after it.
    let wal_age = wal
        .as_ref()
        .and_then(|w| w.newest_archived_at)
        .filter(|t| *t > newest.data_at)
        .map(|t| now - t);
    let last = |kind: CheckKind| {
        records
            .iter()
            .find(|r| r.kind == kind && &r.series == series)
            .map(|r| CheckRecord {
                details: serde_json::Value::Null,
                ..r.clone()
            })
    };
    let (last_verify, last_drill) = (last(CheckKind::Verify), last(CheckKind::Drill));

    let mut findings: Vec<(Health, String)> = Vec::new();
    let data_age = wal_age.unwrap_or(backup_age);
    let rpo_met = objectives
        .rpo
        .map(|rpo| data_age.num_milliseconds() <= rpo.as_millis() as i64);
    if let (Some(false), Some(rpo)) = (rpo_met, objectives.rpo) {
        let what = match (&wal_age, wal.as_ref().and_then(|w| w.newest_file.as_ref())) {
            (Some(_), Some(file)) => format!("the newest archived WAL {file}"),
            _ => format!("the newest backup {}", newest.id),
        };
        findings.push((
            Health::Breached,
            format!(
                "{what} is {} old, over the RPO of {}",
                secs(data_age.num_seconds()),
                secs(rpo.as_secs() as i64)
            ),
        ));
    }
    if let Some(w) = wal.as_ref().filter(|w| w.gaps > 0) {
        findings.push((
            Health::Warning,
            format!(
                "the WAL archive misses segments in {} place(s): `drctl wal verify` names them",
                w.gaps
            ),
        ));
    }
    if let Some(f) = wal.as_ref().and_then(|w| w.push_failure.as_ref()) {
        let what = f
            .file
            .as_deref()
            .map_or(String::new(), |n| format!(" of {n}"));
        findings.push((
            Health::Warning,
            format!(
                "the WAL push{what} failed at {} on {} and has not succeeded since: {}",
                f.at.format("%Y-%m-%d %H:%M:%S UTC"),
                f.host,
                f.message
            ),
        ));
    }
    match &last_verify {
        None => findings.push((Health::Warning, "never verified".into())),
        Some(v) if !v.passed => findings.push((
            Health::Breached,
            format!(
                "the last verify ({} of backup {}) failed: {}",
                v.finished_at.format("%Y-%m-%d %H:%M UTC"),
                v.backup_id,
                v.failures.join("; ")
            ),
        )),
        Some(_) => {}
    }
    let rto_met = match (&last_drill, objectives.rto) {
        (Some(d), Some(rto)) => d
            .recovery_time_ms
            .map(|ms| u128::from(ms) <= rto.as_millis()),
        _ => None,
    };
    match &last_drill {
        None if series.kind == dr_db::SOURCE_KIND => {
            findings.push((Health::Warning, "never drilled".into()))
        }
        None => {}
        Some(d) => {
            let when = d.finished_at.format("%Y-%m-%d %H:%M UTC");
            if !d.failures.is_empty() {
                findings.push((
                    Health::Breached,
                    format!("the last drill ({when}) failed: {}", d.failures.join("; ")),
                ));
            }
            if let (Some(false), Some(rto), Some(ms)) =
                (rto_met, objectives.rto, d.recovery_time_ms)
            {
                findings.push((
                    Health::Breached,
                    format!(
                        "the last drill ({when}) took {:.1} s to recover, over the RTO of {}",
                        ms as f64 / 1000.0,
                        secs(rto.as_secs() as i64)
                    ),
                ));
            }
            if let (Some(rpo), Some(point)) = (objectives.rpo, d.recovery_point_secs) {
                if point > rpo.as_secs() as i64 {
                    findings.push((
                        Health::Warning,
                        format!(
                            "the last drill ({when}) recovered data {} old, over the RPO of {}",
                            secs(point),
                            secs(rpo.as_secs() as i64)
                        ),
                    ));
                }
            }
        }
    }
    findings.sort_by_key(|f| std::cmp::Reverse(f.0));
    SeriesStatus {
        series: series.clone(),
        health: findings.first().map_or(Health::Ok, |f| f.0),
        reasons: findings.into_iter().map(|f| f.1).collect(),
        newest,
        backup_age_secs,
        rpo_met,
        backups: backups.len(),
        stored_bytes: backups.iter().map(|m| m.stored_bytes).sum(),
        last_verify,
        last_drill,
        rto_met,
        wal,
    }
}

/// Seconds for people: `45 s`, `12 min`, `3.5 h`, `2.0 d`.
pub fn secs(s: i64) -> String {
    let a = s.abs();
    if a < 120 {
        format!("{s} s")
    } else if a < 2 * 3600 {
        format!("{} min", s / 60)
    } else if a < 2 * 86400 {
        format!("{:.1} h", s as f64 / 3600.0)
    } else {
        format!("{:.1} d", s as f64 / 86400.0)
    }
}
