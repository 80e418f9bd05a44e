//! Backup series: a repository holding several sources (a database, the uploads directory,
//! a second database, a second directory) keeps, resolves and verifies each on its own.
//!
//! Real parts throughout: throwaway PostgreSQL clusters, real directories, file
//! repositories, the shipped `examples/dr.toml`, the real `drctl` binary. Time is the one
//! thing simulated: backups are stamped by the scheduler's injectable clock, so fifty hours
//! of the runbook's schedule run in a minute or two.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Duration, TimeZone, Utc};
use common::*;
use dr::core::schedule::{Clock, Scheduler};
use dr::core::{
    BackupOptions, Manifest, Repository, RetentionPolicy, Series, SeriesPolicies, SeriesSelector,
};
use dr::db::testing::TestCluster;

/// A wall clock the test sets by hand.
#[derive(Clone)]
struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    fn new(t: DateTime<Utc>) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(t)))
    }
    fn set(&self, t: DateTime<Utc>) {
        *self.0.lock().unwrap() = t;
    }
    fn clock(&self) -> Clock {
        let me = self.clone();
        Clock::from_fn(move || *me.0.lock().unwrap())
    }
}

/// examples/dr.toml, pointed at this test's repository, database, key and uploads folder;
/// the offsite copy goes to a local folder instead of S3. Its physical jobs (base backups
/// and the PITR drill) are left out: they need a cluster that archives its WAL, which
/// tests/pitr.rs runs them on; so is the QR images' bucket job.
fn runbook_config(repo: &Repo, db_url: &str, uploads: &Path, offsite: &Path) -> dr::config::Config {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/dr.toml")).unwrap();
    let replace = |text: String, from: &str, to: &str| {
        assert!(text.contains(from), "examples/dr.toml has {from}");
        text.replace(from, to)
    };
    let text = replace(text, "file:///var/lib/dr/repo", &repo.url);
    let text = replace(text, "postgres://app@127.0.0.1:5432/app", db_url);
    let text = replace(text, "/etc/dr/repo.key", repo.key.to_str().unwrap());
    let text = replace(text, "/srv/app/uploads", uploads.to_str().unwrap());
    let text = replace(text, "s3://backups-dr/prod", offsite.to_str().unwrap());
    let text = replace(text, r#"to_options = { region = "eu-west-1" }"#, "");
    let (physical_from, physical_to) = (
        text.find("[jobs.base]")
            .expect("examples/dr.toml has [jobs.base]"),
        text.find("# Metrics for Prometheus")
            .expect("examples/dr.toml has [monitoring]"),
    );
    let text = format!("{}{}", &text[..physical_from], &text[physical_to..]);
    // The bucket job needs S3 (tests/files_dedup.rs runs one on moto).
    let bucket_from = text
        .find("[jobs.qr-images]")
        .expect("examples/dr.toml has [jobs.qr-images]");
    let bucket_to = bucket_from + text[bucket_from..].find("\n[jobs.").unwrap() + 1;
    let text = format!("{}{}", &text[..bucket_from], &text[bucket_to..]);
    text.parse()
        .unwrap_or_else(|e: dr::core::Error| panic!("{}", e.report()))
}

/// Every tick of every scheduled job in `[from, to)`, in time order (the scheduler's own
/// cron, time zone and window rules; jitter left out).
fn ticks(
    config: &dr::config::Config,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Vec<(DateTime<Utc>, String)> {
    let mut out = Vec::new();
    for job in &config.jobs {
        let Some(schedule) = &job.schedule else {
            continue;
        };
        let mut t = from - Duration::seconds(1);
        while let Some(tick) = schedule.next_tick_after(t) {
            if tick >= to {
                break;
            }
            out.push((tick, job.name.clone()));
            t = tick;
        }
    }
    out.sort();
    out
}

/// The runbook's scenario of issue 9: the shipped examples/dr.toml backs up the database at
/// :00 (hourly, daily, weekly and monthly jobs, each followed by prune) and the uploads
/// directory at :30, verifies daily, drills monthly and copies offsite, for 50 simulated
/// hours. Afterwards every series holds exactly what its own policy keeps of its own
/// history; `restore latest --db`, `drill` and `restore latest --dir` use the newest backup
/// of the right source.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_schedule_keeps_each_series_by_its_own_policy() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.create_database("app").await.unwrap();
    cluster
        .execute_sql(
            "app",
            "CREATE TABLE hours (h int PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE notes (id serial PRIMARY KEY, hour int REFERENCES hours(h), body text);",
        )
        .await
        .unwrap();
    let repo = Repo::new();
    let uploads = repo.path().join("uploads");
    std::fs::create_dir_all(uploads.join("qr")).unwrap();
    let offsite = repo.path().join("offsite");
    let config = runbook_config(&repo, &cluster.url("app"), &uploads, &offsite);

    // Saturday 2026-10-31 20:00 UTC to Monday 2026-11-02 22:00: a month's first day and
    // first Sunday (maintenance window 02:00–04:00, no hourly backups), daily, weekly and
    // monthly jobs, the monthly drill on the 2nd at 05:00, two daily verifies and copies.
    let start = Utc.with_ymd_and_hms(2026, 10, 31, 20, 0, 0).unwrap();
    let end = start + Duration::hours(50);
    let clock = ManualClock::new(start);
    let storage = dr::storage::from_url(&repo.url).unwrap();
    let opened = Repository::open(storage)
        .await
        .unwrap()
        .with_signing_key(admin_key());
    let jobs = config.build_jobs(&opened).unwrap();
    let options = dr::core::schedule::SchedulerOptions {
        clock: clock.clock(),
        ..config.scheduler_options()
    };
    let scheduler = Scheduler::new(opened.clone(), options, jobs).unwrap();

    // Every backup ever taken, by series (id -> start time).
    let mut history: BTreeMap<Series, BTreeMap<String, DateTime<Utc>>> = BTreeMap::new();
    let mut db_hours = Vec::new();
    let mut upload_versions = Vec::new();
    let mut ran: BTreeMap<String, usize> = BTreeMap::new();
    let plan = ticks(&config, start, end);
    assert!(
        plan.len() > 100,
        "50 hours of the runbook: {} ticks",
        plan.len()
    );
    for (tick, job) in &plan {
        clock.set(*tick);
        let hour = (*tick - start).num_hours() as i32;
        match job.as_str() {
            "hourly" | "daily" | "weekly" | "monthly" => {
                cluster
                    .execute_sql(
                        "app",
                        &format!(
                            "INSERT INTO hours (h) VALUES ({hour}) ON CONFLICT DO NOTHING;
                             INSERT INTO notes (hour, body) VALUES ({hour}, '{job} at {tick}');"
                        ),
                    )
                    .await
                    .unwrap();
                db_hours.push(hour);
            }
            "uploads" => {
                std::fs::write(
                    uploads.join("qr").join(format!("{hour}.png")),
                    [hour as u8; 64],
                )
                .unwrap();
                std::fs::write(uploads.join("version.txt"), format!("{tick}")).unwrap();
                upload_versions.push(tick.to_string());
            }
            _ => {}
        }
        let outcomes = scheduler.run_now(job).await.unwrap();
        for o in &outcomes {
            assert!(o.ok, "{job} at {tick}: {} failed: {:?}", o.job, o.error);
            *ran.entry(o.job.clone()).or_default() += 1;
        }
        for m in opened.list_backups().await.unwrap() {
            history
                .entry(m.series.clone())
                .or_default()
                .insert(m.id.clone(), m.started_at);
        }
    }
    for job in [
        "hourly", "daily", "weekly", "monthly", "uploads", "prune", "verify", "drill", "offsite",
    ] {
        assert!(
            ran.get(job).copied().unwrap_or(0) > 0,
            "job {job} ran: {ran:?}"
        );
    }

    eprintln!("ticks {} ran {ran:?}", plan.len());
    // Two series: the database (by its cluster's system identifier) and the directory.
    assert_eq!(history.len(), 2, "{:?}", history.keys());
    let db_series = history
        .keys()
        .find(|s| s.kind == "postgres")
        .unwrap()
        .clone();
    let dir_series = history.keys().find(|s| s.kind == "files").unwrap().clone();
    assert_eq!(db_series.name, "app");
    assert!(
        db_series.origin.chars().all(|c| c.is_ascii_digit()),
        "{db_series}"
    );
    assert_eq!(Path::new(&dir_series.name), uploads.canonicalize().unwrap());

    // Each series holds exactly what its own policy keeps of its own history.
    let policies = config.retention_policies().unwrap();
    let kept = opened.list_backups().await.unwrap();
    for (series, taken) in &history {
        let infos: Vec<dr::core::BackupInfo> = taken
            .iter()
            .map(|(id, t)| dr::core::BackupInfo::new(id.clone(), *t).in_series(series.clone()))
            .collect();
        let expected: BTreeSet<String> = policies
            .policy_for(series)
            .evaluate(&infos, clock.clock().now())
            .into_iter()
            .filter(|d| d.keep)
            .map(|d| d.id)
            .collect();
        let actual: BTreeSet<String> = kept
            .iter()
            .filter(|m| m.series == *series)
            .map(|m| m.id.clone())
            .collect();
        assert_eq!(actual, expected, "series {series}: kept set");
        assert!(
            actual.len() >= 24,
            "series {series} keeps its 24 hourly backups: {}",
            actual.len()
        );
    }
    // The database's own 24 hourly slots are not taken by uploads backups (the defect).
    let db_kept = kept.iter().filter(|m| m.series == db_series).count();
    eprintln!(
        "db kept {db_kept} of {}, dir kept {} of {}",
        history[&db_series].len(),
        kept.len() - db_kept,
        history[&dir_series].len()
    );
    assert!(db_kept > 24, "database backups kept: {db_kept}");

    // `latest` per command: the newest backup of the source the command restores.
    let newest_db = kept.iter().find(|m| m.series == db_series).unwrap();
    let newest_dir = kept.iter().find(|m| m.series == dir_series).unwrap();
    assert!(
        newest_dir.finished_at > newest_db.finished_at,
        "uploads run last, at :30"
    );

    let restored = repo.json(&[
        "restore",
        "latest",
        "--db",
        &cluster.url("restored"),
        "--create",
    ]);
    assert_eq!(restored["id"], newest_db.id.as_str());
    let c = cluster.connect("restored").await.unwrap();
    let max: i32 = c
        .query_one("SELECT max(h) FROM hours", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(max, *db_hours.last().unwrap(), "the newest database backup");

    let drill = repo.json(&["drill", "--db", &cluster.url("app_check")]);
    assert_eq!(drill["id"], newest_db.id.as_str());
    assert_eq!(drill["passed"], true, "{drill}");

    let target = repo.path().join("restored-uploads");
    let r = repo.json(&["restore", "latest", "--dir", target.to_str().unwrap()]);
    assert_eq!(r["id"], newest_dir.id.as_str());
    assert_eq!(
        std::fs::read_to_string(target.join("version.txt")).unwrap(),
        *upload_versions.last().unwrap()
    );

    // `list --series` and its JSON name the series.
    let listed = repo.json(&["list", "--series", "files"]);
    let listed = listed.as_array().unwrap();
    assert!(!listed.is_empty());
    assert!(listed
        .iter()
        .all(|m| m["series"] == dir_series.to_string().as_str()));
    // `verify` with no id: the newest backup of every series, and (the uploads job makes
    // deduplicated snapshots) the packs their chunks live in.
    let verified = repo.json(&["verify"]);
    let ids: BTreeSet<&str> = verified
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([newest_db.id.as_str(), newest_dir.id.as_str(), "file packs"])
    );
}

/// Back up `dumper` at `at` (the backup is stamped with that time).
async fn backup_at(
    repo: &Repository,
    dumper: &dyn dr::core::Dumper,
    key: &dr::crypto::Identity,
    at: DateTime<Utc>,
) -> Manifest {
    let clock = ManualClock::new(at);
    let opts = BackupOptions {
        clock: Some(clock.clock()),
        ..Default::default()
    };
    let encryptor = dr::keys::encryptor(repo, key.clone()).unwrap();
    dr::core::backup(repo, dumper, &encryptor, &opts)
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()))
}

