//! Dump and restore against real PostgreSQL clusters (one throwaway cluster per test).
//!
//! The dump is read into memory and handed to the restorer with its statistics: the identity
//! pipeline. Compression, encryption and storage are tested with dr-core's pipelines.

use std::time::Duration;

use bytes::Bytes;
use dr_core::stage::{collect, once_bytes};
use dr_core::{ByteStream, DumpStats, Dumper, Error, ErrorKind, Restorer, SourceInfo};
use dr_db::testing::TestCluster;
use dr_db::{PgDumper, PgRestorer};
use futures::StreamExt;

/// Dump `db` into memory: its source info, its payload and its statistics.
async fn dump(cluster: &TestCluster, db: &str) -> (SourceInfo, Bytes, DumpStats) {
    let dump = PgDumper::new(cluster.config(db))
        .start()
        .await
        .unwrap_or_else(|e| panic!("starting the dump: {}", e.report()));
    let payload = collect(dump.stream)
        .await
        .unwrap_or_else(|e| panic!("reading the dump: {}", e.report()));
    let stats = dump
        .completion
        .finish()
        .await
        .unwrap_or_else(|e| panic!("finishing the dump: {}", e.report()));
    (dump.source, Bytes::from(payload), stats)
}

async fn start_cluster() -> TestCluster {
    TestCluster::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a test cluster: {}", e.report()))
}

async fn sql(cluster: &TestCluster, db: &str, sql: &str) {
    cluster
        .execute_sql(db, sql)
        .await
        .unwrap_or_else(|e| panic!("{}: {}", e.report(), sql));
}

async fn count(cluster: &TestCluster, db: &str, query: &str) -> i64 {
    let client = cluster.connect(db).await.unwrap();
    client
        .query_one(query, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}: {query}"))
        .get(0)
}

async fn database_exists(cluster: &TestCluster, name: &str) -> bool {
    let client = cluster.connect("postgres").await.unwrap();
    client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await
        .unwrap()
        .is_some()
}

/// User relations in `db` (tables, views, sequences…), outside the system schemas.
async fn user_relations(cluster: &TestCluster, db: &str) -> i64 {
    count(
        cluster,
        db,
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
           AND n.nspname NOT LIKE 'pg_toast%'",
    )
    .await
}

