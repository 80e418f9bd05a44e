//! Jobs and what they report: the kinds, the runner trait, the context a run sees, outcomes
//! and skip reasons, and the events the scheduler broadcasts.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::cron::Schedule;
use crate::error::{Error, Result};
use crate::lease::Clock;
use crate::progress::{ProgressEvent, ProgressSink, Stage};
use crate::repo::Repository;

/// What a job does. The dr kinds, or one an embedder defines.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Take a backup.
    Backup,
    /// Apply the retention policy.
    Prune,
    /// Read back and check stored backups.
    Verify,
    /// Restore a backup into a scratch database, check it, and measure RTO and RPO.
    Drill,
    /// Copy complete backups to a second storage target.
    Replicate,
    /// Stream WAL continuously into the archive (a [continuous](Job::keep_running) job).
    WalReceive,
    /// Anything else an embedder schedules.
    Custom(String),
}

impl JobKind {
    /// `backup`, `prune`, `verify`, `drill`, `replicate`, `wal-receive`, or the custom name.
    pub fn as_str(&self) -> &str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Prune => "prune",
            JobKind::Verify => "verify",
            JobKind::Drill => "drill",
            JobKind::Replicate => "replicate",
            JobKind::WalReceive => "wal-receive",
            JobKind::Custom(name) => name,
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "backup" => JobKind::Backup,
            "prune" => JobKind::Prune,
            "verify" => JobKind::Verify,
            "drill" => JobKind::Drill,
            "replicate" => JobKind::Replicate,
            "wal-receive" => JobKind::WalReceive,
            "" => return Err(Error::invalid("a job kind must not be empty")),
            other => JobKind::Custom(other.to_string()),
        })
    }
}

/// What a successful run reports: a one-line message and named figures (bytes, counts,
/// durations, ids) for dashboards.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct JobSummary {
    /// One line for humans, e.g. `backup 2026…-pg-7f3a: 1.5 GiB raw, 212 MiB stored`.
    pub message: String,
    /// Named figures, e.g. `raw_bytes`, `stored_bytes`, `deleted`.
    #[serde(default)]
    pub figures: BTreeMap<String, serde_json::Value>,
}

impl JobSummary {
    /// A summary with `message` and no figures.
    pub fn new(message: impl Into<String>) -> JobSummary {
        JobSummary {
            message: message.into(),
            figures: BTreeMap::new(),
        }
    }

    /// Add a figure.
    pub fn figure(mut self, name: &str, value: impl Into<serde_json::Value>) -> JobSummary {
        self.figures.insert(name.to_string(), value.into());
        self
    }
}

/// Why a run failed: the error's kind and its one-line report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// [`ErrorKind::as_str`] of the error.
    pub kind: String,
    /// [`Error::report`]: the error and its causes on one line.
    pub message: String,
}

impl JobError {
    pub(super) fn from_error(e: &Error) -> JobError {
        JobError {
            kind: e.kind().as_str().to_string(),
            message: e.report(),
        }
    }
}

/// Whether the newest complete backup was within the recovery point objective when a run
/// finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpoStatus {
    /// The objective, in seconds.
    pub rpo_secs: u64,
    /// The series judged: of the repository's series, the one whose newest backup is
    /// oldest (every series is within the objective exactly when this one is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub series: Option<crate::series::Series>,
    /// That series' newest complete backup, if any.
    pub newest_backup: Option<String>,
    /// When it started (its data is at least that fresh).
    pub newest_backup_at: Option<DateTime<Utc>>,
    /// Its age in seconds when the run finished.
    pub age_secs: Option<u64>,
    /// `age <= rpo` (false when there is no backup).
    pub within: bool,
}

/// The outcome of one run, as reported in events and stored in `jobs/<name>/last.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobOutcome {
    /// The job's name.
    pub job: String,
    /// Its kind (`backup`, `prune`, `verify`, …).
    pub kind: String,
    /// The tick this run was for (for a run started by hand, the time it was asked for).
    pub scheduled_for: DateTime<Utc>,
    /// When the run began.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
    /// `finished_at - started_at` in milliseconds.
    pub duration_ms: u64,
    /// Whether the job succeeded.
    pub ok: bool,
    /// What a successful run reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<JobSummary>,
    /// Why a failed run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<JobError>,
    /// The recovery point objective check, when the scheduler has an RPO.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo: Option<RpoStatus>,
    /// The host that ran it.
    pub host: String,
}

