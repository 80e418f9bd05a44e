//! Restoring only some tables of a dump (`PgRestorer::tables`), against a real cluster: the
//! named tables arrive with what they need to work (schema, types, sequences, defaults,
//! constraints, indexes, triggers and their functions) and without the tables, views and
//! foreign keys that merely sit beside them.

use bytes::Bytes;
use dr_core::stage::{collect, once_bytes};
use dr_core::{DumpStats, Dumper, ErrorKind, Restorer, SourceInfo};
use dr_db::tables::TableName;
use dr_db::testing::TestCluster;
use dr_db::{PgDumper, PgRestorer};

async fn dump(cluster: &TestCluster, db: &str) -> (SourceInfo, Bytes, DumpStats) {
    let dump = PgDumper::new(cluster.config(db)).start().await.unwrap();
    let payload = collect(dump.stream).await.unwrap();
    let stats = dump.completion.finish().await.unwrap();
    (dump.source, Bytes::from(payload), stats)
}

async fn query_i64(cluster: &TestCluster, db: &str, sql: &str) -> i64 {
    let client = cluster.connect(db).await.unwrap();
    client
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}: {sql}"))
        .get(0)
}

async fn exists(cluster: &TestCluster, db: &str, regclass: &str) -> bool {
    let client = cluster.connect(db).await.unwrap();
    client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&regclass])
        .await
        .unwrap()
        .get(0)
}

const SHOP: &str = r#"
CREATE SCHEMA shop;
CREATE TYPE shop.status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE shop.customers (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL);
CREATE TABLE shop.orders (
  id serial PRIMARY KEY,
  customer int NOT NULL REFERENCES shop.customers(id),
  status shop.status NOT NULL DEFAULT 'new',
  total numeric(10,2) CHECK (total >= 0),
  touched timestamptz
);
CREATE INDEX orders_customer_idx ON shop.orders(customer);
CREATE FUNCTION shop.touch() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN NEW.touched := '2000-01-01'; RETURN NEW; END $$;
CREATE TRIGGER orders_touch BEFORE UPDATE ON shop.orders FOR EACH ROW EXECUTE FUNCTION shop.touch();
CREATE VIEW shop.big_orders AS SELECT * FROM shop.orders WHERE total > 100;
COMMENT ON TABLE shop.orders IS 'what people bought';
CREATE TABLE shop.audit (id bigserial PRIMARY KEY, what text);
CREATE TABLE public.events (day date NOT NULL, n int) PARTITION BY RANGE (day);
CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
INSERT INTO shop.customers (name) SELECT 'c' || g FROM generate_series(1, 20) g;
INSERT INTO shop.orders (customer, status, total)
  SELECT 1 + g % 20, (ARRAY['new','paid','shipped']::shop.status[])[1 + g % 3], g * 1.5 FROM generate_series(1, 300) g;
INSERT INTO shop.audit (what) SELECT 'a' || g FROM generate_series(1, 50) g;
INSERT INTO public.events SELECT date '2024-06-01' + g, g FROM generate_series(1, 400) g;
"#;

