//! Integrity checks (`dr_db::checks::run_checks`) against real clusters: amcheck finds a
//! B-tree whose order no longer holds, the sequence check finds a sequence behind its
//! column, and a user's query that returns rows fails, naming the check and the rows.

use dr_core::ErrorKind;
use dr_db::checks::{run_checks, CheckKind, CheckOutcome, IntegrityChecks, SqlCheck};
use dr_db::testing::TestCluster;

async fn cluster_with(db: &str, sql: &str) -> TestCluster {
    let cluster = TestCluster::start()
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    cluster.create_database(db).await.unwrap();
    cluster
        .execute_sql(db, sql)
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    cluster
}

fn none() -> IntegrityChecks {
    IntegrityChecks {
        amcheck: false,
        sequences: false,
        sql: Vec::new(),
    }
}

fn outcome<'a>(outcomes: &'a [CheckOutcome], name: &str) -> &'a CheckOutcome {
    outcomes
        .iter()
        .find(|o| o.name == name)
        .unwrap_or_else(|| panic!("no outcome {name} in {outcomes:?}"))
}

/// An index built with one order, whose comparison function is then replaced by the
/// reverse: every page of it now breaks the B-tree invariant, as after a collation change.
const REORDERED_INDEX: &str = r#"
CREATE FUNCTION cmp_int(int, int) RETURNS int LANGUAGE sql IMMUTABLE
  AS $$ SELECT CASE WHEN $1 < $2 THEN -1 WHEN $1 > $2 THEN 1 ELSE 0 END $$;
CREATE OPERATOR CLASS int_by_cmp FOR TYPE int USING btree AS
  OPERATOR 1 <, OPERATOR 2 <=, OPERATOR 3 =, OPERATOR 4 >=, OPERATOR 5 >,
  FUNCTION 1 cmp_int(int, int);
