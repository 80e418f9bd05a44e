//! `drctl diff`: which rows of a live database differ from a backup or another database,
//! by primary key; `--sql` writes the statements that would bring them back.

use std::path::PathBuf;

use clap::Args;
use dr::core::{Error, ReadOptions, Repository, Result};
use dr::db::diff::{DiffOptions, DiffReport};
use dr::db::tables::TableName;

use crate::args::{db_config, RepoArgs, SeriesArgs};
use crate::output::{print_json, Output};

/// Arguments of `drctl diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The live database's URL.
    #[arg(long, env = "DR_DB")]
    pub db: String,
    /// What to compare with: a backup id (or `latest`), restored into a scratch database,
    /// or a database URL (postgres://…).
    #[arg(long, value_name = "BACKUP_ID|DB_URL")]
    pub against: String,
    /// Compare only this table (repeatable; `name` or `schema.name`). Default: every table
    /// with a primary key. Against a backup, only these tables are restored.
    #[arg(long = "table", value_name = "TABLE")]
    pub tables: Vec<TableName>,
    /// Write the statements that would bring the live tables back to the reference's rows
    /// to this file (dr never runs them).
    #[arg(long, value_name = "FILE")]
    pub sql: Option<PathBuf>,
    /// Where to restore the backup: a database that must not exist (created and dropped).
    /// Default: <live database>_dr_diff on the live database's server.
    #[arg(long, value_name = "DB_URL")]
    pub scratch: Option<String>,
    /// Repository URL (needed against a backup).
    #[arg(long, env = "DR_REPO")]
    pub repo: Option<String>,
    /// Key file (against a backup). A passphrase comes from DR_PASSPHRASE instead.
    #[arg(long, env = "DR_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// A storage setting KEY=VALUE (repeatable), as for the other commands.
    #[arg(long = "storage-opt", value_name = "KEY=VALUE")]
    pub storage_opts: Vec<String>,
    #[command(flatten)]
    pub series: SeriesArgs,
}

/// Whether `against` names a database rather than a backup.
fn is_database_url(against: &str) -> bool {
    against.starts_with("postgres://")
        || against.starts_with("postgresql://")
        || against.contains('=')
}

pub async fn run(out: Output, args: DiffArgs) -> Result<()> {
    let live = db_config(&args.db)?;
    let opts = DiffOptions {
        tables: args.tables.clone(),
        repair_sql: args.sql.is_some(),
        ..DiffOptions::default()
    };
    let report = if is_database_url(&args.against) {
        dr::db::diff::diff(&live, &db_config(&args.against)?, &opts).await?
    } else {
        let repo_args = RepoArgs {
            repo: args.repo.clone().ok_or_else(|| {
                Error::invalid(format!(
                    "--against {} is a backup id: give --repo (or DR_REPO), or a database URL",
                    args.against
                ))
            })?,
            key_file: args.key_file.clone(),
            storage_opts: args.storage_opts.clone(),
            signing_key: None,
            refuse_unauthenticated: false,
        };
        let repo = Repository::open(repo_args.storage()?).await?;
        let selector = args
            .series
            .within(dr::core::SeriesSelector::kind(dr::db::SOURCE_KIND))?;
        let manifest = repo.resolve(&args.against, &selector).await?;
        let decryptor = dr::keys::decryptor(crate::key::unlock(&repo_args, &repo)?);
        let scratch = match &args.scratch {
            Some(url) => db_config(url)?,
            None => dr::reconcile::default_scratch(&live)?,
        };
        let bar = out.progress_bar("restore");
        let read = ReadOptions {
            progress: bar.as_ref().map(|(_, sink)| sink.clone()),
            ..Default::default()
        };
        let result = dr::reconcile::diff_against_backup(
            &repo, &manifest, &decryptor, &live, scratch, &opts, &read,
        )
        .await;
        if let Some((bar, _)) = bar {
            bar.finish_and_clear();
        }
        result?
    };
    if let (Some(path), Some(sql)) = (&args.sql, &report.repair_sql) {
        std::fs::write(path, sql).map_err(|e| {
            Error::io("cannot write the repair statements", e).with_context("file", path.display())
        })?;
    }
    if out.is_json() {
        print_json(&report.tables);
    } else {
        print_text(&report);
    }
    for table in &report.without_key {
        eprintln!("drctl: table {table} has no primary key: not compared");
    }
    let differing = report.tables.iter().filter(|t| !t.is_same()).count();
    if differing > 0 {
        return Err(Error::new(
            dr::core::ErrorKind::Other,
            format!(
                "the live database differs from the reference in {differing} of {} tables",
                report.tables.len()
            ),
        ));
    }
    Ok(())
}

fn print_text(report: &DiffReport) {
    for t in &report.tables {
        if t.is_same() {
            println!("{}: same ({} rows)", t.table, t.live_rows);
            continue;
        }
        println!(
            "{}: {} missing, {} extra, {} changed (key {})",
            t.table,
            t.missing,
            t.extra,
            t.changed,
            t.key_columns.join(", ")
        );
        for (what, keys) in [
            ("missing", &t.missing_keys),
            ("extra", &t.extra_keys),
            ("changed", &t.changed_keys),
        ] {
            for key in keys {
                println!("  {what:<8} ({})", key.join(", "));
            }
        }
    }
}
