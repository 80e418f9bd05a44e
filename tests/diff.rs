//! `drctl diff` and `drctl restore --table` end to end: the sample database (plus a table
//! with a text key and one with a composite key) is backed up, then rows are deleted,
//! inserted and updated; the diff against the backup names exactly those rows, its --sql
//! statements bring the live database back, and a single restored table compares equal.

mod common;

use common::*;
use serde_json::{json, Value};

/// Tags with a text key, and the tags of QR codes under a composite key.
const TAGS: &str = r#"
CREATE TABLE "Tag" (name text PRIMARY KEY, color text NOT NULL);
CREATE TABLE "QrCodeTag" ("qrCodeId" uuid REFERENCES "QrCode"(id), tag text REFERENCES "Tag"(name),
  added date NOT NULL, PRIMARY KEY ("qrCodeId", tag));
INSERT INTO "Tag" VALUES ('red', '#f00'), ('blue', '#00f'), ('it''s, (odd)', '#888');
INSERT INTO "QrCodeTag" SELECT md5('qr' || g)::uuid, (ARRAY['red', 'it''s, (odd)'])[1 + g % 2],
  date '2024-05-01' + g FROM generate_series(1, 500) g;
"#;

/// What happens to the live database after the backup.
const DAMAGE: &str = r#"
DELETE FROM "QrCodeScan" WHERE id IN (10, 20);
UPDATE "QrCodeScan" SET country = 'XX' WHERE id = 30;
INSERT INTO "QrCodeScan" (id, "qrCodeId", "scannedAt") VALUES (100001, md5('qr1')::uuid, now());
UPDATE "User" SET name = 'Mallory' WHERE id = md5('u7')::uuid;
INSERT INTO "User" (id, email, "passwordHash") VALUES ('00000000-0000-0000-0000-000000000001', 'new@example.com', 'x');
DELETE FROM "QrCodeTag" WHERE "qrCodeId" = md5('qr2')::uuid;
UPDATE "QrCodeTag" SET added = '2000-01-01' WHERE "qrCodeId" = md5('qr3')::uuid;
DELETE FROM "QrCodeTag" WHERE tag = 'blue';
DELETE FROM "Tag" WHERE name = 'blue';
UPDATE "Tag" SET color = '#e00' WHERE name = 'red';
INSERT INTO "Tag" VALUES ('green', '#0f0');
INSERT INTO "QrCodeTag" VALUES (md5('qr4')::uuid, 'green', '2024-06-01');
"#;

/// PostgreSQL's `md5(text)::uuid`, through md5sum (no extra crate).
fn md5_uuid(text: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("md5sum runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let h = String::from_utf8_lossy(&out.stdout)[..32].to_string();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn table<'a>(diffs: &'a Value, name: &str) -> &'a Value {
    diffs
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["table"] == name)
        .unwrap_or_else(|| panic!("no {name} in {diffs}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_against_a_backup_finds_the_damage_and_its_sql_reconciles_it_exactly() {
    let cluster = cluster_with_sample(1).await;
    cluster.execute_sql("app", TAGS).await.unwrap();
    let repo = Repo::new();
    let id = repo.json(&["backup", "--db", &cluster.url("app")])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let same = repo.json(&["diff", "--db", &cluster.url("app"), "--against", &id]);
    assert_eq!(same.as_array().unwrap().len(), 5, "{same}");
    assert!(
        same.as_array()
            .unwrap()
            .iter()
            .all(|t| t["missing"] == 0 && t["extra"] == 0 && t["changed"] == 0),
        "{same}"
    );
    assert!(
        !database_exists(&cluster, "app_dr_diff").await,
        "scratch dropped"
    );

    cluster.execute_sql("app", DAMAGE).await.unwrap();
    let sql_file = repo.path().join("repair.sql");
    let out = repo.run(&[
        "--json",
        "diff",
        "--db",
        &cluster.url("app"),
        "--against",
        &id,
        "--sql",
        sql_file.to_str().unwrap(),
    ]);
    let err = fails(&out, 1);
    assert!(
        err.contains("differs from the reference in 4 of 5 tables"),
        "{err}"
    );
    let diffs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let counts = |t: &Value| {
        (
            t["missing"].clone(),
            t["extra"].clone(),
            t["changed"].clone(),
        )
    };

    let scans = table(&diffs, "public.\"QrCodeScan\"");
    assert_eq!(scans["missing_keys"], json!([["10"], ["20"]]));
    assert_eq!(scans["extra_keys"], json!([["100001"]]));
    assert_eq!(scans["changed_keys"], json!([["30"]]));
    assert_eq!(counts(scans), (json!(2), json!(1), json!(1)));
    assert!(
        scans["fetched_rows"].as_u64().unwrap() < 1000,
        "a few hash ranges of 100 000 rows are read: {scans}"
    );
    let users = table(&diffs, "public.\"User\"");
    assert_eq!(users["missing"], 0);
    assert_eq!(
        users["extra_keys"],
        json!([["00000000-0000-0000-0000-000000000001"]])
    );
    assert_eq!(users["changed_keys"], json!([[md5_uuid("u7")]]));
    let tags = table(&diffs, "public.\"Tag\"");
    assert_eq!(tags["missing_keys"], json!([["blue"]]));
    assert_eq!(tags["extra_keys"], json!([["green"]]));
    assert_eq!(tags["changed_keys"], json!([["red"]]));
    let code_tags = table(&diffs, "public.\"QrCodeTag\"");
    assert_eq!(code_tags["key_columns"], json!(["qrCodeId", "tag"]));
    assert_eq!(code_tags["missing_keys"], json!([[md5_uuid("qr2"), "red"]]));
    assert_eq!(code_tags["extra_keys"], json!([[md5_uuid("qr4"), "green"]]));
    assert_eq!(
        code_tags["changed_keys"],
        json!([[md5_uuid("qr3"), "it's, (odd)"]])
    );
    assert_eq!(table(&diffs, "public.\"QrCode\"")["changed"], 0);

    // The statements, run by a person (here: the test), reconcile the live database exactly.
    let sql = std::fs::read_to_string(&sql_file).unwrap();
    assert!(sql.starts_with("-- Statements that bring"), "{sql}");
    cluster
        .execute_sql("app", &sql)
        .await
        .unwrap_or_else(|e| panic!("{}\n{sql}", e.report()));
    let after = repo.json(&["diff", "--db", &cluster.url("app"), "--against", &id]);
    assert!(
        after
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["missing"] == 0 && t["extra"] == 0 && t["changed"] == 0),
        "{after}"
    );

    // One table, restored with what it needs into a scratch database, compares equal with
    // the live one through a database URL; no other table comes along.
    repo.json(&[
        "restore",
        &id,
        "--db",
        &cluster.url("tags_only"),
        "--create",
        "--table",
        "\"QrCodeTag\"",
    ]);
    let one = repo.json(&[
        "diff",
        "--db",
        &cluster.url("app"),
        "--against",
        &cluster.url("tags_only"),
        "--table",
        "public.QrCodeTag",
    ]);
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(one[0]["live_rows"], 500);
    assert_eq!(counts(&one[0]), (json!(0), json!(0), json!(0)));
    assert_eq!(count(&cluster, "tags_only", "QrCodeTag").await, 500);
    let c = cluster.connect("tags_only").await.unwrap();
    let tables: i64 = c
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1, "only the named table is restored");

    // Against a backup without a repository: a clear error.
    let err = fails(
        &drctl(
            &["diff", "--db", &cluster.url("app"), "--against", &id],
            &[],
        ),
        2,
    );
    assert!(err.contains("is a backup id: give --repo"), "{err}");
}
