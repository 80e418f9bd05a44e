//! Integrity checks of a restored database beyond row counts: the runbook's orphaned-row
//! queries, derived from the database's own foreign keys ([`foreign_key_orphans`]), and
//! [`run_checks`]: PostgreSQL's `amcheck` over every B-tree index and table, sequences that
//! fell behind the columns they feed, and the user's own queries that must return no rows.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Config, SimpleQueryMessage};

use dr_core::{Error, ErrorKind, Result};

use crate::conn::{connect, db_error};

/// One foreign key and the rows that break it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ForeignKeyCheck {
    /// The constraint's name.
    pub constraint: String,
    /// The referencing table (schema-qualified where needed).
    pub table: String,
    /// The referenced table.
    pub references: String,
    /// Rows of `table` whose key (all columns non-null, as `MATCH SIMPLE` checks) has no
    /// row in `references`.
    pub orphans: u64,
}

/// Count, for every foreign key of the database `config` names, the rows that reference a
/// missing row. A restore by `pg_restore` validates the keys it creates, so orphans point at
/// keys that were `NOT VALID` at the source, or at damage done after the restore.
pub async fn foreign_key_orphans(config: &Config) -> Result<Vec<ForeignKeyCheck>> {
    let conn = connect(config, "check").await?;
    let result = async {
        let keys = conn
            .client
            .query(
                "SELECT c.conname::text, c.conrelid::regclass::text, c.confrelid::regclass::text, \
                        (SELECT array_agg(quote_ident(a.attname) ORDER BY k.ord) \
                         FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord) \
                         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum), \
                        (SELECT array_agg(quote_ident(a.attname) ORDER BY k.ord) \
                         FROM unnest(c.confkey) WITH ORDINALITY k(attnum, ord) \
                         JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum) \
                 FROM pg_constraint c WHERE c.contype = 'f' ORDER BY 2, 1",
                &[],
            )
            .await
            .map_err(|e| db_error("cannot list the foreign keys", e))?;
        let mut checks = Vec::with_capacity(keys.len());
        for key in keys {
            let (constraint, table, references): (String, String, String) =
                (key.get(0), key.get(1), key.get(2));
            let columns: Vec<String> = key.get(3);
            let referenced: Vec<String> = key.get(4);
            let sql = orphan_query(&table, &references, &columns, &referenced);
            let orphans: i64 = conn
                .client
                .query_one(&sql, &[])
                .await
                .map_err(|e| {
                    db_error("cannot count the rows breaking a foreign key", e)
                        .with_context("constraint", &constraint)
                })?
                .get(0);
            checks.push(ForeignKeyCheck {
                constraint,
                table,
                references,
                orphans: orphans as u64,
            });
        }
        Ok(checks)
    }
    .await;
    let _ = conn.close().await;
    result
}

/// The checks [`run_checks`] runs, beyond row counts and foreign keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntegrityChecks {
    /// PostgreSQL's `amcheck` (the extension is created in the checked database when it is
    /// missing, and dropped again): `bt_index_check` on every B-tree index, `verify_heapam`
    /// (with TOAST) on every table and materialized view. Creating the extension takes a
    /// superuser; without one, turn this off.
    pub amcheck: bool,
    /// Every sequence that a column takes its values from (`serial`, identity, a
    /// `nextval(…)` default, `OWNED BY`) must be ahead of the values already in the column.
    pub sequences: bool,
    /// The user's queries that must return no rows.
    pub sql: Vec<SqlCheck>,
}

impl Default for IntegrityChecks {
    /// `amcheck` and sequences on, no user queries.
    fn default() -> Self {
        IntegrityChecks {
            amcheck: true,
            sequences: true,
            sql: Vec::new(),
        }
    }
}

/// A user's check: a query that must return no rows (each row it returns is a problem, e.g.
/// `SELECT id FROM accounts WHERE balance < 0`). It runs in a read-only transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlCheck {
    /// A short name, used in reports and messages.
    pub name: String,
    /// One `SELECT` (or `VALUES`, or `WITH …`) statement; a trailing `;` is allowed.
    pub sql: String,
}

/// What kind of check a [`CheckOutcome`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// `amcheck`'s B-tree and heap checks.
    Amcheck,
    /// Sequences against the columns they feed.
    Sequences,
    /// A user's query.
    Sql,
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckOutcome {
    /// `amcheck`, `sequences`, or the user check's name.
    pub name: String,
    /// What kind of check it is.
    pub kind: CheckKind,
    /// No problem found.
    pub passed: bool,
    /// What was checked, or found: "43 indexes and 17 tables", "3 rows".
    pub summary: String,
    /// The problems found (the first [`MAX_DETAILS`] of them); empty when it passed.
    pub details: Vec<String>,
    /// How long the check took, in milliseconds.
    pub duration_ms: u64,
}

