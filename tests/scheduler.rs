//! The embedded scheduler on a controlled clock: Tokio's paused time drives the sleeps, and
//! the wall clock the cron and window arithmetic reads is derived from it, so weeks of
//! schedule run in a second. Real repositories (memory, and file:// where replicas race),
//! real leases.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use tokio::sync::broadcast;

use dr::core::schedule::{
    read_record, write_record, Clock, CronExpr, Job, JobContext, JobKind, JobOutcome, JobRunner,
    JobSummary, MissedRuns, Schedule, Scheduler, SchedulerEvent, SchedulerOptions, SkipReason, Tz,
    Window,
};
use dr::core::{
    Codec, Error, ErrorKind, ProgressEvent, RepoConfig, RepoDefaults, Repository, Result, Stage,
};

#[allow(dead_code)]
#[path = "../examples/embed_in_app.rs"]
mod embed_in_app;

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
}

/// A wall clock that reads `start` now and advances with Tokio's (paused) clock.
fn clock_from(start: DateTime<Utc>) -> Clock {
    let t0 = tokio::time::Instant::now();
    Clock::from_fn(move || start + chrono::Duration::from_std(t0.elapsed()).unwrap())
}

fn options(clock: Clock) -> SchedulerOptions {
    SchedulerOptions {
        clock,
        ..Default::default()
    }
}

fn repo_config() -> RepoConfig {
    RepoConfig::new(
        RepoDefaults {
            compression: Codec::default(),
            encryption: dr::crypto::SCHEME.into(),
            cipher: "aes-256-gcm".into(),
            storage_class: None,
        },
        Vec::new(),
    )
    .unwrap()
}

async fn memory_repo() -> Repository {
    Repository::init(dr::storage::from_url("memory://").unwrap(), repo_config())
        .await
        .unwrap()
}

fn maintenance() -> Window {
    Window::new(
        CronExpr::new("0 2 * * SUN#1", Tz::UTC).unwrap(),
        Duration::from_secs(2 * 3600),
    )
    .unwrap()
}

/// A runner that records each run (its tick and the wall time it began), reports progress,
/// works for a while on Tokio's clock, and succeeds or fails.
struct Recorder {
    clock: Clock,
    work: Duration,
    fail: bool,
    runs: Mutex<Vec<(DateTime<Utc>, DateTime<Utc>)>>,
}

impl Recorder {
    fn new(clock: &Clock) -> Arc<Recorder> {
        Arc::new(Recorder {
            clock: clock.clone(),
            work: Duration::from_secs(5),
            fail: false,
            runs: Mutex::new(Vec::new()),
        })
    }

    fn failing(clock: &Clock) -> Arc<Recorder> {
        Arc::new(Recorder {
            fail: true,
            ..Arc::into_inner(Recorder::new(clock)).unwrap()
        })
    }

    fn runs(&self) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        self.runs.lock().unwrap().clone()
    }
}

#[async_trait]
impl JobRunner for Recorder {
    async fn run(&self, ctx: &JobContext) -> Result<JobSummary> {
        self.runs
            .lock()
            .unwrap()
            .push((ctx.scheduled_for(), self.clock.now()));
        ctx.report_progress(&ProgressEvent {
            stage: Stage::Write,
            bytes: 4096,
            total: Some(8192),
            bytes_per_sec: 1024.0,
            done: false,
        });
        tokio::time::sleep(self.work).await;
        if self.fail {
            return Err(Error::new(ErrorKind::Storage, "the bucket is on fire")
                .with_context("job", ctx.job()));
        }
        Ok(JobSummary::new("recorded")
            .figure("bytes", 8192)
            .figure("tick", ctx.scheduled_for().to_rfc3339()))
    }
}

/// Let `d` pass on the paused clock (the runtime advances it while everything waits).
async fn pass(d: Duration) {
    tokio::time::sleep(d).await;
}

fn drain(rx: &mut broadcast::Receiver<SchedulerEvent>) -> Vec<SchedulerEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

