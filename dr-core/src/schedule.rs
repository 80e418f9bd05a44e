//! Schedules and the embedded scheduler: when jobs run, and running them once per tick
//! however many replicas of a program schedule them.
//!
//! # Schedules
//!
//! A [`Schedule`] is a cron expression in a time zone ([`CronExpr`]), a bounded random
//! [jitter](Schedule::jitter), an optional maintenance [`Window`] that the job is confined to
//! ([`WindowRule::OnlyIn`]) or kept out of ([`WindowRule::NotIn`]), and a policy for runs
//! missed while the process was down ([`MissedRuns`]). All of it is plain arithmetic on
//! wall-clock instants, testable without waiting:
//!
//! ```
//! use chrono::{TimeZone, Utc};
//! use std::time::Duration;
//! use dr_core::schedule::{CronExpr, Schedule, Window};
//!
//! // The runbook's maintenance window: the first Sunday of each month, 02:00–04:00 UTC.
//! let maintenance = Window::new(CronExpr::new("0 2 * * SUN#1", chrono_tz::UTC)?, Duration::from_secs(2 * 3600))?;
//! // An hourly backup that stays out of it.
//! let hourly = Schedule::new(CronExpr::new("0 * * * *", chrono_tz::UTC)?).not_in(maintenance);
//! let sunday = Utc.with_ymd_and_hms(2026, 12, 6, 1, 30, 0).unwrap(); // first Sunday of December
//! assert_eq!(hourly.next_tick_after(sunday), Some(Utc.with_ymd_and_hms(2026, 12, 6, 4, 0, 0).unwrap()));
//! # Ok::<(), dr_core::Error>(())
//! ```
//!
//! - **Cron** expressions are parsed by [croner](https://docs.rs/croner): 5 fields, or 6 with
//!   seconds first; `L` (last day of month / last weekday), `W` (nearest weekday), `#`
//!   (`SUN#1`: first Sunday), names of days and months, `@daily` and friends. Ticks are
//!   computed in the expression's IANA time zone (chrono-tz), so `0 2 * * *` in
//!   `Europe/Berlin` is 02:00 local time all year; croner resolves clock changes (a tick in a
//!   skipped hour runs at the first valid instant; a repeated hour runs once). As in Vixie
//!   cron, when both day-of-month and day-of-week are restricted a day matching **either**
//!   fires; use `#` for "the first Sunday".
//! - **Jitter** delays each run by a uniformly random amount in `[0, jitter]`, so replicas
//!   and fleets do not all hit the database and the store at the same second. It never moves
//!   a run across a window boundary: the bound shrinks to the time left before the rule
//!   would change (see [`Schedule::jitter_bound`]).
//! - **Windows** confine ticks, they do not move them: with `only_in`, ticks outside the
//!   window are skipped; with `not_in`, ticks inside it are skipped. A window is a cron
//!   expression for its start plus a length (its end is exclusive).
//!
//! # The scheduler
//!
//! [`Scheduler`] owns [`Job`]s; each has a name, a [`JobKind`], an optional schedule, jobs to
//! run after it (`then`, e.g. prune after each backup) and a [`JobRunner`] that does the work
//! (dr-core knows no backend: the backup, prune and verify runners live in the `dr` facade,
//! and embedders add their own). For each tick of a job the scheduler:
//!
//! 1. sleeps on Tokio's clock until the jittered run time (wall-clock time comes from an
//!    injectable [`Clock`]; sleeps are cut into naps of at most a minute, so a wall clock
//!    that jumps is noticed);
//! 2. takes the job's lease ([`Lease`], named `job-<name>`), if the store supports leases.
//!    If another process holds it, the run is skipped ([`SkipReason::Locked`]);
//! 3. reads the job's record `jobs/<name>/last.json` and skips the run if that record is for
//!    this tick or a later one ([`SkipReason::AlreadyRan`]): a replica that got the lease
//!    just after another released it does not run the job a second time;
//! 4. runs the job, writes its [`JobOutcome`] to `jobs/<name>/last.json`, releases the lease,
//!    and runs the jobs listed in `then` if it succeeded.
//!
//! So of several replicas that schedule one job on one repository, exactly one runs each
//! tick. Everything is reported as [`SchedulerEvent`]s on a `tokio::sync::broadcast` channel
//! ([`Scheduler::subscribe`]) and through `tracing`.
//!
//! # Missed runs
//!
//! A run is *missed* when the job's record in the repository (`jobs/<name>/last.json`,
//! written by whichever replica ran it) is for a tick older than the latest tick the
//! schedule allows at start-up: the process (every replica) was down when a tick came. The
//! record is used rather than the newest backup because prune and verify jobs leave no
//! backup, and because a backup taken by hand must not hide a missed scheduled one. A job
//! without any record has never run under a scheduler, and nothing counts as missed.
//!
//! [`MissedRuns::RunOnce`] runs the job once at start (for the latest missed tick, however
//! many were missed) if its window rule allows the start time; [`MissedRuns::Skip`] reports
//! the miss ([`SkipReason::Missed`]) and waits for the next tick. A tick missed because the
//! previous run was still going (an overrun) is skipped and logged.
//!
//! # Stopping
//!
//! [`Scheduler::shutdown`] stops planning new runs, gives running jobs a grace period to
//! finish, then aborts them by dropping their futures (an unfinished backup is never
//! committed: its writer aborts on drop) and records them as failed with
//! [`ErrorKind::Cancelled`]. Runners can watch [`JobContext::is_cancelled`] to stop early.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch, Semaphore};
use tokio::task::JoinHandle;

