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

mod cron;
mod duration;
mod job;
mod record;
mod scheduler;

pub use crate::lease::Clock;
pub use crate::names::check_job_name;
/// IANA time zones (chrono-tz), re-exported for schedules and configuration.
pub use chrono_tz::Tz;
pub use cron::{CronExpr, MissedRuns, Schedule, Window, WindowRule};
pub use duration::{format_duration, parse_duration};
pub use job::*;
pub use record::{read_record, record_path, write_record, JOBS_PREFIX};
pub use scheduler::{Scheduler, SchedulerOptions};