#[tokio::test(start_paused = true)]
async fn jitter_keeps_every_run_within_its_bound() {
    let clock = clock_from(utc(2026, 11, 25, 0, 0, 30));
    let rec = Recorder::new(&clock);
    let jitter = Duration::from_secs(600);
    let s = Scheduler::new(
        memory_repo().await,
        options(clock.clone()),
        vec![Job::new("hourly", JobKind::Backup, rec.clone())
            .schedule(Schedule::cron_utc("0 * * * *").unwrap().jitter(jitter))],
    )
    .unwrap();
    s.start().await.unwrap();
    // 24 ticks, the last one's jitter included.
    pass(Duration::from_secs(24 * 3600 + 900)).await;
    s.shutdown(Duration::from_secs(60)).await;

    let runs = rec.runs();
    assert_eq!(runs.len(), 24, "one run per hour: {runs:?}");
    let mut delays = Vec::new();
    for (i, (tick, began)) in runs.iter().enumerate() {
        assert_eq!(
            *tick,
            utc(2026, 11, 25, 1, 0, 0) + chrono::Duration::hours(i as i64)
        );
        let delay = (*began - *tick).to_std().expect("never before the tick");
        assert!(delay <= jitter, "run {i} delayed {delay:?} > {jitter:?}");
        delays.push(delay);
    }
    delays.sort();
    delays.dedup();
    assert!(delays.len() > 12, "delays are random: {delays:?}");
}

#[tokio::test(start_paused = true)]
async fn a_job_confined_to_a_window_runs_only_inside_it() {
    let clock = clock_from(utc(2026, 11, 25, 0, 0, 30));
    let rec = Recorder::new(&clock);
    let s = Scheduler::new(
        memory_repo().await,
        options(clock.clone()),
        vec![
            Job::new("vacuum", JobKind::Custom("vacuum".into()), rec.clone()).schedule(
                Schedule::cron_utc("*/30 * * * *")
                    .unwrap()
                    .jitter(Duration::from_secs(25 * 60))
                    .only_in(maintenance()),
            ),
        ],
    )
    .unwrap();
    s.start().await.unwrap();
    // Six weeks: the first Sundays of December and January.
    pass(Duration::from_secs(42 * 86_400)).await;
    s.shutdown(Duration::from_secs(60)).await;

    let runs = rec.runs();
    let window = maintenance();
    for (tick, began) in &runs {
        assert!(window.contains(*tick), "tick {tick} outside the window");
        assert!(window.contains(*began), "run at {began} outside the window");
    }
    let ticks: Vec<DateTime<Utc>> = runs.iter().map(|r| r.0).collect();
    let mut want = Vec::new();
    for day in [utc(2026, 12, 6, 2, 0, 0), utc(2027, 1, 3, 2, 0, 0)] {
        for half_hours in 0..4 {
            want.push(day + chrono::Duration::minutes(30 * half_hours));
        }
    }
    assert_eq!(ticks, want);
}

#[tokio::test(start_paused = true)]
async fn a_job_kept_out_of_a_window_never_runs_inside_it() {
    let clock = clock_from(utc(2026, 12, 5, 12, 0, 30));
    let rec = Recorder::new(&clock);
    let s = Scheduler::new(
        memory_repo().await,
        options(clock.clone()),
        vec![Job::new("hourly", JobKind::Backup, rec.clone()).schedule(
            Schedule::cron_utc("0 * * * *")
                .unwrap()
                .jitter(Duration::from_secs(3000))
                .not_in(maintenance()),
        )],
    )
    .unwrap();
    s.start().await.unwrap();
    // Until 00:55:30 on the 7th: the 00:00 tick has run, whatever its jitter.
    pass(Duration::from_secs(36 * 3600 + 55 * 60)).await;
    s.shutdown(Duration::from_secs(60)).await;

    let runs = rec.runs();
    let window = maintenance();
    for (tick, began) in &runs {
        assert!(!window.contains(*tick), "tick {tick} inside the window");
        assert!(!window.contains(*began), "run at {began} inside the window");
    }
    // 13:00 on the 5th to 00:00 on the 7th is 36 ticks; 02:00 and 03:00 on the 6th are out.
    assert_eq!(runs.len(), 34);
    assert!(runs.iter().any(|r| r.0 == utc(2026, 12, 6, 1, 0, 0)));
    assert!(runs.iter().any(|r| r.0 == utc(2026, 12, 6, 4, 0, 0)));
}