/// Two databases on one server and two directories in one repository: four series, each
/// pruned and resolved on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_series_in_one_repository_are_kept_and_resolved_independently() {
    let cluster = TestCluster::start().await.unwrap();
    for db in ["app", "shop"] {
        cluster.create_database(db).await.unwrap();
        cluster
            .execute_sql(db, "CREATE TABLE t (id int PRIMARY KEY, v text)")
            .await
            .unwrap();
    }
    let repo = Repo::new();
    let opened = Repository::open(dr::storage::from_url(&repo.url).unwrap())
        .await
        .map(|r| r.with_signing_key(admin_key()))
        .unwrap();
    let key = dr::keys::KeySource::File(repo.key.clone())
        .unlock(opened.config())
        .unwrap();
    let dirs = [repo.path().join("uploads"), repo.path().join("exports")];
    for d in &dirs {
        std::fs::create_dir_all(d).unwrap();
    }

    // Four backups of each source, interleaved an hour apart: app, shop, uploads, exports.
    let t0 = Utc.with_ymd_and_hms(2026, 11, 20, 0, 0, 0).unwrap();
    let mut by_source: BTreeMap<String, Vec<Manifest>> = BTreeMap::new();
    for round in 0..4 {
        for (n, source) in ["app", "shop", "uploads", "exports"].iter().enumerate() {
            let at = t0 + Duration::hours(4 * round + n as i64);
            let m = match *source {
                "app" | "shop" => {
                    cluster
                        .execute_sql(
                            source,
                            &format!("INSERT INTO t VALUES ({round}, '{source}')"),
                        )
                        .await
                        .unwrap();
                    let dumper = dr::db::PgDumper::new(cluster.config(source));
                    backup_at(&opened, &dumper, &key, at).await
                }
                _ => {
                    let dir = &dirs[n - 2];
                    std::fs::write(dir.join("round.txt"), format!("{source} {round}")).unwrap();
                    backup_at(&opened, &dr::files::DirDumper::new(dir), &key, at).await
                }
            };
            by_source.entry(source.to_string()).or_default().push(m);
        }
    }
    let series: BTreeSet<Series> = opened
        .list_backups()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.series)
        .collect();
    assert_eq!(series.len(), 4, "{series:?}");
    // Both databases live on one cluster: same origin, different names.
    let app = &by_source["app"][0].series;
    let shop = &by_source["shop"][0].series;
    assert_eq!(app.origin, shop.origin);
    assert_ne!(app, shop);

    // `latest` of each source is that source's newest backup.
    for (source, taken) in &by_source {
        let selector: SeriesSelector = if source == "app" || source == "shop" {
            source.parse().unwrap()
        } else {
            let name = dirs[if source == "uploads" { 0 } else { 1 }]
                .canonicalize()
                .unwrap();
            name.to_str().unwrap().parse().unwrap()
        };
        let latest = opened.latest(&selector).await.unwrap();
        assert_eq!(latest.id, taken.last().unwrap().id, "latest of {source}");
    }

    // Keep the last two of every series: each series keeps its own two newest.
    let policy = SeriesPolicies::new(RetentionPolicy {
        keep_last: Some(2),
        ..Default::default()
    });
    let report = dr::core::prune(&opened, &policy, &Default::default())
        .await
        .unwrap();
    assert_eq!(report.deleted.len(), 8);
    for (source, taken) in &by_source {
        let kept: Vec<String> = opened
            .list_series(&SeriesSelector::exactly(&taken[0].series))
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        let want: Vec<String> = taken.iter().rev().take(2).map(|m| m.id.clone()).collect();
        assert_eq!(kept, want, "series of {source}");
    }

    // drctl: restore the newest `shop` (not the newer `app`, nor a directory) by --series.
    let out = repo.json(&[
        "restore",
        "latest",
        "--series",
        "shop",
        "--db",
        &cluster.url("shop_copy"),
        "--create",
    ]);
    assert_eq!(out["id"], by_source["shop"].last().unwrap().id.as_str());
    // And the newest `exports` directory, not the newer-named uploads.
    let exports = dirs[1].canonicalize().unwrap();
    let target = repo.path().join("exports-copy");
    let out = repo.json(&[
        "restore",
        "latest",
        "--series",
        exports.to_str().unwrap(),
        "--dir",
        target.to_str().unwrap(),
    ]);
    assert_eq!(out["id"], by_source["exports"].last().unwrap().id.as_str());
    assert_eq!(
        std::fs::read_to_string(target.join("round.txt")).unwrap(),
        "exports 3"
    );
    // A policy stored for one series applies to it alone.
    let out = repo.run(&["retention", "set", "--series", "shop", "--keep-last", "1"]);
    ok(&out);
    let dry = repo.json(&["prune", "--dry-run"]);
    let doomed: Vec<&serde_json::Value> = dry
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["keep"] == false)
        .collect();
    assert_eq!(doomed.len(), 1, "{dry}");
    assert_eq!(doomed[0]["series"], shop.to_string().as_str());
}

