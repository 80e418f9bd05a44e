//! `drctl backup --physical --pgdata`: dr copies the data directory itself, under pgbench
//! load, of a cluster whose pgbench tables live in a tablespace. `drctl verify` checks every
//! file's SHA-256 against the manifest; a point-in-time restore puts the tablespace beside
//! the data directory (or where `--tablespace-map` says), the server starts, and the
//! markers and pgbench's balance invariant are right.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{drctl, ok, pgbench, Archive};
use dr::db::testing::TestCluster;

const DRCTL: &str = env!("CARGO_BIN_EXE_drctl");

/// Insert marker `id`: the times just before and after its commit.
async fn write_marker(client: &tokio_postgres::Client, id: i32) -> (DateTime<Utc>, DateTime<Utc>) {
    let before = Utc::now();
    client
        .execute("INSERT INTO marker VALUES ($1)", &[&id])
        .await
        .unwrap();
    let after = Utc::now();
    tokio::time::sleep(Duration::from_millis(150)).await;
    (before, after)
}

/// Start a server on a restored directory, wait for the end of recovery, and return the
/// markers, whether pgbench's balances agree, and the rows of the tablespace's own table.
async fn start_and_read(pgdata: &Path) -> (Vec<i32>, bool, i64) {
    let restored = common::start_recovered(pgdata, "restore").await;
    let c = restored.connect("app").await.unwrap();
    let ids: Vec<i32> = c
        .query("SELECT id FROM marker ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let row = c
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::bigint,
                    (SELECT sum(bbalance) FROM pgbench_branches)::bigint,
                    (SELECT sum(tbalance) FROM pgbench_tellers)::bigint,
                    (SELECT count(*) FROM in_tablespace)",
            &[],
        )
        .await
        .unwrap();
    let (a, b, t, n): (i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3));
    (ids, a == b && b == t, n)
}

