//! A dump as pieces whose table data dr reads itself (`COPY … TO STDOUT` in the snapshot)
//! against `pg_dump -Fd -Z0` of the same database, on a real cluster: the same table of
//! contents entry for entry (dump ids aside), the same data files byte for byte, and a
//! folder that pg_restore restores to the same database.

use std::collections::BTreeMap;
use std::path::Path;

use dr_core::pieces::PieceDumper;
use dr_core::stage::collect;
use dr_db::testing::TestCluster;
use dr_db::toc_file::{TocFile, TocFileEntry};
use dr_db::PgDumper;
use futures::StreamExt;

/// Tables whose names and columns need quoting, dropped and generated columns, no columns,
/// partitions (range: dr reads them; hash: pg_dump does), inheritance, an unlogged table, a
/// materialized view, a sequence, a large object, a comment and a grant.
const SCHEMA: &str = r#"
CREATE SCHEMA "My Schema";
CREATE TABLE "My Schema"."Order" (
    id int PRIMARY KEY, "select" text, "Note" text, gone int,
    total numeric GENERATED ALWAYS AS (id * 2) STORED,
    ts timestamptz, f float8, iv interval, r regclass, b bytea);
ALTER TABLE "My Schema"."Order" DROP COLUMN gone;
INSERT INTO "My Schema"."Order" (id, "select", "Note", ts, f, iv, r, b)
    SELECT i, 'tab\there' || i, E'line\nbreak \\ é ' || i, '2026-12-01 12:00+00'::timestamptz + i * interval '1 minute',
           i / 3.0, i * interval '1 second', 'pg_class'::regclass, decode(md5(i::text), 'hex')
    FROM generate_series(1, 5000) i;
CREATE TABLE plain (a int, b text);
INSERT INTO plain SELECT i, repeat('x', i % 50) FROM generate_series(1, 3000) i;
COMMENT ON TABLE plain IS 'a comment';
GRANT SELECT ON plain TO PUBLIC;
CREATE TABLE child (c int) INHERITS (plain);
INSERT INTO child VALUES (1, 'child row', 2);
CREATE TABLE empty_table (a int);
CREATE TABLE no_columns ();
INSERT INTO no_columns DEFAULT VALUES;
INSERT INTO no_columns DEFAULT VALUES;
CREATE TABLE parted (k int, v text) PARTITION BY RANGE (k);
CREATE TABLE parted_low PARTITION OF parted FOR VALUES FROM (0) TO (100);
CREATE TABLE parted_high PARTITION OF parted FOR VALUES FROM (100) TO (1000);
INSERT INTO parted SELECT i, i::text FROM generate_series(0, 999) i;
CREATE TABLE hashed (k int) PARTITION BY HASH (k);
CREATE TABLE hashed_0 PARTITION OF hashed FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE hashed_1 PARTITION OF hashed FOR VALUES WITH (MODULUS 2, REMAINDER 1);
INSERT INTO hashed SELECT generate_series(1, 100);
CREATE UNLOGGED TABLE scratch (a int);
INSERT INTO scratch VALUES (7);
CREATE MATERIALIZED VIEW mv AS SELECT a FROM plain WHERE a < 10;
CREATE SEQUENCE counter;
SELECT setval('counter', 42);
SELECT lo_from_bytea(0, 'a large object');
CREATE INDEX plain_a ON plain (a);
"#;

/// The tables whose data dr reads itself here.
const OWN: &[&str] = &[
    "Order",
    "plain",
    "child",
    "empty_table",
    "no_columns",
    "parted_low",
    "parted_high",
];

/// Run the cluster's `pg_dump` on `db` with `args`; its stdout.
fn pg_dump(cluster: &TestCluster, db: &str, args: &[&std::ffi::OsStr]) -> Vec<u8> {
    let out = std::process::Command::new(cluster.bin_dir().join("pg_dump"))
        .arg("--no-password")
        .args(args)
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", cluster.port().to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", db)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn pg_dump_dir(cluster: &TestCluster, db: &str, dir: &Path) {
    pg_dump(
        cluster,
        db,
        &[
            "-Fd".as_ref(),
            "-Z0".as_ref(),
            "-f".as_ref(),
            dir.as_os_str(),
        ],
    );
}