async fn record(repo: &Repository, job: &str, scheduled_for: DateTime<Utc>) {
    write_record(
        repo,
        &JobOutcome {
            job: job.into(),
            kind: "backup".into(),
            scheduled_for,
            started_at: scheduled_for,
            finished_at: scheduled_for + chrono::Duration::minutes(3),
            duration_ms: 180_000,
            ok: true,
            summary: Some(JobSummary::new("earlier run")),
            error: None,
            rpo: None,
            host: "elsewhere".into(),
        },
    )
    .await
    .unwrap();
}

#[tokio::test(start_paused = true)]
async fn missed_runs_run_once_at_start_with_run_once() {
    let repo = memory_repo().await;
    // Last ran for the 22nd; the process comes back at 10:00 on the 25th (three missed).
    record(&repo, "nightly", utc(2026, 11, 22, 2, 0, 0)).await;
    let clock = clock_from(utc(2026, 11, 25, 10, 0, 0));
    let rec = Recorder::new(&clock);
    let s = Scheduler::new(
        repo.clone(),
        options(clock.clone()),
        vec![Job::new("nightly", JobKind::Backup, rec.clone()).schedule(
            Schedule::cron_utc("0 2 * * *")
                .unwrap()
                .missed(MissedRuns::RunOnce),
        )],
    )
    .unwrap();
    s.start().await.unwrap();
    pass(Duration::from_secs(60)).await;
    let runs = rec.runs();
    assert_eq!(runs.len(), 1, "one catch-up run, not three: {runs:?}");
    assert_eq!(
        runs[0].0,
        utc(2026, 11, 25, 2, 0, 0),
        "for the latest missed tick"
    );
    assert!(runs[0].1 < utc(2026, 11, 25, 10, 0, 1), "at start");
    assert_eq!(
        read_record(&repo, "nightly")
            .await
            .unwrap()
            .unwrap()
            .scheduled_for,
        utc(2026, 11, 25, 2, 0, 0)
    );
    pass(Duration::from_secs(17 * 3600)).await;
    s.shutdown(Duration::from_secs(60)).await;
    let ticks: Vec<_> = rec.runs().into_iter().map(|r| r.0).collect();
    assert_eq!(
        ticks,
        [utc(2026, 11, 25, 2, 0, 0), utc(2026, 11, 26, 2, 0, 0)]
    );
}