fn names(list: &[&str]) -> Vec<TableName> {
    list.iter().map(|n| n.parse().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_table_restores_with_its_sequence_defaults_indexes_and_triggers() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.create_database("shop").await.unwrap();
    cluster.execute_sql("shop", SHOP).await.unwrap();
    let (source, payload, stats) = dump(&cluster, "shop").await;

    let report = PgRestorer::new(cluster.config("one"))
        .create(true)
        .tables(names(&["orders"]))
        .restore(&source, &stats, once_bytes(payload.clone(), 4096))
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(report.tables_checked, 1, "only the named table's count");
    assert_eq!(report.rows_checked, 300);

    assert_eq!(
        query_i64(&cluster, "one", "SELECT count(*) FROM shop.orders").await,
        300
    );
    for absent in [
        "shop.customers",
        "shop.audit",
        "shop.big_orders",
        "public.events",
    ] {
        assert!(
            !exists(&cluster, "one", absent).await,
            "{absent} is left out"
        );
    }
    for present in [
        "shop.orders_pkey",
        "shop.orders_customer_idx",
        "shop.orders_id_seq",
    ] {
        assert!(
            exists(&cluster, "one", present).await,
            "{present} comes along"
        );
    }
    // The serial's sequence carries on after the restored rows; the default, the enum, the
    // check constraint and the trigger (with its function) work.
    cluster
        .execute_sql(
            "one",
            "INSERT INTO shop.orders (customer, total) VALUES (7, 1); \
             UPDATE shop.orders SET total = 2 WHERE id = 1;",
        )
        .await
        .unwrap();
    assert_eq!(
        query_i64(&cluster, "one", "SELECT max(id)::int8 FROM shop.orders WHERE status = 'new' AND customer = 7 AND total = 1").await,
        301
    );
    assert_eq!(
        query_i64(
            &cluster,
            "one",
            "SELECT count(*) FROM shop.orders WHERE touched IS NOT NULL"
        )
        .await,
        1,
        "the trigger fired"
    );
    let e = cluster
        .execute_sql(
            "one",
            "INSERT INTO shop.orders (customer, total) VALUES (1, -1)",
        )
        .await
        .unwrap_err();
    assert!(e.report().contains("check constraint"), "{}", e.report());
    assert_eq!(
        query_i64(
            &cluster,
            "one",
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        )
        .await,
        0,
        "no foreign key to a table that is not there"
    );
    assert_eq!(
        query_i64(&cluster, "one", "SELECT count(*) FROM pg_description d JOIN pg_class c ON c.oid = d.objoid WHERE c.relname = 'orders'").await,
        1,
        "the table's comment"
    );

    // Both sides of the foreign key: it comes along, and so does the identity column.
    PgRestorer::new(cluster.config("two"))
        .create(true)
        .tables(names(&["shop.orders", "customers"]))
        .restore(&source, &stats, once_bytes(payload.clone(), 1 << 20))
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(
        query_i64(
            &cluster,
            "two",
            "SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
        )
        .await,
        1
    );
    cluster
        .execute_sql("two", "INSERT INTO shop.customers (name) VALUES ('new')")
        .await
        .unwrap();
    assert_eq!(
        query_i64(&cluster, "two", "SELECT max(id)::int8 FROM shop.customers").await,
        21
    );

    // A partitioned table brings its partitions and their rows.
    let report = PgRestorer::new(cluster.config("three"))
        .create(true)
        .tables(names(&["events"]))
        .restore(&source, &stats, once_bytes(payload.clone(), 1 << 20))
        .await
        .unwrap_or_else(|e| panic!("{}", e.report()));
    assert_eq!(report.tables_checked, 2, "both partitions' counts");
    assert_eq!(
        query_i64(&cluster, "three", "SELECT count(*) FROM public.events").await,
        400
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tables_and_replace_are_refused_before_anything_is_created() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.create_database("shop").await.unwrap();
    cluster.execute_sql("shop", SHOP).await.unwrap();
    let (source, payload, stats) = dump(&cluster, "shop").await;

    let e = PgRestorer::new(cluster.config("nope"))
        .create(true)
        .tables(names(&["shop.nothing"]))
        .restore(&source, &stats, once_bytes(payload.clone(), 4096))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotFound, "{}", e.report());
    assert!(e.report().contains("shop.nothing"), "{}", e.report());
    assert!(
        e.report().contains("shop.orders"),
        "lists the tables: {}",
        e.report()
    );
    let client = cluster.connect("postgres").await.unwrap();
    let created: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = 'nope'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 0, "no database for a restore that cannot happen");

    let e = PgRestorer::new(cluster.config("shop"))
        .replace(true)
        .tables(names(&["orders"]))
        .restore(&source, &stats, once_bytes(payload, 4096))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{}", e.report());
    assert_eq!(
        query_i64(&cluster, "shop", "SELECT count(*) FROM shop.audit").await,
        50,
        "the target is untouched"
    );
}