/// Two backups that finish within one second: `latest` is the one that finished later,
/// whatever their ids say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_is_the_backup_that_finished_last_within_one_second() {
    let repo = Repo::new();
    let opened = Repository::open(dr::storage::from_url(&repo.url).unwrap())
        .await
        .map(|r| r.with_signing_key(admin_key()))
        .unwrap();
    let key = dr::keys::KeySource::File(repo.key.clone())
        .unlock(opened.config())
        .unwrap();
    let dir = repo.path().join("d");
    std::fs::create_dir_all(&dir).unwrap();
    let t = Utc.with_ymd_and_hms(2026, 11, 20, 2, 0, 0).unwrap();
    let dumper = dr::files::DirDumper::new(&dir);
    // The first starts at .000, the second at .400; ids differ below the second.
    let first = backup_at(&opened, &dumper, &key, t).await;
    let second = backup_at(&opened, &dumper, &key, t + Duration::milliseconds(400)).await;
    assert_eq!(
        first.id[..15],
        second.id[..15],
        "same second: {} {}",
        first.id,
        second.id
    );
    assert_ne!(first.id, second.id);
    assert!(second.finished_at > first.finished_at);
    assert_eq!(
        opened.latest(&SeriesSelector::any()).await.unwrap().id,
        second.id
    );
    assert_eq!(repo.json(&["list"])[0]["id"], second.id.as_str());

    // A backup whose id sorts first but which finished last is still `latest`: order is by
    // the finish time its manifest records, never by the id string.
    let mut late = first.clone();
    late.finished_at = second.finished_at + Duration::milliseconds(300);
    opened.update_manifest(&late).await.unwrap();
    assert!(late.id < second.id);
    assert_eq!(
        opened.latest(&SeriesSelector::any()).await.unwrap().id,
        late.id
    );
}