/// Why a tick did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Another process holds the job's lease (it is running the job).
    Locked,
    /// The job's record shows this tick already ran (on another replica).
    AlreadyRan,
    /// Ticks passed while no process ran the job, and the policy is to skip them (or the
    /// window rule does not allow a catch-up run now).
    Missed,
    /// The previous run was still going when the tick came.
    Overran,
}

/// What the scheduler reports. Serialized with an `event` tag (`started`, `progress`,
/// `succeeded`, `failed`, `skipped`, `planned`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SchedulerEvent {
    /// The next run of a job was planned.
    Planned {
        /// The job.
        job: String,
        /// The tick.
        scheduled_for: DateTime<Utc>,
        /// The tick plus jitter: when it will start.
        run_at: DateTime<Utc>,
    },
    /// A run began (the lease is held).
    Started {
        /// The job.
        job: String,
        /// Its kind.
        kind: String,
        /// The tick.
        scheduled_for: DateTime<Utc>,
        /// When it began.
        started_at: DateTime<Utc>,
    },
    /// Progress of a running job, forwarded from its pipeline.
    Progress {
        /// The job.
        job: String,
        /// `read`, `write` or `verify`.
        stage: String,
        /// Bytes so far on that stage.
        bytes: u64,
        /// Expected total, if known.
        total: Option<u64>,
        /// Average rate since the stage began.
        bytes_per_sec: f64,
        /// Whether the stage is done.
        done: bool,
    },
    /// A run succeeded, with its figures.
    Succeeded(JobOutcome),
    /// A run failed, with its error.
    Failed(JobOutcome),
    /// A tick did not run.
    Skipped {
        /// The job.
        job: String,
        /// The tick.
        scheduled_for: DateTime<Utc>,
        /// Why.
        reason: SkipReason,
        /// Details for humans (who holds the lease, which run already happened).
        detail: String,
    },
}

impl SchedulerEvent {
    /// The job the event is about.
    pub fn job(&self) -> &str {
        match self {
            SchedulerEvent::Planned { job, .. }
            | SchedulerEvent::Started { job, .. }
            | SchedulerEvent::Progress { job, .. }
            | SchedulerEvent::Skipped { job, .. } => job,
            SchedulerEvent::Succeeded(o) | SchedulerEvent::Failed(o) => &o.job,
        }
    }
}

/// What a runner gets: which job and tick, the repository, progress reporting, cancellation.
pub struct JobContext {
    pub(super) job: String,
    pub(super) kind: JobKind,
    pub(super) scheduled_for: DateTime<Utc>,
    pub(super) repo: Repository,
    pub(super) clock: Clock,
    pub(super) events: broadcast::Sender<SchedulerEvent>,
    pub(super) cancel: watch::Receiver<bool>,
    pub(super) stop: watch::Receiver<bool>,
}

impl fmt::Debug for JobContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("job", &self.job)
            .field("kind", &self.kind)
            .field("scheduled_for", &self.scheduled_for)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// The job's name.
    pub fn job(&self) -> &str {
        &self.job
    }

    /// The job's kind.
    pub fn kind(&self) -> &JobKind {
        &self.kind
    }

    /// The scheduler's wall clock: backups a job takes are stamped with it.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// The tick this run is for.
    pub fn scheduled_for(&self) -> DateTime<Utc> {
        self.scheduled_for
    }

    /// The scheduler's repository.
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// Report progress (sent as [`SchedulerEvent::Progress`]).
    pub fn report_progress(&self, p: &ProgressEvent) {
        let _ = self.events.send(progress_event(&self.job, p));
    }

    /// A [`ProgressSink`] for pipeline options that forwards to [`JobContext::report_progress`].
    pub fn progress_sink(&self) -> ProgressSink {
        let events = self.events.clone();
        let job = self.job.clone();
        Arc::new(move |p: &ProgressEvent| {
            let _ = events.send(progress_event(&job, p));
        })
    }

    /// Whether the scheduler is stopping and wants this run to end (it will be aborted
    /// when the grace period runs out).
    pub fn is_cancelled(&self) -> bool {
        *self.cancel.borrow()
    }

    /// Completes when the scheduler is asked to stop (or aborts its jobs). A
    /// [continuous](Job::keep_running) job's runner waits on it and then winds down: it has
    /// the scheduler's grace period to store what it holds and return.
    pub async fn stopping(&self) {
        let mut stop = self.stop.clone();
        let mut cancel = self.cancel.clone();
        tokio::select! {
            _ = stop.wait_for(|s| *s) => {}
            _ = cancel.wait_for(|c| *c) => {}
        }
    }
}

