//! Prune and pin on real file repositories, through the library and through the real
//! `drctl` binary.
//!
//! No database is needed: the backups are synthetic, written straight through the library
//! (a small payload object plus a manifest, exactly where `dr::core::backup` puts them), so
//! these tests cover retention and deletion, not dumping.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration as StdDuration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Duration, Utc};
use common::*;
use dr::core::prune::{prune, PruneOptions};
use dr::core::{
    ByteStream, Codec, DumpStats, EncryptionInfo, Manifest, ObjectMeta, ObjectWriter, PutOptions,
    Repository, Result, RetentionPolicy, SourceInfo, StorageExt, StorageTarget,
};

/// Write a committed synthetic backup taken at `time`: payload first, manifest last. Its
/// manifest is of the format written before series existed (no `series`).
async fn write_backup(repo: &Repository, time: DateTime<Utc>, labels: &[&str]) -> Manifest {
    write_backup_in(repo, time, labels, None).await
}

/// The same, in `series` (as manifests are written today), or without a series.
async fn write_backup_in(
    repo: &Repository,
    time: DateTime<Utc>,
    labels: &[&str],
    series: Option<&str>,
) -> Manifest {
    let id = format!(
        "{}-pg-{}",
        time.format("%Y%m%dT%H%M%SZ"),
        series.map_or(0, |s| s.len())
    );
    let payload = Bytes::from(format!("synthetic payload of {id}"));
    let path = Repository::payload_path(&id, 0);
    repo.storage()
        .put_bytes(&path, payload.clone(), PutOptions::default())
        .await
        .unwrap();
    let mut json = serde_json::json!({
        "format": 1,
        "id": id,
        "kind": "full",
        "tool": "dr tests",
        "started_at": time,
        "finished_at": time + Duration::seconds(30),
        "source": SourceInfo { kind: "postgres".into(), format: "pg_dump-custom".into(),
                               name: "app".into(), ..Default::default() },
        "stats": DumpStats::default(),
        "codec": Codec::None,
        "encryption": EncryptionInfo::none(),
        "objects": [{ "path": path, "size": payload.len(), "sha256": "0".repeat(64) }],
        "raw_bytes": payload.len(),
        "stored_bytes": payload.len(),
        "labels": labels,
        "pinned": false,
    });
    if let Some(series) = series {
        json["series"] = series.into();
        json["source"]["name"] = series.rsplit(':').next().unwrap().into();
    }
    let mut manifest = Manifest::from_json(json.to_string().as_bytes()).unwrap();
    // The repository is signed (made by `drctl init`): sign as an upgraded one would be.
    repo.seal_manifest(&mut manifest).unwrap();
    repo.storage()
        .put_bytes(
            &Repository::manifest_path(&id),
            Bytes::from(manifest.to_json()),
            PutOptions::default(),
        )
        .await
        .unwrap();
    manifest
}

/// An upload that never got its manifest, with its objects last written `age` ago.
async fn write_incomplete(
    repo_dir: &std::path::Path,
    repo: &Repository,
    id: &str,
    age: StdDuration,
) {
    for n in 0..2 {
        let path = Repository::payload_path(id, n);
        repo.storage()
            .put_bytes(
                &path,
                Bytes::from_static(b"half a backup"),
                PutOptions::default(),
            )
            .await
            .unwrap();
        let file = std::fs::File::options()
            .write(true)
            .open(repo_dir.join(&path))
            .unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }
}

/// Hourly synthetic backups ending one hour ago, oldest first.
async fn hourly_backups(repo: &Repository, n: i64) -> Vec<Manifest> {
    let end = Utc::now() - Duration::hours(1);
    let end = end - Duration::seconds(end.timestamp() % 3600);
    let mut out = Vec::new();
    for h in (0..n).rev() {
        out.push(write_backup(repo, end - Duration::hours(h), &[]).await);
    }
    out
}

/// A storage decorator that records every delete, in order.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn StorageTarget>,
    deletes: Mutex<Vec<String>>,
}

