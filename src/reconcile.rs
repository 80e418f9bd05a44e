//! Reconciliation against a backup: the runbook's corruption scenario ("compare restored data
//! with the corrupted data, identify missing or changed records, reconcile"). The backup's
//! tables are restored into a scratch database that this creates and drops, then compared
//! with the live database by [`dr_db::diff`], which never pulls whole tables across.

use dr_core::{Decryptor, Error, Manifest, ReadOptions, Repository, Result};
use dr_db::diff::{diff, DiffOptions, DiffReport};
use dr_db::PgRestorer;

/// Restore `manifest`'s backup (only `opts.tables`, with what they need, when named) into
/// the new database `scratch` names, compare the live database with it, and drop it (also
/// when the comparison fails). `scratch` must not exist: nothing is ever restored over an
/// existing database.
pub async fn diff_against_backup(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    live: &tokio_postgres::Config,
    scratch: tokio_postgres::Config,
    opts: &DiffOptions,
    read: &ReadOptions,
) -> Result<DiffReport> {
    let name = scratch
        .get_dbname()
        .ok_or_else(|| Error::invalid("the scratch database URL names no database"))?;
    if Some(name) == live.get_dbname() && scratch.get_hosts() == live.get_hosts() {
        return Err(Error::invalid(format!(
            "the scratch database must not be the live database \"{name}\": name a new one"
        )));
    }
    let restorer = PgRestorer::new(scratch.clone())
        .create(true)
        .no_owner(true)
        .tables(opts.tables.clone());
    crate::logical::restore(repo, manifest, decryptor, &restorer, 1, read)
        .await
        .map_err(|e| e.with_context("diff", "restoring the backup to compare with"))?;
    let report = diff(live, &scratch, opts).await;
    let dropped = restorer.drop_target().await;
    let report = report?;
    dropped?;
    Ok(report)
}

/// Where a diff against a backup restores it by default: the live database's server, the
/// database `<live>_dr_diff`.
pub fn default_scratch(live: &tokio_postgres::Config) -> Result<tokio_postgres::Config> {
    let name = live
        .get_dbname()
        .ok_or_else(|| Error::invalid("the live database URL names no database"))?;
    let mut scratch = live.clone();
    scratch.dbname(format!("{name}_dr_diff"));
    Ok(scratch)
}