use crate::error::{Error, ErrorKind, Result};
pub use crate::lease::Clock;
use crate::lease::{Lease, LeaseOptions, DEFAULT_TTL, JOB_PREFIX};
pub use crate::names::check_job_name;
use crate::names::host_name;
use crate::progress::{ProgressEvent, ProgressSink, Stage};
use crate::repo::Repository;
use crate::storage::{PutOptions, StorageExt};
/// IANA time zones (chrono-tz), re-exported for schedules and configuration.
pub use chrono_tz::Tz;

/// Prefix under which job records live: `jobs/<name>/last.json`.
pub const JOBS_PREFIX: &str = "jobs/";

/// The longest single sleep: the wall clock is looked at again at least this often.
const MAX_NAP: Duration = Duration::from_secs(60);
/// How many skipped ticks the window arithmetic walks before it gives up.
const MAX_STEPS: usize = 100_000;

// ---------------------------------------------------------------------------------------
// Cron expressions, windows, schedules
// ---------------------------------------------------------------------------------------

/// A cron expression evaluated in a time zone.
///
/// croner is used because it is maintained, small, and complete: 5- and 6-field
/// expressions, `L`, `W` and `#`, names, and time-zone-aware evaluation through chrono
/// (including clock changes), which is what "02:00 in Europe/Berlin" and "the first Sunday of
/// the month" need. The `cron` crate needs 6 or 7 fields and lacks `#`; `saffron` is
/// unmaintained.
#[derive(Clone)]
pub struct CronExpr {
    text: String,
    cron: croner::Cron,
    tz: Tz,
}

impl CronExpr {
    /// Parse `expr` (5 fields, or 6 with seconds first) to be evaluated in `tz`.
    pub fn new(expr: &str, tz: Tz) -> Result<CronExpr> {
        let cron = croner::parser::CronParser::new().parse(expr).map_err(|e| {
            Error::invalid(format!(
                "'{expr}' is not a valid cron expression (5 fields: minute hour day-of-month month day-of-week, or 6 with seconds first)"
            ))
            .with_source(e)
        })?;
        let parsed = CronExpr {
            text: expr.trim().to_string(),
            cron,
            tz,
        };
        // A pattern that can never fire (30 February) is an error now, not a silent no-op.
        if parsed.next_after(Utc::now()).is_none() {
            return Err(Error::invalid(format!(
                "cron expression '{expr}' never fires"
            )));
        }
        Ok(parsed)
    }

    /// The expression as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The time zone it is evaluated in.
    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The latest tick at or before `t`.
    pub fn latest_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// Whether `t` is a tick (to the second).
    pub fn fires_at(&self, t: DateTime<Utc>) -> bool {
        self.cron
            .is_time_matching(&t.with_timezone(&self.tz))
            .unwrap_or(false)
    }
}

impl fmt::Debug for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CronExpr({:?} in {})", self.text, self.tz)
    }
}

impl fmt::Display for CronExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.tz == Tz::UTC {
            f.write_str(&self.text)
        } else {
            write!(f, "{} ({})", self.text, self.tz)
        }
    }
}

impl PartialEq for CronExpr {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text && self.tz == other.tz
    }
}

/// A recurring window of time, such as "the first Sunday of each month, 02:00–04:00 UTC":
/// a cron expression for its start and a length. The start is inside, the end is not.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    start: CronExpr,
    length: Duration,
}

impl Window {
    /// A window opening at each tick of `start` and lasting `length` (more than zero).
    pub fn new(start: CronExpr, length: Duration) -> Result<Window> {
        if length < Duration::from_secs(1) {
            return Err(Error::invalid("a window must last at least one second"));
        }
        Ok(Window { start, length })
    }

    /// When the window opens.
    pub fn start(&self) -> &CronExpr {
        &self.start
    }

    /// How long it stays open.
    pub fn length(&self) -> Duration {
        self.length
    }

    fn length_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.length).unwrap_or(chrono::Duration::MAX)
    }

    /// The occurrence of the window that contains `t`, as `(start, end)`.
    pub fn containing(&self, t: DateTime<Utc>) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        // If any occurrence contains t, the latest one that started by t does.
        let start = self.start.latest_at_or_before(t)?;
        let end = start + self.length_chrono();
        (t < end).then_some((start, end))
    }

    /// Whether `t` is inside an occurrence of the window.
    pub fn contains(&self, t: DateTime<Utc>) -> bool {
        self.containing(t).is_some()
    }

    /// The next time the window opens, strictly after `t`.
    pub fn next_start_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.start.next_after(t)
    }
}

/// Where in time a job may run relative to a [`Window`].
#[derive(Debug, Clone, Default, PartialEq)]
pub enum WindowRule {
    /// At any time.
    #[default]
    Anytime,
    /// Only inside the window: ticks outside it are skipped.
    OnlyIn(Window),
    /// Never inside the window: ticks inside it are skipped.
    NotIn(Window),
}

impl WindowRule {
    /// Whether a run may happen at `t`.
    pub fn allows(&self, t: DateTime<Utc>) -> bool {
        match self {
            WindowRule::Anytime => true,
            WindowRule::OnlyIn(w) => w.contains(t),
            WindowRule::NotIn(w) => !w.contains(t),
        }
    }

    /// For an allowed `t`, the instant at which the rule stops allowing runs (the end of
    /// the containing window, or the start of the next one); `None` if never.
    pub fn allowed_until(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            WindowRule::Anytime => None,
            WindowRule::OnlyIn(w) => w.containing(t).map(|(_, end)| end),
            WindowRule::NotIn(w) => w.next_start_after(t),
        }
    }
}