#[async_trait]
impl StorageTarget for Recording {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    async fn put_stream(&self, path: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>> {
        self.inner.put_stream(path, opts).await
    }
    async fn put_if_absent(&self, path: &str, bytes: Bytes, opts: PutOptions) -> Result<()> {
        self.inner.put_if_absent(path, bytes, opts).await
    }
    async fn get(&self, path: &str, range: Option<std::ops::Range<u64>>) -> Result<ByteStream> {
        self.inner.get(path, range).await
    }
    async fn head(&self, path: &str) -> Result<ObjectMeta> {
        self.inner.head(path).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }
    async fn delete(&self, path: &str) -> Result<()> {
        self.deletes.lock().unwrap().push(path.to_string());
        self.inner.delete(path).await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.inner.copy(from, to).await
    }
}

async fn open(url: &str) -> Repository {
    Repository::open(dr::storage::from_url(url).unwrap())
        .await
        .unwrap()
        .with_signing_key(admin_key())
}

fn keep_last(n: u32) -> RetentionPolicy {
    RetentionPolicy {
        keep_last: Some(n),
        ..Default::default()
    }
}

fn backup_dirs(repo: &Repo) -> Vec<String> {
    let mut dirs: Vec<String> = std::fs::read_dir(std::path::Path::new(&repo.url).join("backups"))
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs
}

#[tokio::test]
async fn prune_deletes_each_manifest_before_its_data() {
    let r = Repo::new();
    let plain = open(&r.url).await;
    let backups = hourly_backups(&plain, 4).await;

    let recording = Arc::new(Recording {
        inner: dr::storage::from_url(&r.url).unwrap(),
        deletes: Mutex::new(Vec::new()),
    });
    let repo = Repository::open(recording.clone())
        .await
        .unwrap()
        .with_signing_key(admin_key());
    let report = prune(&repo, &keep_last(1).into(), &PruneOptions::default())
        .await
        .unwrap();

    let doomed: Vec<String> = backups[..3].iter().map(|m| m.id.clone()).collect();
    assert_eq!(report.deleted, doomed, "oldest first");
    let deletes: Vec<String> = recording
        .deletes
        .lock()
        .unwrap()
        .iter()
        .filter(|p| p.starts_with("backups/"))
        .cloned()
        .collect();
    for id in &doomed {
        let manifest_at = deletes
            .iter()
            .position(|p| *p == Repository::manifest_path(id))
            .unwrap_or_else(|| panic!("manifest of {id} deleted: {deletes:?}"));
        let payload_at = deletes
            .iter()
            .position(|p| *p == Repository::payload_path(id, 0))
            .unwrap_or_else(|| panic!("payload of {id} deleted: {deletes:?}"));
        assert!(manifest_at < payload_at, "{deletes:?}");
    }
    let left: Vec<String> = repo
        .list_backups()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left, [backups[3].id.clone()]);
    assert!(
        repo.list_incomplete().await.unwrap().is_empty(),
        "no data left behind"
    );
    assert_eq!(backup_dirs(&r), [backups[3].id.clone()]);
}

