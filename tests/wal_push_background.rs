//! `drctl wal-push`'s background pusher on one real cluster: a burst of segments archived by
//! PostgreSQL itself is in the repository byte for byte once the pusher is done; a pusher
//! killed (SIGKILL) in the middle of its pushes claims nothing it had not stored and the next
//! call succeeds; a storage failure in the pusher is reported by the next call.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{drctl, fails, ok, Archive};
use dr::db::testing::TestCluster;
use dr::db::wal::{Spool, WalPusher};

const DRCTL: &str = env!("CARGO_BIN_EXE_drctl");

struct Setup {
    archive: Archive,
    cluster: TestCluster,
    sysid: String,
}

impl Setup {
    fn pgdata(&self) -> &Path {
        self.cluster.data_dir()
    }

    fn spool(&self) -> Spool {
        Spool::new(self.pgdata().join("pg_wal").join("dr_spool"))
    }

    fn status(&self, name: &str, suffix: &str) -> PathBuf {
        self.pgdata()
            .join("pg_wal")
            .join("archive_status")
            .join(format!("{name}.{suffix}"))
    }

    /// `drctl wal-push` for `name` as PostgreSQL's archiver calls it (from the data
    /// directory, `%p` relative), with `extra` arguments.
    fn push(&self, name: &str, extra: &[&str]) -> Output {
        let p = format!("pg_wal/{name}");
        let mut args = vec!["wal-push", "--pgdata", self.pgdata().to_str().unwrap()];
        args.extend_from_slice(extra);
        args.push(&p);
        self.archive.run(&args)
    }

    /// What PostgreSQL's archiver does after a call returned 0.
    fn mark_done(&self, name: &str) {
        std::fs::rename(self.status(name, "ready"), self.status(name, "done")).unwrap();
    }

    /// The record of an archived segment, if it is archived.
    fn record(&self, name: &str) -> Option<serde_json::Value> {
        let path = Path::new(&self.archive.repo)
            .join("wal")
            .join(&self.sysid)
            .join(&name[..8])
            .join(format!("{name}.json"));
        let bytes = std::fs::read(path).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }

    /// Every segment of `originals` reads back from the repository byte for byte.
    fn assert_archived(&self, originals: &HashMap<String, Vec<u8>>) {
        let work = self.archive.dir("fetched");
        std::fs::create_dir_all(&work).unwrap();
        for (name, bytes) in originals {
            let dest = work.join(name);
            ok(&self.archive.run(&[
                "wal-fetch",
                "--pgdata",
                self.pgdata().to_str().unwrap(),
                "--prefetch",
                "0",
                name,
                dest.to_str().unwrap(),
            ]));
            assert!(
                std::fs::read(&dest).unwrap() == *bytes,
                "{name} read back differs from the segment PostgreSQL wrote"
            );
            std::fs::remove_file(dest).unwrap();
        }
    }

