//! drctl end to end: real PostgreSQL (throwaway clusters), real file repositories, the real
//! binary. Every failure must be clear, one line, and lose nothing.

mod common;

use std::io::{Read, Seek, SeekFrom, Write};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_list_verify_restore_round_trip() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    let db = cluster.url("app");

    let backup = repo.json(&["backup", "--db", &db, "--label", "daily", "--label", "test"]);
    let id = backup["id"].as_str().unwrap().to_string();
    assert!(backup["raw_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(backup["stored_bytes"].as_u64().unwrap() > 0);
    assert!(backup["duration_ms"].as_u64().is_some());
    let tables = backup["tables"].as_array().unwrap();
    let scans = tables.iter().find(|t| t["name"] == "QrCodeScan").unwrap();
    assert_eq!(
        scans["rows"].as_i64().unwrap(),
        count(&cluster, "app", "QrCodeScan").await
    );
    assert!(backup["source"]["consistent_point"]["lsn"].is_string());

    let list = repo.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    assert_eq!(list[0]["labels"], serde_json::json!(["daily", "test"]));
    for field in ["finished_at", "raw_bytes", "stored_bytes"] {
        assert!(!list[0][field].is_null(), "list has {field}");
    }

    let verified = repo.json(&["verify", &id]);
    assert_eq!(verified[0]["ok"], true);
    assert_eq!(verified[0]["report"]["tables_checked"], 3);

    let restored = repo.json(&[
        "restore",
        "latest",
        "--db",
        &cluster.url("copy"),
        "--create",
    ]);
    assert_eq!(restored["id"], id.as_str());
    assert_eq!(restored["tables_checked"], 3);
    assert_same_sample(&cluster, "app", "copy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cat_output_is_a_standard_pg_restore_archive() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    let id = repo.backup(&["--db", &cluster.url("app")]);
    let out = repo.run(&["cat", &id]);
    ok(&out);
    let archive = repo.path().join("payload.dump");
    std::fs::write(&archive, &out.stdout).unwrap();
    let listing = std::process::Command::new(cluster.bin_dir().join("pg_restore"))
        .arg("--list")
        .arg(&archive)
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let toc = String::from_utf8_lossy(&listing.stdout);
    assert!(toc.contains("TABLE DATA public QrCodeScan"), "{toc}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_non_empty_database() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    repo.json(&["backup", "--db", &cluster.url("app")]);
    let before = count(&cluster, "app", "QrCodeScan").await;
    let out = repo.run(&["restore", "latest", "--db", &cluster.url("app")]);
    let err = fails(&out, 6);
    assert!(err.contains("--replace"), "{err}");
    assert_eq!(
        count(&cluster, "app", "QrCodeScan").await,
        before,
        "target untouched"
    );

    // With --replace it goes through, and the data is the backup's.
    cluster
        .execute_sql("app", "DELETE FROM \"QrCodeScan\" WHERE id % 2 = 0")
        .await
        .unwrap();
    repo.json(&[
        "restore",
        "latest",
        "--db",
        &cluster.url("app"),
        "--replace",
    ]);
    assert_eq!(count(&cluster, "app", "QrCodeScan").await, before);
}

/// Flip one byte of the stored payload at `offset`.
fn flip_byte(path: &std::path::Path, offset: u64) {
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.read_exact(&mut b).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&[b[0] ^ 0x01]).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_backups_fail_verify_and_restore_without_leaving_a_database() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    let id = repo.backup(&["--db", &cluster.url("app")]);
    let payload = repo.payload(&id);
    let pristine = std::fs::read(&payload).unwrap();
    let len = pristine.len() as u64;

    // One flipped byte: in the header, in the middle, in the very last tag.
    for offset in [3, 20, len / 2, len - 1] {
        flip_byte(&payload, offset);
        let err = fails(&repo.run(&["verify", &id]), 5);
        assert!(err.contains(&id), "names the backup: {err}");
        let target = format!("flip{offset}");
        let err = fails(
            &repo.run(&["restore", &id, "--db", &cluster.url(&target), "--create"]),
            5,
        );
        assert!(!err.is_empty());
        assert!(
            !database_exists(&cluster, &target).await,
            "no half-restored database after flip at {offset}"
        );
        std::fs::write(&payload, &pristine).unwrap();
    }

    // Truncated.
    std::fs::write(&payload, &pristine[..pristine.len() * 2 / 3]).unwrap();
    let err = fails(&repo.run(&["verify", &id]), 5);
    assert!(err.contains("bytes"), "{err}");
    fails(
        &repo.run(&["restore", &id, "--db", &cluster.url("trunc"), "--create"]),
        5,
    );
    assert!(!database_exists(&cluster, "trunc").await);

    // Missing.
    std::fs::remove_file(&payload).unwrap();
    let err = fails(&repo.run(&["verify", &id]), 5);
    assert!(err.contains("missing"), "{err}");
    fails(
        &repo.run(&["restore", &id, "--db", &cluster.url("gone"), "--create"]),
        5,
    );
    assert!(!database_exists(&cluster, "gone").await);

    // Restored file: everything works again.
    std::fs::write(&payload, &pristine).unwrap();
    repo.json(&["verify", &id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_fails_clearly_before_touching_anything() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    let id = repo.backup(&["--db", &cluster.url("app")]);
    let other = repo.path().join("other.key");
    ok(&drctl(
        &["keygen", "--output", other.to_str().unwrap()],
        &[],
    ));
    let env = [("DR_KEY_FILE", other.to_str().unwrap())];
    for args in [
        vec!["verify", id.as_str()],
        vec!["cat", id.as_str()],
        vec!["restore", id.as_str(), "--create"],
        vec!["backup"],
    ] {
        let mut all = args.clone();
        let db = cluster.url("wrongkey");
        if args[0] == "restore" || args[0] == "backup" {
            all.extend(["--db", db.as_str()]);
        }
        all.extend(["--repo", repo.url.as_str()]);
        let err = fails(&drctl(&all, &env), 4);
        assert!(err.contains("not a key of this repository"), "{err}");
    }
    assert!(!database_exists(&cluster, "wrongkey").await);
    // The passphrase path says the same kind of thing.
    let out = drctl(
        &["verify", &id, "--repo", &repo.url],
        &[("DR_PASSPHRASE", "guess")],
    );
    fails(&out, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_backup_is_never_listed_and_the_next_one_works() {
    let cluster = cluster_with_sample(4).await;
    let repo = Repo::new();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"));
    admin_host_env(&mut cmd);
    let mut child = cmd
        .args(["backup", "--repo", &repo.url, "--db", &cluster.url("app")])
        .env("DR_KEY_FILE", &repo.key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the upload has started writing, then SIGKILL.
    let backups = std::path::Path::new(&repo.url).join("backups");
    let started = std::time::Instant::now();
    loop {
        let written: u64 = walk_size(&backups);
        if written > 512 * 1024 {
            break;
        }
        assert!(
            started.elapsed().as_secs() < 60,
            "backup never started writing"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup finished before it could be killed"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    assert_eq!(
        repo.json(&["list"]),
        serde_json::json!([]),
        "killed backup is not listed"
    );
    let out = repo.run(&[
        "restore",
        "latest",
        "--db",
        &cluster.url("none"),
        "--create",
    ]);
    fails(&out, 3);
    let err = fails(&repo.run(&["verify"]), 3);
    assert!(err.contains("no complete backups"), "{err}");

    let id = repo.backup(&["--db", &cluster.url("app")]);
    let list = repo.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], id.as_str());
    repo.json(&["verify", "--all"]);
}

fn walk_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                walk_size(&p)
            } else {
                p.metadata().map(|m| m.len()).unwrap_or(0)
            }
        })
        .sum()
}

#[test]
fn keygen_refuses_to_overwrite_and_writes_mode_0600() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    ok(&drctl(&["keygen", "--output", key.to_str().unwrap()], &[]));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&key).unwrap();
    let err = fails(
        &drctl(&["keygen", "--output", key.to_str().unwrap()], &[]),
        6,
    );
    assert!(err.contains(key.to_str().unwrap()), "{err}");
    assert_eq!(std::fs::read(&key).unwrap(), before);
}

