//! Whole-table comparison of two databases: a restored copy against its source, table by
//! table, by row count and a digest of every row.
//!
//! Each table is read in one query that sorts its rows' text on the server, so this suits
//! small and medium tables (the demo, a test, a drill of a modest database); PostgreSQL
//! refuses a table whose text exceeds 1 GB. It tells *whether* a table differs, not which
//! rows.

use serde::Serialize;
use tokio_postgres::Config;

use dr_core::{Error, Result};

use crate::conn::{connect, db_error, quote_ident};

/// A table's contents in brief.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TableFingerprint {
    /// The table, as named to [`table_fingerprints`].
    pub table: String,
    /// Its rows.
    pub rows: u64,
    /// MD5 of the text of every row, sorted and joined: independent of the physical order
    /// of the rows, so a restored copy matches its source.
    pub md5: String,
}

/// The fingerprints of `tables` in the database `config` names. Each name is one
/// identifier (quoted as given, found through the search path).
pub async fn table_fingerprints(config: &Config, tables: &[&str]) -> Result<Vec<TableFingerprint>> {
    let conn = connect(config, "compare").await?;
    let result = async {
        let mut fingerprints = Vec::with_capacity(tables.len());
        for table in tables {
            let sql = format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') \
                 FROM {} t",
                quote_ident(table)
            );
            let row = conn.client.query_one(&sql, &[]).await.map_err(|e| {
                db_error("cannot read a table to compare", e)
                    .with_context("database", config.get_dbname().unwrap_or("?"))
                    .with_context("table", *table)
            })?;
            fingerprints.push(TableFingerprint {
                table: (*table).to_owned(),
                rows: row.get::<_, i64>(0) as u64,
                md5: row.get(1),
            });
        }
        Ok(fingerprints)
    }
    .await;
    let _ = conn.close().await;
    result
}

/// Compare `tables` of the database `copy` with those of `original`: their fingerprints
/// when every table holds the same rows, a [`dr_core::ErrorKind::Corrupt`] error naming
/// the first table that differs otherwise.
pub async fn compare_tables(
    original: &Config,
    copy: &Config,
    tables: &[&str],
) -> Result<Vec<TableFingerprint>> {
    let want = table_fingerprints(original, tables).await?;
    let got = table_fingerprints(copy, tables).await?;
    for (want, got) in want.iter().zip(&got) {
        if want != got {
            let name = |c: &Config| c.get_dbname().unwrap_or("?").to_owned();
            return Err(Error::corrupt(format!(
                "table {} differs: {} rows (md5 {}) in {}, {} rows (md5 {}) in {}",
                want.table,
                want.rows,
                want.md5,
                name(original),
                got.rows,
                got.md5,
                name(copy)
            )));
        }
    }
    Ok(want)
}