/// What to do at start-up about ticks that passed while no process was running the job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissedRuns {
    /// Run the job once at start (for the latest missed tick), if the window rule allows.
    #[default]
    RunOnce,
    /// Report the miss and wait for the next tick.
    Skip,
}

impl FromStr for MissedRuns {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "run_once" | "run-once" => Ok(MissedRuns::RunOnce),
            "skip" => Ok(MissedRuns::Skip),
            other => Err(Error::invalid(format!(
                "'{other}' is not a missed-run policy: use run_once or skip"
            ))),
        }
    }
}

/// When a job runs: cron ticks in a time zone, jitter, a window rule and a missed-run
/// policy. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    /// The ticks.
    pub cron: CronExpr,
    /// Each run is delayed by a uniform random amount in `[0, jitter]` (bounded further by
    /// the window rule).
    pub jitter: Duration,
    /// Confinement to, or exclusion from, a window.
    pub window: WindowRule,
    /// What to do about runs missed while the process was down.
    pub missed: MissedRuns,
}

impl Schedule {
    /// Every tick of `cron`, no jitter, no window, missed runs run once at start.
    pub fn new(cron: CronExpr) -> Schedule {
        Schedule {
            cron,
            jitter: Duration::ZERO,
            window: WindowRule::Anytime,
            missed: MissedRuns::default(),
        }
    }

    /// Parse `expr` in UTC: shorthand for `Schedule::new(CronExpr::new(expr, UTC)?)`.
    pub fn cron_utc(expr: &str) -> Result<Schedule> {
        Ok(Schedule::new(CronExpr::new(expr, Tz::UTC)?))
    }

    /// With a random delay of up to `jitter` per run.
    pub fn jitter(mut self, jitter: Duration) -> Schedule {
        self.jitter = jitter;
        self
    }

    /// Only inside `window`.
    pub fn only_in(mut self, window: Window) -> Schedule {
        self.window = WindowRule::OnlyIn(window);
        self
    }

    /// Never inside `window`.
    pub fn not_in(mut self, window: Window) -> Schedule {
        self.window = WindowRule::NotIn(window);
        self
    }

    /// With the missed-run policy `missed`.
    pub fn missed(mut self, missed: MissedRuns) -> Schedule {
        self.missed = missed;
        self
    }

    /// The first tick strictly after `t` that the window rule allows; `None` if there is
    /// none within a long search (a window the ticks never fall into).
    pub fn next_tick_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let second = chrono::Duration::seconds(1);
        let mut from = t;
        for _ in 0..MAX_STEPS {
            let tick = self.cron.next_after(from)?;
            match &self.window {
                WindowRule::Anytime => return Some(tick),
                WindowRule::OnlyIn(w) => {
                    if w.contains(tick) {
                        return Some(tick);
                    }
                    // Jump to just before the next opening.
                    let open = w.next_start_after(tick)?;
                    from = (open - second).max(tick);
                }
                WindowRule::NotIn(w) => match w.containing(tick) {
                    None => return Some(tick),
                    // Jump to just before the window closes: a tick at its end is allowed.
                    Some((_, end)) => from = (end - second).max(tick),
                },
            }
        }
        None
    }

    /// The latest tick at or before `t` that the window rule allows.
    pub fn latest_tick_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let second = chrono::Duration::seconds(1);
        let mut at = t;
        for _ in 0..MAX_STEPS {
            let tick = self.cron.latest_at_or_before(at)?;
            match &self.window {
                WindowRule::Anytime => return Some(tick),
                WindowRule::OnlyIn(w) => {
                    if w.contains(tick) {
                        return Some(tick);
                    }
                    // The latest opening before the tick ended before it: look before its end.
                    let open = w.start().latest_at_or_before(tick)?;
                    let end = open + w.length_chrono();
                    at = (end - second).min(tick - second);
                }
                WindowRule::NotIn(w) => match w.containing(tick) {
                    None => return Some(tick),
                    Some((open, _)) => at = (open - second).min(tick - second),
                },
            }
        }
        None
    }

    /// The largest delay jitter may add to `tick`: the configured jitter, or less so that the
    /// run stays on the same side of every window boundary (strictly before the instant the
    /// rule stops allowing runs).
    pub fn jitter_bound(&self, tick: DateTime<Utc>) -> Duration {
        match self.window.allowed_until(tick) {
            None => self.jitter,
            Some(until) => {
                let room = (until - tick)
                    .to_std()
                    .unwrap_or_default()
                    .saturating_sub(Duration::from_millis(1));
                self.jitter.min(room)
            }
        }
    }

    /// When the run for `tick` happens, given `u`, a uniform sample from `[0, 1]`:
    /// `tick + u × jitter_bound(tick)`, rounded to the millisecond.
    pub fn run_time(&self, tick: DateTime<Utc>, u: f64) -> DateTime<Utc> {
        let bound = self.jitter_bound(tick).as_millis() as f64;
        let delay = (u.clamp(0.0, 1.0) * bound).floor() as i64;
        tick + chrono::Duration::milliseconds(delay)
    }
}

/// A uniform sample from `[0, 1)`, from the system's random generator.
fn uniform() -> f64 {
    use ring::rand::SecureRandom;
    let mut buf = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut buf).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(buf) >> 11) as f64 / (1u64 << 53) as f64
}

// ---------------------------------------------------------------------------------------
// Jobs, runners, outcomes, events
// ---------------------------------------------------------------------------------------

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
    /// Anything else an embedder schedules.
    Custom(String),
}