#[tokio::test(start_paused = true)]
async fn missed_runs_are_reported_and_skipped_with_skip() {
    let repo = memory_repo().await;
    record(&repo, "nightly", utc(2026, 11, 22, 2, 0, 0)).await;
    let clock = clock_from(utc(2026, 11, 25, 10, 0, 0));
    let rec = Recorder::new(&clock);
    let s = Scheduler::new(
        repo,
        options(clock.clone()),
        vec![Job::new("nightly", JobKind::Backup, rec.clone()).schedule(
            Schedule::cron_utc("0 2 * * *")
                .unwrap()
                .missed(MissedRuns::Skip),
        )],
    )
    .unwrap();
    let mut events = s.subscribe();
    s.start().await.unwrap();
    pass(Duration::from_secs(3600)).await;
    assert!(rec.runs().is_empty(), "nothing runs at start");
    let skipped: Vec<_> = drain(&mut events)
        .into_iter()
        .filter_map(|e| match e {
            SchedulerEvent::Skipped {
                reason,
                scheduled_for,
                ..
            } => Some((reason, scheduled_for)),
            _ => None,
        })
        .collect();
    assert_eq!(skipped, [(SkipReason::Missed, utc(2026, 11, 25, 2, 0, 0))]);
    pass(Duration::from_secs(16 * 3600 + 60)).await;
    s.shutdown(Duration::from_secs(60)).await;
    let ticks: Vec<_> = rec.runs().into_iter().map(|r| r.0).collect();
    assert_eq!(
        ticks,
        [utc(2026, 11, 26, 2, 0, 0)],
        "the next tick runs as usual"
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_that_never_ran_has_nothing_missed() {
    let clock = clock_from(utc(2026, 11, 25, 10, 0, 0));
    let rec = Recorder::new(&clock);
    let s = Scheduler::new(
        memory_repo().await,
        options(clock.clone()),
        vec![Job::new("nightly", JobKind::Backup, rec.clone())
            .schedule(Schedule::cron_utc("0 2 * * *").unwrap())],
    )
    .unwrap();
    s.start().await.unwrap();
    pass(Duration::from_secs(3600)).await;
    s.shutdown(Duration::from_secs(60)).await;
    assert!(rec.runs().is_empty());
}

#[tokio::test(start_paused = true)]
async fn two_schedulers_racing_for_one_job_run_it_once_per_tick() {
    let dir = tempfile::tempdir().unwrap();
    let url = dir.path().join("repo").to_str().unwrap().to_string();
    dr::storage::create_local_dir(&url).unwrap();
    Repository::init(dr::storage::from_url(&url).unwrap(), repo_config())
        .await
        .unwrap();

    let clock = clock_from(utc(2026, 11, 25, 10, 0, 30));
    let runs: Arc<Mutex<BTreeMap<DateTime<Utc>, usize>>> = Arc::default();
    struct Counting(Arc<Mutex<BTreeMap<DateTime<Utc>, usize>>>);
    #[async_trait]
    impl JobRunner for Counting {
        async fn run(&self, ctx: &JobContext) -> Result<JobSummary> {
            *self
                .0
                .lock()
                .unwrap()
                .entry(ctx.scheduled_for())
                .or_default() += 1;
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(JobSummary::new("counted"))
        }
    }
    let mut replicas = Vec::new();
    let mut events = Vec::new();
    for _ in 0..2 {
        // Each replica opens the repository itself, as separate processes would.
        let repo = Repository::open(dr::storage::from_url(&url).unwrap())
            .await
            .unwrap();
        let s = Scheduler::new(
            repo,
            options(clock.clone()),
            vec![Job::new(
                "minutely",
                JobKind::Backup,
                Arc::new(Counting(runs.clone())),
            )
            .schedule(Schedule::cron_utc("* * * * *").unwrap())],
        )
        .unwrap();
        events.push(s.subscribe());
        replicas.push(s);
    }
    for s in &replicas {
        s.start().await.unwrap();
    }
    pass(Duration::from_secs(10 * 60)).await;
    for s in &replicas {
        s.shutdown(Duration::from_secs(60)).await;
    }

    let runs = runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 10, "ten ticks ran: {runs:?}");
    for (tick, n) in &runs {
        assert_eq!(*n, 1, "tick {tick} ran {n} times");
    }
    let (mut succeeded, mut skipped) = (0, 0);
    for rx in &mut events {
        for e in drain(rx) {
            match e {
                SchedulerEvent::Succeeded(_) => succeeded += 1,
                SchedulerEvent::Skipped { reason, .. } => {
                    assert!(
                        matches!(reason, SkipReason::Locked | SkipReason::AlreadyRan),
                        "{reason:?}"
                    );
                    skipped += 1;
                }
                _ => {}
            }
        }
    }
    assert_eq!(
        (succeeded, skipped),
        (10, 10),
        "the other replica skips each tick"
    );
}

#[tokio::test(start_paused = true)]
async fn events_arrive_in_order_with_figures_and_errors() {
    let clock = clock_from(utc(2026, 11, 25, 10, 0, 0));
    let repo = memory_repo().await;
    let s = Scheduler::new(
        repo.clone(),
        SchedulerOptions {
            rpo: Some(Duration::from_secs(3600)),
            ..options(clock.clone())
        },
        vec![
            Job::new("good", JobKind::Backup, Recorder::new(&clock)).then("bad"),
            Job::new("bad", JobKind::Verify, Recorder::failing(&clock)),
        ],
    )
    .unwrap();
    let mut rx = s.subscribe();
    let outcomes = s.run_now("good").await.unwrap();
    assert_eq!(outcomes.len(), 2, "the follower ran too");
    let events = drain(&mut rx);
    let names: Vec<String> = events
        .iter()
        .map(|e| {
            let v = serde_json::to_value(e).unwrap();
            format!("{} {}", v["event"].as_str().unwrap(), e.job())
        })
        .collect();
    assert_eq!(
        names,
        [
            "started good",
            "progress good",
            "succeeded good",
            "started bad",
            "progress bad",
            "failed bad"
        ]
    );
    let SchedulerEvent::Succeeded(good) = &events[2] else {
        unreachable!()
    };
    assert!(good.ok);
    assert_eq!(good.duration_ms, 5000);
    let summary = good.summary.as_ref().unwrap();
    assert_eq!(summary.figures["bytes"], 8192);
    let rpo = good.rpo.as_ref().unwrap();
    assert_eq!((rpo.rpo_secs, rpo.within), (3600, false), "no backup yet");
    let SchedulerEvent::Progress { bytes, total, .. } = &events[1] else {
        unreachable!()
    };
    assert_eq!((*bytes, *total), (4096, Some(8192)));
    let SchedulerEvent::Failed(bad) = &events[5] else {
        unreachable!()
    };
    let error = bad.error.as_ref().unwrap();
    assert_eq!(error.kind, "storage");
    assert!(error.message.contains("the bucket is on fire"), "{error:?}");
    // The outcomes are the repository's records, and the status page shows them.
    assert_eq!(
        read_record(&repo, "good").await.unwrap().as_ref(),
        Some(good)
    );
    assert_eq!(read_record(&repo, "bad").await.unwrap().as_ref(), Some(bad));
    let status = s.status();
    assert_eq!(status[1].last.as_ref(), Some(bad));
}

#[tokio::test(start_paused = true)]
async fn a_job_held_by_another_process_is_reported_locked() {
    // The other process's lease expires by the system clock: start from it.
    let clock = clock_from(Utc::now());
    let repo = memory_repo().await;
    let s = Scheduler::new(
        repo.clone(),
        options(clock.clone()),
        vec![Job::new("nightly", JobKind::Backup, Recorder::new(&clock))],
    )
    .unwrap();
    let held = dr::core::lease::Lease::job(&repo, "nightly", None)
        .await
        .unwrap();
    let mut rx = s.subscribe();
    let e = s.run_now("nightly").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Locked);
    assert!(matches!(
        drain(&mut rx).as_slice(),
        [SchedulerEvent::Skipped {
            reason: SkipReason::Locked,
            ..
        }]
    ));
    held.release().await.unwrap();
    assert!(s.run_now("nightly").await.unwrap()[0].ok);
    assert_eq!(
        s.run_now("nope").await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_aborts_a_job_that_outlives_the_grace_period() {
    let clock = clock_from(utc(2026, 11, 25, 1, 59, 0));
    let repo = memory_repo().await;
    let rec = Arc::new(Recorder {
        work: Duration::from_secs(3600),
        ..Arc::into_inner(Recorder::new(&clock)).unwrap()
    });
    let s = Scheduler::new(
        repo.clone(),
        options(clock.clone()),
        vec![Job::new("nightly", JobKind::Backup, rec.clone())
            .schedule(Schedule::cron_utc("0 2 * * *").unwrap())],
    )
    .unwrap();
    s.start().await.unwrap();
    pass(Duration::from_secs(120)).await;
    assert_eq!(rec.runs().len(), 1, "running");
    s.shutdown(Duration::from_secs(30)).await;
    let last = read_record(&repo, "nightly").await.unwrap().unwrap();
    assert!(!last.ok);
    assert_eq!(last.error.unwrap().kind, "cancelled");
}

#[test]
fn example_config_parses() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/dr.toml");
    let c = dr::config::Config::from_path(&path).unwrap_or_else(|e| panic!("{}", e.report()));
    let names: Vec<&str> = c.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "base",
            "daily",
            "drill",
            "drill_pitr",
            "hourly",
            "monthly",
            "offsite",
            "prune",
            "qr-images",
            "uploads",
            "verify",
            "wal",
            "weekly"
        ]
    );
    let wal = c.job("wal").unwrap();
    assert_eq!(wal.kind, JobKind::WalReceive);
    assert!(wal.schedule.is_none() && wal.receive.is_some());
    assert!(c.job("base").unwrap().physical && c.job("drill_pitr").unwrap().physical);
    assert_eq!(c.retention.keep_pitr.unwrap().days, 7);
    let hourly = c.job("hourly").unwrap();
    let s = hourly.schedule.as_ref().unwrap();
    assert_eq!(s.missed, MissedRuns::Skip);
    assert_eq!(s.jitter, Duration::from_secs(120));
    assert!(matches!(s.window, dr::core::schedule::WindowRule::NotIn(_)));
    assert_eq!(hourly.then, ["prune"]);
    assert!(c.job("prune").unwrap().schedule.is_none());
    assert_eq!(
        c.job("uploads").unwrap().dir.as_deref(),
        Some(std::path::Path::new("/srv/app/uploads"))
    );
    let monthly = c.job("monthly").unwrap();
    assert_eq!(
        monthly.compression,
        Some(dr::core::Codec::Zstd { level: 6 })
    );
    assert_eq!(monthly.storage_class.as_deref(), Some("STANDARD_IA"));
    let offsite = c.job("offsite").unwrap().to.as_ref().unwrap();
    assert_eq!(offsite.storage_class.as_deref(), Some("GLACIER"));
    assert_eq!(offsite.options["region"], "eu-west-1");
    assert_eq!(c.retention.keep_monthly, Some(12));
    assert_eq!(c.objectives.rpo, Some(Duration::from_secs(3600)));
    assert_eq!(c.objectives.rto, Some(Duration::from_secs(1800)));
    assert_eq!(c.monitoring.listen.as_deref(), Some("127.0.0.1:9187"));
    assert_eq!(c.monitoring.webhooks.len(), 1);
    assert_eq!(
        c.key,
        dr::config::KeyConfig::File("/etc/dr/repo.key".into())
    );
    assert!(c.windows["maintenance"].contains(utc(2026, 12, 6, 3, 0, 0)));
}