    /// Wait (up to 60 s) until no background pusher runs.
    fn wait_pusher_gone(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.spool().pusher_running() {
            assert!(
                Instant::now() < deadline,
                "the pusher still runs after 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Write `n` segments with archiving paused (archive_command empty: PostgreSQL keeps
    /// their `.ready` status) and return them with their bytes.
    async fn burst(&self, n: usize) -> HashMap<String, Vec<u8>> {
        let c = self.cluster.connect("app").await.unwrap();
        let mut names = Vec::new();
        for _ in 0..n {
            let name: String = c
                .query_one("SELECT pg_walfile_name(pg_current_wal_insert_lsn())", &[])
                .await
                .unwrap()
                .get(0);
            c.batch_execute("INSERT INTO filler SELECT g, md5(g::text) FROM generate_series(1, 20000) g; SELECT pg_switch_wal()")
                .await
                .unwrap();
            names.push(name);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in &names {
            while !self.status(name, "ready").exists() {
                assert!(Instant::now() < deadline, "{name} never became .ready");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        names
            .into_iter()
            .map(|n| {
                let bytes = std::fs::read(self.pgdata().join("pg_wal").join(&n)).unwrap();
                (n, bytes)
            })
            .collect()
    }

    async fn set_archive_command(&self, command: &str) {
        for sql in [
            format!(
                "ALTER SYSTEM SET archive_command = '{}'",
                command.replace('\'', "''")
            ),
            "SELECT pg_reload_conf()".to_string(),
        ] {
            self.cluster.execute_sql("app", &sql).await.unwrap();
        }
    }
}

fn sorted(originals: &HashMap<String, Vec<u8>>) -> Vec<String> {
    let mut names: Vec<String> = originals.keys().cloned().collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_pusher_archives_recovers_from_a_kill_and_reports_failures() {
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
    for p in [&archive.repo, &archive.key] {
        cluster.give_to_server(Path::new(p)).await.unwrap();
    }
    cluster.create_database("app").await.unwrap();
    cluster
        .execute_sql("app", "CREATE TABLE filler (id int, t text)")
        .await
        .unwrap();
    let c = cluster.connect("app").await.unwrap();
    let sysid: String = c
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let s = Setup {
        archive,
        cluster,
        sysid,
    };

    burst_archived_by_postgres(&s).await;
    killed_pusher(&s).await;
    storage_failure_reported(&s).await;
}

/// PostgreSQL drains a backlog through `drctl wal-push`; once the pusher has gone, every
/// segment reads back byte for byte and the spool holds nothing but its lock.
async fn burst_archived_by_postgres(s: &Setup) {
    let originals = s.burst(8).await;
    let names = sorted(&originals);
    let last = names.last().unwrap().clone();
    s.set_archive_command(&format!(
        "'{DRCTL}' wal-push --repo '{}' --key-file '{}' %p",
        s.archive.repo, s.archive.key
    ))
    .await;
    let c = s.cluster.connect("app").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let row = c
            .query_one(
                "SELECT coalesce(last_archived_wal, ''), failed_count FROM pg_stat_archiver",
                &[],
            )
            .await
            .unwrap();
        let archived: String = row.get(0);
        if archived >= last {
            assert_eq!(row.get::<_, i64>(1), 0, "no call failed");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{last} not archived within 120 s (last archived {archived}): {}",
            s.cluster.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    s.set_archive_command("").await;
    assert!(s.spool().pusher_pid().is_some(), "a background pusher ran");
    s.wait_pusher_gone();
    s.assert_archived(&originals);
    let left: Vec<String> = std::fs::read_dir(s.spool().dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_str().unwrap().to_string())
        .filter(|n| n != "pusher.lock")
        .collect();
    assert!(left.is_empty(), "spool leftovers: {left:?}");
}

/// SIGKILL of the pusher in the middle of a backlog: every marker it left names a segment
/// whose record is committed with exactly the marked bytes, some segments are left without
/// one, and the next calls archive the rest.
async fn killed_pusher(s: &Setup) {
    let originals = s.burst(10).await;
    let names = sorted(&originals);
    // Two at a time, so the backlog behind the first segment takes a while.
    ok(&s.push(&names[0], &["--parallel", "2"]));
    s.mark_done(&names[0]);
    assert!(s.spool().pusher_running(), "the call left a pusher running");
    let pid = s.spool().pusher_pid().expect("the pusher wrote its pid");
    let kill = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    s.wait_pusher_gone();

    let spool = s.spool();
    let mut unmarked = 0;
    for name in &names[1..] {
        let marker = spool.dir().join(format!("{name}.ok"));
        match std::fs::read(&marker) {
            Ok(bytes) => {
                let m: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
                let record = s
                    .record(name)
                    .unwrap_or_else(|| panic!("{name} is marked stored but has no record"));
                assert_eq!(record["raw_sha256"], m["sha256"], "{name}");
            }
            Err(_) => unmarked += 1,
        }
    }
    assert!(
        unmarked > 0,
        "the kill came after the pusher had stored everything: nothing was cut off"
    );

    // PostgreSQL's next calls: each succeeds, a new pusher does the rest.
    for name in &names[1..] {
        ok(&s.push(name, &["--parallel", "2"]));
        s.mark_done(name);
    }
    s.wait_pusher_gone();
    s.assert_archived(&originals);
}

/// The pusher (the library function the detached drctl runs) on storage that refuses every
/// write records its failure in the spool; the next `drctl wal-push` fails with it (one line,
/// naming the pusher and the cause), and the call after that archives the segment.
async fn storage_failure_reported(s: &Setup) {
    use dr::storage::faults::{Fault, FaultyTarget, Op, Trigger};
    let originals = s.burst(3).await;
    let names = sorted(&originals);

    let failing = FaultyTarget::new(dr::storage::from_url(&s.archive.repo).unwrap(), 7).inject_at(
        Op::Put,
        "wal/",
        Trigger::Always,
        Fault::permanent(dr::core::ErrorKind::Storage),
    );
    let failing: Arc<dyn dr::core::StorageTarget> = Arc::new(failing);
    let repo = dr::core::Repository::open(failing).await.unwrap();
    let encryptor = dr::keys::public_encryptor(&repo).unwrap();
    let pusher = WalPusher::new(repo, Arc::new(encryptor), s.pgdata())
        .pusher_idle(Duration::from_millis(200));
    let e = pusher
        .run_pusher()
        .await
        .expect_err("every write fails, so the pusher must fail");
    assert_eq!(e.kind(), dr::core::ErrorKind::Storage, "{}", e.report());
    for name in &names {
        assert!(
            !s.spool().has_marker(name) && s.record(name).is_none(),
            "{name} is not archived"
        );
    }

    let e = fails(&s.push(&names[0], &[]), 1);
    assert!(
        e.contains("background WAL pusher") && e.contains(&names[0]) && e.contains("injected"),
        "{e}"
    );
    assert!(s.status(&names[0], "ready").exists());
    // PostgreSQL retries: the failure was reported once, a new pusher stores the backlog.
    for name in &names {
        ok(&s.push(name, &[]));
        s.mark_done(name);
    }
    s.wait_pusher_gone();
    s.assert_archived(&originals);
}