impl JobKind {
    /// `backup`, `prune`, `verify`, `drill`, `replicate`, or the custom name.
    pub fn as_str(&self) -> &str {
        match self {
            JobKind::Backup => "backup",
            JobKind::Prune => "prune",
            JobKind::Verify => "verify",
            JobKind::Drill => "drill",
            JobKind::Replicate => "replicate",
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
    fn from_error(e: &Error) -> JobError {
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
    job: String,
    kind: JobKind,
    scheduled_for: DateTime<Utc>,
    repo: Repository,
    clock: Clock,
    events: broadcast::Sender<SchedulerEvent>,
    cancel: watch::Receiver<bool>,
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
    name: String,
    kind: JobKind,
    schedule: Option<Schedule>,
    then: Vec<String>,
    runner: Arc<dyn JobRunner>,
}

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Job")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("schedule", &self.schedule)
            .field("then", &self.then)
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
        }
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

// ---------------------------------------------------------------------------------------
// The scheduler
// ---------------------------------------------------------------------------------------

/// How the scheduler behaves.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Wall-clock source for the cron and window arithmetic and for leases. Tests on
    /// Tokio's paused clock use [`Clock::tokio`] or [`Clock::from_fn`].
    pub clock: Clock,
    /// Recovery point objective: each outcome says whether the newest backup is within it.
    pub rpo: Option<Duration>,
    /// How many jobs run at once in this process (default 1: on a small machine two dumps
    /// at 02:00 would compete for the same cores). Others wait their turn.
    pub max_concurrent: usize,
    /// Time to live of job leases (renewed every third of it while a job runs).
    pub lease_ttl: Duration,
    /// Capacity of the event channel; slow subscribers miss the oldest events.
    pub event_capacity: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        SchedulerOptions {
            clock: Clock::system(),
            rpo: None,
            max_concurrent: 1,
            lease_ttl: DEFAULT_TTL,
            event_capacity: 1024,
        }
    }
}

/// Runs jobs on their schedules. Cheap to clone (all clones are the same scheduler).
///
/// ```no_run
/// # async fn run(repo: dr_core::Repository, runner: std::sync::Arc<dyn dr_core::schedule::JobRunner>) -> dr_core::Result<()> {
/// use std::time::Duration;
/// use dr_core::schedule::{Job, JobKind, Schedule, Scheduler, SchedulerOptions};
///
/// let scheduler = Scheduler::new(repo, SchedulerOptions::default(), vec![
///     Job::new("nightly", JobKind::Backup, runner)
///         .schedule(Schedule::cron_utc("0 2 * * *")?.jitter(Duration::from_secs(300))),
/// ])?;
/// let mut events = scheduler.subscribe();
/// scheduler.start().await?;
/// while let Ok(event) = events.recv().await {
///     println!("{}", serde_json::to_string(&event).unwrap());
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    repo: Repository,
    jobs: Vec<Job>,
    opts: SchedulerOptions,
    events: broadcast::Sender<SchedulerEvent>,
    last: Mutex<BTreeMap<String, JobOutcome>>,
    next: Mutex<BTreeMap<String, DateTime<Utc>>>,
    permits: Semaphore,
    /// Stop planning new runs.
    stop: watch::Sender<bool>,
    /// Abort running jobs.
    cancel: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    started: Mutex<bool>,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("repository", &self.inner.repo.storage().describe())
            .field("jobs", &self.inner.jobs)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler for `jobs` on `repo`. Checks that job names are valid and unique and that
    /// every `then` names a job.
    pub fn new(repo: Repository, opts: SchedulerOptions, jobs: Vec<Job>) -> Result<Scheduler> {
        let mut names = BTreeSet::new();
        for job in &jobs {
            check_job_name(&job.name)?;
            if !names.insert(job.name.clone()) {
                return Err(Error::invalid(format!("two jobs are named '{}'", job.name)));
            }
        }
        for job in &jobs {
            for follower in &job.then {
                if !names.contains(follower) {
                    return Err(Error::invalid(format!(
                        "job '{}' runs '{follower}' after it, but there is no job '{follower}'",
                        job.name
                    )));
                }
            }
        }
        let (events, _) = broadcast::channel(opts.event_capacity.max(16));
        let (stop, _) = watch::channel(false);
        let (cancel, _) = watch::channel(false);
        Ok(Scheduler {
            inner: Arc::new(Inner {
                repo,
                permits: Semaphore::new(opts.max_concurrent.max(1)),
                jobs,
                opts,
                events,
                last: Mutex::new(BTreeMap::new()),
                next: Mutex::new(BTreeMap::new()),
                stop,
                cancel,
                tasks: Mutex::new(Vec::new()),
                started: Mutex::new(false),
            }),
        })
    }

    /// Receive every event from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SchedulerEvent> {
        self.inner.events.subscribe()
    }

    /// The repository jobs run against.
    pub fn repository(&self) -> &Repository {
        &self.inner.repo
    }

    /// The jobs.
    pub fn jobs(&self) -> &[Job] {
        &self.inner.jobs
    }

    /// Each job's schedule, next planned run and last outcome, in job order.
    pub fn status(&self) -> Vec<JobStatus> {
        let last = self.inner.last.lock().unwrap();
        let next = self.inner.next.lock().unwrap();
        self.inner
            .jobs
            .iter()
            .map(|j| JobStatus {
                name: j.name.clone(),
                kind: j.kind.to_string(),
                cron: j.schedule.as_ref().map(|s| s.cron.as_str().to_string()),
                time_zone: j.schedule.as_ref().map(|s| s.cron.time_zone().to_string()),
                then: j.then.clone(),
                next_run: next.get(&j.name).copied(),
                last: last.get(&j.name).cloned(),
            })
            .collect()
    }

    /// Read each job's last outcome from the repository into [`Scheduler::status`] (done by
    /// [`Scheduler::start`]; call it yourself for a status page of a scheduler you run
    /// only by hand).
    pub async fn load_records(&self) -> Result<()> {
        for job in &self.inner.jobs {
            if let Some(record) = read_record(&self.inner.repo, &job.name).await? {
                self.inner
                    .last
                    .lock()
                    .unwrap()
                    .insert(job.name.clone(), record);
            }
        }
        Ok(())
    }

    /// Start a task per scheduled job (runs missed while down first, per each job's policy)
    /// and return. Stop with [`Scheduler::shutdown`]. Starting twice is an error.
    pub async fn start(&self) -> Result<()> {
        {
            let mut started = self.inner.started.lock().unwrap();
            if *started {
                return Err(Error::invalid("the scheduler is already running"));
            }
            *started = true;
        }
        self.load_records().await?;
        let mut tasks = self.inner.tasks.lock().unwrap();
        for job in self.inner.jobs.iter().filter(|j| j.schedule.is_some()) {
            let inner = self.inner.clone();
            let name = job.name.clone();
            tasks.push(tokio::spawn(async move { job_loop(inner, name).await }));
        }
        tracing::info!(
            jobs = self.inner.jobs.len(),
            repository = %self.inner.repo.storage().describe(),
            "scheduler started"
        );
        Ok(())
    }

    /// Run job `name` now, under its lease, then the jobs that follow it if it succeeded.
    /// Returns every outcome, the named job's first; the named job's own failure is in its
    /// outcome (`ok: false`), not an `Err`. Fails with [`ErrorKind::NotFound`] for an unknown
    /// job and [`ErrorKind::Locked`] if another process is running it.
    pub async fn run_now(&self, name: &str) -> Result<Vec<JobOutcome>> {
        let job = self.inner.job(name).ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!(
                    "no job named '{name}' (jobs: {})",
                    self.inner
                        .jobs
                        .iter()
                        .map(|j| j.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?;
        let scheduled_for = truncate_to_second(self.inner.opts.clock.now());
        match execute_chain(&self.inner, job, scheduled_for, true, true).await {
            Ok(outcomes) => Ok(outcomes),
            Err(Skip { reason, error }) => Err(error.unwrap_or_else(|| {
                Error::new(
                    ErrorKind::Other,
                    format!("job '{name}' did not run: {reason:?}"),
                )
            })),
        }
    }

    /// Stop: plan no new runs, give running jobs `grace` to finish, then abort them (they
    /// are recorded as failed with [`ErrorKind::Cancelled`]). Returns when every task has
    /// ended.
    pub async fn shutdown(&self, grace: Duration) {
        let _ = self.inner.stop.send_replace(true);
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.inner.tasks.lock().unwrap());
        let mut all = futures::future::join_all(tasks);
        if tokio::time::timeout(grace, &mut all).await.is_err() {
            tracing::warn!("jobs still running after the grace period: aborting them");
            let _ = self.inner.cancel.send_replace(true);
            all.await;
        }
        tracing::info!("scheduler stopped");
    }

    /// Abort running jobs now (they are recorded as failed with [`ErrorKind::Cancelled`]),
    /// for a second Ctrl-C during [`Scheduler::shutdown`]'s grace period.
    pub fn abort_running(&self) {
        let _ = self.inner.stop.send_replace(true);
        let _ = self.inner.cancel.send_replace(true);
    }
}

