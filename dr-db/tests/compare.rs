//! Whole-table comparison of two databases on a real throwaway cluster.

use dr_core::ErrorKind;
use dr_db::compare::{compare_tables, table_fingerprints};
use dr_db::testing::TestCluster;

const SCHEMA: &str = r#"
CREATE TABLE plain (id int PRIMARY KEY, note text, data bytea);
CREATE TABLE "Mixed ""Case"" Name" (k text PRIMARY KEY, n numeric);
"#;

async fn database(cluster: &TestCluster, name: &str, rows: &str) {
    cluster.create_database(name).await.unwrap();
    cluster
        .execute_sql(name, &format!("{SCHEMA}{rows}"))
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
}

#[tokio::test]
async fn same_rows_in_any_order_match_and_one_changed_value_is_named() {
    let cluster = TestCluster::start()
        .await
        .unwrap_or_else(|e| panic!("cannot start a test cluster: {}", e.report()));
    let rows =
        "INSERT INTO plain SELECT g, 'row ' || g, '\\x00ff'::bytea FROM generate_series(1, 500) g;
                INSERT INTO \"Mixed \"\"Case\"\" Name\" VALUES ('a', 1.5), ('b', NULL);";
    database(&cluster, "original", rows).await;
    // The same rows, written in another order.
    database(
        &cluster,
        "copy",
        "INSERT INTO plain SELECT g, 'row ' || g, '\\x00ff'::bytea FROM generate_series(500, 1, -1) g;
         INSERT INTO \"Mixed \"\"Case\"\" Name\" VALUES ('b', NULL), ('a', 1.5);",
    )
    .await;
    let tables = ["plain", "Mixed \"Case\" Name"];

    let same = compare_tables(
        &cluster.config("original"),
        &cluster.config("copy"),
        &tables,
    )
    .await
    .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(
        same.iter()
            .map(|t| (t.table.as_str(), t.rows))
            .collect::<Vec<_>>(),
        [("plain", 500), ("Mixed \"Case\" Name", 2)]
    );
    assert!(same.iter().all(|t| t.md5.len() == 32), "{same:?}");

    cluster
        .execute_sql("copy", "UPDATE plain SET note = 'changed' WHERE id = 250")
        .await
        .unwrap();
    let e = compare_tables(
        &cluster.config("original"),
        &cluster.config("copy"),
        &tables,
    )
    .await
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Corrupt);
    let message = e.to_string();
    assert!(
        message.contains("table plain differs: 500 rows (md5 ")
            && message.contains(") in original, 500 rows (md5 ")
            && message.ends_with(") in copy"),
        "{message}"
    );

    let e = table_fingerprints(&cluster.config("copy"), &["missing"])
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Database);
    assert!(e.report().contains("missing"), "{}", e.report());
}