CREATE TABLE readings (id int PRIMARY KEY, v int, note text);
INSERT INTO readings SELECT g, g * 7 % 1000, repeat('x', g % 300) FROM generate_series(1, 5000) g;
CREATE INDEX readings_v_idx ON readings (v int_by_cmp);
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amcheck_passes_a_sound_database_and_finds_a_broken_btree() {
    let cluster = cluster_with("app", REORDERED_INDEX).await;
    let config = cluster.config("app");
    let amcheck = || IntegrityChecks {
        amcheck: true,
        ..none()
    };

    let outcomes = run_checks(&config, &amcheck()).await.unwrap();
    assert_eq!(outcomes.len(), 1);
    let ok = &outcomes[0];
    assert_eq!((ok.kind, ok.name.as_str()), (CheckKind::Amcheck, "amcheck"));
    assert!(ok.passed, "{ok:?}");
    assert!(ok.summary.contains("B-tree indexes and"), "{ok:?}");
    let client = cluster.connect("app").await.unwrap();
    let left: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_extension WHERE extname = 'amcheck'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the extension it created is dropped again");

    cluster
        .execute_sql(
            "app",
            "CREATE OR REPLACE FUNCTION cmp_int(int, int) RETURNS int LANGUAGE sql IMMUTABLE \
             AS $$ SELECT CASE WHEN $1 < $2 THEN 1 WHEN $1 > $2 THEN -1 ELSE 0 END $$",
        )
        .await
        .unwrap();
    let outcomes = run_checks(&config, &amcheck()).await.unwrap();
    let broken = &outcomes[0];
    assert!(!broken.passed, "{broken:?}");
    assert_eq!(broken.details.len(), 1, "{broken:?}");
    assert!(
        broken.details[0].starts_with("index readings_v_idx: "),
        "names the index: {broken:?}"
    );
    assert!(broken.details[0].contains("order"), "{broken:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequence_behind_its_column_is_found() {
    let cluster = cluster_with(
        "app",
        r#"
        CREATE TABLE "Orders" (id serial PRIMARY KEY, item text);
        CREATE TABLE tickets (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, t text);
        CREATE SEQUENCE shared_seq;
        CREATE TABLE notes (n int NOT NULL DEFAULT nextval('shared_seq'), body text);
        CREATE TABLE countdown (n int);
        CREATE SEQUENCE down_seq INCREMENT -1 MINVALUE -1000 MAXVALUE 0 START 0 OWNED BY countdown.n;
        INSERT INTO "Orders" (item) SELECT 'i' || g FROM generate_series(1, 40) g;
        INSERT INTO tickets (t) SELECT 't' || g FROM generate_series(1, 10) g;
        INSERT INTO notes (body) SELECT 'b' || g FROM generate_series(1, 5) g;
        INSERT INTO countdown SELECT nextval('down_seq') FROM generate_series(1, 5);
        "#,
    )
    .await;
    let config = cluster.config("app");
    let sequences = || IntegrityChecks {
        sequences: true,
        ..none()
    };
    let outcomes = run_checks(&config, &sequences()).await.unwrap();
    let ok = outcome(&outcomes, "sequences");
    assert!(ok.passed, "{ok:?}");
    assert_eq!(ok.summary, "4 sequences feeding 4 columns");

    cluster
        .execute_sql(
            "app",
            r#"SELECT setval('"Orders_id_seq"', 12);
               SELECT setval('tickets_id_seq', 10, false);
               SELECT setval('down_seq', -2);"#,
        )
        .await
        .unwrap();
    let outcomes = run_checks(&config, &sequences()).await.unwrap();
    let behind = outcome(&outcomes, "sequences");
    assert!(!behind.passed);
    assert_eq!(behind.details.len(), 3, "{behind:?}");
    let text = behind.details.join("\n");
    assert!(
        text.contains(
            r#"sequence "Orders_id_seq" would next give 13, but "Orders".id already holds 40"#
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "sequence tickets_id_seq would next give 10, but tickets.id already holds 10"
        ),
        "{text}"
    );
    assert!(
        text.contains("sequence down_seq would next give -3, but countdown.n already holds -4"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn user_checks_pass_on_no_rows_and_fail_naming_the_check_and_the_rows() {
    let cluster = cluster_with(
        "app",
        "CREATE TABLE accounts (id int PRIMARY KEY, owner text, balance numeric);
         INSERT INTO accounts SELECT g, 'owner ' || g, 100 - g FROM generate_series(1, 108) g;",
    )
    .await;
    let config = cluster.config("app");
    let check = |name: &str, sql: &str| SqlCheck {
        name: name.into(),
        sql: sql.into(),
    };
    let checks = IntegrityChecks {
        sql: vec![
            check(
                "owners_named",
                "SELECT id FROM accounts WHERE owner IS NULL;",
            ),
            check(
                "no_negative_balances",
                "SELECT id, balance FROM accounts WHERE balance < 0 ORDER BY id",
            ),
        ],
        ..none()
    };
    let outcomes = run_checks(&config, &checks).await.unwrap();
    let ok = outcome(&outcomes, "owners_named");
    assert!(
        ok.passed && ok.details.is_empty() && ok.summary == "0 rows",
        "{ok:?}"
    );
    let bad = outcome(&outcomes, "no_negative_balances");
    assert_eq!(bad.kind, CheckKind::Sql);
    assert!(!bad.passed);
    assert_eq!(bad.summary, "8 rows");
    assert_eq!(
        bad.details,
        [
            "id=101, balance=-1",
            "id=102, balance=-2",
            "id=103, balance=-3",
            "id=104, balance=-4",
            "id=105, balance=-5",
            "… and 3 more"
        ]
    );

    // A query PostgreSQL rejects, one that writes, and two statements: the check cannot
    // run, and the error names it.
    for (sql, says) in [
        (
            "SELECT nope FROM accounts",
            "column \"nope\" does not exist",
        ),
        ("DELETE FROM accounts RETURNING id", "syntax error"),
        ("SELECT 1; SELECT 2", "multiple commands"),
    ] {
        let checks = IntegrityChecks {
            sql: vec![check("broken", sql)],
            ..none()
        };
        let e = run_checks(&config, &checks).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{sql}: {}", e.report());
        assert!(
            e.to_string().starts_with("check 'broken' cannot run: "),
            "{e}"
        );
        assert!(e.report().contains(says), "{sql}: {}", e.report());
    }
    let client = cluster.connect("app").await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 108, "a check never changes data");
}