impl Inner {
    fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|j| j.name == name)
    }

    fn emit(&self, event: SchedulerEvent) {
        let _ = self.events.send(event);
    }

    fn skipped(&self, job: &str, scheduled_for: DateTime<Utc>, reason: SkipReason, detail: String) {
        tracing::info!(job, %scheduled_for, ?reason, detail = %detail, "run skipped");
        self.emit(SchedulerEvent::Skipped {
            job: job.to_string(),
            scheduled_for,
            reason,
            detail,
        });
    }
}

async fn job_loop(inner: Arc<Inner>, name: String) {
    let job = inner.job(&name).expect("job exists").clone();
    let schedule = job.schedule.clone().expect("scheduled job");
    let clock = inner.opts.clock.clone();
    let mut stop = inner.stop.subscribe();

    // Runs missed while down.
    let now = clock.now();
    let last = inner.last.lock().unwrap().get(&name).cloned();
    if let (Some(last), Some(latest)) = (last, schedule.latest_tick_at_or_before(now)) {
        if latest > last.scheduled_for {
            if schedule.missed == MissedRuns::RunOnce && schedule.window.allows(now) {
                tracing::info!(job = %name, missed = %latest, "running a missed run once at start");
                let _ = execute_chain(&inner, &job, latest, false, false).await;
            } else {
                let why = if schedule.missed == MissedRuns::Skip {
                    "the missed-run policy is skip"
                } else {
                    "the window rule does not allow a catch-up run now"
                };
                inner.skipped(
                    &name,
                    latest,
                    SkipReason::Missed,
                    format!(
                        "ticks since the last run (for {}) were missed while no scheduler ran; {why}",
                        last.scheduled_for
                    ),
                );
            }
        }
    }

    let mut after = clock.now();
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(tick) = schedule.next_tick_after(after) else {
            tracing::warn!(job = %name, "the schedule has no further runs");
            return;
        };
        let run_at = schedule.run_time(tick, uniform());
        inner.next.lock().unwrap().insert(name.clone(), run_at);
        inner.emit(SchedulerEvent::Planned {
            job: name.clone(),
            scheduled_for: tick,
            run_at,
        });
        if !sleep_until(&clock, run_at, &mut stop).await {
            inner.next.lock().unwrap().remove(&name);
            return;
        }
        let _ = execute_chain(&inner, &job, tick, false, false).await;
        let now = clock.now();
        if let Some(next) = schedule.next_tick_after(tick) {
            if next < now {
                let last_missed = schedule.latest_tick_at_or_before(now).unwrap_or(next);
                inner.skipped(
                    &name,
                    last_missed,
                    SkipReason::Overran,
                    format!("the run for {tick} was still going"),
                );
            }
        }
        after = tick.max(now);
    }
}

