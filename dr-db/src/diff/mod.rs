//! Reconciliation: which rows of a live database differ from a reference copy (a restored
//! backup, a replica), table by table and key by key, without pulling whole tables across
//! (by ranges of primary-key hashes), and the SQL that would bring the live rows back.
//!
//! Rows are matched by primary key and compared by the text of all their columns (with the
//! same output settings on both sides), so a change in any column is seen. Each side is
//! read in one `REPEATABLE READ` snapshot.

mod ranges;
mod repair;
mod shape;

use std::time::Instant;

use serde::Serialize;
use tokio_postgres::{Client, Config};

use dr_core::Result;

use crate::conn::{connect, db_error};
use crate::tables::TableName;

/// How one table differs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableDiff {
    /// `schema.name`, quoted where needed.
    pub table: String,
    /// The primary key's columns, in order: each key below lists their values as text.
    pub key_columns: Vec<String>,
    /// Rows in the reference but not in the live table.
    pub missing: u64,
    /// Rows in the live table but not in the reference.
    pub extra: u64,
    /// Rows in both whose columns differ.
    pub changed: u64,
    /// The keys of the missing rows.
    pub missing_keys: Vec<Vec<String>>,
    /// The keys of the extra rows.
    pub extra_keys: Vec<Vec<String>>,
    /// The keys of the changed rows.
    pub changed_keys: Vec<Vec<String>>,
    /// Rows of the live table.
    pub live_rows: u64,
    /// Rows of the reference table.
    pub reference_rows: u64,
    /// Keys read from both sides (the rest was compared as hashes of key ranges).
    pub fetched_rows: u64,
    /// Narrowing steps taken.
    pub levels: u32,
    /// How rows were hashed: `binary` (each type's own hash function) or `text` (a column
    /// type without one, or a server before PostgreSQL 14).
    pub hashing: &'static str,
    /// How long the comparison took, in milliseconds.
    pub duration_ms: u64,
}

impl TableDiff {
    /// The table is the same on both sides.
    pub fn is_same(&self) -> bool {
        self.missing + self.extra + self.changed == 0
    }
}

/// What [`diff`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiffReport {
    /// The tables compared, in the order asked (schema and name order when all).
    pub tables: Vec<TableDiff>,
    /// Tables left out because they have no primary key (only when no table was named).
    pub without_key: Vec<String>,
    /// Statements that would bring the live tables back to the reference's rows (when asked
    /// for, see [`DiffOptions::repair_sql`]); never run by dr.
    #[serde(skip)]
    pub repair_sql: Option<String>,
}

/// What [`diff`] compares and writes.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// The tables to compare; empty: every table of the live database that has a primary
    /// key.
    pub tables: Vec<TableName>,
    /// Also write the repair statements ([`DiffReport::repair_sql`]).
    pub repair_sql: bool,
    /// Read keys once the differing hash ranges of a table hold at most this many rows;
    /// fewer means fewer keys read but more passes over the table.
    pub leaf_rows: u64,
}

impl Default for DiffOptions {
    /// Every table with a primary key, no repair statements, keys read at 20 000 rows.
    fn default() -> Self {
        DiffOptions {
            tables: Vec::new(),
            repair_sql: false,
            leaf_rows: 20_000,
        }
    }
}

/// Output settings both sides share, so that equal values print as equal text.
const SESSION: &str = "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
     SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; SET bytea_output = 'hex'; \
     BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY";

/// Compare the tables of the live database with the same tables of the reference database.
/// A table missing from the reference, or whose columns or primary key differ there, is an
/// error saying so; a named table without a primary key is [`dr_core::ErrorKind::InvalidInput`].
pub async fn diff(live: &Config, reference: &Config, opts: &DiffOptions) -> Result<DiffReport> {
    let live = connect(live, "diff (live)").await?;
    let reference = connect(reference, "diff (reference)").await?;
    let result = diff_with(&live.client, &reference.client, opts).await;
    let _ = live.close().await;
    let _ = reference.close().await;
    result
}

async fn diff_with(live: &Client, reference: &Client, opts: &DiffOptions) -> Result<DiffReport> {
    for client in [live, reference] {
        client
            .batch_execute(SESSION)
            .await
            .map_err(|e| db_error("cannot set up the diff's session", e))?;
    }
    let (shapes, without_key) = shape::live_tables(live, &opts.tables).await?;
    let mut tables = Vec::new();
    let mut repair = opts.repair_sql.then(|| {
        "-- Statements that bring the live tables back to the reference's rows, written by \
         dr diff.\n-- Read them before running them: foreign keys between tables may need \
         another order.\nSET standard_conforming_strings = on;\nBEGIN;\n"
            .to_string()
    });
    for shape in &shapes {
        shape::check_reference(reference, shape).await?;
        let started = Instant::now();
        let keys = ranges::diff_table(live, reference, shape, opts.leaf_rows)
            .await
            .map_err(|e| e.with_context("table", shape.display()))?;
        let diff = TableDiff {
            table: shape.display(),
            key_columns: shape.key_columns().map(|c| c.name.clone()).collect(),
            missing: keys.missing.len() as u64,
            extra: keys.extra.len() as u64,
            changed: keys.changed.len() as u64,
            missing_keys: keys.missing,
            extra_keys: keys.extra,
            changed_keys: keys.changed,
            live_rows: keys.live_rows,
            reference_rows: keys.reference_rows,
            fetched_rows: keys.fetched_rows,
            levels: keys.levels,
            hashing: keys.hashing,
            duration_ms: started.elapsed().as_millis() as u64,
        };
        tracing::info!(table = %diff.table, missing = diff.missing, extra = diff.extra,
            changed = diff.changed, fetched = diff.fetched_rows, "table compared");
        if let Some(sql) = repair.as_mut() {
            if !diff.is_same() {
                sql.push_str(&repair::repair_statements(reference, shape, &diff).await?);
            }
        }
        tables.push(diff);
    }
    if let Some(sql) = repair.as_mut() {
        sql.push_str("COMMIT;\n");
    }
    for client in [live, reference] {
        let _ = client.batch_execute("ROLLBACK").await;
    }
    Ok(DiffReport {
        tables,
        without_key,
        repair_sql: repair,
    })
}
