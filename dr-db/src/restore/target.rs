//! The database a restore writes into: whether it exists and is empty, and the scratch copy a
//! replacement or a parallel restore goes through (named, created like the target, counted,
//! dropped).

use dr_core::{DumpStats, Error, ErrorKind, Result};
use tokio_postgres::error::SqlState;

use crate::conn::{db_error, quote_ident, Conn};
use crate::locale::DatabaseLocale;
use crate::tools;

/// The longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_IDENT_BYTES: usize = 63;

/// The maintenance connection and the server's version (`server_version_num`).
pub(super) struct Maintenance {
    pub(super) conn: Conn,
    pub(super) server_num: i32,
}

/// Properties of an existing target that a replacement keeps.
pub(super) struct ExistingDb {
    pub(super) locale: DatabaseLocale,
    pub(super) owner: Option<String>,
}

/// The `CREATE DATABASE` clauses that give a scratch copy an existing database's locale and
/// (when the restoring role may) owner.
pub(super) fn clauses_of(existing: &ExistingDb, server_num: i32) -> Result<String> {
    let mut sql = existing.locale.create_clauses(server_num)?;
    if let Some(owner) = &existing.owner {
        sql.push_str(&format!(" OWNER {}", quote_ident(owner)));
    }
    Ok(sql)
}

/// `<target>_dr_restore_<hex>`, the target cut (on a character boundary) so the whole fits
/// in 63 bytes.
pub(super) fn scratch_name(target: &str) -> String {
    let suffix = format!("_dr_restore_{}", &tools::random_hex()[..8]);
    let mut end = target.len().min(MAX_IDENT_BYTES - suffix.len());
    while !target.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{}", &target[..end], suffix)
}

pub(super) fn missing_database(e: &Error) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
        .and_then(|e| e.code())
        .map(|c| *c == SqlState::INVALID_CATALOG_NAME)
        .unwrap_or(false)
}

pub(super) fn create_error(e: tokio_postgres::Error, name: &str) -> Error {
    if e.code() == Some(&SqlState::DUPLICATE_DATABASE) {
        Error::new(
            ErrorKind::AlreadyExists,
            format!("database \"{name}\" already exists"),
        )
        .with_source(e)
    } else {
        db_error("cannot create the database", e).with_context("database", name)
    }
}

pub(super) async fn check_counts_on(conn: &Conn, expected: &DumpStats) -> Result<(usize, u64)> {
    let mut checked = 0usize;
    let mut rows = 0u64;
    let mut lo_entries = 0usize;
    let mut lo_expected = 0u64;
    for t in &expected.tables {
        if t.schema.is_empty() {
            // Schema-less entries are the archive's large objects
            // ([`crate::archive::LARGE_OBJECTS`]); they are counted together below.
            lo_entries += 1;
            lo_expected += t.rows;
            continue;
        }
        let sql = format!(
            "SELECT count(*) FROM ONLY {}.{}",
            quote_ident(&t.schema),
            quote_ident(&t.name)
        );
        let n: i64 = conn
            .client
            .query_one(sql.as_str(), &[])
            .await
            .map_err(|e| {
                db_error("cannot count the restored rows", e)
                    .with_context("table", format!("{}.{}", t.schema, t.name))
            })?
            .get(0);
        let n = n as u64;
        if n != t.rows {
            return Err(Error::corrupt(format!(
                "table \"{}\".\"{}\" has {n} rows after the restore, the dump recorded {}",
                t.schema, t.name, t.rows
            )));
        }
        checked += 1;
        rows += n;
    }
    if lo_entries > 0 {
        let n: i64 = conn
            .client
            .query_one("SELECT count(*) FROM pg_largeobject_metadata", &[])
            .await
            .map_err(|e| db_error("cannot count the restored large objects", e))?
            .get(0);
        let n = n as u64;
        if n != lo_expected {
            return Err(Error::corrupt(format!(
                "{n} large objects after the restore, the dump recorded {lo_expected}"
            )));
        }
        checked += lo_entries;
        rows += n;
    }
    Ok((checked, rows))
}

/// What a database holds besides the defaults, or `None` if it is empty.
pub(super) async fn describe_contents(conn: &Conn) -> Result<Option<String>> {
    const SQL: &str = "
        SELECT
          (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r','p','v','m','S','f')
              AND n.nspname NOT IN ('pg_catalog','information_schema')
              AND n.nspname !~ '^pg_(toast|temp_)'),
          (SELECT count(*) FROM pg_namespace
            WHERE nspname NOT IN ('public','pg_catalog','information_schema')
              AND nspname !~ '^pg_(toast|temp_)'),
          (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql'),
          (SELECT count(*) FROM pg_largeobject_metadata),
          (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
            WHERE n.nspname NOT IN ('pg_catalog','information_schema')),
          (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
            WHERE n.nspname NOT IN ('pg_catalog','information_schema')
              AND n.nspname !~ '^pg_(toast|temp_)'
              AND t.typcategory <> 'A'
              AND (t.typrelid = 0
                   OR (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c'))";
    let row = conn
        .client
        .query_one(SQL, &[])
        .await
        .map_err(|e| db_error("cannot inspect the target database", e))?;
    let labels = [
        "relations",
        "schemas",
        "extensions",
        "large objects",
        "functions",
        "types",
    ];
    let parts: Vec<String> = labels
        .iter()
        .enumerate()
        .filter_map(|(i, label)| {
            let n: i64 = row.get(i);
            (n > 0).then(|| format!("{n} {label}"))
        })
        .collect();
    Ok((!parts.is_empty()).then(|| parts.join(", ")))
}

pub(super) async fn find_database(maint: &Maintenance, name: &str) -> Result<Option<ExistingDb>> {
    let Some(locale) = DatabaseLocale::of(&maint.conn.client, maint.server_num, name).await? else {
        return Ok(None);
    };
    let row = maint
        .conn
        .client
        .query_opt(
            "SELECT pg_get_userbyid(datdba)::text, pg_has_role(current_user, datdba, 'MEMBER') \
             FROM pg_database WHERE datname = $1",
            &[&name],
        )
        .await
        .map_err(|e| db_error("cannot look up the target database", e))?;
    Ok(row.map(|r| ExistingDb {
        locale,
        owner: if r.get::<_, bool>(1) {
            Some(r.get(0))
        } else {
            None
        },
    }))
}

/// Drop `name`, disconnecting its sessions (`WITH (FORCE)` from PostgreSQL 13; before, by
/// terminating them and retrying).
pub(super) async fn drop_database(maint: &Maintenance, name: &str) -> Result<()> {
    let ident = quote_ident(name);
    let server_num = maint.server_num;
    let maint = &maint.conn;
    if server_num >= 130_000 {
        return maint
            .client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {ident} WITH (FORCE)"))
            .await
            .map_err(|e| db_error("cannot drop the database", e).with_context("database", name));
    }
    let mut last = None;
    for _ in 0..10 {
        let _ = maint
            .client
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&name],
            )
            .await;
        match maint
            .client
            .batch_execute(&format!("DROP DATABASE IF EXISTS {ident}"))
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let e = last.expect("the loop ran");
    Err(db_error("cannot drop the database", e).with_context("database", name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_names_fit_in_an_identifier() {
        let long = "é".repeat(40);
        let name = scratch_name(&long);
        assert!(name.len() <= MAX_IDENT_BYTES, "{name}");
        assert!(name.contains("_dr_restore_"));
        assert!(scratch_name("shop").starts_with("shop_dr_restore_"));
    }
}