/// Sleep until the clock reads `at`, in naps of at most [`MAX_NAP`]. `false` if stopped.
async fn sleep_until(clock: &Clock, at: DateTime<Utc>, stop: &mut watch::Receiver<bool>) -> bool {
    loop {
        if *stop.borrow() {
            return false;
        }
        let now = clock.now();
        if now >= at {
            return true;
        }
        let nap = (at - now).to_std().unwrap_or_default().min(MAX_NAP);
        tokio::select! {
            _ = tokio::time::sleep(nap.max(Duration::from_millis(1))) => {}
            changed = stop.changed() => {
                if changed.is_err() {
                    return false;
                }
            }
        }
    }
}

/// A run that did not happen, and the error behind it if any.
struct Skip {
    reason: SkipReason,
    error: Option<Error>,
}

/// Run `job` for `scheduled_for`, then its followers if it succeeded.
async fn execute_chain(
    inner: &Arc<Inner>,
    job: &Job,
    scheduled_for: DateTime<Utc>,
    forced: bool,
    quiet: bool,
) -> std::result::Result<Vec<JobOutcome>, Skip> {
    let first = execute(inner, job, scheduled_for, forced, quiet).await?;
    let mut outcomes = vec![first];
    let mut done: BTreeSet<String> = BTreeSet::from([job.name.clone()]);
    let mut queue: Vec<String> = if outcomes[0].ok {
        job.then.clone()
    } else {
        Vec::new()
    };
    while !queue.is_empty() {
        let name = queue.remove(0);
        if !done.insert(name.clone()) {
            continue;
        }
        let Some(follower) = inner.job(&name) else {
            continue;
        };
        // A follower runs for the same tick as the job that triggered it, even if its own
        // record is newer (it may have its own schedule too).
        if let Ok(outcome) = execute(inner, follower, scheduled_for, true, quiet).await {
            if outcome.ok {
                queue.extend(follower.then.iter().cloned());
            }
            outcomes.push(outcome);
        }
    }
    Ok(outcomes)
}

/// One run: lease, record check, the runner, the record, events.
async fn execute(
    inner: &Arc<Inner>,
    job: &Job,
    scheduled_for: DateTime<Utc>,
    forced: bool,
    quiet: bool,
) -> std::result::Result<JobOutcome, Skip> {
    let _permit = inner.permits.acquire().await.map_err(|_| Skip {
        reason: SkipReason::Overran,
        error: None,
    })?;
    let clock = &inner.opts.clock;
    let name = job.name.as_str();

    let lease_opts = LeaseOptions {
        ttl: inner.opts.lease_ttl,
        clock: clock.clone(),
        ..LeaseOptions::default()
    };
    let lease = match Lease::acquire(
        &inner.repo,
        &format!("{JOB_PREFIX}{name}"),
        &format!("job {name}"),
        None,
        &lease_opts,
    )
    .await
    {
        Ok(lease) => Some(lease),
        Err(e) if e.kind() == ErrorKind::Locked => {
            inner.skipped(name, scheduled_for, SkipReason::Locked, e.to_string());
            return Err(Skip {
                reason: SkipReason::Locked,
                error: Some(e),
            });
        }
        Err(e) if e.kind() == ErrorKind::Unsupported => {
            tracing::warn!(job = name, error = %e.report(), "running without a job lease: this store cannot hold one");
            None
        }
        Err(e) => {
            let e = Error::new(
                e.kind(),
                format!("could not take the lease of job '{name}'"),
            )
            .with_source(e);
            return Ok(finish(
                inner,
                job,
                scheduled_for,
                clock.now(),
                Err(e),
                Record::Skip,
                quiet,
            )
            .await);
        }
    };

    if !forced {
        match read_record(&inner.repo, name).await {
            Ok(Some(record)) if record.scheduled_for >= scheduled_for => {
                let detail = format!(
                    "{} already ran it at {} for {}",
                    record.host, record.started_at, record.scheduled_for
                );
                inner.last.lock().unwrap().insert(name.to_string(), record);
                release(lease).await;
                inner.skipped(name, scheduled_for, SkipReason::AlreadyRan, detail);
                return Err(Skip {
                    reason: SkipReason::AlreadyRan,
                    error: None,
                });
            }
            Ok(_) => {}
            Err(e) => {
                let outcome = finish(
                    inner,
                    job,
                    scheduled_for,
                    clock.now(),
                    Err(e),
                    Record::Skip,
                    quiet,
                )
                .await;
                release(lease).await;
                return Ok(outcome);
            }
        }
    }

    let started_at = clock.now();
    tracing::info!(job = name, kind = %job.kind, %scheduled_for, "job started");
    inner.emit(SchedulerEvent::Started {
        job: name.to_string(),
        kind: job.kind.to_string(),
        scheduled_for,
        started_at,
    });
    let ctx = JobContext {
        job: name.to_string(),
        kind: job.kind.clone(),
        scheduled_for,
        repo: inner.repo.clone(),
        clock: clock.clone(),
        events: inner.events.clone(),
        cancel: inner.cancel.subscribe(),
    };
    let mut cancel = inner.cancel.subscribe();
    let result = tokio::select! {
        r = job.runner.run(&ctx) => r,
        _ = cancel.wait_for(|c| *c) => Err(Error::new(
            ErrorKind::Cancelled,
            format!("job '{name}' was aborted: the scheduler stopped and its grace period ran out (nothing half-written is committed)"),
        )),
    };
    let outcome = finish(
        inner,
        job,
        scheduled_for,
        started_at,
        result,
        Record::Store(lease.as_ref()),
        quiet,
    )
    .await;
    release(lease).await;
    Ok(outcome)
}

