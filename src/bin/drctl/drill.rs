//! `drctl drill`: a restore drill — restore into a scratch database, check it, measure RTO
//! and RPO against the objectives, drop it.

use clap::Args;
use dr::config::Objectives;
use dr::core::schedule::parse_duration;
use dr::core::{ReadOptions, Result};
use dr::drill::{drill, failure, DrillOptions};

use crate::cli::RepoArgs;
use crate::output::{print_json, progress_bar};

/// Arguments of `drctl drill`.
#[derive(Debug, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Backup id, or `latest`: the newest database backup (of the series --series picks).
    #[arg(default_value = "latest")]
    pub id: String,
    #[command(flatten)]
    pub series: crate::cli::SeriesArgs,
    /// URL of the scratch database to restore into; it must not exist (the drill creates
    /// it, and drops it afterwards).
    #[arg(long, env = "DR_DRILL_DB")]
    pub db: String,
    /// Recovery time objective, e.g. 30m: the drill fails if the restore takes longer.
    #[arg(long, value_name = "DURATION")]
    pub rto: Option<String>,
    /// Recovery point objective, e.g. 1h: the drill fails if the backup is older.
    #[arg(long, value_name = "DURATION")]
    pub rpo: Option<String>,
    /// Keep the scratch database afterwards.
    #[arg(long)]
    pub keep: bool,
    /// Do not restore object ownership (for a server without the original roles).
    #[arg(long)]
    pub no_owner: bool,
}

pub async fn run(json: bool, args: DrillArgs) -> Result<()> {
    let objectives = Objectives {
        rto: args.rto.as_deref().map(parse_duration).transpose()?,
        rpo: args.rpo.as_deref().map(parse_duration).transpose()?,
    };
    let repo = args.repo.open().await?;
    let selector = args
        .series
        .within(dr::core::SeriesSelector::kind(dr::db::SOURCE_KIND))?;
    let manifest = repo.resolve(&args.id, &selector).await?;
    let decryptor = dr::keys::decryptor(crate::key::unlock(&args.repo, &repo)?);
    let bar = progress_bar(json, "drill");
    let opts = DrillOptions {
        objectives,
        keep: args.keep,
        no_owner: args.no_owner,
        read: ReadOptions {
            progress: bar.as_ref().map(|(_, sink)| sink.clone()),
            ..Default::default()
        },
    };
    let scratch = crate::commands::db_config(&args.db)?;
    let result = drill(&repo, &manifest, &decryptor, scratch, &opts).await;
    if let Some((bar, _)) = bar {
        bar.finish_and_clear();
    }
    let report = result?;
    if json {
        print_json(&report);
    } else {
        let verdict = |met: Option<bool>| match met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "no objective",
        };
        println!(
            "drill of backup {} into {}{}:",
            report.id,
            report.scratch_database,
            if report.kept { " (kept)" } else { " (dropped)" }
        );
        println!(
            "  recovery time   {:.1} s ({})",
            report.restore_ms as f64 / 1000.0,
            verdict(report.rto_met)
        );
        println!(
            "  recovery point  {} s old ({})",
            report.backup_age_secs,
            verdict(report.rpo_met)
        );
        println!(
            "  checked         {} tables, {} rows against the manifest; {} foreign keys, {} orphaned rows",
            report.tables_checked,
            report.rows_checked,
            report.foreign_keys.len(),
            report.orphans()
        );
        println!("  {}", if report.passed { "PASSED" } else { "FAILED" });
    }
    match failure(&report, &objectives) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
