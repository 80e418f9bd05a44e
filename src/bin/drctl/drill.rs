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
    #[arg(long, env = "DR_DRILL_DB", required_unless_present = "physical")]
    pub db: Option<String>,
    /// Drill a physical base backup: restore it and its WAL into a scratch directory, start
    /// a server there (no TCP, archiving off), wait for recovery, check every database,
    /// stop and remove it. Needs --key-file (the server's restore_command reads WAL with it).
    #[arg(long, conflicts_with = "db")]
    pub physical: bool,
    /// Physical drills: recover to this time (RFC 3339) instead of the end of the archive.
    #[arg(long, requires = "physical")]
    pub target_time: Option<String>,
    /// Physical drills: a superuser of the backed-up cluster to connect as.
    #[arg(long, requires = "physical", default_value = "postgres")]
    pub user: String,
    /// Physical drills: make the scratch directory in DIR (default: the temporary directory).
    #[arg(long, requires = "physical", value_name = "DIR")]
    pub scratch: Option<std::path::PathBuf>,
    /// Physical drills: the database the [checks] queries run in (default: every database;
    /// dr.toml's database when --config is given).
    #[arg(long, requires = "physical", value_name = "NAME")]
    pub checks_db: Option<String>,
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
    let config_db = config
        .as_ref()
        .and_then(|c| c.database_config().ok())
        .and_then(|c| c.get_dbname().map(str::to_string));
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
    if args.physical {
        return physical(out, &args, objectives, checks, config_db).await;
    }
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
    let scratch = crate::args::db_config(args.db.as_deref().expect("clap requires --db"))?;
    let result = drill(&repo, &manifest, &decryptor, scratch, &opts).await;
    if let Some((bar, _)) = bar {
        bar.finish_and_clear();
    }
    let report = result?;
    if out.is_json() {
        print_json(&report);
    } else {
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
        print_checks(&report.checks, 15, 20);
        println!("  {}", if report.passed { "PASSED" } else { "FAILED" });
    }
    match failure(&report, &objectives) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `drctl drill --physical`.
async fn physical(
    out: Output,
    args: &DrillArgs,
    objectives: Objectives,
    checks: IntegrityChecks,
    config_db: Option<String>,
) -> Result<()> {
    use dr::physical_drill::{failure, physical_drill, PhysicalDrillOptions};
    let repo = args.repo.open().await?;
    let selector = args.series.within(dr::core::SeriesSelector::kind(
        dr::core::wal::base::PHYSICAL_KIND,
    ))?;
    let manifest = repo.resolve(&args.id, &selector).await?;
    let decryptor = dr::keys::decryptor(crate::key::unlock(&args.repo, &repo)?);
    let target = crate::wal::target(&crate::wal::PitrArgs {
        target_time: args.target_time.clone(),
        ..Default::default()
    })?;
    let mut opts = PhysicalDrillOptions::new(crate::wal::restore_command(&args.repo)?);
    opts.target = target;
    opts.objectives = objectives;
    opts.checks = checks;
    opts.checks_database = args.checks_db.clone().or(config_db);
    opts.user = args.user.clone();
    opts.scratch_parent = args.scratch.clone();
    opts.keep = args.keep;
    let report = physical_drill(&repo, &manifest, &decryptor, &opts).await?;
    if out.is_json() {
        print_json(&report);
    } else {
        println!(
            "physical drill of base backup {} to {} (timeline {}) in {}{}:",
            report.id,
            report.target,
            report.timeline,
            report.scratch_dir.display(),
            if report.kept { " (kept)" } else { " (removed)" }
        );
        println!(
            "  recovery time   {:.1} s from the first byte fetched to queries at the target ({}); base backup {:.1} s",
            report.recovery_ms as f64 / 1000.0,
            verdict(report.rto_met),
            report.restore_ms as f64 / 1000.0
        );
        println!(
            "  recovery point  {} s of data lost ({}){}",
            report.recovery_point_secs,
            verdict(report.rpo_met),
            report
                .recovered_to
                .map(|t| format!(
                    ", newest transaction {}",
                    t.format("%Y-%m-%d %H:%M:%S%.3f UTC")
                ))
                .unwrap_or_default()
        );
        print_checks(&report.checks, 24, 27);
        for f in report.failures(&Objectives::default()) {
            println!("  {f}");
        }
        println!("  {}", if report.passed { "PASSED" } else { "FAILED" });
    }
    match failure(&report, &objectives) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// An objective's verdict for people.
fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "no objective",
    }
}

/// One line a check (name in a column `width` wide), its details below it, `indent` spaces in.
fn print_checks(checks: &[dr::db::checks::CheckOutcome], width: usize, indent: usize) {
    for c in checks {
        println!(
            "  {:<width$} {} ({}, {:.1} s)",
            c.name,
            if c.passed { "ok" } else { "FAILED" },
            c.summary,
            c.duration_ms as f64 / 1000.0
        );
        for d in &c.details {
            println!("{:indent$}{d}", "");
        }
    }
}