/// Whether to store a run's outcome as the job's record.
enum Record<'a> {
    /// The run did not start (no lease, no record read): store nothing.
    Skip,
    /// Store it while the lease (if the store has leases) is still ours.
    Store(Option<&'a Lease>),
}

async fn store_record(inner: &Inner, job: &Job, outcome: &JobOutcome, lease: Option<&Lease>) {
    if lease.is_some_and(|l| l.check().is_err()) {
        tracing::warn!(job = %job.name, "the job's lease was lost during the run; its record is not stored");
        return;
    }
    if let Err(e) = write_record(&inner.repo, outcome).await {
        tracing::warn!(job = %job.name, error = %e.report(), "could not store the job's record");
    }
}

/// Build the outcome, store it, report it.
async fn finish(
    inner: &Arc<Inner>,
    job: &Job,
    scheduled_for: DateTime<Utc>,
    started_at: DateTime<Utc>,
    result: Result<JobSummary>,
    record: Record<'_>,
    quiet: bool,
) -> JobOutcome {
    let finished_at = inner.opts.clock.now();
    let rpo = match inner.opts.rpo {
        Some(rpo) => rpo_status(&inner.repo, rpo, finished_at).await,
        None => None,
    };
    let (ok, summary, error) = match &result {
        Ok(s) => (true, Some(s.clone()), None),
        Err(e) => (false, None, Some(JobError::from_error(e))),
    };
    let outcome = JobOutcome {
        job: job.name.clone(),
        kind: job.kind.to_string(),
        scheduled_for,
        started_at,
        finished_at,
        duration_ms: (finished_at - started_at).num_milliseconds().max(0) as u64,
        ok,
        summary,
        error,
        rpo,
        host: host_name(),
    };
    // Store the record only while the lease is still ours (or the store has no leases).
    if let Record::Store(lease) = record {
        store_record(inner, job, &outcome, lease).await;
    }
    inner
        .last
        .lock()
        .unwrap()
        .insert(job.name.clone(), outcome.clone());
    match &result {
        Ok(s) => {
            tracing::info!(job = %job.name, duration_ms = outcome.duration_ms, summary = %s.message, "job succeeded");
            inner.emit(SchedulerEvent::Succeeded(outcome.clone()));
        }
        Err(e) if quiet => {
            // Run by hand: the caller reports the outcome.
            tracing::info!(job = %job.name, duration_ms = outcome.duration_ms, error = %e.report(), "job failed");
            inner.emit(SchedulerEvent::Failed(outcome.clone()));
        }
        Err(e) => {
            tracing::error!(job = %job.name, duration_ms = outcome.duration_ms, error = %e.report(), "job failed");
            inner.emit(SchedulerEvent::Failed(outcome.clone()));
        }
    }
    if let Some(r) = outcome.rpo.as_ref().filter(|r| !r.within) {
        if quiet {
            tracing::info!(job = %job.name, rpo_secs = r.rpo_secs, age_secs = ?r.age_secs, "the newest backup is older than the recovery point objective");
        } else {
            tracing::warn!(job = %job.name, rpo_secs = r.rpo_secs, age_secs = ?r.age_secs, "the newest backup is older than the recovery point objective");
        }
    }
    outcome
}

async fn release(lease: Option<Lease>) {
    if let Some(lease) = lease {
        if let Err(e) = lease.release().await {
            tracing::warn!(error = %e.report(), "could not release a job lease; it expires by itself");
        }
    }
}

async fn rpo_status(repo: &Repository, rpo: Duration, now: DateTime<Utc>) -> Option<RpoStatus> {
    let rpo_secs = rpo.as_secs();
    match repo
        .newest_per_series(&crate::series::SeriesSelector::any())
        .await
    {
        Ok(newest) => {
            // The stalest series decides: a fresh uploads backup must not hide a database
            // whose backups stopped.
            let Some(m) = newest.into_iter().min_by_key(|m| m.started_at) else {
                return Some(RpoStatus {
                    rpo_secs,
                    series: None,
                    newest_backup: None,
                    newest_backup_at: None,
                    age_secs: None,
                    within: false,
                });
            };
            let age = (now - m.started_at).num_seconds().max(0) as u64;
            Some(RpoStatus {
                rpo_secs,
                series: Some(m.series),
                newest_backup: Some(m.id),
                newest_backup_at: Some(m.started_at),
                age_secs: Some(age),
                within: age <= rpo_secs,
            })
        }
        Err(e) => {
            tracing::warn!(error = %e.report(), "could not find the newest backups for the RPO check");
            None
        }
    }
}

/// Path of a job's record.
pub fn record_path(job: &str) -> String {
    format!("{JOBS_PREFIX}{job}/last.json")
}

/// The last outcome of job `job` stored in `repo`, if any.
pub async fn read_record(repo: &Repository, job: &str) -> Result<Option<JobOutcome>> {
    check_job_name(job)?;
    let path = record_path(job);
    match repo.storage().get_bytes(&path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            Error::corrupt(format!(
                "the job record {path} is malformed; delete it to start afresh"
            ))
            .with_source(e)
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.with_context("job", job)),
    }
}

