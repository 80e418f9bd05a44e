//! Backups over N connections stored as pieces (`drctl backup --jobs N`), restored in
//! parallel (`drctl restore --jobs N`), written out for `pg_restore -Fd` (`drctl cat --dir`),
//! verified, and refused when damaged, through the real drctl against throwaway clusters.

mod common;

use std::path::{Path, PathBuf};

use common::{cluster_with_sample, database_exists, fails, ok, sample::SAMPLE_TABLES, Repo};
use dr::db::compare::compare_tables;
use dr::db::testing::TestCluster;

/// The sample database with a large object too, so that every kind of data file is covered.
async fn source() -> TestCluster {
    let cluster = cluster_with_sample(1).await;
    cluster
        .execute_sql("app", "SELECT lo_from_bytea(0, 'a large object')")
        .await
        .unwrap();
    cluster
}

async fn assert_same(cluster: &TestCluster, copy: &str) {
    compare_tables(
        &cluster.config("app"),
        &cluster.config(copy),
        &SAMPLE_TABLES,
    )
    .await
    .unwrap_or_else(|e| panic!("{copy} differs from app: {}", e.report()));
}

fn manifest(repo: &Repo, id: &str) -> serde_json::Value {
    let path = Path::new(&repo.url)
        .join("backups")
        .join(id)
        .join("manifest.json");
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The stored object of the largest piece (a table's data) of backup `id`.
fn largest_piece(repo: &Repo, id: &str) -> PathBuf {
    let m = manifest(repo, id);
    let o = m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|o| o["size"].as_u64().unwrap())
        .unwrap()
        .clone();
    Path::new(&repo.url).join(o["path"].as_str().unwrap())
}

async fn scratch_databases(cluster: &TestCluster) -> i64 {
    let c = cluster.connect("postgres").await.unwrap();
    c.query_one(
        "SELECT count(*) FROM pg_database WHERE datname LIKE '%_dr_restore_%'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_with_jobs_restores_in_parallel_to_the_same_rows() {
    let cluster = source().await;
    let repo = Repo::new();
    let db = cluster.url("app");

    let id = repo.backup(&["--db", &db, "--jobs", "2"]);
    let one_stream = repo.backup(&["--db", &db]);
    let m = manifest(&repo, &id);
    assert_eq!(m["format"], 2, "pieces need the newer manifest format");
    assert_eq!(m["source"]["format"], "pg_dump-directory");
    let pieces: Vec<&str> = m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["piece"].as_str().unwrap())
        .collect();
    assert!(pieces.contains(&"toc.dat"), "{pieces:?}");
    assert!(pieces.len() > SAMPLE_TABLES.len(), "{pieces:?}");
    // Counted from the pieces, the statistics equal those counted from a custom archive.
    assert_eq!(m["stats"], manifest(&repo, &one_stream)["stats"]);
    assert!(m["stats"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == "<large objects>" && t["rows"] == 1));

    let verified = repo.json(&["verify", &id]);
    assert_eq!(verified[0]["ok"], true, "{verified}");
    assert_eq!(
        verified[0]["report"]["tables_checked"],
        m["stats"]["tables"].as_array().unwrap().len()
    );

    // Into a new database.
    let copy = cluster.url("copy_new");
    let restored = repo.json(&["restore", &id, "--db", &copy, "--create", "--jobs", "2"]);
    assert!(restored["notice"].is_null(), "{restored}");
    assert_eq!(
        restored["tables_checked"],
        m["stats"]["tables"].as_array().unwrap().len()
    );
    assert_same(&cluster, "copy_new").await;

    // Into an existing empty database (through a scratch copy: no single transaction).
    cluster.create_database("copy_empty").await.unwrap();
    ok(&repo.run(&[
        "restore",
        &id,
        "--db",
        &cluster.url("copy_empty"),
        "--jobs",
        "2",
    ]));
    assert_same(&cluster, "copy_empty").await;

    // Over a non-empty one, with --replace; and with one job, in one transaction.
    cluster
        .execute_sql("copy_empty", "CREATE TABLE extra (x int)")
        .await
        .unwrap();
    ok(&repo.run(&[
        "restore",
        &id,
        "--db",
        &cluster.url("copy_empty"),
        "--replace",
        "--jobs",
        "2",
    ]));
    assert_same(&cluster, "copy_empty").await;
    ok(&repo.run(&["restore", &id, "--db", &cluster.url("copy_one"), "--create"]));
    assert_same(&cluster, "copy_one").await;
    assert_eq!(scratch_databases(&cluster).await, 0);

    // The stock-tool route: the pieces as a folder, restored by pg_restore -Fd.
    let out = repo.path().join("archive");
    ok(&repo.run(&["cat", &id, "--dir", out.to_str().unwrap()]));
    assert!(out.join("toc.dat").is_file());
    cluster.create_database("copy_stock").await.unwrap();
    let pg_restore = cluster.bin_dir().join("pg_restore");
    let status = std::process::Command::new(pg_restore)
        .args(["--exit-on-error", "-j", "2", "-Fd", "-d"])
        .arg(cluster.url("copy_stock"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success(), "pg_restore -Fd of drctl cat --dir");
    assert_same(&cluster, "copy_stock").await;

    // The one-stream route: `drctl cat ID | pg_restore` reads the pieces as one custom
    // archive from a pipe (which it cannot seek in).
    let archive = repo.run(&["cat", &id]);
    ok(&archive);
    // A well-formed custom archive whose rows are the ones the backup counted.
    let mut inspector = dr::db::archive::ArchiveInspector::new();
    inspector.feed(&archive.stdout).unwrap();
    let counted: Vec<(String, u64)> = inspector
        .finish()
        .unwrap()
        .tables
        .into_iter()
        .map(|t| (t.name, t.rows))
        .collect();
    let recorded: Vec<(String, u64)> = manifest(&repo, &id)["stats"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap().to_owned();
            (name, t["rows"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(counted, recorded);
    assert!(counted
        .iter()
        .any(|(name, rows)| name.contains("large") && *rows == 1));
    cluster.create_database("copy_pipe").await.unwrap();
    let mut pg_restore = std::process::Command::new(cluster.bin_dir().join("pg_restore"))
        .args(["--exit-on-error", "--single-transaction", "-d"])
        .arg(cluster.url("copy_pipe"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut pg_restore.stdin.take().unwrap(), &archive.stdout).unwrap();
    assert!(
        pg_restore.wait().unwrap().success(),
        "drctl cat | pg_restore"
    );
    assert_same(&cluster, "copy_pipe").await;
    let copy = cluster.connect("copy_pipe").await.unwrap();
    let large_objects: i64 = copy
        .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(large_objects, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_piece_fails_before_anything_is_swapped_in() {
    let cluster = source().await;
    let repo = Repo::new();
    let id = repo.backup(&["--db", &cluster.url("app"), "--jobs", "2"]);

    // One byte changed in the middle of the largest piece: its SHA-256 and its
    // authentication tags fail, but only once some of it has been streamed.
    let piece = largest_piece(&repo, &id);
    let mut bytes = std::fs::read(&piece).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&piece, &bytes).unwrap();

    cluster.create_database("live").await.unwrap();
    cluster
        .execute_sql(
            "live",
            "CREATE TABLE precious (x int); INSERT INTO precious VALUES (42)",
        )
        .await
        .unwrap();
    let stderr = fails(
        &repo.run(&[
            "restore",
            &id,
            "--db",
            &cluster.url("live"),
            "--replace",
            "--jobs",
            "2",
        ]),
        5,
    );
    assert!(stderr.contains("piece"), "{stderr}");
    assert_eq!(common::count(&cluster, "live", "precious").await, 1);
    assert_eq!(
        scratch_databases(&cluster).await,
        0,
        "the scratch copy is dropped"
    );

    fails(
        &repo.run(&[
            "restore",
            &id,
            "--db",
            &cluster.url("fresh"),
            "--create",
            "--jobs",
            "2",
        ]),
        5,
    );
    assert!(!database_exists(&cluster, "fresh").await);

    fails(&repo.run(&["verify", &id]), 5);
    let out = repo.path().join("archive");
    fails(&repo.run(&["cat", &id, "--dir", out.to_str().unwrap()]), 5);
    let name = piece.file_name().unwrap();
    assert!(!out.join(name).exists(), "no file for a piece that failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_stream_backup_restores_with_jobs_over_one_connection() {
    let cluster = source().await;
    let repo = Repo::new();
    let id = repo.backup(&["--db", &cluster.url("app")]);
    let restored = repo.json(&[
        "restore",
        &id,
        "--db",
        &cluster.url("copy"),
        "--create",
        "--jobs",
        "2",
    ]);
    let notice = restored["notice"].as_str().unwrap_or_default();
    assert!(notice.contains("one connection"), "{restored}");
    assert_same(&cluster, "copy").await;
    let stderr = fails(
        &repo.run(&["cat", &id, "--dir", repo.path().join("x").to_str().unwrap()]),
        2,
    );
    assert!(stderr.contains("one stream"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_dump_with_jobs_is_never_listed() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.create_database("app").await.unwrap();
    cluster
        .execute_sql(
            "app",
            "CREATE TABLE open_t AS SELECT g FROM generate_series(1, 1000) g; \
             CREATE TABLE secret AS SELECT g FROM generate_series(1, 1000) g; \
             CREATE ROLE weak LOGIN; GRANT SELECT ON open_t TO weak; \
             REVOKE ALL ON secret FROM PUBLIC",
        )
        .await
        .unwrap();
    let repo = Repo::new();
    let weak = cluster.url("app").replacen("postgres@", "weak@", 1);
    assert!(weak.contains("weak@"), "{weak}");
    let out = repo.run(&["backup", "--db", &weak, "--jobs", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success(),
        "pg_dump cannot read `secret`: {stderr}"
    );
    assert!(stderr.contains("pg_dump"), "{stderr}");
    assert_eq!(repo.json(&["list"]), serde_json::json!([]));
}

/// Processes whose command line mentions `needle` (pg_dump names its spool folder there).
fn processes_mentioning(needle: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                found.push(pid);
            }
        }
    }
    found
}

/// The `dr-dump-*` spool folders under `dir`.
fn spools(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("dr-dump-")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backup_with_jobs_takes_pg_dump_along_and_its_spool_is_reclaimed() {
    let cluster = source().await;
    let repo = Repo::new();
    let spool_root = tempfile::tempdir().unwrap();
    // Hold pg_dump at its first lock, so that it is surely running when drctl is killed.
    let locker = cluster.connect("app").await.unwrap();
    locker
        .batch_execute(r#"BEGIN; LOCK TABLE "User" IN ACCESS EXCLUSIVE MODE"#)
        .await
        .unwrap();

    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"));
    cmd.args(["backup", "--repo", &repo.url, "--db", &cluster.url("app")])
        .args(["--jobs", "2"])
        .env("DR_KEY_FILE", &repo.key)
        .env("TMPDIR", spool_root.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    common::admin_host_env(&mut cmd);
    let mut drctl = cmd.spawn().unwrap();
    let spool = loop {
        let running = spools(spool_root.path())
            .into_iter()
            .find(|s| !processes_mentioning(s.to_str().unwrap()).is_empty());
        if let Some(spool) = running {
            break spool;
        }
        assert!(drctl.try_wait().unwrap().is_none(), "drctl ended early");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    drctl.kill().unwrap(); // SIGKILL: no destructor runs
    drctl.wait().unwrap();

    // pg_dump dies with its parent.
    let needle = spool.to_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_mentioning(&needle).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "pg_dump outlived the killed drctl: {:?}",
            processes_mentioning(&needle)
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(spool.exists(), "a SIGKILL runs no clean-up");
    locker.batch_execute("ROLLBACK").await.unwrap();

    // The next backup reclaims the abandoned spool, and completes.
    let out = {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"));
        cmd.args(["backup", "--repo", &repo.url, "--db", &cluster.url("app")])
            .args(["--jobs", "2"])
            .env("DR_KEY_FILE", &repo.key)
            .env("TMPDIR", spool_root.path());
        common::admin_host_env(&mut cmd);
        cmd.output().unwrap()
    };
    ok(&out);
    assert_eq!(spools(spool_root.path()), Vec::<PathBuf>::new());
    assert_eq!(repo.json(&["list"]).as_array().unwrap().len(), 1);
}

/// The pieces of a `drctl cat --dir` folder, each read whole: the same bytes a repository
/// serves, without its decryption, so that a test can hand the restorer statistics of its
/// own.
struct FolderPieces {
    dir: PathBuf,
    names: Vec<String>,
}

#[async_trait::async_trait]
impl dr::core::pieces::PieceSource for FolderPieces {
    fn names(&self) -> Vec<String> {
        self.names.clone()
    }

    async fn open(&self, name: &str) -> dr::core::Result<dr::core::ByteStream> {
        use futures::StreamExt;
        let bytes = std::fs::read(self.dir.join(name)).unwrap();
        Ok(futures::stream::iter([Ok(bytes::Bytes::from(bytes))]).boxed())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_count_mismatch_under_jobs_fails_and_leaves_the_target_untouched() {
    use dr::core::pieces::PieceRestorer;
    let cluster = source().await;
    let repo = Repo::new();
    let id = repo.backup(&["--db", &cluster.url("app"), "--jobs", "2"]);
    let dir = repo.path().join("pieces");
    ok(&repo.run(&["cat", &id, "--dir", dir.to_str().unwrap()]));
    let m = manifest(&repo, &id);
    let names = m["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["piece"].as_str().unwrap().to_owned())
        .collect();
    let pieces = FolderPieces { dir, names };
    let source: dr::core::SourceInfo = serde_json::from_value(m["source"].clone()).unwrap();
    // The backup recorded one row more for QrCode than its piece holds.
    let mut expected: dr::core::DumpStats = serde_json::from_value(m["stats"].clone()).unwrap();
    let qr = expected
        .tables
        .iter_mut()
        .find(|t| t.name == "QrCode")
        .unwrap();
    qr.rows += 1;

    cluster.create_database("kept").await.unwrap();
    cluster
        .execute_sql(
            "kept",
            "CREATE TABLE precious (x int); INSERT INTO precious VALUES (42)",
        )
        .await
        .unwrap();
    let restorer = dr::db::PgRestorer::new(cluster.config("kept"))
        .replace(true)
        .jobs(2);
    let e = restorer
        .restore_pieces(&source, &expected, &pieces)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), dr::core::ErrorKind::Corrupt, "{}", e.report());
    assert!(
        e.report().contains("\"public\".\"QrCode\" has"),
        "names the table: {}",
        e.report()
    );
    assert_eq!(common::count(&cluster, "kept", "precious").await, 1);
    assert_eq!(scratch_databases(&cluster).await, 0, "scratch copy dropped");

    let restorer = dr::db::PgRestorer::new(cluster.config("made"))
        .create(true)
        .jobs(2);
    let e = restorer
        .restore_pieces(&source, &expected, &pieces)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), dr::core::ErrorKind::Corrupt, "{}", e.report());
    assert!(!database_exists(&cluster, "made").await);
    assert_eq!(scratch_databases(&cluster).await, 0, "scratch copy dropped");

    // The same pieces with the true statistics restore, every table's rows checked.
    let restorer = dr::db::PgRestorer::new(cluster.config("made"))
        .create(true)
        .jobs(2);
    let truth: dr::core::DumpStats = serde_json::from_value(m["stats"].clone()).unwrap();
    let report = restorer
        .restore_pieces(&source, &truth, &pieces)
        .await
        .unwrap();
    assert_eq!(report.tables_checked, truth.tables.len());
    assert_eq!(
        report.rows_checked,
        truth.tables.iter().map(|t| t.rows).sum::<u64>()
    );
    assert_same(&cluster, "made").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn some_tables_restore_with_jobs() {
    let cluster = source().await;
    let repo = Repo::new();
    let id = repo.backup(&["--db", &cluster.url("app"), "--jobs", "2"]);
    let restored = repo.json(&[
        "restore",
        &id,
        "--db",
        &cluster.url("some"),
        "--create",
        "--table",
        "\"QrCode\"",
        "--jobs",
        "2",
    ]);
    assert_eq!(restored["tables_checked"], 1, "{restored}");
    assert_eq!(
        common::count(&cluster, "some", "QrCode").await,
        common::count(&cluster, "app", "QrCode").await
    );
    assert_eq!(scratch_databases(&cluster).await, 0);
}
