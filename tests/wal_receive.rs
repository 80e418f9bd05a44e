//! RPO of seconds: `drctl wal-receive` streams a real cluster's WAL while `drctl wal-push`
//! archives the same segments as its archive_command. Under pgbench load and then a quiet
//! stretch (too little WAL to complete a segment), the primary is stopped with `-m
//! immediate`; a restore to the end of the archive must hold every marker committed more
//! than a few seconds before the crash — the quiet stretch exists only in the streamed
//! partial copies. The test prints the achieved RPO.
//!
//! The same receiver as a dr.toml job: `drctl run` keeps it running (started again with a
//! backoff while its database does not exist yet) and streams a partial segment.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::{drctl, ok, pgbench, Archive};
use dr::db::testing::TestCluster;

const DRCTL: &str = env!("CARGO_BIN_EXE_drctl");

/// How old a commit must be at the crash to be required in the restore.
const REQUIRED_AGE: Duration = Duration::from_secs(3);

/// Insert marker `id`; the time just after its commit returned.
async fn write_marker(client: &tokio_postgres::Client, id: i32) -> DateTime<Utc> {
    client
        .execute("INSERT INTO marker VALUES ($1)", &[&id])
        .await
        .unwrap();
    Utc::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_wal_restores_to_seconds_before_a_crash() {
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let repo = root.path().join("repo").to_str().unwrap().to_string();
    let key = root.path().join("repo.key").to_str().unwrap().to_string();
    ok(&drctl(&["keygen", "--output", &key], &[]));
    let archive = Archive { root, repo, key };
    ok(&archive.run(&["init"]));

    let mut cluster = TestCluster::start_with_settings("archive_mode = on\narchive_command = ''\n")
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
        "CREATE TABLE marker (id int PRIMARY KEY)".into(),
    ] {
        cluster.execute_sql("app", &sql).await.unwrap();
    }
    let init = pgbench(&cluster, &["-i", "-s", "1", "-q"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );

    // The receiver runs beside the archiver for the whole test.
    let url = cluster.url("app");
    let spool = archive.dir("spool");
    let mut receiver = Command::new(DRCTL)
        .args(archive.args(&[
            "--json",
            "wal-receive",
            "--db",
            &url,
            "--slot",
            "dr_test",
            "--spool",
            spool.to_str().unwrap(),
            "--interval",
            "1",
        ]))
        .env_remove("DR_DB")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let mut load = pgbench(&cluster, &["-c", "2", "-T", "8", "-n"])
        .spawn()
        .unwrap();
    let client = cluster.connect("app").await.unwrap();
    let mut markers: Vec<DateTime<Utc>> = Vec::new();
    for id in 1..=5 {
        markers.push(write_marker(&client, id).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ok(&archive.run(&["backup", "--physical", "--db", &url]));
    // Markers under load, then a quiet stretch: a few kilobytes of WAL, no segment completes.
    let mut id = markers.len() as i32;
    // One segment is completed by a switch, after the receiver stored copies of it. Markers
    // go on until pgbench has ended and the switch is done: on a loaded machine the backup
    // above can take most of pgbench's 8 s, and the markers after it still count.
    let mut switched = false;
    while !switched || load.try_wait().unwrap().is_none() {
        id += 1;
        markers.push(write_marker(&client, id).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
        if !switched && id >= 20 {
            client
                .batch_execute("SELECT pg_switch_wal()")
                .await
                .unwrap();
            switched = true;
        }
    }
    let quiet_from = id + 1;
    let quiet_until = Instant::now() + Duration::from_secs(7);
    while Instant::now() < quiet_until {
        id += 1;
        markers.push(write_marker(&client, id).await);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let archiver: (i64, String) = {
        let row = client
            .query_one(
                "SELECT failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let crash = Utc::now();
    cluster.stop_immediately();
    drop(client);
    let _ = load.wait();
    assert_eq!(
        archiver.0, 0,
        "wal-push failed beside wal-receive (last failed {})",
        archiver.1
    );

    // The receiver notices, stores what it has; then it is stopped.
    tokio::time::sleep(Duration::from_secs(3)).await;
    if receiver.try_wait().unwrap().is_some() {
        let out = receiver.wait_with_output().unwrap();
        panic!(
            "wal-receive must outlive its server; it exited {:?}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let kill = Command::new("kill")
        .args(["-TERM", &receiver.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = receiver.wait_with_output().unwrap();
    ok(&out);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert!(report["segments"].as_u64().unwrap() > 0, "{report}");
    assert!(report["partial_copies"].as_u64().unwrap() > 0, "{report}");
    assert!(report["reconnects"].as_u64().unwrap() >= 1, "{report}");

    // The archive ends in a streamed copy.
    let state = archive.run(&["--json", "wal", "list"]);
    ok(&state);
    let state: serde_json::Value = serde_json::from_slice(&state.stdout).unwrap();
    let text = state.to_string();
    assert!(text.contains("\"partial_end\":true"), "{state}");

    // A segment that had streamed copies while it grew is fetched complete.
    let first_complete = first_segment_with_copies_and_record(&archive);
    let fetched = archive.dir("fetched");
    let out = archive.run(&[
        "--json",
        "wal-fetch",
        "--pgdata",
        cluster.data_dir().to_str().unwrap(),
        "--prefetch",
        "0",
        &first_complete,
        fetched.to_str().unwrap(),
    ]);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"restored\""));
    assert_eq!(std::fs::metadata(&fetched).unwrap().len(), 16 << 20);

    // Restore to the end of the archive.
    let pgdata = archive.dir("restored");
    ok(&archive.run(&["restore", "latest", "--pgdata", pgdata.to_str().unwrap()]));
    let restored = common::start_recovered(&pgdata, "restore").await;
    let c = restored.connect("app").await.unwrap();
    let ids: Vec<i32> = c
        .query("SELECT id FROM marker ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let newest = *ids.last().expect("markers restored");
    assert_eq!(ids, (1..=newest).collect::<Vec<_>>(), "no holes");
    let required = markers
        .iter()
        .take_while(|t| **t + REQUIRED_AGE <= crash)
        .count() as i32;
    assert!(
        required >= quiet_from + 5,
        "the quiet stretch has required markers ({required}, quiet from {quiet_from})"
    );
    assert!(
        newest >= required,
        "markers up to {required} committed more than {REQUIRED_AGE:?} before the crash; the \
         restore holds up to {newest}"
    );
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
    assert!(a == b && b == t, "pgbench balances disagree: {a} {b} {t}");
    let rpo = crash - markers[newest as usize - 1];
    println!(
        "achieved RPO with wal-receive --interval 1: {:.2} s (newest restored marker {newest} of {}, crash at {crash})",
        rpo.num_milliseconds() as f64 / 1000.0,
        markers.len()
    );
}

/// The name of the first segment archived complete that also has streamed copies.
fn first_segment_with_copies_and_record(archive: &Archive) -> String {
    let wal = Path::new(&archive.repo).join("wal");
    let cluster = std::fs::read_dir(&wal)
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.path().is_dir())
        .unwrap()
        .path()
        .join("00000001");
    let names: Vec<String> = std::fs::read_dir(&cluster)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str().map(str::to_string))
        .collect();
    let mut with_copies: Vec<String> = names
        .iter()
        .filter_map(|n| {
            let (seg, rest) = n.split_once(".partial.")?;
            (rest.ends_with(".json") && names.contains(&format!("{seg}.json")))
                .then(|| seg.to_string())
        })
        .collect();
    with_copies.sort();
    with_copies
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no completed segment had streamed copies: {names:?}"))
}

/// `[jobs.wal] kind = "wal-receive"` under `drctl run`: the first runs fail (the database
/// does not exist yet), the scheduler starts the job again with a backoff, it then streams
/// the growing segment into the archive, and SIGTERM lets it store what it holds and end
/// well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dr_toml_wal_receive_job_is_kept_running_and_streams_partial_segments() {
    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo").to_str().unwrap().to_string();
    let key = root.path().join("repo.key").to_str().unwrap().to_string();
    ok(&drctl(&["keygen", "--output", &key], &[]));
    let archive = Archive { root, repo, key };
    ok(&archive.run(&["init"]));
    let cluster = TestCluster::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    let config = archive.dir("dr.toml");
    std::fs::write(
        &config,
        format!(
            "[repository]\nurl = \"{}\"\n\n[database]\nurl = \"{}\"\n\n[key]\nfile = \"{}\"\n\n\
             [jobs.wal]\nkind = \"wal-receive\"\nspool = \"spool\"\nslot = \"dr_job\"\ninterval = \"1s\"\n",
            archive.repo,
            cluster.url("app"),
            archive.key
        ),
    )
    .unwrap();
    let mut cmd = Command::new(DRCTL);
    cmd.args(["run", "--config", config.to_str().unwrap()])
        .env_remove("DR_DB")
        .env_remove("DR_REPO")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(archive.dir("run.log")).unwrap());
    common::admin_host_env(&mut cmd);
    let mut daemon = cmd.spawn().unwrap();
    let lines = read_lines(daemon.stdout.take().unwrap());

    // "app" does not exist: the job fails, and is started again.
    let failed = wait_for_line(&lines, Duration::from_secs(60), |l| {
        l.starts_with("wal: FAILED") && l.contains("app")
    });
    wait_for_line(&lines, Duration::from_secs(30), |l| {
        l.starts_with("wal: next run")
    });
    cluster.create_database("app").await.unwrap();
    let client = cluster.connect("app").await.unwrap();
    client
        .batch_execute("CREATE TABLE marker (id int PRIMARY KEY)")
        .await
        .unwrap();

    // One segment completed by a switch once the job streams, then well under a segment
    // of WAL: only a streamed partial copy after it can hold that.
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut id = 0;
    let mut switched = false;
    let state = loop {
        id += 1;
        client
            .execute("INSERT INTO marker VALUES ($1)", &[&id])
            .await
            .unwrap();
        if !switched {
            let streaming: i64 = client
                .query_one("SELECT count(*) FROM pg_stat_replication", &[])
                .await
                .unwrap()
                .get(0);
            if streaming > 0 {
                client
                    .batch_execute("SELECT pg_switch_wal()")
                    .await
                    .unwrap();
                switched = true;
            }
        }
        let out = archive.run(&["--json", "wal", "list"]);
        if out.status.success() {
            let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            if state.to_string().contains("\"partial_end\":true") {
                break state;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no streamed partial segment after 90 s (the job first failed with: {failed}); \
             drctl run printed since: {:#?}\nswitched: {switched}; spool: {:?}; archive: {}\n{}",
            lines.try_iter().collect::<Vec<_>>(),
            std::fs::read_dir(archive.dir("spool")).map(|d| d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name())
                .collect::<Vec<_>>()),
            String::from_utf8_lossy(&archive.run(&["--json", "wal", "list"]).stdout),
            std::fs::read_to_string(archive.dir("run.log")).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        archive.dir("spool").is_dir(),
        "the spool is relative to dr.toml"
    );

    // The job may have failed more than once before "app" existed; those lines were printed
    // long before the partial segment reached the repository. Drop them, so that the line
    // awaited below is the end of the run that the signal stops.
    let earlier: Vec<String> = lines.try_iter().collect();
    let kill = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let ended = wait_for_line(&lines, Duration::from_secs(60), |l| {
        l.starts_with("wal: ok") || l.starts_with("wal: FAILED")
    });
    let status = daemon.wait().unwrap();
    let stderr = std::fs::read_to_string(archive.dir("run.log")).unwrap();
    assert!(status.success(), "drctl run: {status:?}: {stderr}");
    assert!(
        ended.starts_with("wal: ok") && ended.contains("partial copies"),
        "the stopped job stored what it held and ended well: {ended}; state {state}; \
         lines before the signal: {earlier:#?}"
    );
}

/// The lines a child prints, as they come.
fn read_lines(out: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(out)) {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first line within `limit` that `matches`; fails with the lines seen otherwise.
fn wait_for_line(
    lines: &std::sync::mpsc::Receiver<String>,
    limit: Duration,
    matches: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + limit;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) if matches(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no such line within {limit:?}; drctl run printed: {seen:#?}");
}

/// Delete-proof storage (credentials that can neither delete nor replace an object, as with
/// S3 Object Lock): the receiver stores every streamed copy of the growing segment under a
/// name of its own and never deletes, so it streams as well as anywhere — the store refused
/// nothing because nothing was tried, also when a second receiver starts over the same
/// spool and finds its files stored. The newest copy is what a fetch of the segment returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_receive_needs_neither_deletes_nor_overwrites() {
    use dr::core::wal::WalArchive;
    use dr::db::wal::WalReceiver;
    use dr::storage::write_once::WriteOnceTarget;
    use std::sync::Arc;

    let root = tempfile::tempdir().unwrap();
    let repo = root.path().join("repo").to_str().unwrap().to_string();
    let key = root.path().join("repo.key").to_str().unwrap().to_string();
    ok(&drctl(&["keygen", "--output", &key], &[]));
    let archive = Archive { root, repo, key };
    ok(&archive.run(&["init"]));
    let cluster = TestCluster::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    cluster.create_database("app").await.unwrap();
    let client = cluster.connect("app").await.unwrap();
    client
        .batch_execute("CREATE TABLE marker (id int PRIMARY KEY)")
        .await
        .unwrap();

    let store = WriteOnceTarget::new(dr::storage::from_url(&archive.repo).unwrap());
    let repo = dr::core::Repository::open(Arc::new(store.clone()))
        .await
        .unwrap();
    let receiver = WalReceiver::new(
        repo.clone(),
        Arc::new(dr::keys::public_encryptor(&repo).unwrap()),
        cluster.config("app"),
        archive.dir("spool"),
    )
    .slot("dr_write_once")
    .interval(Duration::from_millis(300));

    // Markers while it streams; one segment completed by a switch once it streams.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = {
        let receiver = receiver.clone();
        tokio::spawn(async move {
            receiver
                .run(async {
                    let _ = stopped.await;
                })
                .await
        })
    };
    let mut switched = false;
    let until = Instant::now() + Duration::from_secs(6);
    let mut id = 0;
    while Instant::now() < until {
        id += 1;
        client
            .execute("INSERT INTO marker VALUES ($1)", &[&id])
            .await
            .unwrap();
        if !switched {
            let streaming: i64 = client
                .query_one("SELECT count(*) FROM pg_stat_replication", &[])
                .await
                .unwrap()
                .get(0);
            if streaming > 0 {
                client
                    .batch_execute("SELECT pg_switch_wal()")
                    .await
                    .unwrap();
                switched = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(switched, "pg_receivewal streamed within 6 s");
    stop.send(()).unwrap();
    let report = running
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert!(report.segments >= 1, "{report:?}");
    assert!(report.partial_copies >= 2, "{report:?}");

    // Started again over the same spool: what is there is stored already.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let again = tokio::spawn(async move {
        receiver
            .run(async {
                let _ = stopped.await;
            })
            .await
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.send(()).unwrap();
    again
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(
        store.refused(),
        0,
        "the receiver tried to delete or replace an object"
    );

    // Each copy of the growing segment is an object of its own, reaching further.
    let sysid: u64 = report.system_identifier.parse().unwrap();
    let wal = WalArchive::open(&repo, sysid).await.unwrap();
    let listing = wal.list().await.unwrap();
    let (segment, copies) = listing
        .streamed
        .iter()
        .next_back()
        .expect("streamed copies");
    assert!(copies.len() >= 2, "{copies:?}");
    assert!(copies.windows(2).all(|w| w[0].end < w[1].end), "{copies:?}");
    let name = segment.name(wal.segment_size());
    let fetched = archive.dir("fetched");
    ok(&archive.run(&[
        "wal-fetch",
        "--pgdata",
        cluster.data_dir().to_str().unwrap(),
        "--prefetch",
        "0",
        &name,
        fetched.to_str().unwrap(),
    ]));
    let fetched = std::fs::read(&fetched).unwrap();
    let newest = copies.last().unwrap().end as usize;
    assert_eq!(fetched.len(), 16 << 20);
    let server = std::fs::read(cluster.data_dir().join("pg_wal").join(&name)).unwrap();
    assert!(
        fetched[..newest] == server[..newest] && fetched[newest..].iter().all(|b| *b == 0),
        "the fetched segment is the newest copy ({newest} bytes), padded with zeros"
    );
}