fn progress_event(job: &str, p: &ProgressEvent) -> SchedulerEvent {
    SchedulerEvent::Progress {
        job: job.to_string(),
        stage: match p.stage {
            Stage::Read => "read",
            Stage::Write => "write",
            Stage::Verify => "verify",
        }
        .to_string(),
        bytes: p.bytes,
        total: p.total,
        bytes_per_sec: p.bytes_per_sec,
        done: p.done,
    }
}

/// Does the work of a job. Implement it to schedule your own jobs; dr's backup, prune and
/// verify runners are in the `dr` facade (`dr::jobs`).
///
/// Contract: return a summary on success or the error on failure; report progress through
/// the context; never hold secrets in the summary. The future may be dropped at any await
/// point when the scheduler shuts down after its grace period: leave nothing that looks
/// complete when dropped half-way (dr's pipelines commit only on explicit finish).
#[async_trait]
pub trait JobRunner: Send + Sync {
    /// Run the job once.
    async fn run(&self, ctx: &JobContext) -> Result<JobSummary>;
}

/// A job: a name, what it does, when, and what follows it.
#[derive(Clone)]
pub struct Job {
    pub(super) name: String,
    pub(super) kind: JobKind,
    pub(super) schedule: Option<Schedule>,
    pub(super) then: Vec<String>,
    pub(super) runner: Arc<dyn JobRunner>,
    pub(super) continuous: bool,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("schedule", &self.schedule)
            .field("then", &self.then)
            .field("continuous", &self.continuous)
            .finish_non_exhaustive()
    }
}

impl Job {
    /// A job without a schedule (it runs when asked, or after another job) that `runner`
    /// carries out. Names are plain: letters, digits, `-`, `_`, `.`.
    pub fn new(name: impl Into<String>, kind: JobKind, runner: Arc<dyn JobRunner>) -> Job {
        Job {
            name: name.into(),
            kind,
            schedule: None,
            then: Vec::new(),
            runner,
            continuous: false,
        }
    }

    /// Run continuously instead of on a schedule (a WAL receiver): the scheduler starts it
    /// at once, and whenever it ends before the scheduler stops (a failure, a dropped
    /// connection it could not ride out) starts it again after a backoff that doubles from
    /// 1 s to 1 min. It takes no `max_concurrent` slot, so it never holds up the scheduled
    /// jobs. Its runner should return once [`JobContext::stopping`] completes.
    pub fn keep_running(mut self) -> Job {
        self.continuous = true;
        self
    }

    /// Whether it runs continuously ([`Job::keep_running`]).
    pub fn is_continuous(&self) -> bool {
        self.continuous
    }

    /// Run on `schedule`.
    pub fn schedule(mut self, schedule: Schedule) -> Job {
        self.schedule = Some(schedule);
        self
    }

    /// After each successful run, run `job` too (e.g. prune after a backup).
    pub fn then(mut self, job: impl Into<String>) -> Job {
        self.then.push(job.into());
        self
    }

    /// The job's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its kind.
    pub fn kind(&self) -> &JobKind {
        &self.kind
    }

    /// Its schedule, if it has one.
    pub fn schedule_ref(&self) -> Option<&Schedule> {
        self.schedule.as_ref()
    }

    /// The jobs run after it.
    pub fn followers(&self) -> &[String] {
        &self.then
    }
}

/// A job's state for status pages: its schedule, next planned run and last outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobStatus {
    /// The job's name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// The cron expression, if scheduled.
    pub cron: Option<String>,
    /// The time zone of the cron expression.
    pub time_zone: Option<String>,
    /// Jobs run after it.
    pub then: Vec<String>,
    /// The next planned run (tick plus jitter), while the scheduler runs.
    pub next_run: Option<DateTime<Utc>>,
    /// The last outcome (from this process, or the repository's record at start).
    pub last: Option<JobOutcome>,
}
