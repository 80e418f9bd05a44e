//! Continuous archiving and point-in-time recovery end to end, on one real cluster under a
//! pgbench load: `drctl wal-push` as its archive_command, `drctl backup --physical`, and
//! `drctl restore --pgdata` to several targets (a time, a restore point, an LSN, an xid and
//! the end of the archive), each restored cluster started and checked: exactly the markers
//! committed before the target, and pgbench's balance invariant. Then the damage cases on
//! the same archive: a re-push, a different file under an archived name, a segment of
//! another system, a flipped stored byte, a missing segment, a timeline history.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{drctl, fails, ok, pgbench, Archive};
use dr::db::testing::TestCluster;

const DRCTL: &str = env!("CARGO_BIN_EXE_drctl");

async fn query_i64(cluster: &TestCluster, sql: &str) -> i64 {
    let c = cluster.connect("app").await.unwrap();
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn query_text(cluster: &TestCluster, sql: &str) -> String {
    let c = cluster.connect("app").await.unwrap();
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// One marker row per committed transaction, with the times around its commit.
struct Marker {
    before: DateTime<Utc>,
    after: DateTime<Utc>,
    lsn_after: String,
    xid: i64,
}

async fn write_marker(client: &tokio_postgres::Client, id: i64) -> Marker {
    let before = Utc::now();
    let row = client
        .query_one(
            "INSERT INTO marker VALUES ($1) RETURNING txid_current()",
            &[&(id as i32)],
        )
        .await
        .unwrap();
    let after = Utc::now();
    let lsn_after: String = client
        .query_one("SELECT pg_current_wal_insert_lsn()::text", &[])
        .await
        .unwrap()
        .get(0);
    tokio::time::sleep(Duration::from_millis(150)).await;
    Marker {
        before,
        after,
        lsn_after,
        xid: row.get(0),
    }
}

/// Switch to a new segment and wait until the archiver has pushed the one just finished.
async fn archive_current(cluster: &TestCluster) {
    let c = cluster.connect("app").await.unwrap();
    let name: String = c
        .query_one("SELECT pg_walfile_name(pg_current_wal_lsn())", &[])
        .await
        .unwrap()
        .get(0);
    c.batch_execute("SELECT pg_switch_wal()").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = c
            .query_one(
                "SELECT coalesce(last_archived_wal, ''), failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver",
                &[],
            )
            .await
            .unwrap();
        let last: String = row.get(0);
        if last.len() >= 24 && last[..24] >= name[..] {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} was not archived within 60 s (archiver: last {last}, failed {} times, last failed {}); server log: {}",
            row.get::<_, i64>(1),
            row.get::<_, String>(2),
            cluster.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restore to a target with drctl, start a server on it, wait for the end of recovery and
/// return the marker ids and whether pgbench's balances agree.
async fn restore_and_read(archive: &Archive, name: &str, target: &[&str]) -> (Vec<i64>, bool) {
    restore_backup_and_read(archive, name, "latest", target).await
}

/// [`restore_and_read`] of the base backup `id`.
async fn restore_backup_and_read(
    archive: &Archive,
    name: &str,
    id: &str,
    target: &[&str],
) -> (Vec<i64>, bool) {
    let pgdata = archive.dir(name);
    let mut args = vec!["restore", id, "--pgdata", pgdata.to_str().unwrap()];
    args.extend_from_slice(target);
    ok(&archive.run(&args));
    assert!(pgdata.join("recovery.signal").is_file());
    let auto = std::fs::read_to_string(pgdata.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("archive_mode = 'off'"), "{auto}");
    let restored = common::start_recovered(&pgdata, name).await;
    let c = restored.connect("app").await.unwrap();
    let ids: Vec<i64> = c
        .query("SELECT id::bigint FROM marker ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let row = c
        .query_one(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts)::bigint,
                    (SELECT sum(bbalance) FROM pgbench_branches)::bigint,
                    (SELECT sum(tbalance) FROM pgbench_tellers)::bigint",
            &[],
        )
        .await
        .unwrap();
    let (a, b, t): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
    (ids, a == b && b == t)
}

fn upto(n: i64) -> Vec<i64> {
    (1..=n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_in_time_recovery_under_load_and_damage() {
    // The server (as root: the postgres user) must reach the repository, key and drctl.
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
    cluster
        .give_to_server(Path::new(&archive.repo))
        .await
        .unwrap();
    cluster
        .give_to_server(Path::new(&archive.key))
        .await
        .unwrap();
    let command = format!(
        "'{DRCTL}' wal-push --repo '{}' --key-file '{}' %p",
        archive.repo, archive.key
    );
    cluster.create_database("app").await.unwrap();
    let set = format!(
        "ALTER SYSTEM SET archive_command = '{}'",
        command.replace('\'', "''")
    );
    for sql in [
        set.as_str(),
        "SELECT pg_reload_conf()",
        "CREATE TABLE marker (id int PRIMARY KEY)",
    ] {
        cluster.execute_sql("app", sql).await.unwrap();
    }
    let init = pgbench(&cluster, &["-i", "-s", "1", "-q"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    // Load during and after the base backup.
    let mut load = pgbench(&cluster, &["-c", "2", "-T", "12", "-n"])
        .spawn()
        .unwrap();
    let client = cluster.connect("app").await.unwrap();
    let mut markers = Vec::new();
    for id in 1..=4 {
        markers.push(write_marker(&client, id).await);
    }
    let url = cluster.url("app");
    let backup = archive.run(&["--json", "backup", "--physical", "--db", &url]);
    ok(&backup);
    let manifest: serde_json::Value = serde_json::from_slice(&backup.stdout).unwrap();
    let sysid = query_text(
        &cluster,
        "SELECT system_identifier::text FROM pg_control_system()",
    )
    .await;
    assert_eq!(
        manifest["series"],
        format!("postgres-physical:{sysid}:cluster")
    );
    assert!(manifest["source"]["kind"] == "postgres-physical");
    for id in 5..=14 {
        markers.push(write_marker(&client, id).await);
        if id == 9 {
            client
                .batch_execute("SELECT pg_create_restore_point('after-9')")
                .await
                .unwrap();
        }
    }
    let status = load.wait().unwrap();
    assert!(status.success(), "pgbench failed");
    for id in 15..=16 {
        markers.push(write_marker(&client, id).await);
    }
    archive_current(&cluster).await;
    let _ = query_i64(&cluster, "SELECT count(*) FROM marker").await;

    // The archive's state.
    let state = archive.run(&["--json", "wal", "verify"]);
    ok(&state);
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    assert_eq!(state[0]["system_identifier"], sysid.as_str());
    assert_eq!(state[0]["gaps"].as_array().unwrap().len(), 0, "{state}");
    assert_eq!(state[0]["window"].as_array().unwrap().len(), 1, "{state}");
    // verify --all reads every backup and checks the WAL continues from each base backup.
    let verified = archive.run(&["--json", "verify", "--all"]);
    ok(&verified);
    let verified: serde_json::Value = serde_json::from_slice(&verified.stdout).unwrap();
    let wal_entry = verified
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == format!("WAL of cluster {sysid}"))
        .unwrap_or_else(|| panic!("{verified}"));
    assert_eq!(wal_entry["ok"], true, "{wal_entry}");

    // Each target gives exactly the markers committed before it.
    let m = |id: i64| &markers[id as usize - 1];
    let between = m(6).after + (m(7).before - m(6).after) / 2;
    let cases: Vec<(&str, Vec<String>, Vec<i64>)> = vec![
        (
            "time",
            vec!["--target-time".into(), between.to_rfc3339()],
            upto(6),
        ),
        (
            "name",
            vec!["--target-name".into(), "after-9".into()],
            upto(9),
        ),
        (
            "lsn",
            vec!["--target-lsn".into(), m(11).lsn_after.clone()],
            upto(11),
        ),
        (
            "xid",
            vec!["--target-xid".into(), m(13).xid.to_string()],
            upto(13),
        ),
        ("latest", vec![], upto(16)),
    ];
    for (name, target, expected) in cases {
        let target: Vec<&str> = target.iter().map(String::as_str).collect();
        let (ids, balanced) = restore_and_read(&archive, &format!("restore-{name}"), &target).await;
        assert_eq!(ids, expected, "target {name}");
        assert!(balanced, "target {name}: pgbench balances disagree");
    }

    physical_drills(&archive, &markers).await;

    // A non-empty directory is refused before anything is read.
    let full = archive.dir("restore-latest");
    let e = fails(
        &archive.run(&["restore", "latest", "--pgdata", full.to_str().unwrap()]),
        6,
    );
    assert!(e.contains("not empty"), "{e}");
    // A target before the first backup was consistent is refused before writing.
    let early = archive.dir("restore-early");
    let out = archive.run(&[
        "restore",
        "latest",
        "--pgdata",
        early.to_str().unwrap(),
        "--target-time",
        &(m(1).before - chrono::Duration::hours(1)).to_rfc3339(),
    ]);
    assert!(!out.status.success());
    assert!(std::fs::read_dir(&early)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true));

    // Retention: a second base backup, more WAL, then keep only the newest backup. The WAL
    // before it goes, and the kept backup still restores to the end of the archive.
    ok(&archive.run(&["backup", "--physical", "--db", &url]));
    for id in 17..=19 {
        markers.push(write_marker(&client, id).await);
        archive_current(&cluster).await;
    }
    let before = archived_segments(&archive, &sysid);

    // The stored policy keeps one backup but a 7-day PITR window: the older backup anchors
    // the window, so it stays with all its WAL, and each kept backup restores to the end.
    ok(&archive.run(&["retention", "set", "--keep-last", "1", "--keep-pitr", "7d"]));
    let shown = archive.run(&["--json", "retention", "show"]);
    ok(&shown);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["retention"]["keep_pitr"], "7d", "{shown}");
    let pruned = archive.run(&["--json", "prune"]);
    ok(&pruned);
    // (The live server may archive more meanwhile.)
    let after_pitr_prune = archived_segments(&archive, &sysid);
    assert!(
        before.iter().all(|s| after_pitr_prune.contains(s)),
        "the window keeps every segment: {before:?} -> {after_pitr_prune:?}"
    );
    let kept = archive.json_list();
    assert_eq!(kept.len(), 2, "{kept:?}");
    for (i, b) in kept.iter().enumerate() {
        let id = b["id"].as_str().unwrap();
        let (ids, balanced) =
            restore_backup_and_read(&archive, &format!("restore-kept-{i}"), id, &[]).await;
        assert_eq!(ids, upto(19), "backup {id}");
        assert!(balanced, "backup {id}");
    }

    let before = archived_segments(&archive, &sysid);
    let pruned = archive.run(&["--json", "prune", "--keep-last", "1"]);
    ok(&pruned);
    let items: serde_json::Value = serde_json::from_slice(&pruned.stdout).unwrap();
    let wal_deleted = items
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["wal_file"].as_str().is_some_and(|n| n.len() == 24) && i["keep"] == false)
        .count();
    let after = archived_segments(&archive, &sysid);
    // (The live server may archive a segment meanwhile: count what went, not the totals.)
    let gone = before.iter().filter(|s| !after.contains(s)).count();
    assert!(wal_deleted > 0, "{items}");
    assert_eq!(gone, wal_deleted, "{items}");
    assert_eq!(archive.json_list().len(), 1);
    let (ids, balanced) = restore_and_read(&archive, "restore-after-prune", &[]).await;
    assert_eq!(ids, upto(19));
    assert!(balanced);

    let mut cluster = cluster;
    crash(&archive, &mut cluster, &mut markers).await;
    timelines(&archive, &markers).await;
    damage(&archive, &cluster, &sysid).await;
}

/// `drctl drill --physical`: to the end of the archive (every marker, checks in every
/// database, RTO and RPO measured, the scratch directory removed, the record in `status`),
/// and to a time.
async fn physical_drills(archive: &Archive, markers: &[Marker]) {
    let scratch = archive.dir("drills");
    std::fs::create_dir_all(&scratch).unwrap();
    let scratch_arg = scratch.to_str().unwrap();
    let out = archive.run(&[
        "--json",
        "drill",
        "--physical",
        "latest",
        "--scratch",
        scratch_arg,
        "--rpo",
        "1h",
        "--rto",
        "10m",
    ]);
    ok(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["passed"], true, "{r}");
    assert_eq!(r["stopped_early"], false, "{r}");
    assert_eq!(r["rto_met"], true, "{r}");
    assert_eq!(r["rpo_met"], true, "{r}");
    // Recovery replayed at least the newest marker's commit (autovacuum may commit after).
    let newest = markers.last().unwrap();
    let recovered: DateTime<Utc> = r["recovered_to"].as_str().unwrap().parse().unwrap();
    assert!(
        recovered >= newest.before && recovered <= Utc::now(),
        "recovered to {recovered}, the newest marker committed at {}: {r}",
        newest.before
    );
    let names: Vec<&str> = r["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for want in ["app: amcheck", "app: sequences", "postgres: amcheck"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    let recovery_ms = r["recovery_ms"].as_u64().unwrap();
    assert!(recovery_ms >= r["restore_ms"].as_u64().unwrap());
    eprintln!(
        "physical drill: RTO {recovery_ms} ms (base backup {} ms), achieved RPO {} s",
        r["restore_ms"], r["recovery_point_secs"]
    );
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "the scratch directory was not removed"
    );

    // `drctl status` shows the drill's measured figures for the physical series.
    let physical = &physical_series_status(archive);
    assert_eq!(physical["last_drill"]["recovery_time_ms"], recovery_ms);
    assert_eq!(physical["last_drill"]["passed"], true);
    wal_status(archive, physical, markers);

    // To a time: the markers up to it, and nothing of the next one.
    let m = |id: usize| &markers[id - 1];
    let between = m(6).after + (m(7).before - m(6).after) / 2;
    let out = archive.run(&[
        "--json",
        "drill",
        "--physical",
        "latest",
        "--scratch",
        scratch_arg,
        "--target-time",
        &between.to_rfc3339(),
        "--no-amcheck",
    ]);
    ok(&out);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let recovered: DateTime<Utc> = r["recovered_to"].as_str().unwrap().parse().unwrap();
    assert!(
        recovered <= between && recovered >= m(6).before,
        "recovered to {recovered}: {r}"
    );
}

/// The WAL part of `drctl status` (`series`: the physical series' JSON status): the newest
/// segment's age, the PITR window from the base backup to the newest marker, no gaps; an
/// RPO shorter than that age is a breach naming the WAL (exit 2), a longer one is met
/// although the base backup itself is older; the Prometheus gauges pass promtool.
fn wal_status(archive: &Archive, series: &serde_json::Value, markers: &[Marker]) {
    let wal = &series["wal"];
    let age = wal["newest_age_secs"]
        .as_i64()
        .unwrap_or_else(|| panic!("{series}"));
    assert!((0..600).contains(&age), "{series}");
    assert_eq!(wal["gaps"], 0, "{series}");
    let from: DateTime<Utc> = wal["window_from"].as_str().unwrap().parse().unwrap();
    let to: DateTime<Utc> = wal["window_to"].as_str().unwrap().parse().unwrap();
    assert!(
        from > markers[3].after && from < markers[4].before,
        "the window starts when the base backup (between markers 4 and 5) was consistent: {series}"
    );
    assert!(to >= markers.last().unwrap().before, "{series}");

    std::thread::sleep(Duration::from_millis(1100));
    let out = archive.run(&["--json", "status", "--rpo", "1s"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("the newest archived WAL"), "{text}");
    let out = archive.run(&["--json", "status", "--rpo", "1h"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let physical = status["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["series"] == series["series"])
        .unwrap();
    assert_eq!(physical["rpo_met"], true, "{physical}");

    let out = archive.run(&["status", "--prometheus", "--rpo", "1h"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    for gauge in [
        "dr_wal_newest_age_seconds{",
        "dr_wal_pitr_window_seconds{",
        "dr_wal_pitr_window_start_timestamp_seconds{",
        "dr_wal_gaps{",
    ] {
        assert!(text.contains(gauge), "{gauge} missing: {text}");
    }
    common::promtool_accepts(&text);
}

/// The primary stopped with `-m immediate` under pgbench load, markers committed up to the
/// end: a restore to the end of the archive holds every marker committed before the newest
/// archived segment was closed, no marker it lacks is older than that, and pgbench's
/// balances agree. Prints the achieved RPO (data lost: the crash time minus the newest
/// restored marker's commit).
async fn crash(archive: &Archive, cluster: &mut TestCluster, markers: &mut Vec<Marker>) {
    let mut load = pgbench(cluster, &["-c", "2", "-T", "30", "-n"])
        .spawn()
        .unwrap();
    let client = cluster.connect("app").await.unwrap();
    let first = markers.len() as i64 + 1;
    for id in first..first + 3 {
        markers.push(write_marker(&client, id).await);
    }
    archive_current(cluster).await;
    let archived_through = markers.len() as i64;
    for id in archived_through + 1..archived_through + 4 {
        markers.push(write_marker(&client, id).await);
    }
    let crashed_at = Utc::now();
    cluster.stop_immediately();
    let _ = load.kill();
    let _ = load.wait();
    drop(client);

    let (ids, balanced) =
        restore_and_read(archive, "restore-after-crash", &["--target-timeline", "1"]).await;
    let restored = *ids.last().unwrap();
    assert_eq!(ids, upto(restored), "a prefix of the markers");
    assert!(
        restored >= archived_through,
        "markers up to {archived_through} were archived before the crash, only {restored} restored"
    );
    assert!(
        balanced,
        "pgbench balances disagree after the crash restore"
    );
    let newest = &markers[restored as usize - 1];
    eprintln!(
        "crash: {} of {} markers recovered; achieved RPO {:.1} s (crash {} minus the newest recovered commit)",
        restored,
        markers.len(),
        (crashed_at - newest.after).num_milliseconds() as f64 / 1000.0,
        crashed_at.format("%H:%M:%S%.3f")
    );
}

/// Timelines: a restore of the crashed primary, promoted with archiving on (the failover),
/// archives its `00000002.history` and new WAL; a second point-in-time restore follows
/// timeline 2 to a time on it; a timeline the archive does not have is refused before the
/// data directory is written.
async fn timelines(archive: &Archive, markers: &[Marker]) {
    let pgdata = archive.dir("failover");
    ok(&archive.run(&[
        "restore",
        "latest",
        "--pgdata",
        pgdata.to_str().unwrap(),
        "--archive",
    ]));
    let promoted = common::start_recovered(&pgdata, "failover").await;
    let timeline: i32 = promoted
        .connect("app")
        .await
        .unwrap()
        .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(timeline, 2);
    let client = promoted.connect("app").await.unwrap();
    let first = markers.len() as i64 + 1;
    let mut on_two = Vec::new();
    for id in first..first + 3 {
        on_two.push(write_marker(&client, id).await);
    }
    archive_current(&promoted).await;
    let state = archive.run(&["--json", "wal", "list"]);
    ok(&state);
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    let timelines: Vec<u64> = state[0]["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["timeline"].as_u64().unwrap())
        .collect();
    assert!(timelines.contains(&2), "timeline 2's WAL archived: {state}");
    let history = Path::new(&archive.repo)
        .join("wal")
        .join(state[0]["system_identifier"].as_str().unwrap());
    let has_history = std::fs::read_dir(&history)
        .unwrap()
        .flat_map(|d| std::fs::read_dir(d.unwrap().path()).into_iter().flatten())
        .any(|f| {
            f.unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("00000002.history")
        });
    assert!(has_history, "00000002.history archived");

    // A second PITR onto timeline 2: up to the second marker written there.
    let between = on_two[1].after + (on_two[2].before - on_two[1].after) / 2;
    let (ids, balanced) = restore_and_read(
        archive,
        "restore-timeline-2",
        &[
            "--target-timeline",
            "2",
            "--target-time",
            &between.to_rfc3339(),
        ],
    )
    .await;
    assert_eq!(ids.last(), Some(&(first + 1)), "{ids:?}");
    assert!(ids.contains(&first) && !ids.contains(&(first + 2)));
    assert!(balanced);

    // Timeline 7 does not exist: refused before anything is written.
    let refused = archive.dir("restore-timeline-7");
    let out = archive.run(&[
        "restore",
        "latest",
        "--pgdata",
        refused.to_str().unwrap(),
        "--target-timeline",
        "7",
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("timeline") && !e.contains('\n'.to_string().repeat(2).as_str()),
        "{e}"
    );
    assert!(std::fs::read_dir(&refused)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true));
}

/// The complete segments archived on timeline 1, in order.
fn archived_segments(archive: &Archive, sysid: &str) -> Vec<String> {
    let dir = Path::new(&archive.repo)
        .join("wal")
        .join(sysid)
        .join("00000001");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_str()?.to_string();
            let seg = n.strip_suffix(".json")?;
            (seg.len() == 24).then(|| seg.to_string())
        })
        .collect();
    names.sort();
    names
}

/// Damage and refusals: re-pushes, a different file under an archived name, a segment of
/// another cluster (and the failure `drctl status` shows until a later push succeeds), a
/// flipped byte, a missing segment, timeline histories, faulty storage, key rotation.
async fn damage(archive: &Archive, cluster: &TestCluster, sysid: &str) {
    let pgdata = cluster.data_dir().to_str().unwrap().to_string();
    let work = archive.dir("damage");
    std::fs::create_dir_all(&work).unwrap();
    let segments = archived_segments(archive, sysid);
    assert!(segments.len() >= 3, "{segments:?}");
    let middle = segments[segments.len() / 2].clone();
    let fetched = work.join(&middle);

    // Fetch one back and push it again: an identical re-push succeeds.
    ok(&archive.run(&[
        "wal-fetch",
        "--pgdata",
        &pgdata,
        "--prefetch",
        "0",
        &middle,
        fetched.to_str().unwrap(),
    ]));
    let original = std::fs::read(&fetched).unwrap();
    let again = archive.run(&[
        "--json",
        "wal-push",
        "--pgdata",
        &pgdata,
        "--parallel",
        "1",
        fetched.to_str().unwrap(),
    ]);
    ok(&again);
    assert!(String::from_utf8_lossy(&again.stdout).contains("already_archived"));

    // Different contents under the same name fail loudly (exit 6).
    let mut changed = original.clone();
    changed[original.len() / 2] ^= 0x55;
    std::fs::write(&fetched, &changed).unwrap();
    let e = fails(
        &archive.run(&[
            "wal-push",
            "--pgdata",
            &pgdata,
            "--parallel",
            "1",
            fetched.to_str().unwrap(),
        ]),
        6,
    );
    assert!(
        e.contains("already archived with different contents"),
        "{e}"
    );
    // The failure is stored in the repository, but the file it names is archived: status
    // does not raise it.
    let failure_object = Path::new(&archive.repo)
        .join("wal")
        .join(sysid)
        .join("push-failure.json");
    assert!(failure_object.exists());
    assert_eq!(
        physical_wal_status(archive)["push_failure"],
        serde_json::Value::Null
    );

    // A segment whose header names another system (its xlp_sysid, at byte 24, changed) is
    // refused before anything is stored.
    let mut other = original.clone();
    other[24] ^= 0xff;
    let other_name = format!("{}FF", &middle[..22]);
    let other_path = work.join(&other_name);
    std::fs::write(&other_path, &other).unwrap();
    let out = archive.run(&[
        "wal-push",
        "--pgdata",
        &pgdata,
        "--parallel",
        "1",
        other_path.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("another cluster"), "{e}");
    assert!(!archived_segments(archive, sysid).contains(&other_name));
    // That failure lasts (the file is never archived): status raises it with its reason, on
    // any host that reads the repository, and so does the Prometheus output.
    let wal = physical_wal_status(archive);
    assert_eq!(wal["push_failure"]["file"], other_name.as_str(), "{wal}");
    assert!(
        wal["push_failure"]["message"]
            .as_str()
            .unwrap()
            .contains("another cluster"),
        "{wal}"
    );
    let out = archive.run(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("the WAL push of {other_name} failed")),
        "{text}"
    );
    let out = archive.run(&["status", "--prometheus"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("dr_wal_push_failing{") && l.ends_with(" 1")),
        "{text}"
    );
    assert!(
        text.contains("dr_wal_push_failure_timestamp_seconds{"),
        "{text}"
    );
    common::promtool_accepts(&text);

    // A flipped byte in the stored bytes is refused at fetch with the status that stops
    // recovery (126), never taken for "not archived".
    let tl = Path::new(&archive.repo)
        .join("wal")
        .join(sysid)
        .join("00000001");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tl.join(format!("{middle}.json"))).unwrap()).unwrap();
    let data = Path::new(&archive.repo).join(record["object"]["path"].as_str().unwrap());
    let stored = std::fs::read(&data).unwrap();
    let mut flipped = stored.clone();
    flipped[stored.len() / 2] ^= 1;
    std::fs::write(&data, &flipped).unwrap();
    let dest = work.join("flipped");
    let out = archive.run(&[
        "wal-fetch",
        "--pgdata",
        &pgdata,
        "--prefetch",
        "0",
        &middle,
        dest.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(126),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("modified"));
    assert!(!dest.exists());
    std::fs::write(&data, &stored).unwrap();

    // A missing segment in the middle: fetch names the gap and stops recovery; wal verify
    // fails; a restore past it is refused before the directory is written.
    std::fs::remove_file(tl.join(format!("{middle}.json"))).unwrap();
    let out = archive.run(&[
        "wal-fetch",
        "--pgdata",
        &pgdata,
        "--prefetch",
        "0",
        &middle,
        dest.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(126));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains(&middle) && e.contains("gap"), "{e}");
    let v = archive.run(&["wal", "verify"]);
    assert_eq!(
        v.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&v.stdout)
    );
    // verify --all fails (exit 5) naming the missing segment and the backups it cuts off.
    let v = archive.run(&["verify", "--all"]);
    let text = String::from_utf8_lossy(&v.stdout);
    assert_eq!(v.status.code(), Some(5), "{text}");
    assert!(
        text.contains(&format!("WAL of cluster {sysid}: FAILED"))
            && text.contains(&middle)
            && text.contains("stops before it"),
        "{text}"
    );
    let gap_dir = archive.dir("restore-gap");
    let out = archive.run(&["restore", "latest", "--pgdata", gap_dir.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "a restore across a gap must be refused"
    );
    assert!(std::fs::read_dir(&gap_dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true));
    // A segment that is simply past the end is "not archived" (exit 1).
    let past = format!("{}{:08X}", &middle[..16], 0xFEu32);
    let out = archive.run(&[
        "wal-fetch",
        "--pgdata",
        &pgdata,
        "--prefetch",
        "0",
        &past,
        dest.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A timeline history is stored once and never replaced.
    // (Timeline 2 is real by now: timelines() promoted a restore onto it.)
    let history = work.join("0000000A.history");
    std::fs::write(&history, "1\t0/5000000\tno recovery target specified\n").unwrap();
    ok(&archive.run(&["wal-push", "--pgdata", &pgdata, history.to_str().unwrap()]));
    // A successful push of a later file (in PostgreSQL's order) from the same data
    // directory removes the failure it stored.
    assert!(!failure_object.exists());
    assert_eq!(
        physical_wal_status(archive)["push_failure"],
        serde_json::Value::Null
    );
    std::fs::write(&history, "1\t0/6000000\tno recovery target specified\n").unwrap();
    let e = fails(
        &archive.run(&["wal-push", "--pgdata", &pgdata, history.to_str().unwrap()]),
        6,
    );
    assert!(e.contains("never replaced"), "{e}");

    faulty_pushes(archive, cluster.data_dir(), &pgdata, &segments[0], &work).await;
    rotate_over_wal(archive, &pgdata, &segments[0], &work);
}

/// The physical series in `drctl status --json`.
fn physical_series_status(archive: &Archive) -> serde_json::Value {
    let out = archive.run(&["--json", "status"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    status["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["series"]
                .as_str()
                .unwrap()
                .starts_with("postgres-physical:")
        })
        .unwrap_or_else(|| panic!("{status}"))
        .clone()
}

/// Its `wal` part.
fn physical_wal_status(archive: &Archive) -> serde_json::Value {
    physical_series_status(archive)["wal"].clone()
}

/// `WalPusher` (the library under `drctl wal-push`) on storage that fails: a push cut off
/// in the middle of its upload (its future dropped, as a killed process would stop) leaves
/// the segment not archived and the next push stores it; pushes through storage that fails
/// transiently, or loses the response after committing the record, succeed with retries.
/// The faults come from dr-storage's `FaultyTarget` (a real local repository underneath).
async fn faulty_pushes(
    archive: &Archive,
    pgdata_dir: &Path,
    pgdata: &str,
    segment: &str,
    work: &Path,
) {
    use dr::core::wal::WalArchive;
    use dr::db::wal::{Pushed, WalPusher};
    use dr::storage::faults::{Fault, FaultyTarget, Op, Trigger};
    use std::sync::Arc;

    let file = work.join(segment);
    ok(&archive.run(&[
        "wal-fetch",
        "--pgdata",
        pgdata,
        "--prefetch",
        "0",
        segment,
        file.to_str().unwrap(),
    ]));
    let repo_dir = archive.dir("faulty-repo");
    ok(&drctl(
        &[
            "init",
            "--repo",
            repo_dir.to_str().unwrap(),
            "--key-file",
            &archive.key,
        ],
        &[],
    ));
    let open = |faulty: FaultyTarget<dyn dr::core::StorageTarget>| async move {
        let retrying: Arc<dyn dr::core::StorageTarget> =
            Arc::new(dr::storage::retry::RetryingTarget::new(
                Arc::new(faulty),
                dr::storage::retry::RetryPolicy::default(),
            ));
        dr::core::Repository::open(retrying).await.unwrap()
    };
    let local = || dr::storage::from_url(repo_dir.to_str().unwrap()).unwrap();
    let pusher = |repo: dr::core::Repository| {
        let encryptor = dr::keys::public_encryptor(&repo).unwrap();
        WalPusher::new(repo, Arc::new(encryptor), pgdata_dir).parallel(1)
    };

    // Cut off mid-upload: the data object's upload hangs, the push is dropped.
    let hanging = FaultyTarget::new(local(), 1).inject_at(
        Op::Put,
        "wal/",
        Trigger::FromNth(1),
        Fault::Delay(Duration::from_secs(600)),
    );
    let repo = open(hanging).await;
    let push = pusher(repo.clone());
    let cut = tokio::time::timeout(Duration::from_secs(2), push.push(&file)).await;
    assert!(cut.is_err(), "the hanging upload must not finish");
    let sysid: u64 = repo_dir
        .join("wal")
        .read_dir()
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .next()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    assert_ne!(sysid, 0, "the push registered the cluster before it hung");
    let wal = WalArchive::open(&repo, sysid).await.unwrap();
    let name = wal.parse_name(segment).unwrap();
    assert!(
        wal.record(name).await.unwrap().is_none(),
        "a cut-off push must leave the segment not archived"
    );

    // The next push, through storage that fails transiently and loses a response after
    // the record was committed, stores it.
    let faulty = FaultyTarget::new(local(), 2)
        .inject_at(Op::Put, "wal/", Trigger::Nth(1), Fault::transient())
        .inject_at(
            Op::PutIfAbsent,
            "wal/",
            Trigger::Nth(2),
            Fault::LoseResponse,
        )
        .inject_at(Op::Get, "wal/", Trigger::Nth(1), Fault::transient());
    let handle = faulty.clone();
    let repo = open(faulty).await;
    let report = pusher(repo.clone())
        .push(&file)
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(
        matches!(report.outcome, Pushed::Stored | Pushed::AlreadyArchived),
        "{report:?}"
    );
    assert!(
        handle.injected() >= 2,
        "faults were injected: {}",
        handle.injected()
    );
    // It is archived, and reads back byte for byte with the repository's key.
    let out = drctl(
        &[
            "wal-fetch",
            "--repo",
            repo_dir.to_str().unwrap(),
            "--key-file",
            &archive.key,
            "--pgdata",
            pgdata,
            "--prefetch",
            "0",
            segment,
            work.join("faulty-back").to_str().unwrap(),
        ],
        &[],
    );
    ok(&out);
    assert_eq!(
        std::fs::read(work.join("faulty-back")).unwrap(),
        std::fs::read(&file).unwrap()
    );
    // A second push is an identical re-push.
    let again = pusher(open(FaultyTarget::new(local(), 3)).await)
        .push(&file)
        .await
        .unwrap();
    assert_eq!(again.outcome, Pushed::AlreadyArchived);

    // A write-only host whose store refuses every delete (Object Lock, no DeleteObject)
    // archives into a fresh repository all the same: pushing deletes nothing.
    let locked_dir = archive.dir("no-deletes-repo");
    ok(&drctl(
        &[
            "init",
            "--repo",
            locked_dir.to_str().unwrap(),
            "--key-file",
            &archive.key,
        ],
        &[],
    ));
    let no_deletes = FaultyTarget::new(
        dr::storage::from_url(locked_dir.to_str().unwrap()).unwrap(),
        4,
    )
    .inject(
        Op::Delete,
        Trigger::Always,
        Fault::permanent(dr::core::ErrorKind::Storage),
    );
    let report = pusher(open(no_deletes).await)
        .push(&file)
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(report.outcome, Pushed::Stored, "{report:?}");
}

/// `drctl key rotate` re-wraps every WAL file's data key too: afterwards the new key fetches
/// archived WAL (every byte checked) and the old one is refused.
fn rotate_over_wal(archive: &Archive, pgdata: &str, segment: &str, work: &Path) {
    let new_key = archive.dir("new.key");
    let out = drctl(
        &["--json", "keygen", "--output", new_key.to_str().unwrap()],
        &[],
    );
    ok(&out);
    let keygen: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let recipient = keygen["recipient"].as_str().unwrap();
    let out = archive.run(&["--json", "key", "rotate", "--new-recipient", recipient]);
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let wal_files = report["wal_files"].as_u64().unwrap();
    assert!(wal_files > 3, "{report}");
    assert_eq!(report["wal_wraps_added"], wal_files, "{report}");
    assert_eq!(report["wal_wraps_removed"], wal_files, "{report}");

    let fetch = |key: &Path, dest: &Path| {
        drctl(
            &[
                "wal-fetch",
                "--repo",
                &archive.repo,
                "--key-file",
                key.to_str().unwrap(),
                "--pgdata",
                pgdata,
                "--prefetch",
                "0",
                segment,
                dest.to_str().unwrap(),
            ],
            &[],
        )
    };
    ok(&fetch(&new_key, &work.join("with-new-key")));
    assert_eq!(
        std::fs::metadata(work.join("with-new-key")).unwrap().len(),
        16 << 20
    );
    let old = fetch(Path::new(&archive.key), &work.join("with-old-key"));
    assert!(!old.status.success(), "the revoked key still opens WAL");
    assert!(!work.join("with-old-key").exists());
}