/// How many problems (or rows of a user check) an outcome lists.
pub const MAX_DETAILS: usize = 5;

/// Run `checks` on the database `config` names, in order: `amcheck`, sequences, then the
/// user's queries. Problems found are outcomes with `passed` false; a check that cannot run
/// at all is an error: a user query that PostgreSQL rejects is [`ErrorKind::InvalidInput`]
/// naming the check, `amcheck` missing from the server or not creatable by this user is
/// [`ErrorKind::MissingPrerequisite`] saying how to get it or turn it off.
pub async fn run_checks(config: &Config, checks: &IntegrityChecks) -> Result<Vec<CheckOutcome>> {
    let conn = connect(config, "check").await?;
    let result = async {
        let mut outcomes = Vec::new();
        if checks.amcheck {
            outcomes.push(timed(CheckKind::Amcheck, "amcheck", amcheck(&conn.client)).await?);
        }
        if checks.sequences {
            outcomes.push(timed(CheckKind::Sequences, "sequences", sequences(&conn.client)).await?);
        }
        for check in &checks.sql {
            outcomes
                .push(timed(CheckKind::Sql, &check.name, user_check(&conn.client, check)).await?);
        }
        Ok(outcomes)
    }
    .await;
    let _ = conn.close().await;
    result
}

/// Run a check that yields its summary and problems; time it.
async fn timed(
    kind: CheckKind,
    name: &str,
    check: impl std::future::Future<Output = Result<(String, Vec<String>)>>,
) -> Result<CheckOutcome> {
    let started = Instant::now();
    let (summary, details) = check.await?;
    let passed = details.is_empty();
    Ok(CheckOutcome {
        name: name.to_string(),
        kind,
        passed,
        summary,
        details,
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// The first [`MAX_DETAILS`] problems, and how many more there were.
fn capped(mut problems: Vec<String>) -> Vec<String> {
    if problems.len() > MAX_DETAILS {
        let more = problems.len() - MAX_DETAILS;
        problems.truncate(MAX_DETAILS);
        problems.push(format!("… and {more} more"));
    }
    problems
}

/// Whether a failed statement reports damage (SQLSTATE class XX: internal error, data or
/// index corrupted; class 58: I/O error reading a relation) rather than a usage problem.
fn reports_damage(e: &tokio_postgres::Error) -> Option<String> {
    let db = e.as_db_error()?;
    let class = &db.code().code()[..2];
    (class == "XX" || class == "58").then(|| db.message().to_string())
}

/// `amcheck` over every B-tree index and every table of the database.
async fn amcheck(client: &Client) -> Result<(String, Vec<String>)> {
    let found: Option<String> = client
        .query_opt(
            "SELECT quote_ident(n.nspname) FROM pg_extension e \
             JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'",
            &[],
        )
        .await
        .map_err(|e| db_error("cannot look for the amcheck extension", e))?
        .map(|r| r.get(0));
    let (schema, created) = match found {
        Some(schema) => (schema, false),
        None => {
            client
                .batch_execute("CREATE EXTENSION amcheck")
                .await
                .map_err(amcheck_unavailable)?;
            let schema: String = client
                .query_one(
                    "SELECT quote_ident(n.nspname) FROM pg_extension e \
                     JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'",
                    &[],
                )
                .await
                .map_err(|e| db_error("cannot look for the amcheck extension", e))?
                .get(0);
            (schema, true)
        }
    };
    let result = amcheck_relations(client, &schema).await;
    if created {
        client
            .batch_execute("DROP EXTENSION amcheck")
            .await
            .map_err(|e| db_error("cannot drop the amcheck extension after the check", e))?;
    }
    result
}

fn amcheck_unavailable(e: tokio_postgres::Error) -> Error {
    let reason = match e.code() {
        Some(c) if *c == SqlState::UNDEFINED_FILE => {
            "the amcheck extension is not installed on the server: install PostgreSQL's \
             contrib modules (apt-get install -y postgresql-contrib)"
        }
        Some(c) if *c == SqlState::INSUFFICIENT_PRIVILEGE => {
            "creating the amcheck extension needs a superuser: run the check as one"
        }
        _ => return db_error("cannot create the amcheck extension", e),
    };
    Error::new(
        ErrorKind::MissingPrerequisite,
        format!("{reason}, or turn the amcheck check off"),
    )
    .with_source(e)
}

async fn amcheck_relations(client: &Client, schema: &str) -> Result<(String, Vec<String>)> {
    let indexes = client
        .query(
            "SELECT c.oid, c.oid::regclass::text FROM pg_index i \
             JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam \
             WHERE am.amname = 'btree' AND i.indisvalid AND i.indisready \
               AND c.relpersistence <> 't' ORDER BY 2",
            &[],
        )
        .await
        .map_err(|e| db_error("cannot list the B-tree indexes", e))?;
    let tables = client
        .query(
            "SELECT c.oid, c.oid::regclass::text FROM pg_class c \
             WHERE c.relkind IN ('r', 'm') AND c.relpersistence <> 't' ORDER BY 2",
            &[],
        )
        .await
        .map_err(|e| db_error("cannot list the tables", e))?;
    let mut problems = Vec::new();
    let index_check = format!("SELECT {schema}.bt_index_check($1::oid)");
    for index in &indexes {
        let (oid, name): (u32, String) = (index.get(0), index.get(1));
        if let Err(e) = client.execute(index_check.as_str(), &[&oid]).await {
            match reports_damage(&e) {
                Some(message) => problems.push(format!("index {name}: {message}")),
                None => {
                    return Err(
                        db_error("amcheck could not check an index", e).with_context("index", name)
                    )
                }
            }
        }
    }
    // verify_heapam came with amcheck 1.3 (PostgreSQL 14).
    let heap_check: bool = client
        .query_one(
            "SELECT to_regproc($1) IS NOT NULL",
            &[&format!("{schema}.verify_heapam")],
        )
        .await
        .map_err(|e| db_error("cannot look for verify_heapam", e))?
        .get(0);
    let mut tables_checked = 0;
    if heap_check {
        let heap_check = format!(
            "SELECT blkno, offnum, attnum, msg FROM {schema}.verify_heapam($1::oid, check_toast => true)"
        );
        for table in &tables {
            let (oid, name): (u32, String) = (table.get(0), table.get(1));
            match client.query(heap_check.as_str(), &[&oid]).await {
                Ok(rows) => {
                    for r in rows {
                        let (block, offset, attnum, msg): (i64, Option<i32>, Option<i32>, String) =
                            (r.get(0), r.get(1), r.get(2), r.get(3));
                        let mut at = format!("block {block}");
                        if let Some(o) = offset {
                            at.push_str(&format!(", offset {o}"));
                        }
                        if let Some(a) = attnum {
                            at.push_str(&format!(", attribute {a}"));
                        }
                        problems.push(format!("table {name}, {at}: {msg}"));
                    }
                }
                Err(e) => match reports_damage(&e) {
                    Some(message) => problems.push(format!("table {name}: {message}")),
                    None => {
                        return Err(db_error("amcheck could not check a table", e)
                            .with_context("table", name))
                    }
                },
            }
            tables_checked += 1;
        }
    }
    let summary = if heap_check {
        format!(
            "{} B-tree indexes and {tables_checked} tables",
            indexes.len()
        )
    } else {
        format!(
            "{} B-tree indexes (tables not checked: verify_heapam needs PostgreSQL 14)",
            indexes.len()
        )
    };
    Ok((summary, capped(problems)))
}

/// Each sequence that feeds an integer column (as its owner, identity, or through a
/// `nextval` default) against the column's largest value (smallest, for a descending one).
async fn sequences(client: &Client) -> Result<(String, Vec<String>)> {
    let pairs = client
        .query(
            "SELECT s.oid::regclass::text, c.oid::regclass::text, quote_ident(a.attname), \
                    p.seqincrement \
             FROM (SELECT d.objid AS seq, d.refobjid AS rel, d.refobjsubid AS att \
                   FROM pg_depend d \
                   WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
                     AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0 \
                   UNION \
                   SELECT d.refobjid, ad.adrelid, ad.adnum \
                   FROM pg_depend d JOIN pg_attrdef ad \
                     ON d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid \
                   WHERE d.refclassid = 'pg_class'::regclass AND d.deptype = 'n') u \
             JOIN pg_class s ON s.oid = u.seq AND s.relkind = 'S' \
             JOIN pg_sequence p ON p.seqrelid = s.oid \
             JOIN pg_class c ON c.oid = u.rel AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
             JOIN pg_attribute a ON a.attrelid = u.rel AND a.attnum = u.att AND NOT a.attisdropped \
             WHERE a.atttypid IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype) \
             ORDER BY 1, 2, 3",
            &[],
        )
        .await
        .map_err(|e| db_error("cannot list the sequences and their columns", e))?;
    let mut problems = Vec::new();
    let mut sequences = std::collections::BTreeSet::new();
    for pair in &pairs {
        let (sequence, table, column, increment): (String, String, String, i64) =
            (pair.get(0), pair.get(1), pair.get(2), pair.get(3));
        sequences.insert(sequence.clone());
        let extreme = if increment > 0 { "max" } else { "min" };
        let sql = format!(
            "SELECT s.last_value, s.is_called, (SELECT {extreme}({column})::int8 FROM {table}) \
             FROM {sequence} s"
        );
        let row = client.query_one(sql.as_str(), &[]).await.map_err(|e| {
            db_error("cannot read a sequence and its column", e).with_context("sequence", &sequence)
        })?;
        let (last, called, held): (i64, bool, Option<i64>) = (row.get(0), row.get(1), row.get(2));
        let Some(held) = held else { continue };
        let next = if called {
            i128::from(last) + i128::from(increment)
        } else {
            i128::from(last)
        };
        let behind = if increment > 0 {
            next <= i128::from(held)
        } else {
            next >= i128::from(held)
        };
        if behind {
            problems.push(format!(
                "sequence {sequence} would next give {next}, but {table}.{column} already holds \
                 {held}: rows that take its next values collide with rows already there"
            ));
        }
    }
    Ok((
        format!(
            "{} feeding {}",
            counted(sequences.len(), "sequence"),
            counted(pairs.len(), "column")
        ),
        capped(problems),
    ))
}

/// A user's query, in a read-only transaction: every row it returns is a problem (the first
/// few are shown, as `column=value`).
async fn user_check(client: &Client, check: &SqlCheck) -> Result<(String, Vec<String>)> {
    let sql = check.sql.trim().trim_end_matches(';').trim_end();
    let cannot_run = |e: tokio_postgres::Error| {
        let why = e
            .as_db_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| e.to_string());
        Error::new(
            ErrorKind::InvalidInput,
            format!("check '{}' cannot run: {why}", check.name),
        )
        .with_source(e)
    };
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| db_error("cannot start the check's transaction", e))?;
    let result = async {
        // One statement only: a prepared DECLARE refuses a second one.
        client
            .execute(&format!("DECLARE dr_check NO SCROLL CURSOR FOR {sql}"), &[])
            .await
            .map_err(cannot_run)?;
        let mut shown = Vec::new();
        for message in client
            .simple_query(&format!("FETCH {MAX_DETAILS} FROM dr_check"))
            .await
            .map_err(cannot_run)?
        {
            if let SimpleQueryMessage::Row(row) = message {
                let fields: Vec<String> = row
                    .columns()
                    .iter()
                    .enumerate()
                    .map(|(i, c)| format!("{}={}", c.name(), row.get(i).unwrap_or("NULL")))
                    .collect();
                shown.push(shorten(&fields.join(", "), 200));
            }
        }
        let mut rest = 0;
        for message in client
            .simple_query("MOVE FORWARD ALL IN dr_check")
            .await
            .map_err(cannot_run)?
        {
            if let SimpleQueryMessage::CommandComplete(n) = message {
                rest = n;
            }
        }
        Ok((shown, rest))
    }
    .await;
    let rollback = client.batch_execute("ROLLBACK").await;
    let (mut shown, rest) = result?;
    rollback.map_err(|e| db_error("cannot end the check's transaction", e))?;
    let rows = shown.len() as u64 + rest;
    if rest > 0 {
        shown.push(format!("… and {rest} more"));
    }
    let summary = format!("{rows} row{}", if rows == 1 { "" } else { "s" });
    Ok((summary, shown))
}