#[tokio::test]
async fn prune_removes_incomplete_uploads_only_after_the_grace_period() {
    let r = Repo::new();
    let repo = open(&r.url).await;
    let kept = hourly_backups(&repo, 1).await;
    let dir = std::path::Path::new(&r.url);
    write_incomplete(
        dir,
        &repo,
        "20261101T000000Z-pg-old",
        StdDuration::from_secs(25 * 3600),
    )
    .await;
    write_incomplete(
        dir,
        &repo,
        "20261125T000000Z-pg-new",
        StdDuration::from_secs(23 * 3600),
    )
    .await;

    let dry = prune(
        &repo,
        &keep_last(1).into(),
        &PruneOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.incomplete_removed, ["20261101T000000Z-pg-old"]);
    assert_eq!(
        repo.list_incomplete().await.unwrap().len(),
        2,
        "dry run deletes nothing"
    );

    let report = prune(&repo, &keep_last(1).into(), &PruneOptions::default())
        .await
        .unwrap();
    assert_eq!(report.incomplete_removed, ["20261101T000000Z-pg-old"]);
    assert_eq!(report.incomplete.len(), 2);
    let young = report.incomplete.iter().find(|u| !u.removed).unwrap();
    assert_eq!(young.id, "20261125T000000Z-pg-new");
    assert_eq!(young.bytes, 2 * b"half a backup".len() as u64);
    let mut want = vec![kept[0].id.clone(), "20261125T000000Z-pg-new".to_string()];
    want.sort();
    assert_eq!(backup_dirs(&r), want);

    // A shorter grace period takes the young one too.
    let report = prune(
        &repo,
        &keep_last(1).into(),
        &PruneOptions {
            incomplete_grace: StdDuration::from_secs(3600),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.incomplete_removed, ["20261125T000000Z-pg-new"]);
    assert_eq!(backup_dirs(&r), [kept[0].id.clone()]);
}

#[tokio::test]
async fn prune_dry_run_and_empty_policy_delete_no_backup() {
    let r = Repo::new();
    let repo = open(&r.url).await;
    hourly_backups(&repo, 3).await;
    let dry = prune(
        &repo,
        &keep_last(1).into(),
        &PruneOptions {
            dry_run: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(dry.deleted.len(), 2);
    assert!(dry.dry_run);
    assert_eq!(repo.list_backups().await.unwrap().len(), 3);

    let empty = prune(
        &repo,
        &RetentionPolicy::default().into(),
        &PruneOptions::default(),
    )
    .await
    .unwrap();
    assert!(empty.deleted.is_empty());
    assert!(empty.decisions.iter().all(|d| d.keep));
    assert_eq!(repo.list_backups().await.unwrap().len(), 3);
}

#[tokio::test]
async fn prune_fails_locked_while_another_process_holds_the_lease() {
    let r = Repo::new();
    let repo = open(&r.url).await;
    hourly_backups(&repo, 3).await;
    let held = dr::core::lease::Lease::exclusive(&repo, "test", None)
        .await
        .unwrap();
    let e = prune(&repo, &keep_last(1).into(), &PruneOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.kind(), dr::core::ErrorKind::Locked);
    assert_eq!(repo.list_backups().await.unwrap().len(), 3);
    held.release().await.unwrap();
    let report = prune(&repo, &keep_last(1).into(), &PruneOptions::default())
        .await
        .unwrap();
    assert_eq!(report.deleted.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drctl_pin_then_prune_keeps_the_pinned_backup() {
    let r = Repo::new();
    let repo = open(&r.url).await;
    let backups = hourly_backups(&repo, 5).await;
    let oldest = backups[0].id.clone();

    let pinned = r.json(&["pin", &oldest]);
    assert_eq!(pinned["pinned"], true);
    assert_eq!(pinned["changed"], true);
    assert!(repo.manifest(&oldest).await.unwrap().pinned);

    let report = r.json(&["prune", "--keep-last", "1"]);
    let items = report.as_array().unwrap();
    assert_eq!(items.len(), 5);
    let pinned_item = items.iter().find(|i| i["id"] == oldest.as_str()).unwrap();
    assert_eq!(pinned_item["keep"], true);
    assert_eq!(pinned_item["reasons"], serde_json::json!(["pinned"]));
    assert_eq!(
        backup_dirs(&r),
        [oldest.clone(), backups[4].id.clone()],
        "only the pinned and the newest backup are left"
    );

    // Unpinned, the next prune takes it.
    assert_eq!(r.json(&["unpin", &oldest])["changed"], true);
    r.json(&["prune", "--keep-last", "1"]);
    assert_eq!(backup_dirs(&r), [backups[4].id.clone()]);
}

#[test]
fn drctl_prune_without_any_policy_refuses_and_deletes_nothing() {
    let r = Repo::new();
    let out = r.run(&["prune"]);
    let stderr = fails(&out, 2);
    assert!(stderr.contains("no retention policy"), "{stderr}");
    assert!(stderr.contains("drctl retention set"), "{stderr}");

    let out = r.run(&["prune", "--keep-daily", "0"]);
    let stderr = fails(&out, 2);
    assert!(stderr.contains("no retention rule given"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drctl_prune_uses_the_policy_stored_with_retention_set() {
    let r = Repo::new();
    let repo = open(&r.url).await;
    let backups = hourly_backups(&repo, 4).await;

    let stored = r.json(&[
        "retention",
        "set",
        "--keep-last",
        "2",
        "--time-zone",
        "Europe/Berlin",
    ]);
    assert_eq!(
        stored["retention"],
        serde_json::json!({ "keep_last": 2, "time_zone": "Europe/Berlin" })
    );
    assert_eq!(r.json(&["retention", "show"])["retention"]["keep_last"], 2);

    // Dry run: the plan's shape plus ids; nothing deleted.
    let plan = r.json(&["prune", "--dry-run"]);
    let keeps: Vec<bool> = plan
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["keep"].as_bool().unwrap())
        .collect();
    assert_eq!(keeps, [true, true, false, false], "newest first");
    for item in plan.as_array().unwrap() {
        for field in ["id", "time", "keep", "reasons"] {
            assert!(!item[field].is_null(), "{field} in {item}");
        }
    }
    assert_eq!(backup_dirs(&r).len(), 4);
    let out = r.run(&["prune", "--dry-run"]);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("policy: keep last 2 (Europe/Berlin)"),
        "{text}"
    );
    assert!(text.contains("would delete 2 backups"), "{text}");
    assert!(text.contains("nothing was deleted (dry run)"), "{text}");
    assert_eq!(backup_dirs(&r).len(), 4);

    r.json(&["prune"]);
    assert_eq!(
        backup_dirs(&r),
        [backups[2].id.clone(), backups[3].id.clone()]
    );
}

#[test]
fn drctl_retention_plan_previews_a_policy_on_a_times_file() {
    let dir = tempfile::tempdir().unwrap();
    let times = dir.path().join("times.txt");
    std::fs::write(
        &times,
        "# one backup a day at 02:00\n2026-11-20T02:00:00Z\n2026-11-21T02:00:00Z\n\n\
         2026-11-22T02:00:00+00:00\n2026-11-23T02:00:00Z\n",
    )
    .unwrap();
    let out = drctl(
        &[
            "--json",
            "retention",
            "plan",
            "--times-file",
            times.to_str().unwrap(),
            "--now",
            "2026-11-23T03:00:00Z",
            "--keep-daily",
            "2",
            "--keep-within",
            "3d",
        ],
        &[],
    );
    ok(&out);
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan,
        serde_json::json!([
            { "time": "2026-11-20T02:00:00Z", "keep": false, "reasons": [] },
            { "time": "2026-11-21T02:00:00Z", "keep": true, "reasons": ["within 3d"] },
            { "time": "2026-11-22T02:00:00Z", "keep": true, "reasons": ["daily #2", "within 3d"] },
            { "time": "2026-11-23T02:00:00Z", "keep": true,
              "reasons": ["daily #1", "within 3d", "newest complete backup"] },
        ])
    );

    // Human output: a table and a summary.
    let out = drctl(
        &[
            "retention",
            "plan",
            "--times-file",
            times.to_str().unwrap(),
            "--keep-last",
            "1",
        ],
        &[],
    );
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("keep 1, delete 3"), "{text}");

    std::fs::write(&times, "2026-11-20T02:00:00Z\nyesterday\n").unwrap();
    let out = drctl(
        &[
            "retention",
            "plan",
            "--times-file",
            times.to_str().unwrap(),
            "--keep-last",
            "1",
        ],
        &[],
    );
    let stderr = fails(&out, 2);
    assert!(stderr.contains("line 2"), "{stderr}");
}

/// Manifests written before series existed (no `series`) keep working: they join the
/// series of the one cluster that has a database of their name, and are kept and pruned
/// with it; other series are untouched.
#[tokio::test]
async fn legacy_backups_join_the_series_of_their_database() {
    let r = Repo::new();
    let repo = open(&r.url).await;
    let t0 = Utc::now() - Duration::hours(10);
    let mut legacy = Vec::new();
    for h in 0..3 {
        legacy.push(write_backup(&repo, t0 + Duration::hours(h), &[]).await);
    }
    assert_eq!(legacy[0].series.to_string(), "postgres::app");
    let new = write_backup_in(
        &repo,
        t0 + Duration::hours(4),
        &[],
        Some("postgres:7301:app"),
    )
    .await;
    let other = write_backup_in(&repo, t0 + Duration::hours(5), &[], Some("files:web1:/srv")).await;

    let listed = repo.list_backups().await.unwrap();
    assert_eq!(listed.len(), 5);
    assert!(listed
        .iter()
        .filter(|m| m.id != other.id)
        .all(|m| m.series.to_string() == "postgres:7301:app"));
    let app = repo
        .latest(&"app".parse::<dr::core::SeriesSelector>().unwrap())
        .await
        .unwrap();
    assert_eq!(app.id, new.id);

    let report = prune(&repo, &keep_last(2).into(), &PruneOptions::default())
        .await
        .unwrap();
    // The app series (3 legacy + 1 new) keeps its 2 newest; the directory keeps its one.
    assert_eq!(
        report.deleted,
        vec![legacy[0].id.clone(), legacy[1].id.clone()]
    );
    let left: Vec<String> = repo
        .list_backups()
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(left, vec![other.id, new.id, legacy[2].id.clone()]);
}
