//! The scheduler loop: one task per scheduled job that sleeps until the next tick, takes the
//! job's lease, checks its record, runs it (and the jobs that follow it) and records the outcome.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{broadcast, watch, Semaphore};
use tokio::task::JoinHandle;

use super::cron::MissedRuns;
use super::job::*;
use super::record::{read_record, write_record};
use crate::error::{Error, ErrorKind, Result};
use crate::lease::{Clock, Lease, LeaseOptions, DEFAULT_TTL, JOB_PREFIX};
use crate::names::{check_job_name, host_name};
use crate::repo::Repository;

/// The longest single sleep: the wall clock is looked at again at least this often.
const MAX_NAP: Duration = Duration::from_secs(60);

/// A continuous job that ended is started again after this, doubled after each quick end...
const RESTART_FIRST: Duration = Duration::from_secs(1);
/// ...up to this; a run that lasted longer than this starts the doubling over.
const RESTART_MAX: Duration = Duration::from_secs(60);

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
            if job.continuous && job.schedule.is_some() {
                return Err(Error::invalid(format!(
                    "job '{}' runs continuously, so it has no schedule",
                    job.name
                )));
            }
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
    /// and per continuous job ([`Job::keep_running`]), and return. Stop with [`Scheduler::shutdown`]. Starting twice is an error.
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
        for job in self.inner.jobs.iter().filter(|j| j.continuous) {
            let inner = self.inner.clone();
            let name = job.name.clone();
            tasks.push(tokio::spawn(async move { keep_running(inner, name).await }));
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

    /// Ask running jobs to stop without waiting: plan no new runs, and let continuous jobs
    /// ([`Job::keep_running`]) wind down (see [`JobContext::stopping`]). For a job run
    /// with [`Scheduler::run_now`] that should end on a signal.
    pub fn stop(&self) {
        let _ = self.inner.stop.send_replace(true);
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

/// A continuous job: run it now, and again after a backoff whenever it ends before the
/// scheduler stops (see [`Job::keep_running`]).
async fn keep_running(inner: Arc<Inner>, name: String) {
    let job = inner.job(&name).expect("job exists").clone();
    let clock = inner.opts.clock.clone();
    let mut stop = inner.stop.subscribe();
    let mut backoff = RESTART_FIRST;
    loop {
        if *stop.borrow() {
            return;
        }
        let started = clock.now();
        let scheduled_for = truncate_to_second(started);
        let ended = match execute_chain(&inner, &job, scheduled_for, true, false).await {
            Ok(outcomes) if outcomes[0].ok => "ended",
            Ok(_) => "failed",
            Err(_) => "did not start",
        };
        if *stop.borrow() {
            return;
        }
        let now = clock.now();
        if (now - started).to_std().unwrap_or_default() > RESTART_MAX {
            backoff = RESTART_FIRST;
        }
        let run_at = now + chrono::Duration::from_std(backoff).unwrap_or_default();
        tracing::warn!(job = %name, "the continuous job {ended}; starting it again in {} s", backoff.as_secs_f64());
        inner.next.lock().unwrap().insert(name.clone(), run_at);
        inner.emit(SchedulerEvent::Planned {
            job: name.clone(),
            scheduled_for: truncate_to_second(run_at),
            run_at,
        });
        if !sleep_until(&clock, run_at, &mut stop).await {
            inner.next.lock().unwrap().remove(&name);
            return;
        }
        backoff = (backoff * 2).min(RESTART_MAX);
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
    // A continuous job would hold a slot for good: it runs beside the others.
    let _permit = if job.continuous {
        None
    } else {
        Some(inner.permits.acquire().await.map_err(|_| Skip {
            reason: SkipReason::Overran,
            error: None,
        })?)
    };
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
        stop: inner.stop.subscribe(),
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

fn truncate_to_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
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
