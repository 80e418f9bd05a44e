//! Integrity checks of a restored database beyond row counts: the runbook's
//! orphaned-row queries, derived from the database's own foreign keys.

use serde::Serialize;
use tokio_postgres::Config;

use dr_core::Result;

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
