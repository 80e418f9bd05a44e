//! A small web app that embeds dr's scheduler and runs the runbook's schedule itself: hourly
//! backups (kept out of the monthly maintenance window), the daily full at 02:00 UTC, a weekly
//! backup on Sundays and a monthly one on the 1st, a prune after each, and a daily verify. The
//! last outcome of each job is served as JSON at `GET /backups/status`.
//!
//! ```sh
//! DR_REPO=/srv/backups DR_KEY_FILE=repo.key DR_DB=postgres://app@127.0.0.1/app \
//!     cargo run --example embed_in_app          # listens on 127.0.0.1:8080 (DR_LISTEN)
//! curl -s 127.0.0.1:8080/backups/status
//! ```
//!
//! Several replicas of the app may run at once: each job runs under its lease in the
//! repository, so each tick runs once, on one replica.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use dr::core::schedule::{
    CronExpr, Job, JobKind, JobRunner, MissedRuns, Schedule, Scheduler, SchedulerOptions, Tz,
    Window,
};
use dr::core::{Error, Repository, Result, RetentionPolicy};
use dr::jobs::{BackupJob, PruneJob, VerifyJob};
use dr::keys::KeySource;

/// The runbook's retention: hourly for a day, daily for a week, weekly for 4 weeks, monthly
/// for a year.
pub fn runbook_retention() -> RetentionPolicy {
    RetentionPolicy {
        keep_hourly: Some(24),
        keep_daily: Some(7),
        keep_weekly: Some(4),
        keep_monthly: Some(12),
        ..Default::default()
    }
}

/// The runbook's jobs. `backup(label)` makes the backup runner for one schedule (the label
/// is recorded in its backups); `prune` and `verify` are shared.
pub fn runbook_jobs(
    backup: impl Fn(&str) -> Arc<dyn JobRunner>,
    prune: Arc<dyn JobRunner>,
    verify: Arc<dyn JobRunner>,
) -> Result<Vec<Job>> {
    // The first Sunday of each month, 02:00–04:00 UTC.
    let maintenance = Window::new(
        CronExpr::new("0 2 * * SUN#1", Tz::UTC)?,
        Duration::from_secs(2 * 3600),
    )?;
    let backup_job = |name: &str, schedule: Schedule| {
        Job::new(name, JobKind::Backup, backup(name))
            .schedule(schedule)
            .then("prune")
    };
    Ok(vec![
        backup_job(
            "hourly",
            Schedule::cron_utc("0 * * * *")?
                .jitter(Duration::from_secs(120))
                .not_in(maintenance)
                .missed(MissedRuns::Skip),
        ),
        backup_job("daily", Schedule::cron_utc("0 2 * * *")?),
        backup_job("weekly", Schedule::cron_utc("0 3 * * SUN")?),
        backup_job("monthly", Schedule::cron_utc("0 4 1 * *")?),
        Job::new("prune", JobKind::Prune, prune),
        Job::new("verify", JobKind::Verify, verify).schedule(Schedule::cron_utc("30 5 * * *")?),
    ])
}

/// The app's routes: `GET /backups/status` answers with each job's schedule, next run and
/// last outcome.
pub fn router(scheduler: Scheduler) -> Router {
    Router::new()
        .route("/backups/status", get(status))
        .with_state(scheduler)
}

async fn status(State(scheduler): State<Scheduler>) -> Json<serde_json::Value> {
    Json(json!({
        "repository": scheduler.repository().storage().describe(),
        "generated_at": chrono::Utc::now(),
        "jobs": scheduler.status(),
    }))
}

fn env(name: &str) -> Result<String> {
    std::env::var(name).map_err(|_| Error::invalid(format!("set {name} (see the example's docs)")))
}

async fn run() -> Result<()> {
    let repo = Repository::open(dr::storage::from_url(&env("DR_REPO")?)?).await?;
    let key = KeySource::File(env("DR_KEY_FILE")?.into()).unlock(repo.config())?;
    let db: tokio_postgres::Config = env("DR_DB")?
        .parse()
        .map_err(|e| Error::invalid("DR_DB is not a PostgreSQL URL").with_source(e))?;

    let encryptor: Arc<dyn dr::core::Encryptor> =
        Arc::new(dr::keys::encryptor(&repo, key.clone())?);
    let dumper: Arc<dyn dr::core::Dumper> = Arc::new(dr::db::PgDumper::new(db));
    let jobs = runbook_jobs(
        |label| Arc::new(BackupJob::new(dumper.clone(), encryptor.clone()).labels([label])),
        Arc::new(PruneJob::new(runbook_retention())),
        Arc::new(VerifyJob::new(Arc::new(dr::keys::decryptor(key)))),
    )?;
    let scheduler = Scheduler::new(
        repo,
        SchedulerOptions {
            rpo: Some(Duration::from_secs(3600)),
            ..Default::default()
        },
        jobs,
    )?;
    scheduler.start().await?;

    let addr = std::env::var("DR_LISTEN").unwrap_or_else(|_| "127.0.0.1:8080".into());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .map_err(|e| Error::io(format!("cannot listen on {addr}"), e))?;
    println!("serving GET http://{addr}/backups/status");
    axum::serve(listener, router(scheduler.clone()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .map_err(|e| Error::io("the web server failed", e))?;
    // Let a running backup finish (up to ten minutes), then stop.
    scheduler.shutdown(Duration::from_secs(600)).await;
    Ok(())
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("embed_in_app: {}", e.report());
        std::process::exit(1);
    }
}
