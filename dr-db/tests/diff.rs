//! Reconciliation (`dr_db::diff`) between two real databases on a throwaway cluster: a
//! reference and a live copy with rows deleted, inserted and updated, under text, composite
//! and integer keys, hashed binary or (for types without hash functions) as text. The diff
//! names exactly those rows, reads only a few keys, and the
//! repair statements it writes bring the live database back to the reference.

use dr_core::ErrorKind;
use dr_db::diff::{diff, DiffOptions, DiffReport, TableDiff};
use dr_db::testing::TestCluster;

const SCHEMA: &str = r#"
CREATE SCHEMA "Shop";
CREATE TABLE accounts (id text PRIMARY KEY, balance numeric NOT NULL, opened timestamptz, tags text[]);
CREATE TABLE "Shop"."Line Items" (order_id int, line smallint, sku text NOT NULL, qty int,
  total numeric GENERATED ALWAYS AS (qty * 2.5) STORED, PRIMARY KEY (order_id, line));
CREATE TABLE events (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body jsonb, raw bytea);
CREATE TABLE notes (body text);
CREATE TABLE shapes (id int PRIMARY KEY, spec json, at point);
INSERT INTO shapes SELECT g, json_build_object('g', g), point(g, g) FROM generate_series(1, 500) g;
INSERT INTO accounts VALUES ('plain', 1, '2024-01-01 10:00+02', '{a,b}'), ('it''s', 2, NULL, NULL),
  ('(x,y)', 3, now(), '{}'), ('"quoted"', 4, now(), '{"with space"}'), ('', 5, NULL, NULL),
  ('grüße', 6, now(), NULL), ('back\slash', 7, now(), NULL);
INSERT INTO accounts SELECT 'acct-' || g, g, now(), NULL FROM generate_series(1, 2000) g;
INSERT INTO "Shop"."Line Items" (order_id, line, sku, qty)
  SELECT g / 10, (g % 10)::smallint, 'sku-' || (g % 97), g % 13 FROM generate_series(1, 60000) g;
INSERT INTO events (body, raw) SELECT jsonb_build_object('n', g), decode(md5(g::text), 'hex')
  FROM generate_series(1, 30000) g;
"#;

/// What turns the reference into the live database.
const CHANGES: &str = r#"
DELETE FROM accounts WHERE id IN ('it''s', 'acct-17');
INSERT INTO accounts VALUES ('new one', 9, NULL, NULL);
UPDATE accounts SET balance = balance + 1 WHERE id IN ('(x,y)', '');
UPDATE accounts SET tags = '{a,c}' WHERE id = 'plain';
UPDATE accounts SET opened = NULL WHERE id = 'back\slash';
DELETE FROM "Shop"."Line Items" WHERE (order_id, line) IN ((5, 3), (4000, 0));
INSERT INTO "Shop"."Line Items" (order_id, line, sku, qty) VALUES (7000, 1, 'extra', 1);
UPDATE "Shop"."Line Items" SET qty = qty + 1 WHERE (order_id, line) = (123, 4);
UPDATE events SET body = body || '{"x": 1}' WHERE id = 29999;
UPDATE events SET raw = NULL WHERE id = 2;
DELETE FROM events WHERE id = 1;
UPDATE shapes SET spec = '{"g": 7, "edited": true}' WHERE id = 7;
UPDATE shapes SET at = point(0, 0) WHERE id = 9;
"#;

fn keys(k: &[&[&str]]) -> Vec<Vec<String>> {
    k.iter()
        .map(|k| k.iter().map(|s| s.to_string()).collect())
        .collect()
}