#[tokio::test]
async fn status_endpoint_reports_each_jobs_last_outcome() {
    let clock = Clock::system();
    let stub = || -> Arc<dyn JobRunner> {
        Arc::new(Recorder {
            work: Duration::ZERO,
            ..Arc::into_inner(Recorder::new(&clock)).unwrap()
        })
    };
    let jobs = embed_in_app::runbook_jobs(|_| stub(), stub(), stub()).unwrap();
    let s = Scheduler::new(memory_repo().await, SchedulerOptions::default(), jobs).unwrap();
    s.run_now("daily").await.unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, embed_in_app::router(s))
            .await
            .unwrap();
    });
    let body = http_get(addr, "/backups/status").await;
    server.abort();

    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["repository"], "memory://");
    let jobs = v["jobs"].as_array().unwrap();
    let names: Vec<&str> = jobs.iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["hourly", "daily", "weekly", "monthly", "prune", "verify"]
    );
    for j in jobs {
        for field in [
            "name",
            "kind",
            "cron",
            "time_zone",
            "then",
            "next_run",
            "last",
        ] {
            assert!(j.get(field).is_some(), "{field} in {j}");
        }
    }
    let daily = &jobs[1];
    assert_eq!(daily["kind"], "backup");
    assert_eq!(daily["cron"], "0 2 * * *");
    assert_eq!(daily["then"], serde_json::json!(["prune"]));
    assert_eq!(daily["last"]["ok"], true);
    assert!(daily["last"]["finished_at"].is_string());
    assert_eq!(daily["last"]["summary"]["figures"]["bytes"], 8192);
    assert_eq!(jobs[4]["last"]["ok"], true, "prune ran after the backup");
    assert!(jobs[0]["last"].is_null(), "hourly has not run");
}

