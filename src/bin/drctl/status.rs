//! `drctl status`: each series' newest backup, last verify and last drill against the
//! objectives, for people (text), scripts (`--json`) and monitoring (`--prometheus`, exit
//! codes 0 ok, 1 warning, 2 breached, 3 unknown).

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use dr::config::Config;
use dr::core::schedule::parse_duration;
use dr::core::{Repository, Result};
use dr::drill::Objectives;
use dr::status::{secs, Health, Status};

use crate::args::RepoArgs;
use crate::output::{human_bytes, print_json, Output};

/// The objectives to judge by: dr.toml's `[objectives]`, overridden by `--rpo`/`--rto`.
#[derive(Debug, Args)]
pub struct ObjectiveArgs {
    /// A dr.toml whose [objectives] to judge by (--rpo and --rto override them).
    #[arg(long, env = "DR_CONFIG")]
    pub config: Option<PathBuf>,
    /// Recovery point objective, e.g. 1h.
    #[arg(long, value_name = "DURATION")]
    pub rpo: Option<String>,
    /// Recovery time objective, e.g. 1h.
    #[arg(long, value_name = "DURATION")]
    pub rto: Option<String>,
}

impl ObjectiveArgs {
    /// The objectives these arguments name.
    pub fn objectives(&self) -> Result<Objectives> {
        let mut objectives = match &self.config {
            Some(path) => Config::from_path(path)?.objectives,
            None => Objectives::default(),
        };
        if let Some(rpo) = &self.rpo {
            objectives.rpo = Some(parse_duration(rpo)?);
        }
        if let Some(rto) = &self.rto {
            objectives.rto = Some(parse_duration(rto)?);
        }
        Ok(objectives)
    }
}

/// Arguments of `drctl status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub objectives: ObjectiveArgs,
    /// Print Prometheus metrics (text exposition format) instead.
    #[arg(long)]
    pub prometheus: bool,
}

/// Print the status and exit with its verdict's code; a status that cannot be read is
/// `unknown` (3).
pub async fn run(out: Output, args: StatusArgs) -> ! {
    let code = match status(&args).await {
        Ok(status) => {
            if args.prometheus {
                print!("{}", dr::report::prometheus::status_metrics(&status));
            } else if out.is_json() {
                print_json(&status);
            } else {
                print_text(&status);
            }
            status.health.exit_code()
        }
        Err(e) => {
            eprintln!("drctl: {}", e.report());
            Health::Unknown.exit_code()
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code)
}

async fn status(args: &StatusArgs) -> Result<Status> {
    let objectives = args.objectives.objectives()?;
    let repo = Repository::open(args.repo.storage()?).await?;
    dr::status::status(&repo, &objectives).await
}

fn print_text(status: &Status) {
    let objective = |s: Option<u64>| s.map_or("none".into(), |s| secs(s as i64));
    println!(
        "{}: {}  (RPO {}, RTO {})",
        status.repository,
        status.health.as_str().to_uppercase(),
        objective(status.objectives.rpo_secs),
        objective(status.objectives.rto_secs)
    );
    let met = |m: Option<bool>| match m {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "no objective",
    };
    for s in &status.series {
        println!("  {}  {}", s.series, s.health.as_str().to_uppercase());
        println!(
            "    newest backup  {}  {} old ({}), {} stored; {} backups, {} in all",
            s.newest.id,
            secs(s.backup_age_secs),
            met(s.rpo_met),
            human_bytes(s.newest.stored_bytes),
            s.backups,
            human_bytes(s.stored_bytes)
        );
        if let Some(w) = &s.wal {
            let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC");
            println!(
                "    archived WAL   {} {} ago (the RPO is judged by it when newer than the backup); PITR window {}{}",
                w.newest_file.as_deref().unwrap_or("none"),
                w.newest_age_secs.map_or("-".into(), secs),
                match (w.window_from, w.window_to) {
                    (Some(f), Some(t)) => format!("{} .. {}", fmt(f), fmt(t)),
                    _ => "none (no base backup with its WAL)".into(),
                },
                if w.gaps > 0 {
                    format!(", {} GAP(S)", w.gaps)
                } else {
                    String::new()
                }
            );
        }
        match &s.last_verify {
            Some(v) => println!(
                "    last verify    {}  {} (backup {})",
                v.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
                if v.passed { "passed" } else { "FAILED" },
                v.backup_id
            ),
            None => println!("    last verify    never"),
        }
        match &s.last_drill {
            Some(d) => println!(
                "    last drill     {}  {}: recovery time {} ({}), recovery point {}",
                d.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
                if d.passed { "passed" } else { "FAILED" },
                d.recovery_time_ms
                    .map_or("-".into(), |ms| format!("{:.1} s", ms as f64 / 1000.0)),
                met(s.rto_met),
                d.recovery_point_secs.map_or("-".into(), secs),
            ),
            None => println!("    last drill     never"),
        }
        for r in &s.reasons {
            println!("    ! {r}");
        }
    }
    if status.series.is_empty() {
        println!("  no complete backups");
    }
    let t = &status.totals;
    println!(
        "  repository     {} backups ({} incomplete) in {} series, {} stored, {} check records",
        t.backups,
        t.incomplete,
        t.series,
        human_bytes(t.stored_bytes),
        t.records
    );
    for l in status.leases.iter().filter(|l| l.state == "held") {
        println!(
            "  lease          {} held by {} for '{}' until {}",
            l.name,
            l.info.owner,
            l.info.purpose,
            l.info.expires_at.format("%H:%M:%S UTC")
        );
    }
}