/// `drctl … | head` closes the pipe early: drctl ends quietly (141, as if by SIGPIPE), without
/// a panic on stderr.
#[test]
fn a_closed_stdout_ends_drctl_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(["keygen", "--output", key.to_str().unwrap()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take()); // the reader is gone before drctl prints
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(key.exists(), "the work before the print was done");
}

#[test]
fn bad_input_gets_a_clear_one_line_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let err = fails(
        &drctl(&["list", "--repo", missing.to_str().unwrap()], &[]),
        3,
    );
    assert!(err.contains("does not exist"), "{err}");
    let repo = Repo::new();
    let err = fails(
        &repo.run(&[
            "backup",
            "--db",
            "postgres://u@127.0.0.1:1/db",
            "--compression",
            "lz4",
        ]),
        2,
    );
    assert!(err.contains("lz4"), "{err}");
    let err = fails(
        &repo.run(&["restore", "../../etc", "--db", "postgres://u@127.0.0.1:1/x"]),
        2,
    );
    assert!(err.contains("not a valid backup id"), "{err}");
    let err = fails(
        &drctl(
            &["init", "--repo", &repo.url],
            &[("DR_KEY_FILE", repo.key.to_str().unwrap())],
        ),
        6,
    );
    assert!(err.contains("already exists"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_restores_checks_measures_and_drops_the_scratch_database() {
    let cluster = cluster_with_sample(1).await;
    let repo = Repo::new();
    repo.json(&["backup", "--db", &cluster.url("app")]);
    let scratch = cluster.url("app_drill");

    let report = repo.json(&["drill", "--db", &scratch, "--rto", "1h", "--rpo", "1h"]);
    assert_eq!(report["passed"], true, "{report}");
    assert_eq!(report["tables_checked"], 3);
    assert_eq!(report["rto_met"], true);
    assert_eq!(report["rpo_met"], true);
    let keys = report["foreign_keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "the sample's two foreign keys: {report}");
    assert!(keys.iter().all(|k| k["orphans"] == 0), "{report}");
    let checks = report["checks"].as_array().unwrap();
    let kinds: Vec<_> = checks.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["amcheck", "sequences"], "on by default: {report}");
    assert!(checks.iter().all(|c| c["passed"] == true), "{report}");
    assert!(report["restore_ms"].as_u64().unwrap() > 0);
    assert!(report["backup_age_secs"].as_i64().unwrap() < 3600);
    assert!(
        !database_exists(&cluster, "app_drill").await,
        "the scratch database is dropped"
    );

    // An objective the restore cannot meet fails the drill, and still drops the copy.
    let out = repo.run(&["drill", "--db", &scratch, "--rto", "0"]);
    let err = fails(&out, 1);
    assert!(err.contains("over the RTO"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("MISSED"));
    assert!(!database_exists(&cluster, "app_drill").await);

    // Never into the backed-up database itself, nor into one that exists.
    let err = fails(&repo.run(&["drill", "--db", &cluster.url("app")]), 2);
    assert!(err.contains("must not be the backed-up database"), "{err}");
    cluster.create_database("occupied").await.unwrap();
    let err = fails(&repo.run(&["drill", "--db", &cluster.url("occupied")]), 6);
    assert!(err.contains("already exists"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_finds_orphaned_rows_behind_a_foreign_key_that_was_not_valid() {
    let cluster = cluster_with_sample(1).await;
    // Scans of QR codes that are gone, under a key added NOT VALID (so never checked).
    cluster
        .execute_sql(
            "app",
            "ALTER TABLE \"QrCodeScan\" DROP CONSTRAINT \"QrCodeScan_qrCodeId_fkey\"; \
             DELETE FROM \"QrCode\" WHERE id IN (SELECT \"qrCodeId\" FROM \"QrCodeScan\" LIMIT 1); \
             ALTER TABLE \"QrCodeScan\" ADD CONSTRAINT scan_code FOREIGN KEY (\"qrCodeId\") \
               REFERENCES \"QrCode\"(id) NOT VALID;",
        )
        .await
        .unwrap();
    let orphans = {
        let c = cluster.connect("app").await.unwrap();
        c.query_one(
            "SELECT count(*) FROM \"QrCodeScan\" s WHERE NOT EXISTS \
             (SELECT 1 FROM \"QrCode\" q WHERE q.id = s.\"qrCodeId\")",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
    };
    assert!(orphans > 0);
    let repo = Repo::new();
    repo.json(&["backup", "--db", &cluster.url("app")]);

    let out = repo.run(&["--json", "drill", "--db", &cluster.url("app_drill")]);
    let err = fails(&out, 5);
    assert!(
        err.contains(&format!(
            "{orphans} rows of \"QrCodeScan\" reference missing rows of \"QrCode\" (foreign key scan_code)"
        )),
        "{err}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert!(!database_exists(&cluster, "app_drill").await);
}

#[test]
fn directory_backup_restores_files_links_and_modes_and_is_a_standard_tar() {
    use std::os::unix::fs::PermissionsExt;
    let repo = Repo::new();
    let tmp = tempfile::tempdir().unwrap();
    let uploads = tmp.path().join("uploads");
    std::fs::create_dir_all(uploads.join("2026/11")).unwrap();
    std::fs::create_dir_all(uploads.join("empty")).unwrap();
    let png: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(uploads.join("2026/11/qr-1.png"), &png).unwrap();
    std::fs::write(uploads.join("export.csv"), "id,name\n1,é\n").unwrap();
    std::fs::set_permissions(
        uploads.join("export.csv"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("2026/11/qr-1.png", uploads.join("latest.png")).unwrap();

    let backup = repo.json(&[
        "backup",
        "--dir",
        uploads.to_str().unwrap(),
        "--label",
        "uploads",
    ]);
    let id = backup["id"].as_str().unwrap().to_string();
    assert_eq!(backup["source"]["kind"], "files");
    assert_eq!(
        backup["tables"][0]["rows"], 2,
        "two regular files: {backup}"
    );
    assert_eq!(
        backup["tables"][0]["bytes"],
        png.len() as u64 + "id,name\n1,é\n".len() as u64
    );
    let verified = repo.json(&["verify", &id]);
    assert_eq!(verified[0]["ok"], true);
    assert_eq!(
        verified[0]["report"]["rows_checked"], 2,
        "verify re-counts the files in the archive: {verified}"
    );

    let restored = tmp.path().join("restored");
    let report = repo.json(&["restore", &id, "--dir", restored.to_str().unwrap()]);
    assert_eq!(report["rows_checked"], 2);
    assert_eq!(
        std::fs::read(restored.join("2026/11/qr-1.png")).unwrap(),
        png
    );
    assert_eq!(
        std::fs::read_link(restored.join("latest.png")).unwrap(),
        std::path::Path::new("2026/11/qr-1.png"),
        "links stay links"
    );
    let mode = std::fs::metadata(restored.join("export.csv"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
    assert!(restored.join("empty").is_dir());

    // A non-empty target is refused and untouched; --replace swaps the backup in.
    std::fs::write(restored.join("stray.txt"), "keep me").unwrap();
    let err = fails(
        &repo.run(&["restore", &id, "--dir", restored.to_str().unwrap()]),
        6,
    );
    assert!(err.contains("--replace"), "{err}");
    assert!(restored.join("stray.txt").exists());
    repo.json(&[
        "restore",
        &id,
        "--dir",
        restored.to_str().unwrap(),
        "--replace",
    ]);
    assert!(!restored.join("stray.txt").exists());
    assert_eq!(
        std::fs::read(restored.join("2026/11/qr-1.png")).unwrap(),
        png
    );
    assert_no_staging_left(tmp.path());

    // The payload is a standard tar archive.
    let out = repo.run(&["cat", &id]);
    ok(&out);
    let listing = std::process::Command::new("tar")
        .arg("-t")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(&out.stdout)?;
            child.wait_with_output()
        })
        .expect("tar (GNU tar, installed with the base system) lists the archive");
    let names = String::from_utf8_lossy(&listing.stdout);
    assert!(names.contains("2026/11/qr-1.png"), "{names}");

    // A database restore of a directory backup is refused before touching anything,
    // naming the series the backup belongs to.
    let err = fails(
        &repo.run(&["restore", &id, "--db", "postgres://postgres@127.0.0.1:1/x"]),
        2,
    );
    assert!(err.contains("belongs to series 'files:"), "{err}");
}

#[test]
fn a_tampered_directory_backup_restores_nothing() {
    let repo = Repo::new();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    std::fs::create_dir_all(&src).unwrap();
    let data: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i % 253) as u8 ^ (i >> 11) as u8)
        .collect();
    std::fs::write(src.join("big.bin"), &data).unwrap();
    let id = repo.backup(&["--dir", src.to_str().unwrap(), "--compression", "none"]);
    let payload = repo.payload(&id);
    let len = std::fs::metadata(&payload).unwrap().len();
    flip_byte(&payload, len / 2);

    let target = tmp.path().join("restored");
    let out = repo.run(&["restore", &id, "--dir", target.to_str().unwrap()]);
    let err = fails(&out, 5);
    assert!(
        err.contains("SHA-256") || err.contains("authentication failed"),
        "{err}"
    );
    assert!(!target.exists(), "nothing is put in place");
    assert_no_staging_left(tmp.path());
}

#[test]
fn verify_recounts_a_directory_backup_against_its_manifest() {
    let repo = Repo::new();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("a.txt"), "a").unwrap();
    std::fs::write(tmp.path().join("b.txt"), "bb").unwrap();
    let id = repo.backup(&["--dir", tmp.path().to_str().unwrap()]);
    // Someone edits the signed manifest: it no longer authenticates.
    let manifest_path = repo.payload(&id).with_file_name("manifest.json");
    let pristine = std::fs::read(&manifest_path).unwrap();
    let mut manifest: serde_json::Value = serde_json::from_slice(&pristine).unwrap();
    manifest["stats"]["tables"][0]["rows"] = 3.into();
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let err = fails(&repo.run(&["verify", &id]), 5);
    assert!(err.contains("not authenticated"), "{err}");
    // Someone holding the administrative key signs wrong counts: the archive disagrees.
    std::fs::write(&manifest_path, &pristine).unwrap();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let admin = dr::crypto::read_signing_key_file(&admin_paths().1).unwrap();
        let opened = dr::core::Repository::open(dr::storage::from_url(&repo.url).unwrap())
            .await
            .unwrap()
            .with_signing_key(std::sync::Arc::new(admin));
        let mut m = opened.manifest(&id).await.unwrap();
        m.stats.tables[0].rows = 3;
        opened.update_manifest(&m).await.unwrap();
    });
    let err = fails(&repo.run(&["verify", &id]), 5);
    assert!(
        err.contains("the archive holds 2 files (3 bytes), the manifest says 3 files (3 bytes)"),
        "{err}"
    );
}

/// A directory restore leaves no `.dr-restore-*` or `.dr-replaced-*` folder beside its target.
fn assert_no_staging_left(parent: &std::path::Path) {
    let leftovers: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".dr-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "no staging left behind: {leftovers:?}"
    );
}

/// The quick start: `drctl demo` loads the sample into a throwaway cluster, backs it up,
/// verifies, restores into a new database and finds every table identical.
#[cfg(feature = "demo")]
#[test]
fn demo_backs_up_verifies_restores_and_compares_the_sample() {
    let out = drctl(&["--json", "demo"], &[]);
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["identical"], true, "{report}");
    let tables: Vec<&str> = report["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert!(t["rows"].as_u64().unwrap() > 0, "{t}");
            assert_eq!(t["md5"].as_str().unwrap().len(), 32, "{t}");
            t["table"].as_str().unwrap()
        })
        .collect();
    assert_eq!(tables, common::sample::SAMPLE_TABLES);
    assert_eq!(report["tables_verified"], 3, "{report}");
    assert_eq!(report["tables_restored"], 3, "{report}");
}

/// Logs on stderr carry ANSI colour only on a terminal: a file (journald, cron mail, a
/// redirect) gets plain text, and so does a terminal when NO_COLOR is set.
#[test]
fn logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    let repo = Repo::new();
    // A password in the URL makes drctl log a warning; nothing listens on port 1, so the
    // backup then fails, which is beside the point here.
    let args = [
        "backup",
        "--db",
        "postgres://app:pw@127.0.0.1:1/app",
        "--repo",
        &repo.url,
    ];
    let warning = "contains a password";

    let log = repo.path().join("stderr.log");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_drctl"))
        .args(args)
        .env("DR_KEY_FILE", &repo.key)
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .status()
        .unwrap();
    assert!(!status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(warning), "{text}");
    assert!(!text.contains('\x1b'), "no ANSI codes in a file: {text:?}");

    // script(1) gives drctl a pseudo-terminal and copies what it writes to its stdout.
    let on_terminal = |no_color: Option<&str>| {
        let line = std::iter::once(env!("CARGO_BIN_EXE_drctl"))
            .chain(args)
            .collect::<Vec<_>>()
            .join(" ");
        let mut cmd = std::process::Command::new("script");
        cmd.args(["-q", "-e", "-c", &line, "/dev/null"])
            .env("DR_KEY_FILE", &repo.key)
            .env_remove("NO_COLOR")
            .stdin(std::process::Stdio::null());
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd
            .output()
            .expect("script(1) runs drctl on a terminal: install it with apt-get install bsdutils");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(text.contains(warning), "{text}");
        text
    };
    // Colour is an SGR sequence, ESC [ digits m; the progress spinner's line clearing
    // (ESC [ 2K) is not colour.
    let coloured = |text: &str| {
        text.split('\x1b').skip(1).any(|s| {
            s.strip_prefix('[')
                .and_then(|s| s.split_once('m'))
                .is_some_and(|(params, _)| params.chars().all(|c| c.is_ascii_digit() || c == ';'))
        })
    };
    let text = on_terminal(None);
    assert!(coloured(&text), "colour on a terminal: {text:?}");
    let text = on_terminal(Some("1"));
    assert!(!coloured(&text), "NO_COLOR=1: {text:?}");
    // NO_COLOR set but empty does not count (https://no-color.org).
    let text = on_terminal(Some(""));
    assert!(coloured(&text), "empty NO_COLOR: {text:?}");
}
