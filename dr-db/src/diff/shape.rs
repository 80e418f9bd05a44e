//! Which tables a diff compares, and the shape both sides must agree on: the columns (by
//! name and type) and the primary key.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use dr_core::{Error, ErrorKind, Result};

use crate::conn::{db_error, quote_ident};
use crate::tables::TableName;

/// A table of the live database, as the diff reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TableShape {
    /// The schema.
    pub schema: String,
    /// The table's name.
    pub name: String,
    /// Columns in the live table's order.
    pub columns: Vec<Column>,
    /// The primary key's columns, in the key's order (indexes into `columns`).
    pub key: Vec<usize>,
}

/// One column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Column {
    /// The column's name.
    pub name: String,
    /// Its type, as `format_type` prints it.
    pub type_name: String,
    /// A generated column (its value is computed, never written).
    pub generated: bool,
}

impl TableShape {
    /// `"schema"."name"`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.name))
    }

    /// The name people read: `schema.name`, quoted where needed.
    pub fn display(&self) -> String {
        TableName {
            schema: Some(self.schema.clone()),
            name: self.name.clone(),
        }
        .to_string()
    }

    /// The key's columns.
    pub fn key_columns(&self) -> impl Iterator<Item = &Column> {
        self.key.iter().map(|&i| &self.columns[i])
    }
}

/// Tables a diff can look at: ordinary and partitioned tables (not partitions, which their
/// parent covers), outside the system schemas and extensions.
const USER_TABLES: &str = "SELECT c.oid, n.nspname, c.relname FROM pg_class c \
     JOIN pg_namespace n ON n.oid = c.relnamespace \
     WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition \
       AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
       AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%' \
       AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                       AND d.objid = c.oid AND d.deptype = 'e')";

/// The tables `names` denote (every user table when empty), with their shapes; tables
/// without a primary key are returned apart (by name) when not named, an error when named.
pub(crate) async fn live_tables(
    client: &Client,
    names: &[TableName],
) -> Result<(Vec<TableShape>, Vec<String>)> {
    let all = client
        .query(&format!("{USER_TABLES} ORDER BY 2, 3"), &[])
        .await
        .map_err(|e| db_error("cannot list the tables", e))?;
    let all: Vec<(u32, String, String)> =
        all.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect();
    let mut chosen = Vec::new();
    if names.is_empty() {
        chosen = all.clone();
    } else {
        for want in names {
            let found: Vec<_> = all
                .iter()
                .filter(|(_, s, n)| want.matches(s, n))
                .cloned()
                .collect();
            match found.len() {
                1 => chosen.extend(found),
                0 => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("table {want} is not in the live database"),
                    ))
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "table {want} is in several schemas ({}): name it as schema.table",
                        found
                            .iter()
                            .map(|(_, s, _)| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )))
                }
            }
        }
    }
    let mut shapes = Vec::new();
    let mut without_key = Vec::new();
    for (oid, schema, name) in chosen {
        let shape = shape_of(client, oid, &schema, &name).await?;
        if shape.key.is_empty() {
            if !names.is_empty() {
                return Err(Error::invalid(format!(
                    "table {} has no primary key: a diff matches rows by their primary key",
                    shape.display()
                )));
            }
            without_key.push(shape.display());
        } else {
            shapes.push(shape);
        }
    }
    Ok((shapes, without_key))
}

/// The shape of the table with `oid`.
async fn shape_of(client: &Client, oid: u32, schema: &str, name: &str) -> Result<TableShape> {
    let columns: Vec<Column> = client
        .query(
            "SELECT attname, format_type(atttypid, atttypmod), attgenerated <> '' \
             FROM pg_attribute WHERE attrelid = $1 AND attnum > 0 AND NOT attisdropped \
             ORDER BY attnum",
            &[&oid],
        )
        .await
        .map_err(|e| db_error("cannot read a table's columns", e))?
        .iter()
        .map(|r| Column {
            name: r.get(0),
            type_name: r.get(1),
            generated: r.get(2),
        })
        .collect();
    let key_names: Vec<String> = client
        .query(
            "SELECT a.attname FROM pg_constraint con \
             CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord) \
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum \
             WHERE con.conrelid = $1 AND con.contype = 'p' ORDER BY k.ord",
            &[&oid],
        )
        .await
        .map_err(|e| db_error("cannot read a table's primary key", e))?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let key = key_names
        .iter()
        .map(|k| {
            columns
                .iter()
                .position(|c| &c.name == k)
                .expect("a key column is a column")
        })
        .collect();
    Ok(TableShape {
        schema: schema.to_string(),
        name: name.to_string(),
        columns,
        key,
    })
}

/// Check that the reference database has `live`'s table with the same columns (names and
/// types, in any order) and the same primary key; say what differs otherwise.
pub(crate) async fn check_reference(reference: &Client, live: &TableShape) -> Result<()> {
    let oid: Option<u32> = reference
        .query_opt(
            &format!("{USER_TABLES} AND n.nspname = $1 AND c.relname = $2"),
            &[&live.schema, &live.name],
        )
        .await
        .map_err(|e| db_error("cannot look for a table in the reference database", e))?
        .map(|r| r.get(0));
    let Some(oid) = oid else {
        return Err(Error::new(
            ErrorKind::NotFound,
            format!("table {} is not in the reference database", live.display()),
        ));
    };
    let other = shape_of(reference, oid, &live.schema, &live.name).await?;
    let types = |s: &TableShape| -> BTreeMap<String, String> {
        s.columns
            .iter()
            .map(|c| (c.name.clone(), c.type_name.clone()))
            .collect()
    };
    let (mine, theirs) = (types(live), types(&other));
    let mut differences = Vec::new();
    for (name, ty) in &mine {
        match theirs.get(name) {
            None => differences.push(format!("column {name} is only in the live table")),
            Some(t) if t != ty => differences.push(format!(
                "column {name} is {ty} in the live table but {t} in the reference"
            )),
            _ => {}
        }
    }
    for name in theirs.keys().filter(|n| !mine.contains_key(*n)) {
        differences.push(format!("column {name} is only in the reference table"));
    }
    let key_names = |s: &TableShape| s.key_columns().map(|c| c.name.clone()).collect::<Vec<_>>();
    if differences.is_empty() && key_names(live) != key_names(&other) {
        differences.push(format!(
            "the primary key is ({}) in the live table but ({}) in the reference",
            key_names(live).join(", "),
            key_names(&other).join(", ")
        ));
    }
    if differences.is_empty() {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "table {} differs in shape between the live and the reference database: {}",
            live.display(),
            differences.join("; ")
        )))
    }
}
