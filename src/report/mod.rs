//! Presenting a repository's state: Prometheus metrics of a [`Status`], and the report
//! people read — one self-contained HTML page ([`html`]) or Markdown for the runbook's
//! "document results" ([`markdown`]) — with the history of backups, verifies and drills.
//!
//! ```no_run
//! # async fn run(repo: dr::core::Repository) -> dr::core::Result<()> {
//! let objectives = dr::drill::Objectives::default();
//! let report = dr::report::Report::gather(&repo, &objectives).await?;
//! std::fs::write("report.html", dr::report::html::render(&report)).unwrap();
//! # Ok(()) }
//! ```

pub mod exposition;
pub mod html;
pub mod markdown;
pub mod prometheus;
pub mod svg;

use chrono::{DateTime, Utc};

use dr_core::records::{CheckKind, CheckRecord};
use dr_core::{Repository, Result, Series};

use crate::drill::Objectives;
use crate::status::{assess, gather, BackupBrief, Status};

/// Everything a report shows: the status now, and the history behind it.
#[derive(Debug, Clone)]
pub struct Report {
    /// The status against the objectives.
    pub status: Status,
    /// Every complete backup with its series, oldest first.
    pub backups: Vec<(Series, BackupBrief)>,
    /// Every verify and drill record, newest first.
    pub records: Vec<CheckRecord>,
}

impl Report {
    /// Read the repository and judge it against `objectives` now.
    pub async fn gather(repo: &Repository, objectives: &Objectives) -> Result<Report> {
        let facts = gather(repo).await?;
        let status = assess(&facts, objectives, Utc::now());
        let mut backups: Vec<(Series, BackupBrief)> = facts
            .backups
            .iter()
            .map(|m| (m.series.clone(), BackupBrief::of(m)))
            .collect();
        backups.reverse();
        Ok(Report {
            status,
            backups,
            records: facts.records,
        })
    }

    /// Drill records, oldest first.
    pub fn drills(&self) -> impl Iterator<Item = &CheckRecord> {
        self.records
            .iter()
            .rev()
            .filter(|r| r.kind == CheckKind::Drill)
    }

    /// Failed records, newest first.
    pub fn failures(&self) -> impl Iterator<Item = &CheckRecord> {
        self.records.iter().filter(|r| !r.passed)
    }

    /// The series that appear in backups or records, in order.
    pub fn series(&self) -> Vec<&Series> {
        let mut all: Vec<&Series> = self
            .backups
            .iter()
            .map(|(s, _)| s)
            .chain(self.records.iter().map(|r| &r.series))
            .collect();
        all.sort();
        all.dedup();
        all
    }
}

/// Why a record did not pass, in words: its failures, else the objectives it missed.
pub fn verdict_reasons(r: &CheckRecord) -> String {
    if r.passed {
        return "passed".into();
    }
    let mut reasons = r.failures.clone();
    if let (Some(ms), Some(rto)) = (r.recovery_time_ms, r.rto_secs) {
        if ms > rto * 1000 {
            reasons.push(format!(
                "recovery time {:.1} s over the RTO of {}",
                ms as f64 / 1000.0,
                crate::status::secs(rto as i64)
            ));
        }
    }
    if let (Some(p), Some(rpo)) = (r.recovery_point_secs, r.rpo_secs) {
        if p > rpo as i64 {
            reasons.push(format!(
                "recovery point {} over the RPO of {}",
                crate::status::secs(p),
                crate::status::secs(rpo as i64)
            ));
        }
    }
    if reasons.is_empty() {
        reasons.push("failed".into());
    }
    reasons.join("; ")
}

/// A time for tables.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}
