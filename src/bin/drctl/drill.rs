//! `drctl drill`: a restore drill — restore into a scratch database, check it, measure RTO
//! and RPO against the objectives, drop it.

use clap::Args;
use dr::config::Config;
use dr::core::schedule::parse_duration;
use dr::core::{ReadOptions, Result};
use dr::db::checks::IntegrityChecks;
use dr::drill::Objectives;
use dr::drill::{drill, failure, DrillOptions};

use crate::args::RepoArgs;
use crate::output::{print_json, Output};

/// Arguments of `drctl drill`.
#[derive(Debug, Args)]
pub struct DrillArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Backup id, or `latest`: the newest database backup (of the series --series picks).
    #[arg(default_value = "latest")]
    pub id: String,
    #[command(flatten)]
    pub series: crate::args::SeriesArgs,
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
    /// dr.toml whose [checks] (amcheck, sequences, user queries) and [objectives] the drill
    /// uses; --rto and --rpo override its objectives.
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Skip amcheck (creating its extension needs a superuser).
    #[arg(long)]
    pub no_amcheck: bool,
}

pub async fn run(out: Output, args: DrillArgs) -> Result<()> {
    let config = args.config.as_deref().map(Config::from_path).transpose()?;
    let (mut objectives, mut checks) = match config {
        Some(c) => (c.objectives, c.checks),
        None => (Objectives::default(), IntegrityChecks::default()),
    };
    if let Some(rto) = &args.rto {
        objectives.rto = Some(parse_duration(rto)?);
    }
    if let Some(rpo) = &args.rpo {
        objectives.rpo = Some(parse_duration(rpo)?);
    }
    checks.amcheck &= !args.no_amcheck;
    let repo = args.repo.open().await?;
    let selector = args
        .series
        .within(dr::core::SeriesSelector::kind(dr::db::SOURCE_KIND))?;
    let manifest = repo.resolve(&args.id, &selector).await?;
    let decryptor = dr::keys::decryptor(crate::key::unlock(&args.repo, &repo)?);
    let bar = out.progress_bar("drill");
    let opts = DrillOptions {
        objectives,
        checks,
        keep: args.keep,
        no_owner: args.no_owner,
        read: ReadOptions {
            progress: bar.as_ref().map(|(_, sink)| sink.clone()),
            ..Default::default()
        },
    };
    let scratch = crate::args::db_config(&args.db)?;
    let result = drill(&repo, &manifest, &decryptor, scratch, &opts).await;
    if let Some((bar, _)) = bar {
        bar.finish_and_clear();
    }
    let report = result?;
    if out.is_json() {
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
        for c in &report.checks {
            println!(
                "  {:<15} {} ({}, {:.1} s)",
                c.name,
                if c.passed { "ok" } else { "FAILED" },
                c.summary,
                c.duration_ms as f64 / 1000.0
            );
            for d in &c.details {
                println!("                    {d}");
            }
        }
        println!("  {}", if report.passed { "PASSED" } else { "FAILED" });
    }
    match failure(&report, &objectives) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
