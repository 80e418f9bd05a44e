//! `drctl run` end to end: a real dr.toml, a real PostgreSQL (throwaway cluster), a real
//! file repository, the real binary.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A dr.toml for `repo` and database `db`, with extra TOML appended.
fn write_config(repo: &Repo, db: &str, jobs: &str) -> PathBuf {
    let path = repo.path().join("dr.toml");
    let text = format!(
        r#"labels = ["test"]

[repository]
url = "{url}"

[database]
url = "{db}"

[key]
file = "repo.key"          # relative to this file

[objectives]
rpo = "1h"
rto = "15m"

[retention]
keep_last = 5

{jobs}"#,
        url = repo.url,
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn drctl_run(config: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["--json", "run", "--config", config.to_str().unwrap()];
    args.extend_from_slice(extra);
    drctl(&args, &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_backup_takes_a_backup_then_prunes_and_records_the_outcome() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    let config = write_config(
        &repo,
        &cluster.url("app"),
        r#"
[jobs.backup]
kind = "backup"
cron = "0 2 * * *"
labels = ["nightly"]
then = ["prune"]

[jobs.prune]
kind = "prune"
"#,
    );
    let out = drctl_run(&config, &["--once", "backup"]);
    ok(&out);
    let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let backup = &outcomes[0];
    assert_eq!(backup["job"], "backup");
    assert_eq!(backup["ok"], true, "{backup}");
    let figures = &backup["summary"]["figures"];
    let id = figures["backup_id"].as_str().unwrap().to_string();
    assert!(figures["raw_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(figures["stored_bytes"].as_u64().unwrap() > 0);
    assert_eq!(figures["tables"], 3);
    assert_eq!(
        backup["rpo"]["within"], true,
        "a fresh backup is within the RPO"
    );
    assert_eq!(backup["rpo"]["newest_backup"], id.as_str());
    assert_eq!(outcomes[1]["job"], "prune");
    assert_eq!(outcomes[1]["ok"], true, "{}", outcomes[1]);
    assert_eq!(outcomes[1]["summary"]["figures"]["deleted"], 0);

    let list = repo.json(&["list"]);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["labels"], serde_json::json!(["test", "nightly"]));
    // The outcome is the job's record in the repository, for the next scheduler's start.
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(&repo.url).join("jobs/backup/last.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record, outcomes[0]);
    let verified = repo.json(&["verify", &id]);
    assert_eq!(verified[0]["ok"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_reports_a_failed_job_with_its_exit_code() {
    let repo = Repo::new();
    // Nothing listens on port 1: the dump fails.
    let config = write_config(
        &repo,
        "postgres://postgres@127.0.0.1:1/app",
        "[jobs.backup]\nkind = \"backup\"\n",
    );
    let out = drctl_run(&config, &["--once", "backup"]);
    let stderr = fails(&out, 1);
    assert!(stderr.contains("job 'backup' failed"), "{stderr}");
    let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcomes[0]["ok"], false);
    assert_eq!(outcomes[0]["error"]["kind"], "database");

    let stderr = fails(&drctl_run(&config, &["--once", "nope"]), 3);
    assert!(stderr.contains("no job named 'nope'"), "{stderr}");
}

#[test]
fn run_refuses_a_config_with_a_mistake_naming_the_line() {
    let repo = Repo::new();
    let config = write_config(
        &repo,
        "postgres://postgres@127.0.0.1:5432/app",
        "[jobs.backup]\nkind = \"backup\"\ncron = \"0 25 * * *\"\n",
    );
    let stderr = fails(&drctl_run(&config, &["--once", "backup"]), 2);
    assert!(stderr.contains("line 21: jobs.backup.cron"), "{stderr}");
    assert!(stderr.contains("dr.toml"), "names the file: {stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_as_a_daemon_runs_the_schedule_and_stops_cleanly_on_sigterm() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    // Every five seconds (6-field cron, seconds first).
    let config = write_config(
        &repo,
        &cluster.url("app"),
        "[jobs.backup]\nkind = \"backup\"\ncron = \"*/5 * * * * *\"\nmissed = \"skip\"\n",
    );
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drctl"));
    admin_host_env(&mut cmd);
    let mut child = cmd
        .args(["--json", "run", "--config", config.to_str().unwrap()])
        .env_remove("DR_REPO")
        .env_remove("DR_KEY_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let record = Path::new(&repo.url).join("jobs/backup/last.json");
    let deadline = Instant::now() + Duration::from_secs(60);
    while !record.exists() {
        assert!(Instant::now() < deadline, "no run within a minute");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("drctl run exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exit {:?}; stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let events: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let started = kinds.iter().position(|k| *k == "started").unwrap();
    let succeeded = kinds.iter().position(|k| *k == "succeeded").unwrap();
    assert!(started < succeeded, "{kinds:?}");
    assert!(kinds.contains(&"planned"), "{kinds:?}");
    // Nothing half-written: every backup folder is committed.
    assert!(!repo.json(&["list"]).as_array().unwrap().is_empty());
    let incomplete: Vec<_> = std::fs::read_dir(Path::new(&repo.url).join("backups"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.join("manifest.json").exists())
        .collect();
    assert!(incomplete.is_empty(), "{incomplete:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_once_drill_restores_the_newest_backup_beside_the_database_and_judges_it() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    let config = write_config(
        &repo,
        &cluster.url("app"),
        r#"
[jobs.backup]
kind = "backup"

[jobs.drill]
kind = "drill"
cron = "0 5 2 * *"

[[checks.sql]]
name = "scan_counts_add_up"
sql = 'SELECT id FROM "QrCode" q WHERE "scanCount" <> (SELECT count(*) FROM "QrCodeScan" s WHERE s."qrCodeId" = q.id)'
"#,
    );
    ok(&drctl_run(&config, &["--once", "backup"]));
    let out = drctl_run(&config, &["--once", "drill"]);
    ok(&out);
    let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let drill = &outcomes[0];
    assert_eq!(drill["job"], "drill");
    assert_eq!(drill["ok"], true, "{drill}");
    let figures = &drill["summary"]["figures"];
    assert_eq!(figures["tables_checked"], 3);
    assert_eq!(figures["foreign_keys"], 2);
    assert_eq!(
        figures["checks_passed"], 3,
        "amcheck, sequences and the user's check: {drill}"
    );
    assert!(figures["restore_ms"].as_u64().unwrap() > 0);
    assert_eq!(
        figures["backup_id"],
        repo.json(&["list"])[0]["id"],
        "drills the newest backup"
    );
    assert!(
        !database_exists(&cluster, "app_drill").await,
        "the scratch database <name>_drill is dropped"
    );
}

/// Run the backup job `[jobs.uploads]` (`kind = "backup"` plus `keys`) once, with no
/// database reachable (a directory job needs none); its outcome's figures.
fn run_uploads_job(repo: &Repo, keys: &str) -> serde_json::Value {
    let config = write_config(
        repo,
        "postgres://postgres@127.0.0.1:1/app",
        &format!("\n[jobs.uploads]\nkind = \"backup\"\n{keys}\n"),
    );
    let out = drctl_run(&config, &["--once", "uploads"]);
    ok(&out);
    let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcomes[0]["ok"], true, "{}", outcomes[0]);
    outcomes[0]["summary"]["figures"].clone()
}

#[test]
fn run_once_backs_up_a_directory_job_relative_to_the_config_file() {
    let repo = Repo::new();
    let uploads = repo.path().join("uploads");
    std::fs::create_dir_all(uploads.join("qr")).unwrap();
    std::fs::write(uploads.join("qr/1.png"), vec![1u8; 70_000]).unwrap();
    std::fs::write(uploads.join("qr/2.png"), vec![2u8; 30_000]).unwrap();
    let figures = run_uploads_job(
        &repo,
        r#"dir = "uploads"
cron = "30 * * * *"
labels = ["uploads"]"#,
    );
    assert_eq!(figures["rows"], 2, "two files");
    let id = figures["backup_id"].as_str().unwrap().to_string();
    let list = repo.json(&["list"]);
    assert_eq!(list[0]["source"]["kind"], "files");
    assert_eq!(list[0]["labels"], serde_json::json!(["test", "uploads"]));

    let restored = repo.path().join("restored");
    repo.json(&["restore", &id, "--dir", restored.to_str().unwrap()]);
    assert_eq!(
        std::fs::read(restored.join("qr/1.png")).unwrap(),
        vec![1u8; 70_000]
    );

    // `dir` belongs to backup jobs only, and the mistake names its line.
    let config = write_config(
        &repo,
        "postgres://postgres@127.0.0.1:1/app",
        "[jobs.prune]\nkind = \"prune\"\ndir = \"uploads\"\n",
    );
    let stderr = fails(&drctl_run(&config, &["--once", "prune"]), 2);
    assert!(stderr.contains("jobs.prune.dir"), "{stderr}");
    assert!(stderr.contains("only backup jobs"), "{stderr}");
}

/// dr.toml parity with `drctl backup`: compression, storage class and labels set on a job
/// are what its backups get.
#[test]
fn run_once_backup_uses_the_jobs_compression_storage_class_and_labels() {
    let repo = Repo::new();
    let uploads = repo.path().join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    std::fs::write(uploads.join("a.csv"), "id\n1\n2\n3\n".repeat(100)).unwrap();
    let figures = run_uploads_job(
        &repo,
        r#"dir = "uploads"
compression = "gzip:1"
storage_class = "STANDARD_IA"
labels = ["archive"]"#,
    );
    let id = figures["backup_id"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(&repo.url).join(format!("backups/{id}/manifest.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["codec"],
        serde_json::to_value(dr::core::Codec::Gzip { level: 1 }).unwrap()
    );
    assert_eq!(manifest["objects"][0]["storage_class"], "STANDARD_IA");
    assert_eq!(manifest["labels"], serde_json::json!(["test", "archive"]));
    let restored = repo.path().join("restored");
    ok(&repo.run(&["restore", &id, "--dir", restored.to_str().unwrap()]));
    assert_eq!(
        std::fs::read(restored.join("a.csv")).unwrap(),
        std::fs::read(uploads.join("a.csv")).unwrap()
    );
}

#[test]
fn run_once_replicate_copies_backups_to_the_second_region_and_skips_them_next_time() {
    let repo = Repo::new();
    let uploads = repo.path().join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    std::fs::write(uploads.join("a.csv"), "id\n1\n").unwrap();
    let replica = tempfile::tempdir().unwrap();
    let replica_url = replica.path().join("dr").to_str().unwrap().to_string();
    let config = write_config(
        &repo,
        "postgres://postgres@127.0.0.1:1/app",
        &format!(
            r#"
[jobs.uploads]
kind = "backup"
dir = "uploads"
then = ["offsite"]

[jobs.offsite]
kind = "replicate"
to = "{replica_url}"
storage_class = "GLACIER"
verify = true
"#
        ),
    );
    let out = drctl_run(&config, &["--once", "uploads"]);
    ok(&out);
    let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcomes[1]["job"], "offsite");
    assert_eq!(outcomes[1]["ok"], true, "{}", outcomes[1]);
    assert_eq!(outcomes[1]["summary"]["figures"]["copied"], 1);

    // The replica lists the backup, with the destination's storage class.
    let listed = drctl(&["--json", "list", "--repo", &replica_url], &[]);
    ok(&listed);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_string();
    assert_eq!(listed[0]["id"], repo.json(&["list"])[0]["id"]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(Path::new(&replica_url).join(format!("backups/{id}/manifest.json")))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["objects"][0]["storage_class"], "GLACIER");

    let out = drctl_run(&config, &["--once", "offsite"]);
    ok(&out);
    let outcomes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcomes[0]["summary"]["figures"]["copied"], 0);
    assert_eq!(outcomes[0]["summary"]["figures"]["skipped"], 1);

    // A replicate job without a destination is refused, naming the key.
    let config = write_config(
        &repo,
        "postgres://postgres@127.0.0.1:1/app",
        "[jobs.offsite]\nkind = \"replicate\"\n",
    );
    let stderr = fails(&drctl_run(&config, &["--once", "offsite"]), 2);
    assert!(stderr.contains("jobs.offsite.to"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_runs_the_checks_of_dr_toml_and_fails_on_a_user_check_that_returns_rows() {
    let cluster = cluster_with_sample(1).await;
    // Two codes whose stored scan counts no longer add up.
    cluster
        .execute_sql(
            "app",
            r#"UPDATE "QrCode" SET "scanCount" = "scanCount" + 1
               WHERE id IN (SELECT id FROM "QrCode" ORDER BY id LIMIT 2)"#,
        )
        .await
        .unwrap();
    let repo = Repo::new();
    let config = write_config(
        &repo,
        &cluster.url("app"),
        r#"
[jobs.backup]
kind = "backup"

[checks]
amcheck = true
sequences = true

[[checks.sql]]
name = "users_have_email"
sql = 'SELECT id FROM "User" WHERE email IS NULL'

[[checks.sql]]
name = "scan_counts_add_up"
sql = """
SELECT id FROM "QrCode" q
WHERE "scanCount" <> (SELECT count(*) FROM "QrCodeScan" s WHERE s."qrCodeId" = q.id)
ORDER BY id;
"""
"#,
    );
    ok(&drctl_run(&config, &["--once", "backup"]));
    let out = repo.run(&[
        "--json",
        "drill",
        "--db",
        &cluster.url("app_drill"),
        "--config",
        config.to_str().unwrap(),
    ]);
    let err = fails(&out, 5);
    assert!(
        err.contains("check scan_counts_add_up found 2 rows"),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    let checks = report["checks"].as_array().unwrap();
    let names: Vec<_> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "amcheck",
            "sequences",
            "users_have_email",
            "scan_counts_add_up"
        ]
    );
    assert_eq!(checks[0]["kind"], "amcheck");
    assert_eq!(checks[0]["passed"], true, "{report}");
    assert!(
        checks[0]["summary"]
            .as_str()
            .unwrap()
            .contains(" B-tree indexes and "),
        "{report}"
    );
    assert_eq!(
        checks[1]["passed"], true,
        "the bigserial is ahead: {report}"
    );
    assert_eq!(checks[1]["summary"], "1 sequence feeding 1 column");
    assert_eq!(checks[2]["passed"], true);
    assert_eq!(checks[3]["passed"], false);
    assert_eq!(checks[3]["kind"], "sql");
    assert_eq!(checks[3]["details"].as_array().unwrap().len(), 2);
    assert!(!database_exists(&cluster, "app_drill").await);

    // A check with no name is refused with its line.
    std::fs::write(
        &config,
        std::fs::read_to_string(&config)
            .unwrap()
            .replace("name = \"users_have_email\"", "name = \" \""),
    )
    .unwrap();
    let err = fails(&drctl_run(&config, &["--once", "backup"]), 2);
    assert!(
        err.contains("checks.sql[0].name: must not be empty"),
        "{err}"
    );
    assert!(err.contains("line "), "{err}");
}