fn table<'a>(report: &'a DiffReport, name: &str) -> &'a TableDiff {
    report
        .tables
        .iter()
        .find(|t| t.table == name)
        .unwrap_or_else(|| panic!("no table {name} in {report:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_finds_exactly_the_changed_rows_and_its_sql_repairs_them() {
    let cluster = TestCluster::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    cluster.create_database("reference").await.unwrap();
    cluster.execute_sql("reference", SCHEMA).await.unwrap();
    // A copy, row for row.
    cluster
        .execute_sql("postgres", "CREATE DATABASE live TEMPLATE reference")
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    let (live, reference) = (cluster.config("live"), cluster.config("reference"));

    let same = diff(&live, &reference, &DiffOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(same.without_key, ["public.notes"]);
    assert_eq!(same.tables.len(), 4);
    assert!(same.tables.iter().all(TableDiff::is_same), "{same:?}");
    assert!(same.tables.iter().all(|t| t.fetched_rows == 0), "{same:?}");
    assert_eq!(table(&same, "\"Shop\".\"Line Items\"").live_rows, 60000);

    cluster.execute_sql("live", CHANGES).await.unwrap();
    let opts = DiffOptions {
        repair_sql: true,
        ..DiffOptions::default()
    };
    let found = diff(&live, &reference, &opts).await.unwrap();

    let accounts = table(&found, "public.accounts");
    assert_eq!(accounts.key_columns, ["id"]);
    assert_eq!(accounts.missing_keys, keys(&[&["acct-17"], &["it's"]]));
    assert_eq!(accounts.extra_keys, keys(&[&["new one"]]));
    assert_eq!(
        accounts.changed_keys,
        keys(&[&[""], &["(x,y)"], &["back\\slash"], &["plain"]])
    );
    assert_eq!(
        (accounts.missing, accounts.extra, accounts.changed),
        (2, 1, 4)
    );
    let items = table(&found, "\"Shop\".\"Line Items\"");
    assert_eq!(items.key_columns, ["order_id", "line"]);
    assert_eq!(items.missing_keys, keys(&[&["4000", "0"], &["5", "3"]]));
    assert_eq!(items.extra_keys, keys(&[&["7000", "1"]]));
    assert_eq!(items.changed_keys, keys(&[&["123", "4"]]));
    assert!(
        items.fetched_rows < 200,
        "only the keys of a few hash ranges are read, not 60 000: {items:?}"
    );
    let events = table(&found, "public.events");
    assert_eq!(events.missing_keys, keys(&[&["1"]]));
    assert_eq!(events.changed_keys, keys(&[&["2"], &["29999"]]));
    assert!(events.extra_keys.is_empty());
    // json and point have no hash functions: their table is hashed through its text form.
    let shapes = table(&found, "public.shapes");
    assert_eq!((shapes.hashing, events.hashing), ("text", "binary"));
    assert_eq!(shapes.changed_keys, keys(&[&["7"], &["9"]]));
    assert!(shapes.missing_keys.is_empty() && shapes.extra_keys.is_empty());

    // The statements bring the live database back: the diff is empty afterwards.
    let sql = found.repair_sql.clone().unwrap();
    assert!(
        sql.contains("DELETE FROM \"public\".\"accounts\" WHERE \"id\" = 'new one';"),
        "{sql}"
    );
    assert!(
        !sql.contains("\"total\""),
        "generated columns are not written: {sql}"
    );
    cluster
        .execute_sql("live", &sql)
        .await
        .unwrap_or_else(|e| panic!("{}\n{sql}", e.report()));
    let after = diff(&live, &reference, &DiffOptions::default())
        .await
        .unwrap();
    assert!(after.tables.iter().all(TableDiff::is_same), "{after:?}");

    // Narrowing in more steps (few keys per step) finds the same rows.
    cluster.execute_sql("live", CHANGES).await.unwrap();
    let narrow = diff(
        &live,
        &reference,
        &DiffOptions {
            leaf_rows: 2,
            ..DiffOptions::default()
        },
    )
    .await
    .unwrap();
    let items_narrow = table(&narrow, "\"Shop\".\"Line Items\"");
    assert!(items_narrow.levels >= 2, "{items_narrow:?}");
    assert_eq!(
        (
            &items_narrow.missing_keys,
            &items_narrow.extra_keys,
            &items_narrow.changed_keys
        ),
        (&items.missing_keys, &items.extra_keys, &items.changed_keys)
    );
    assert!(items_narrow.fetched_rows <= items.fetched_rows);
    assert_eq!(table(&narrow, "public.accounts").changed, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_that_cannot_be_compared_are_errors_that_say_why() {
    let cluster = TestCluster::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    cluster.create_database("a").await.unwrap();
    cluster.create_database("b").await.unwrap();
    cluster
        .execute_sql("a", "CREATE TABLE t (id int PRIMARY KEY, v text, w int); CREATE TABLE nokey (v int); CREATE TABLE only_here (id int PRIMARY KEY);")
        .await
        .unwrap();
    cluster
        .execute_sql(
            "b",
            "CREATE TABLE t (id int PRIMARY KEY, v varchar(3), x int);",
        )
        .await
        .unwrap();
    let (a, b) = (cluster.config("a"), cluster.config("b"));
    let named = |names: &[&str]| DiffOptions {
        tables: names.iter().map(|n| n.parse().unwrap()).collect(),
        ..DiffOptions::default()
    };
    let e = diff(&a, &b, &named(&["t"])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    let text = e.to_string();
    assert!(
        text.contains(
            "column v is text in the live table but character varying(3) in the reference"
        ),
        "{text}"
    );
    assert!(
        text.contains("column w is only in the live table"),
        "{text}"
    );
    assert!(
        text.contains("column x is only in the reference table"),
        "{text}"
    );
    let e = diff(&a, &b, &named(&["nokey"])).await.unwrap_err();
    assert!(e.to_string().contains("has no primary key"), "{e}");
    let e = diff(&a, &b, &named(&["only_here"])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        e.to_string().contains("not in the reference database"),
        "{e}"
    );
    let e = diff(&a, &b, &named(&["nowhere"])).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound);
    assert!(
        e.to_string()
            .contains("table nowhere is not in the live database"),
        "{e}"
    );
}