/// A minimal HTTP/1.1 GET, so the test needs no HTTP client.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut response = String::new();
    conn.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    body.to_string()
}

/// A runner that fails its first `failures` runs at once, then runs until the scheduler
/// stops (a WAL receiver whose server comes up late).
struct Streamer {
    clock: Clock,
    failures: usize,
    starts: Mutex<Vec<DateTime<Utc>>>,
}

#[async_trait]
impl JobRunner for Streamer {
    async fn run(&self, ctx: &JobContext) -> Result<JobSummary> {
        let n = {
            let mut starts = self.starts.lock().unwrap();
            starts.push(self.clock.now());
            starts.len()
        };
        if n <= self.failures {
            return Err(Error::new(ErrorKind::Database, "connection refused"));
        }
        ctx.stopping().await;
        Ok(JobSummary::new("streamed until asked to stop"))
    }
}

#[tokio::test(start_paused = true)]
async fn a_continuous_job_restarts_with_backoff_runs_beside_the_schedule_and_stops_cleanly() {
    let clock = clock_from(utc(2026, 11, 25, 1, 59, 0));
    let repo = memory_repo().await;
    let streamer = Arc::new(Streamer {
        clock: clock.clone(),
        failures: 3,
        starts: Mutex::new(Vec::new()),
    });
    let nightly = Recorder::new(&clock);
    let s = Scheduler::new(
        repo.clone(),
        options(clock.clone()),
        vec![
            Job::new("wal", JobKind::WalReceive, streamer.clone()).keep_running(),
            Job::new("nightly", JobKind::Backup, nightly.clone())
                .schedule(Schedule::cron_utc("0 2 * * *").unwrap()),
        ],
    )
    .unwrap();
    s.start().await.unwrap();
    pass(Duration::from_secs(120)).await;
    // Started at once, then again after 1, 2 and 4 s.
    let starts = streamer.starts.lock().unwrap().clone();
    let gaps: Vec<i64> = starts
        .windows(2)
        .map(|w| (w[1] - w[0]).num_seconds())
        .collect();
    assert_eq!(gaps, [1, 2, 4], "{starts:?}");
    // The scheduled backup ran at 02:00 although max_concurrent is 1 and the stream runs.
    assert_eq!(nightly.runs().len(), 1);
    let failed = read_record(&repo, "wal").await.unwrap().unwrap();
    assert!(!failed.ok && failed.kind == "wal-receive");

    // Stopping lets it wind down: its run ends well, not aborted.
    s.shutdown(Duration::from_secs(30)).await;
    let last = read_record(&repo, "wal").await.unwrap().unwrap();
    assert!(last.ok, "{last:?}");
    assert_eq!(
        streamer.starts.lock().unwrap().len(),
        4,
        "not started again"
    );

    // A continuous job has no schedule.
    let e = Scheduler::new(
        repo,
        options(clock.clone()),
        vec![Job::new("wal", JobKind::WalReceive, streamer)
            .keep_running()
            .schedule(Schedule::cron_utc("0 2 * * *").unwrap())],
    )
    .unwrap_err();
    assert!(e.to_string().contains("continuously"), "{e}");
}