/// Store `outcome` as its job's record (`jobs/<name>/last.json`).
pub async fn write_record(repo: &Repository, outcome: &JobOutcome) -> Result<()> {
    check_job_name(&outcome.job)?;
    let json = serde_json::to_vec_pretty(outcome).expect("outcome serializes");
    repo.storage()
        .put_bytes(
            &record_path(&outcome.job),
            Bytes::from(json),
            PutOptions::default(),
        )
        .await
        .map_err(|e| e.with_context("job", &outcome.job))
}

fn truncate_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// Parse a duration such as `90s`, `5m`, `1h30m`, `2h`, `7d` (seconds, minutes, hours,
/// days; whole numbers, units in descending order or any order, summed). `0` is zero.
/// Note that retention durations use restic's units instead, where `m` is months.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    let bad = || {
        Error::invalid(format!(
            "'{text}' is not a duration: use a number with a unit, s m h or d (e.g. 90s, 5m, 1h30m, 7d)"
        ))
    };
    if t.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let n: u64 = digits.parse().map_err(|_| bad())?;
        digits.clear();
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
    }
    if !digits.is_empty() {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// Format a duration the way [`parse_duration`] reads it (`1h30m`, `45s`, `0`).
pub fn format_duration(d: Duration) -> String {
    let mut s = d.as_secs();
    if s == 0 {
        return "0".into();
    }
    let mut out = String::new();
    for (unit, len) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= len {
            out.push_str(&format!("{}{unit}", s / len));
            s %= len;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    fn maintenance() -> Window {
        Window::new(
            CronExpr::new("0 2 * * SUN#1", Tz::UTC).unwrap(),
            Duration::from_secs(7200),
        )
        .unwrap()
    }

    #[test]
    fn first_sunday_window_opens_on_the_first_sunday_only() {
        let w = maintenance();
        // 2026-12-06 is the first Sunday of December; 2026-12-13 the second.
        assert!(w.contains(utc(2026, 12, 6, 2, 0)));
        assert!(w.contains(utc(2026, 12, 6, 3, 59)));
        assert!(!w.contains(utc(2026, 12, 6, 4, 0)), "the end is exclusive");
        assert!(!w.contains(utc(2026, 12, 6, 1, 59)));
        assert!(!w.contains(utc(2026, 12, 13, 2, 30)));
        assert_eq!(
            w.next_start_after(utc(2026, 12, 6, 2, 0)),
            Some(utc(2027, 1, 3, 2, 0))
        );
    }

    #[test]
    fn cron_ticks_follow_the_time_zone_across_clock_changes() {
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        let c = CronExpr::new("0 2 * * *", berlin).unwrap();
        // Winter: 02:00 CET is 01:00 UTC; summer: 02:00 CEST is 00:00 UTC.
        assert_eq!(
            c.next_after(utc(2026, 1, 10, 12, 0)),
            Some(utc(2026, 1, 11, 1, 0))
        );
        assert_eq!(
            c.next_after(utc(2026, 7, 10, 12, 0)),
            Some(utc(2026, 7, 11, 0, 0))
        );
    }

    #[test]
    fn only_in_skips_ticks_outside_the_window_and_not_in_skips_inside() {
        let hourly = Schedule::cron_utc("0 * * * *").unwrap();
        let inside = hourly.clone().only_in(maintenance());
        assert_eq!(
            inside.next_tick_after(utc(2026, 11, 25, 0, 0)),
            Some(utc(2026, 12, 6, 2, 0))
        );
        assert_eq!(
            inside.next_tick_after(utc(2026, 12, 6, 2, 0)),
            Some(utc(2026, 12, 6, 3, 0))
        );
        assert_eq!(
            inside.next_tick_after(utc(2026, 12, 6, 3, 0)),
            Some(utc(2027, 1, 3, 2, 0))
        );
        assert_eq!(
            inside.latest_tick_at_or_before(utc(2026, 12, 20, 0, 0)),
            Some(utc(2026, 12, 6, 3, 0))
        );
        let outside = hourly.not_in(maintenance());
        assert_eq!(
            outside.next_tick_after(utc(2026, 12, 6, 1, 0)),
            Some(utc(2026, 12, 6, 4, 0))
        );
        assert_eq!(
            outside.latest_tick_at_or_before(utc(2026, 12, 6, 3, 30)),
            Some(utc(2026, 12, 6, 1, 0))
        );
    }

    #[test]
    fn jitter_never_crosses_a_window_boundary() {
        let s = Schedule::cron_utc("30 * * * *")
            .unwrap()
            .jitter(Duration::from_secs(3600))
            .only_in(maintenance());
        // The 03:30 tick has 30 minutes left in the window.
        let tick = utc(2026, 12, 6, 3, 30);
        assert!(s.jitter_bound(tick) < Duration::from_secs(1800));
        assert!(s.run_time(tick, 1.0) < utc(2026, 12, 6, 4, 0));
        let s = Schedule::cron_utc("30 * * * *")
            .unwrap()
            .jitter(Duration::from_secs(3600))
            .not_in(maintenance());
        assert!(s.run_time(utc(2026, 12, 6, 1, 30), 1.0) < utc(2026, 12, 6, 2, 0));
        assert_eq!(
            s.jitter_bound(utc(2026, 12, 7, 1, 30)),
            Duration::from_secs(3600)
        );
    }

    #[test]
    fn invalid_cron_expressions_are_refused_with_the_expression() {
        for bad in ["", "* * *", "61 * * * *", "0 0 30 2 *"] {
            let e = CronExpr::new(bad, Tz::UTC).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{bad}");
            assert!(e.to_string().contains(bad), "{e}");
        }
    }

    #[test]
    fn durations_parse_and_format_round_trip() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        for bad in ["", "5", "1w", "h", "-1h", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
    }
}