/// Whether the segment before the current position is archived.
async fn switched_segment_archived(c: &tokio_postgres::Client) -> bool {
    c.query_one(
        "SELECT coalesce(last_archived_wal >= pg_walfile_name(pg_current_wal_lsn() - 1), false) \
         FROM pg_stat_archiver",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_mode_backup_with_a_tablespace_restores_to_a_point() {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = root.path().join("repo").to_str().unwrap().to_string();
    let key = root.path().join("repo.key").to_str().unwrap().to_string();
    ok(&drctl(&["keygen", "--output", &key], &[]));
    let archive = Archive { root, repo, key };
    ok(&archive.run(&["init"]));

    let cluster = TestCluster::start_with_settings("archive_mode = on\narchive_command = ''\n")
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    let ts = archive.dir("ts1");
    std::fs::create_dir_all(&ts).unwrap();
    for p in [Path::new(&archive.repo), Path::new(&archive.key), &ts] {
        cluster.give_to_server(p).await.unwrap();
    }
    let push = format!(
        "'{DRCTL}' wal-push --repo '{}' --key-file '{}' %p",
        archive.repo, archive.key
    );
    cluster.create_database("app").await.unwrap();
    for sql in [
        format!(
            "ALTER SYSTEM SET archive_command = '{}'",
            push.replace('\'', "''")
        ),
        "SELECT pg_reload_conf()".into(),
        format!("CREATE TABLESPACE ts1 LOCATION '{}'", ts.display()),
        "CREATE TABLE marker (id int PRIMARY KEY)".into(),
        "CREATE TABLE in_tablespace TABLESPACE ts1 AS SELECT g AS id FROM generate_series(1, 5000) g"
            .into(),
    ] {
        cluster.execute_sql("app", &sql).await.unwrap();
    }
    let init = pgbench(&cluster, &["-i", "-s", "1", "-q", "--tablespace=ts1"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    // The copy runs under load; markers before, during and after it.
    let mut load = pgbench(&cluster, &["-c", "2", "-T", "10", "-n"])
        .spawn()
        .unwrap();
    let client = cluster.connect("app").await.unwrap();
    let mut markers = Vec::new();
    for id in 1..=3 {
        markers.push(write_marker(&client, id).await);
    }
    let url = cluster.url("app");
    let pgdata = cluster.data_dir().to_str().unwrap().to_string();
    let backup = archive.run(&[
        "--json",
        "backup",
        "--physical",
        "--pgdata",
        &pgdata,
        "--db",
        &url,
    ]);
    ok(&backup);
    let printed: serde_json::Value = serde_json::from_slice(&backup.stdout).unwrap();
    let id = printed["id"].as_str().unwrap().to_string();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(&archive.repo)
                .join("backups")
                .join(&id)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["source"]["format"], "dr-pgdata-tar", "{manifest}");
    let props = &manifest["stats"]["properties"];
    let map = props["tablespace_map"].as_str().unwrap_or_default();
    assert!(map.contains(ts.to_str().unwrap()), "{manifest}");
    let files = props["files"].as_str().unwrap();
    assert!(files.lines().any(|l| l.ends_with(" backup_label")));
    assert!(files.lines().any(|l| l.contains(" pg_tblspc/")));
    for skipped in [" postmaster.pid", " pg_wal/0000"] {
        assert!(!files.contains(skipped), "{skipped} was copied");
    }
    for id in 4..=12 {
        markers.push(write_marker(&client, id).await);
    }
    let status = load.wait().unwrap();
    assert!(status.success(), "pgbench failed");
    for id in 13..=14 {
        markers.push(write_marker(&client, id).await);
    }
    client
        .batch_execute("SELECT pg_switch_wal()")
        .await
        .unwrap();
    // Wait until the switched segment is archived.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !switched_segment_archived(&client).await {
        assert!(Instant::now() < deadline, "{}", cluster.log_tail());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // verify re-reads every file's SHA-256.
    let verified = archive.run(&["--json", "verify", &id]);
    ok(&verified);
    let v: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    let text = v.to_string();
    let n_files = files.lines().count() as u64;
    assert!(
        text.contains(&format!("\"rows_checked\":{n_files}")),
        "{n_files} files checked: {text}"
    );

    // A point in time between markers 8 and 9, tablespace beside the data directory.
    let between = markers[7].1 + (markers[8].0 - markers[7].1) / 2;
    let restored = archive.dir("restore-time");
    ok(&archive.run(&[
        "restore",
        &id,
        "--pgdata",
        restored.to_str().unwrap(),
        "--target-time",
        &between.to_rfc3339(),
    ]));
    let oid = map.split_whitespace().next().unwrap();
    let beside = archive.dir(&format!("restore-time-tablespace-{oid}"));
    let link = restored.join("pg_tblspc").join(oid);
    assert_eq!(std::fs::read_link(&link).unwrap(), beside);
    // The server (another user when we are root) must own the relocated tablespace.
    cluster.give_to_server(&beside).await.unwrap();
    let (ids, balanced, rows) = start_and_read(&restored).await;
    assert_eq!(ids, (1..=8).collect::<Vec<_>>());
    assert!(balanced, "pgbench balances disagree");
    assert_eq!(rows, 5000);

    // The end of the archive, tablespace where --tablespace-map says.
    let restored = archive.dir("restore-latest");
    let elsewhere = archive.dir("elsewhere");
    ok(&archive.run(&[
        "restore",
        &id,
        "--pgdata",
        restored.to_str().unwrap(),
        "--tablespace-map",
        &format!("{}={}", ts.display(), elsewhere.display()),
    ]));
    assert_eq!(
        std::fs::read_link(restored.join("pg_tblspc").join(oid)).unwrap(),
        elsewhere
    );
    cluster.give_to_server(&elsewhere).await.unwrap();
    let (ids, balanced, rows) = start_and_read(&restored).await;
    assert_eq!(ids, (1..=14).collect::<Vec<_>>());
    assert!(balanced, "pgbench balances disagree");
    assert_eq!(rows, 5000);

    // The same copy as a dr.toml job: `pgdata` on a physical backup job.
    let config = archive.dir("dr.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"{}\"\n\n[database]\nurl = \"{url}\"\n\n[key]\nfile = \"{}\"\n\n\
             [jobs.base]\nkind = \"backup\"\nphysical = true\npgdata = \"{pgdata}\"\n",
            archive.repo, archive.key
        ),
    )
    .unwrap();
    let run = drctl(
        &[
            "--json",
            "run",
            "--config",
            config.to_str().unwrap(),
            "--once",
            "base",
        ],
        &[],
    );
    ok(&run);
    let outcome: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(outcome[0]["ok"], true, "{outcome}");
    let job_id = outcome[0]["summary"]["figures"]["backup_id"]
        .as_str()
        .unwrap();
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            Path::new(&archive.repo)
                .join("backups")
                .join(job_id)
                .join("manifest.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["source"]["format"], "dr-pgdata-tar", "{manifest}");
}