/// "1 sequence", "3 sequences".
fn counted(n: usize, noun: &str) -> String {
    format!("{n} {noun}{}", if n == 1 { "" } else { "s" })
}

/// `text` cut to at most `max` characters, with an ellipsis.
fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_string(),
    }
}

/// `SELECT count(*)` of the rows of `table` whose non-null `columns` match no row of
/// `references` on `referenced`. Every name comes quoted from the catalog.
fn orphan_query(
    table: &str,
    references: &str,
    columns: &[String],
    referenced: &[String],
) -> String {
    let not_null: Vec<String> = columns
        .iter()
        .map(|c| format!("c.{c} IS NOT NULL"))
        .collect();
    let joined: Vec<String> = columns
        .iter()
        .zip(referenced)
        .map(|(c, p)| format!("p.{p} = c.{c}"))
        .collect();
    format!(
        "SELECT count(*) FROM {table} c WHERE {} AND NOT EXISTS (SELECT 1 FROM {references} p WHERE {})",
        not_null.join(" AND "),
        joined.join(" AND ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphan_query_joins_every_column() {
        let sql = orphan_query(
            "public.\"Scan\"",
            "\"QrCode\"",
            &["\"qrId\"".into(), "tenant".into()],
            &["id".into(), "tenant".into()],
        );
        assert_eq!(
            sql,
            "SELECT count(*) FROM public.\"Scan\" c WHERE c.\"qrId\" IS NOT NULL AND c.tenant IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM \"QrCode\" p WHERE p.id = c.\"qrId\" AND p.tenant = c.tenant)"
        );
    }
}