fn plain_dump(cluster: &TestCluster, db: &str) -> String {
    String::from_utf8(pg_dump(cluster, db, &["-Fp".as_ref()]))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn key(e: &TocFileEntry) -> String {
    format!("{} {}.{}", e.desc(), e.namespace(), e.tag())
}

/// Every entry with its dump ids replaced by the entries they name, and no file name.
fn normalized(toc: &TocFile) -> Vec<(String, TocFileEntry)> {
    let by_id: BTreeMap<i64, String> = toc.entries.iter().map(|e| (e.dump_id, key(e))).collect();
    toc.entries
        .iter()
        .map(|e| {
            let mut n = e.clone();
            n.dump_id = 0;
            n.file = None;
            n.dependencies = e
                .dependencies
                .iter()
                .map(|d| {
                    let id: i64 = std::str::from_utf8(d).unwrap().parse().unwrap();
                    by_id.get(&id).cloned().unwrap_or_default().into_bytes()
                })
                .collect();
            (key(e), n)
        })
        .collect()
}

fn data_files(toc: &TocFile, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    toc.entries
        .iter()
        .filter(|e| e.desc() == "TABLE DATA")
        .map(|e| {
            let file = String::from_utf8(e.file.clone().unwrap()).unwrap();
            (key(e), std::fs::read(dir.join(file)).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn table_data_read_by_dr_is_what_pg_dump_writes() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.create_database("app").await.unwrap();
    cluster.execute_sql("app", SCHEMA).await.unwrap();
    let work = tempfile::tempdir().unwrap();

    // dr's dump as pieces, written out as a folder.
    let ours = work.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    let dump = PgDumper::new(cluster.config("app"))
        .jobs(2)
        .spool_dir(work.path())
        .start_pieces()
        .await
        .unwrap();
    let mut pieces = dump.pieces;
    while let Some(piece) = pieces.next().await {
        let piece = piece.unwrap();
        let bytes = collect(piece.stream).await.unwrap();
        std::fs::write(ours.join(&piece.name), bytes).unwrap();
    }
    let stats = dump.completion.finish().await.unwrap();
    let rows: BTreeMap<String, u64> = stats
        .tables
        .iter()
        .map(|t| (format!("{}.{}", t.schema, t.name), t.rows))
        .collect();
    assert_eq!(rows["My Schema.Order"], 5000);
    assert_eq!(rows["public.plain"], 3000);
    assert_eq!(rows["public.no_columns"], 2);
    assert_eq!(rows["public.hashed_0"] + rows["public.hashed_1"], 100);

    // pg_dump's own.
    let theirs = work.path().join("theirs");
    pg_dump_dir(&cluster, "app", &theirs);

    let our_bytes = std::fs::read(ours.join("toc.dat")).unwrap();
    let their_bytes = std::fs::read(theirs.join("toc.dat")).unwrap();
    let our_toc = TocFile::parse(&our_bytes).unwrap();
    let their_toc = TocFile::parse(&their_bytes).unwrap();
    assert_eq!(
        their_toc.to_bytes(),
        their_bytes,
        "pg_dump's toc.dat round-trips"
    );
    assert_eq!(our_toc.to_bytes(), our_bytes);

    // dr read the data of exactly the expected tables: their entries got the dump ids
    // after every one pg_dump gave out.
    let mut by_id: Vec<&TocFileEntry> = our_toc.entries.iter().collect();
    by_id.sort_by_key(|e| std::cmp::Reverse(e.dump_id));
    let mut newest: Vec<String> = by_id[..OWN.len()]
        .iter()
        .map(|e| format!("{} {}", e.desc(), e.tag()))
        .collect();
    newest.sort();
    let mut want: Vec<String> = OWN.iter().map(|t| format!("TABLE DATA {t}")).collect();
    want.sort();
    assert_eq!(newest, want);

    // The same entries in the same order, field for field.
    let ours_n = normalized(&our_toc);
    let theirs_n = normalized(&their_toc);
    let keys = |n: &[(String, TocFileEntry)]| n.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&ours_n), keys(&theirs_n));
    for ((k, a), (_, b)) in ours_n.iter().zip(&theirs_n) {
        assert_eq!(a, b, "entry {k}");
    }
    // The same data files, byte for byte.
    let ours_files = data_files(&our_toc, &ours);
    let theirs_files = data_files(&their_toc, &theirs);
    assert_eq!(ours_files.len(), theirs_files.len());
    for (k, bytes) in &theirs_files {
        assert!(ours_files[k] == *bytes, "data of {k} differs");
    }

    // pg_restore restores the folder to the same database.
    cluster.create_database("copy").await.unwrap();
    let status = std::process::Command::new(cluster.bin_dir().join("pg_restore"))
        .args(["--exit-on-error", "-j", "2", "-Fd", "-d"])
        .arg(cluster.url("copy"))
        .arg(&ours)
        .status()
        .unwrap();
    assert!(status.success());
    assert!(
        plain_dump(&cluster, "app") == plain_dump(&cluster, "copy"),
        "restored copy differs"
    );
}
