//! The statements that would bring a live table back to the reference's rows: `DELETE` the
//! extra rows, `UPDATE` the changed ones, `INSERT` the missing ones. dr only writes them;
//! a person reads them and runs them (or not).

use std::collections::HashMap;

use tokio_postgres::Client;

use dr_core::Result;

use crate::conn::{db_error, quote_ident, quote_literal};
use crate::diff::shape::TableShape;
use crate::diff::TableDiff;

/// Keys per query when reading the reference's rows.
const BATCH: usize = 1000;

/// The repair statements for one table, with a comment line saying what they do.
pub(crate) async fn repair_statements(
    reference: &Client,
    shape: &TableShape,
    diff: &TableDiff,
) -> Result<String> {
    let mut out = format!(
        "-- {}: {} extra, {} changed, {} missing\n",
        shape.display(),
        diff.extra,
        diff.changed,
        diff.missing
    );
    let table = shape.qualified();
    let key_match = |key: &[String]| -> String {
        shape
            .key_columns()
            .zip(key)
            .map(|(c, v)| format!("{} = {}", quote_ident(&c.name), quote_literal(v)))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    for key in &diff.extra_keys {
        out.push_str(&format!("DELETE FROM {table} WHERE {};\n", key_match(key)));
    }
    let written: Vec<usize> = (0..shape.columns.len())
        .filter(|&i| !shape.columns[i].generated)
        .collect();
    let literal = |v: &Option<String>| v.as_deref().map_or("NULL".into(), quote_literal);
    let changed = rows_of(reference, shape, &diff.changed_keys).await?;
    for key in &diff.changed_keys {
        let row = &changed[key];
        let set: Vec<String> = written
            .iter()
            .filter(|i| !shape.key.contains(i))
            .map(|&i| {
                format!(
                    "{} = {}",
                    quote_ident(&shape.columns[i].name),
                    literal(&row[i])
                )
            })
            .collect();
        if !set.is_empty() {
            out.push_str(&format!(
                "UPDATE {table} SET {} WHERE {};\n",
                set.join(", "),
                key_match(key)
            ));
        }
    }
    let missing = rows_of(reference, shape, &diff.missing_keys).await?;
    let names: Vec<String> = written
        .iter()
        .map(|&i| quote_ident(&shape.columns[i].name))
        .collect();
    for key in &diff.missing_keys {
        let row = &missing[key];
        let values: Vec<String> = written.iter().map(|&i| literal(&row[i])).collect();
        out.push_str(&format!(
            "INSERT INTO {table} ({}) OVERRIDING SYSTEM VALUE VALUES ({});\n",
            names.join(", "),
            values.join(", ")
        ));
    }
    Ok(out)
}

/// The reference's rows with `keys`, every column as text, by key; looked up through the
/// primary key's index, `BATCH` keys a query.
async fn rows_of(
    reference: &Client,
    shape: &TableShape,
    keys: &[Vec<String>],
) -> Result<HashMap<Vec<String>, Vec<Option<String>>>> {
    let key_cols: Vec<&crate::diff::shape::Column> = shape.key_columns().collect();
    let columns: Vec<String> = shape
        .columns
        .iter()
        .map(|c| format!("t.{}::text", quote_ident(&c.name)))
        .collect();
    let unnest_args: Vec<String> = (1..=key_cols.len())
        .map(|i| format!("${i}::text[]"))
        .collect();
    let casts: Vec<String> = key_cols
        .iter()
        .enumerate()
        .map(|(i, c)| format!("u.c{i}::{}", c.type_name))
        .collect();
    let names: Vec<String> = (0..key_cols.len()).map(|i| format!("c{i}")).collect();
    let key_list: Vec<String> = key_cols
        .iter()
        .map(|c| format!("t.{}", quote_ident(&c.name)))
        .collect();
    let sql = format!(
        "SELECT {} FROM {} t WHERE ({}) IN (SELECT {} FROM unnest({}) AS u({}))",
        columns.join(", "),
        shape.qualified(),
        key_list.join(", "),
        casts.join(", "),
        unnest_args.join(", "),
        names.join(", ")
    );
    let statement = reference
        .prepare(&sql)
        .await
        .map_err(|e| db_error("cannot prepare reading the reference's rows", e))?;
    let mut rows = HashMap::new();
    for batch in keys.chunks(BATCH) {
        let per_column: Vec<Vec<&str>> = (0..key_cols.len())
            .map(|i| batch.iter().map(|k| k[i].as_str()).collect())
            .collect();
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = per_column
            .iter()
            .map(|v| v as &(dyn tokio_postgres::types::ToSql + Sync))
            .collect();
        for row in reference
            .query(&statement, &params)
            .await
            .map_err(|e| db_error("cannot read the reference's rows", e))?
        {
            let values: Vec<Option<String>> = (0..row.len()).map(|i| row.get(i)).collect();
            let key = shape
                .key
                .iter()
                .map(|&i| values[i].clone().unwrap_or_default())
                .collect();
            rows.insert(key, values);
        }
    }
    Ok(rows)
}