/// `pg_dump -Fp` of `db`, without the lines that legitimately differ between two databases
/// (`\restrict` keys are random per run).
fn plain_dump(cluster: &TestCluster, db: &str) -> String {
    let out = std::process::Command::new(cluster.bin_dir().join("pg_dump"))
        .args(["--format=plain", "--no-password"])
        .env("PGHOST", "127.0.0.1")
        .env("PGPORT", cluster.port().to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", db)
        .output()
        .expect("pg_dump runs");
    assert!(
        out.status.success(),
        "pg_dump -Fp {db}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8 dump")
        .lines()
        .filter(|l| !l.starts_with("\\restrict") && !l.starts_with("\\unrestrict"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first line where two texts differ, with a little context, for assertion messages.
fn first_difference(a: &str, b: &str) -> String {
    for (i, (x, y)) in a.lines().zip(b.lines()).enumerate() {
        if x != y {
            let cut = |s: &str| s.chars().take(300).collect::<String>();
            return format!(
                "line {}:\n  source: {}\n  target: {}",
                i + 1,
                cut(x),
                cut(y)
            );
        }
    }
    format!(
        "one is a prefix of the other ({} vs {} lines)",
        a.lines().count(),
        b.lines().count()
    )
}

const AWKWARD_SCHEMA: &str = r#"
CREATE EXTENSION hstore;
CREATE EXTENSION citext;
CREATE EXTENSION btree_gist;

CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy', 'it''s "complicated"');
CREATE DOMAIN posint AS integer CHECK (VALUE > 0);
CREATE TYPE pair AS (a integer, b text);

CREATE SCHEMA "Weird ""Schema""";
CREATE TABLE "Weird ""Schema""".everything (
    id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    m mood,
    p posint,
    c pair,
    grid integer[][],
    tags text[],
    h hstore,
    ci citext,
    j jsonb,
    b bytea,
    f float8,
    n numeric,
    d date,
    ts timestamptz,
    t timestamp,
    doubled integer GENERATED ALWAYS AS (p * 2) STORED
);
INSERT INTO "Weird ""Schema""".everything (m, p, c, grid, tags, h, ci, j, b, f, n, d, ts, t) VALUES
  ('sad', 1, ROW(1, 'one'), '{{1,2},{3,4}}', '{"a b", "c,d", "\"q\"", NULL}',
   'k=>v, "with space"=>"x\"y", nul=>NULL', 'MiXeD', '{"a": [1, 2.5, null, "\u00e9"], "b": {}}',
   '\x00ff00000001', 'NaN', 'NaN', 'infinity', 'infinity', 'infinity'),
  ('happy', 2, ROW(NULL, E'tab\there\nnewline'), '{}', '{}', '', 'ß', '[]',
   '\x', 'Infinity', 'Infinity', '-infinity', '-infinity', '-infinity'),
  ('it''s "complicated"', 3, NULL, NULL, NULL, NULL, NULL, 'null', NULL,
   '-Infinity', '-Infinity', '2024-02-29', '1999-12-31 23:59:59.999999+00', '2000-01-01 00:00:00'),
  (NULL, NULL, ROW(3, '\\backslash\\'), '{{NULL}}', ARRAY[E'\u2603 snow', ''], NULL,
   NULL, '"just a string"', decode(repeat('00', 1000), 'hex'), 1e308, 12345678901234567890.123456789e-300,
   '0001-01-01 BC', '294276-12-31 23:59:59+00', '4713-01-01 00:00:00 BC');

CREATE TABLE "données_ünïcødé 表" ("列 one" text, "Ω" integer);
INSERT INTO "données_ünïcødé 表" VALUES ('héllo wörld', 1), ('日本語', 2), (NULL, 3);

CREATE TABLE no_columns ();
INSERT INTO no_columns DEFAULT VALUES;
INSERT INTO no_columns DEFAULT VALUES;
INSERT INTO no_columns DEFAULT VALUES;

CREATE TABLE measurements (id integer, at date NOT NULL, v numeric) PARTITION BY RANGE (at);
CREATE TABLE measurements_2025 PARTITION OF measurements
  FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE measurements_2026 PARTITION OF measurements
  FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE measurements_other PARTITION OF measurements DEFAULT;
INSERT INTO measurements
  SELECT i, date '2025-01-01' + (i % 900), i / 7.0 FROM generate_series(1, 5000) i;

CREATE TABLE parent (x integer);
CREATE TABLE child (y text) INHERITS (parent);
INSERT INTO parent VALUES (1), (2);
INSERT INTO child VALUES (3, 'three'), (4, 'four'), (5, 'five');

CREATE TABLE booking (
    room integer,
    during tstzrange,
    EXCLUDE USING gist (room WITH =, during WITH &&)
);
INSERT INTO booking VALUES
  (1, '[2026-01-01 10:00+00, 2026-01-01 11:00+00)'),
  (1, '[2026-01-01 11:00+00, 2026-01-01 12:00+00)'),
  (2, '[2026-01-01 10:00+00,)');

CREATE TABLE authors (id integer PRIMARY KEY, name text);
CREATE TABLE books (
    id integer PRIMARY KEY,
    author integer,
    pages integer,
    CONSTRAINT books_author_fk FOREIGN KEY (author) REFERENCES authors (id)
      DEFERRABLE INITIALLY DEFERRED
);
INSERT INTO authors VALUES (1, 'Ann'), (2, 'Bob');
INSERT INTO books VALUES (10, 1, -5), (11, 2, 300), (12, NULL, 12);
SET CONSTRAINTS ALL IMMEDIATE;
ALTER TABLE books ADD CONSTRAINT books_pages_positive CHECK (pages > 0) NOT VALID;

CREATE TABLE secrets (owner text DEFAULT current_user, secret text);
ALTER TABLE secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY own_rows ON secrets USING (owner = current_user);
INSERT INTO secrets VALUES ('postgres', 'mine'), ('postgres', 'also mine');

CREATE SEQUENCE odd_sequence INCREMENT BY 7 MINVALUE -1000 MAXVALUE 100000 START 100 CYCLE;
SELECT setval('odd_sequence', 4242, true);
CREATE SEQUENCE fresh_sequence;
SELECT setval('"Weird ""Schema""".everything_id_seq', 1000);

CREATE VIEW happy_things AS
  SELECT id, m, ci FROM "Weird ""Schema""".everything WHERE m = 'happy';
CREATE MATERIALIZED VIEW measurement_totals AS
  SELECT date_trunc('month', at) AS month, count(*) AS n, sum(v) AS total
  FROM measurements GROUP BY 1;

CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.name := upper(NEW.name);
  RETURN NEW;
END
$$;
CREATE TRIGGER authors_touch BEFORE INSERT OR UPDATE ON authors
  FOR EACH ROW EXECUTE FUNCTION touch();

COMMENT ON TABLE books IS E'it''s a "table"\nwith a newline and a \\ backslash';
COMMENT ON COLUMN books.pages IS 'pages; may be -5 (not validated)';
COMMENT ON SCHEMA "Weird ""Schema""" IS '';

SELECT lo_from_bytea(0, 'hello, large object');
SELECT lo_from_bytea(0, decode('000102030000ff', 'hex'));
SELECT lo_create(0);

CREATE TABLE big (id integer, body text);
ALTER TABLE big ALTER COLUMN body SET STORAGE EXTERNAL;
INSERT INTO big SELECT 1, string_agg(md5(i::text), '' ORDER BY i) FROM generate_series(1, 1000000) i;
INSERT INTO big VALUES (2, 'small');
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_of_awkward_content_is_identical() {
    let cluster = start_cluster().await;
    cluster.create_database("awkward").await.unwrap();
    sql(&cluster, "awkward", AWKWARD_SCHEMA).await;
    assert_eq!(
        count(
            &cluster,
            "awkward",
            "SELECT length(body)::int8 FROM big WHERE id = 1"
        )
        .await,
        32_000_000
    );

    let (source, payload, stats) = dump(&cluster, "awkward").await;
    assert_eq!(source.kind, "postgres");
    assert_eq!(source.format, "pg_dump-custom");
    assert_eq!(source.name, "awkward");

    // The manifest-side statistics are the database's own counts.
    for (schema, name, query) in [
        (
            "Weird \"Schema\"",
            "everything",
            "SELECT count(*) FROM \"Weird \"\"Schema\"\"\".everything",
        ),
        ("public", "no_columns", "SELECT count(*) FROM no_columns"),
        (
            "public",
            "measurements_2025",
            "SELECT count(*) FROM measurements_2025",
        ),
        ("public", "parent", "SELECT count(*) FROM ONLY parent"),
        (
            "public",
            "données_ünïcødé 表",
            "SELECT count(*) FROM \"données_ünïcødé 表\"",
        ),
        ("public", "big", "SELECT count(*) FROM big"),
    ] {
        let entry = stats
            .tables
            .iter()
            .find(|t| t.schema == schema && t.name == name)
            .unwrap_or_else(|| panic!("no statistics for {schema}.{name}: {:?}", stats.tables));
        assert_eq!(
            entry.rows as i64,
            count(&cluster, "awkward", query).await,
            "{name}"
        );
    }
    let big = stats.tables.iter().find(|t| t.name == "big").unwrap();
    assert!(big.bytes > 32_000_000, "big holds {} bytes", big.bytes);
    let partitions: u64 = stats
        .tables
        .iter()
        .filter(|t| t.name.starts_with("measurements_"))
        .map(|t| t.rows)
        .sum();
    assert_eq!(partitions, 5000);

    let report = PgRestorer::new(cluster.config("awkward_copy"))
        .create(true)
        .restore(&source, &stats, once_bytes(payload, 1 << 20))
        .await
        .unwrap_or_else(|e| panic!("restore: {}", e.report()));
    assert_eq!(report.target, "awkward_copy");
    assert!(!report.replaced);
    assert_eq!(
        report.tables_checked,
        stats.tables.len(),
        "every table is checked"
    );
    assert_eq!(
        report.rows_checked,
        stats.tables.iter().map(|t| t.rows).sum::<u64>()
    );

    let original = plain_dump(&cluster, "awkward");
    let copy = plain_dump(&cluster, "awkward_copy");
    assert!(original.len() > 32_000_000);
    assert!(
        original == copy,
        "the restored database differs: {}",
        first_difference(&original, &copy)
    );
}

/// A source database `src` (table `t`, three rows) and a target `dst` holding `other`.
async fn source_and_occupied_target(cluster: &TestCluster) -> (SourceInfo, Bytes, DumpStats) {
    cluster.create_database("src").await.unwrap();
    sql(
        cluster,
        "src",
        "CREATE TABLE t (x integer); INSERT INTO t VALUES (1), (2), (3);",
    )
    .await;
    cluster.create_database("dst").await.unwrap();
    sql(
        cluster,
        "dst",
        "CREATE TABLE other (y text); INSERT INTO other VALUES ('precious');",
    )
    .await;
    dump(cluster, "src").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_refuses_non_empty_database() {
    let cluster = start_cluster().await;
    let (source, payload, stats) = source_and_occupied_target(&cluster).await;

    let err = PgRestorer::new(cluster.config("dst"))
        .restore(&source, &stats, once_bytes(payload, 1 << 20))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotEmpty, "{}", err.report());
    let text = err.to_string();
    assert!(
        text.contains("\"dst\"") && text.contains("--replace"),
        "{text}"
    );

    assert_eq!(
        count(&cluster, "dst", "SELECT count(*) FROM other").await,
        1
    );
    assert_eq!(
        count(
            &cluster,
            "dst",
            "SELECT count(*) FROM pg_class WHERE relname = 't'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replace_swaps_in_restored_database() {
    let cluster = start_cluster().await;
    let (source, payload, stats) = source_and_occupied_target(&cluster).await;

    let report = PgRestorer::new(cluster.config("dst"))
        .replace(true)
        .restore(&source, &stats, once_bytes(payload, 1 << 20))
        .await
        .unwrap_or_else(|e| panic!("restore: {}", e.report()));
    assert!(report.replaced);
    assert_eq!(report.target, "dst");
    assert_eq!(report.tables_checked, 1);
    assert_eq!(report.rows_checked, 3);

    assert_eq!(count(&cluster, "dst", "SELECT count(*) FROM t").await, 3);
    assert_eq!(
        count(
            &cluster,
            "dst",
            "SELECT count(*) FROM pg_class WHERE relname = 'other'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &cluster,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE '%dr_restore%'"
        )
        .await,
        0,
        "no scratch database is left behind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_refuses_existing_database() {
    let cluster = start_cluster().await;
    let (source, payload, stats) = source_and_occupied_target(&cluster).await;
    cluster.create_database("empty").await.unwrap();

    for target in ["dst", "empty"] {
        let err = PgRestorer::new(cluster.config(target))
            .create(true)
            .restore(&source, &stats, once_bytes(payload.clone(), 1 << 20))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists, "{}", err.report());
        assert!(err.to_string().contains(target), "{err}");
    }
    assert_eq!(
        count(&cluster, "dst", "SELECT count(*) FROM other").await,
        1
    );
    assert_eq!(user_relations(&cluster, "empty").await, 0);

    // Without --create, a missing database is an error of its own.
    let err = PgRestorer::new(cluster.config("missing"))
        .restore(&source, &stats, once_bytes(payload, 1 << 20))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{}", err.report());
}

/// The first half of `payload`, a pause (so that pg_restore is busy), then a corrupt chunk.
fn truncated(payload: &Bytes) -> ByteStream {
    let half = payload.slice(..payload.len() / 2);
    let head = once_bytes(half, 64 * 1024);
    let tail = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Err(Error::corrupt("authentication tag mismatch in chunk 7"))
    });
    Box::pin(head.chain(tail))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_payload_leaves_no_database_behind() {
    let cluster = start_cluster().await;
    cluster.create_database("src").await.unwrap();
    sql(
        &cluster,
        "src",
        "CREATE TABLE first (x integer); INSERT INTO first SELECT generate_series(1, 100000);
         CREATE TABLE second (y text); INSERT INTO second SELECT md5(i::text) FROM generate_series(1, 100000) i;
         SELECT lo_from_bytea(0, 'lo');",
    )
    .await;
    let (source, payload, stats) = dump(&cluster, "src").await;

    // --create: the new database is dropped again.
    let err = PgRestorer::new(cluster.config("created"))
        .create(true)
        .restore(&source, &stats, truncated(&payload))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{}", err.report());
    assert!(err.to_string().contains("chunk 7"), "{err}");
    assert!(!database_exists(&cluster, "created").await);

    // An existing empty database stays empty: the single transaction rolled back.
    cluster.create_database("empty").await.unwrap();
    let err = PgRestorer::new(cluster.config("empty"))
        .restore(&source, &stats, truncated(&payload))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{}", err.report());
    assert_eq!(user_relations(&cluster, "empty").await, 0);
    assert_eq!(
        count(
            &cluster,
            "empty",
            "SELECT count(*) FROM pg_largeobject_metadata"
        )
        .await,
        0
    );

    // --replace: the existing data stays, and no scratch database is left.
    cluster.create_database("occupied").await.unwrap();
    sql(
        &cluster,
        "occupied",
        "CREATE TABLE keep (z integer); INSERT INTO keep VALUES (42);",
    )
    .await;
    let err = PgRestorer::new(cluster.config("occupied"))
        .replace(true)
        .restore(&source, &stats, truncated(&payload))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{}", err.report());
    assert_eq!(
        count(&cluster, "occupied", "SELECT sum(z)::int8 FROM keep").await,
        42
    );
    assert_eq!(
        count(
            &cluster,
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE '%dr_restore%'"
        )
        .await,
        0
    );

    // The whole payload restores into the same empty database afterwards.
    let report = PgRestorer::new(cluster.config("empty"))
        .restore(&source, &stats, once_bytes(payload, 1 << 20))
        .await
        .unwrap_or_else(|e| panic!("restore: {}", e.report()));
    assert_eq!(report.tables_checked, stats.tables.len());
    assert_eq!(
        count(&cluster, "empty", "SELECT count(*) FROM second").await,
        100_000
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_count_mismatch_is_corrupt_and_drops_the_new_database() {
    let cluster = start_cluster().await;
    let (source, payload, mut stats) = source_and_occupied_target(&cluster).await;
    let t = stats.tables.iter_mut().find(|t| t.name == "t").unwrap();
    t.rows += 1;

    let err = PgRestorer::new(cluster.config("checked"))
        .create(true)
        .restore(&source, &stats, once_bytes(payload, 1 << 20))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Corrupt, "{}", err.report());
    let text = err.to_string();
    assert!(
        text.contains("\"t\"") && text.contains('3') && text.contains('4'),
        "{text}"
    );
    assert!(!database_exists(&cluster, "checked").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_records_consistent_point() {
    let cluster = start_cluster().await;
    cluster.create_database("app").await.unwrap();
    sql(
        &cluster,
        "app",
        "CREATE TABLE events (id integer); INSERT INTO events SELECT generate_series(1, 10);",
    )
    .await;

    let before = chrono::Utc::now() - chrono::Duration::seconds(5);
    let dump = PgDumper::new(cluster.config("app")).start().await.unwrap();

    // Rows committed after the snapshot are not in the dump.
    sql(
        &cluster,
        "app",
        "INSERT INTO events SELECT generate_series(11, 20);",
    )
    .await;

    let source = dump.source.clone();
    assert_eq!(source.kind, "postgres");
    assert_eq!(source.name, "app");
    let version = source.server_version.clone().unwrap();
    assert!(
        version.chars().next().unwrap().is_ascii_digit(),
        "{version}"
    );
    let point = source.consistent_point.clone().unwrap();
    let lsn = point.lsn.clone().unwrap();
    let (hi, lo) = lsn.split_once('/').unwrap_or_else(|| panic!("lsn {lsn}"));
    assert!(
        u32::from_str_radix(hi, 16).is_ok() && u64::from_str_radix(lo, 16).is_ok(),
        "{lsn}"
    );
    assert_eq!(point.timeline, Some(1));
    let at = chrono::DateTime::parse_from_rfc3339(&point.snapshot_time)
        .unwrap_or_else(|e| panic!("{}: {e}", point.snapshot_time));
    assert!(
        at > before && at < chrono::Utc::now() + chrono::Duration::seconds(5),
        "{at}"
    );

    let size_hint = dump.size_hint.expect("a database announces its size");
    let payload = collect(dump.stream).await.unwrap();
    assert!(
        size_hint >= payload.len() as u64,
        "the size estimate ({size_hint}) covers the dump ({})",
        payload.len()
    );
    let stats = dump.completion.finish().await.unwrap();
    let events = stats.tables.iter().find(|t| t.name == "events").unwrap();
    assert_eq!(
        events.rows, 10,
        "the dump reflects the snapshot, not later commits"
    );

    let report = PgRestorer::new(cluster.config("app_then"))
        .create(true)
        .restore(&source, &stats, once_bytes(payload.into(), 1 << 20))
        .await
        .unwrap();
    assert_eq!(report.rows_checked, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dump_failure_ends_the_stream_with_an_error() {
    let cluster = start_cluster().await;
    cluster.create_database("app").await.unwrap();
    sql(
        &cluster,
        "app",
        "CREATE TABLE secret (x integer); CREATE ROLE weak LOGIN; REVOKE ALL ON secret FROM PUBLIC;",
    )
    .await;
    let mut config = cluster.config("app");
    config.user("weak");
    let dump = PgDumper::new(config).start().await.unwrap();
    let err = collect(dump.stream).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database, "{}", err.report());
    assert!(
        err.to_string().contains("permission denied"),
        "{}",
        err.report()
    );
    let err = dump.completion.finish().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Database, "{}", err.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_an_unread_dump_is_an_error() {
    let cluster = start_cluster().await;
    cluster.create_database("app").await.unwrap();
    let dump = PgDumper::new(cluster.config("app")).start().await.unwrap();
    drop(dump.stream);
    let err = dump.completion.finish().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Cancelled, "{}", err.report());

    // A payload in another format is refused before anything is touched.
    let source = SourceInfo {
        kind: "directory".into(),
        format: "tar".into(),
        ..SourceInfo::default()
    };
    let err = PgRestorer::new(cluster.config("app"))
        .restore(&source, &DumpStats::default(), once_bytes(Bytes::new(), 1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{}", err.report());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_in_argv() {
    let secrets = [
        "hunter2-pässword",
        "alice",
        "db.internal.example",
        "6543",
        "shop",
    ];
    let mut config: tokio_postgres::Config =
        "host=db.internal.example port=6543 user=alice dbname=shop"
            .parse()
            .unwrap();
    config.password("hunter2-pässword");

    let dump_cmd = PgDumper::new(config.clone())
        .command("00000003-0000001B-1")
        .unwrap();
    let restore_cmd = PgRestorer::new(config).command("shop").unwrap();
    for cmd in [&dump_cmd, &restore_cmd] {
        for arg in cmd.get_args() {
            let arg = arg.to_string_lossy();
            for secret in secrets {
                assert!(!arg.contains(secret), "argument {arg:?} carries {secret:?}");
            }
        }
        let env: std::collections::HashMap<_, _> = cmd
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect();
        assert_eq!(env["PGPASSWORD"], "hunter2-pässword");
        assert_eq!(env["PGHOST"], "db.internal.example");
        assert_eq!(env["PGPORT"], "6543");
        assert_eq!(env["PGUSER"], "alice");
        assert_eq!(env["PGDATABASE"], "shop");
        assert_eq!(env["PGAPPNAME"], "dr");
    }

    // And with a password, the programs still connect (through their environment).
    let cluster = start_cluster().await;
    cluster.create_database("shop").await.unwrap();
    sql(
        &cluster,
        "shop",
        "CREATE TABLE t (x integer); INSERT INTO t VALUES (1);",
    )
    .await;
    let mut config = cluster.config("shop");
    config.password("not-needed-with-trust");
    let dump = PgDumper::new(config.clone()).start().await.unwrap();
    let payload = collect(dump.stream).await.unwrap();
    let stats = dump.completion.finish().await.unwrap();
    config.dbname("shop_copy");
    let report = PgRestorer::new(config)
        .create(true)
        .restore(&dump.source, &stats, once_bytes(payload.into(), 1 << 20))
        .await
        .unwrap();
    assert_eq!(report.rows_checked, 1);
}

/// Encoding, collation, ctype and locale provider of database `db`.
async fn locale_of(cluster: &TestCluster, db: &str) -> (String, String, String, String, String) {
    let client = cluster.connect("postgres").await.unwrap();
    let r = client
        .query_one(
            "SELECT pg_encoding_to_char(encoding)::text, datcollate::text, datctype::text, \
                    datlocprovider::text, coalesce(daticulocale, '')::text \
             FROM pg_database WHERE datname = $1",
            &[&db],
        )
        .await
        .unwrap();
    (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_gives_the_new_database_the_source_encoding_and_locale() {
    let cluster = start_cluster().await;
    // Neither is the cluster's default (UTF8, libc).
    sql(
        &cluster,
        "postgres",
        "CREATE DATABASE latin TEMPLATE template0 ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C'",
    )
    .await;
    sql(
        &cluster,
        "postgres",
        "CREATE DATABASE icu TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'de-DE'",
    )
    .await;
    for db in ["latin", "icu"] {
        sql(
            &cluster,
            db,
            "CREATE TABLE words (w text); INSERT INTO words VALUES ('café'), ('Straße'), ('zebra');",
        )
        .await;
    }

    for db in ["latin", "icu"] {
        let (source, payload, stats) = dump(&cluster, db).await;
        let recorded = locale_of(&cluster, db).await;
        assert_eq!(
            source.properties.get("encoding"),
            Some(&recorded.0),
            "{db}: the dump records the encoding"
        );
        let copy = format!("{db}_copy");
        PgRestorer::new(cluster.config(&copy))
            .create(true)
            .restore(&source, &stats, once_bytes(payload, 1 << 20))
            .await
            .unwrap_or_else(|e| panic!("{db}: {}", e.report()));
        assert_eq!(locale_of(&cluster, &copy).await, recorded, "{db}");
        let words = |d: String| {
            let cluster = &cluster;
            async move {
                let client = cluster.connect(&d).await.unwrap();
                client
                    .query("SELECT w FROM words ORDER BY w", &[])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<_, String>(0))
                    .collect::<Vec<_>>()
            }
        };
        assert_eq!(words(db.to_string()).await, words(copy).await, "{db}");
    }
    assert_eq!(locale_of(&cluster, "latin_copy").await.0, "LATIN1");
    assert_eq!(locale_of(&cluster, "icu_copy").await.3, "i");
}
