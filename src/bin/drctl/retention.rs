//! `drctl pin`, `drctl unpin`, `drctl retention plan|set|show` and `drctl prune`: retention
//! as restic's `forget` rules, previewable before anything is deleted.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use dr::core::prune::{PruneOptions, PruneReport};
use dr::core::retention::{parse_time_zone, BackupInfo, Decision, RetentionDuration};
use dr::core::{Error, Repository, Result, RetentionPolicy};
use serde_json::json;

use crate::cli::RepoArgs;
use crate::output::{human_bytes, print_json};

/// The `--keep-…` flags, the time zone and the label filter of a retention policy.
#[derive(Debug, Args, Clone, Default)]
pub struct PolicyArgs {
    /// Keep the N most recent backups.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the N most recent hours that have one.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the N most recent days that have one.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the N most recent ISO weeks (Monday–Sunday) that
    /// have one.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the N most recent months that have one.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest backup of each of the N most recent years that have one.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every backup made within DURATION before the newest backup (e.g. 24h, 7d, 1y2m3d).
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<RetentionDuration>,
    /// Keep the newest backup of each hour within DURATION before the newest backup.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<RetentionDuration>,
    /// Keep the newest backup of each day within DURATION before the newest backup.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<RetentionDuration>,
    /// Keep the newest backup of each week within DURATION before the newest backup.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<RetentionDuration>,
    /// Keep the newest backup of each month within DURATION before the newest backup.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<RetentionDuration>,
    /// Keep the newest backup of each year within DURATION before the newest backup.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<RetentionDuration>,
    /// Time zone in which hours, days, weeks, months and years begin (IANA name, e.g.
    /// Europe/Berlin). Default UTC.
    #[arg(long, value_name = "TZ")]
    pub time_zone: Option<String>,
    /// Apply the policy only to backups carrying this label (repeatable: all must match).
    /// Other backups are left alone.
    #[arg(long = "label", value_name = "LABEL")]
    pub labels: Vec<String>,
}

impl PolicyArgs {
    /// Whether any policy flag was given.
    fn given(&self) -> bool {
        self.time_zone.is_some()
            || !self.labels.is_empty()
            || self.policy_unchecked() != RetentionPolicy::default()
    }

    fn policy_unchecked(&self) -> RetentionPolicy {
        RetentionPolicy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within,
            keep_within_hourly: self.keep_within_hourly,
            keep_within_daily: self.keep_within_daily,
            keep_within_weekly: self.keep_within_weekly,
            keep_within_monthly: self.keep_within_monthly,
            keep_within_yearly: self.keep_within_yearly,
            ..Default::default()
        }
    }

    /// The policy the flags describe; refuses one without a rule (it would keep everything).
    fn policy(&self) -> Result<RetentionPolicy> {
        let mut policy = self.policy_unchecked();
        if let Some(tz) = &self.time_zone {
            policy.time_zone = parse_time_zone(tz)?;
        }
        policy.labels = self.labels.clone();
        if policy.is_empty() {
            return Err(Error::invalid(
                "no retention rule given: pass at least one --keep-… flag with a count or duration above zero",
            ));
        }
        Ok(policy)
    }
}

/// `drctl pin` / `drctl unpin`.
#[derive(Debug, Args)]
pub struct PinArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// Backup id, or `latest`.
    pub id: String,
}

/// `drctl retention …`.
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Preview a policy on a list of backup times: which would be kept, and why.
    Plan {
        /// A file with one RFC 3339 timestamp per line (blank lines and # comments skipped),
        /// or - for standard input.
        #[arg(long, value_name = "FILE")]
        times_file: PathBuf,
        /// Evaluate as of this time (RFC 3339); default now.
        #[arg(long, value_name = "RFC3339")]
        now: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Store a policy in the repository's configuration; `drctl prune` uses it when given
    /// no --keep-… flags.
    Set {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        /// Remove the stored policy instead.
        #[arg(long, conflicts_with_all = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within", "keep_within_hourly", "keep_within_daily", "keep_within_weekly", "keep_within_monthly", "keep_within_yearly"])]
        clear: bool,
    },
    /// Print the policy stored in the repository's configuration.
    Show {
        #[command(flatten)]
        repo: RepoArgs,
    },
}

/// `drctl prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Remove incomplete uploads (no manifest) only once their newest object is older than
    /// this (days and hours, e.g. 24h, 2d).
    #[arg(long, value_name = "DURATION", default_value = "24h")]
    pub incomplete_grace: RetentionDuration,
    /// Wait up to this many seconds for the repository's exclusive lease if another
    /// process holds it (default: fail at once).
    #[arg(long, value_name = "SECONDS")]
    pub lock_wait: Option<u64>,
}

/// Mark a backup as pinned (never deleted by retention) or unpin it.
pub async fn pin(json: bool, args: &PinArgs, pinned: bool) -> Result<()> {
    let repo = Repository::open(args.repo.storage()?).await?;
    let mut manifest = repo.resolve(&args.id).await?;
    let changed = manifest.pinned != pinned;
    if changed {
        manifest.pinned = pinned;
        repo.update_manifest(&manifest).await?;
    }
    let verb = if pinned { "pinned" } else { "unpinned" };
    if json {
        print_json(&json!({ "id": manifest.id, "pinned": pinned, "changed": changed }));
    } else if changed {
        println!("{verb} backup {}", manifest.id);
    } else {
        println!("backup {} was already {verb}", manifest.id);
    }
    Ok(())
}

/// `drctl retention …`.
pub async fn run(json: bool, command: RetentionCommand) -> Result<()> {
    match command {
        RetentionCommand::Plan {
            times_file,
            now,
            policy,
        } => plan(json, &times_file, now.as_deref(), &policy),
        RetentionCommand::Set {
            repo,
            policy,
            clear,
        } => set(json, &repo, &policy, clear).await,
        RetentionCommand::Show { repo } => {
            let repo = Repository::open(repo.storage()?).await?;
            let policy = repo.config().retention.clone();
            if json {
                print_json(&json!({ "retention": policy }));
            } else {
                match policy {
                    Some(p) => println!("{p}"),
                    None => println!("no retention policy stored"),
                }
            }
            Ok(())
        }
    }
}

fn parse_time(text: &str, what: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            Error::invalid(format!(
                "{what} '{text}' is not an RFC 3339 time (e.g. 2026-11-25T02:00:00Z)"
            ))
            .with_source(e)
        })
}

fn read_times(path: &Path) -> Result<Vec<BackupInfo>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin())
            .map_err(|e| Error::io("reading times from standard input", e))?
    } else {
        std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?
    };
    let mut backups = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let time = parse_time(line, &format!("line {} of {}", n + 1, path.display()))?;
        backups.push(BackupInfo::new(line, time));
    }
    Ok(backups)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn plan(json: bool, times_file: &Path, now: Option<&str>, args: &PolicyArgs) -> Result<()> {
    let policy = args.policy()?;
    let now = now
        .map(|t| parse_time(t, "--now"))
        .transpose()?
        .unwrap_or_else(Utc::now);
    let backups = read_times(times_file)?;
    let decisions = policy.evaluate(&backups, now);
    if json {
        let items: Vec<_> = decisions
            .iter()
            .map(|d| json!({ "time": rfc3339(d.time), "keep": d.keep, "reasons": d.reasons }))
            .collect();
        print_json(&items);
    } else {
        println!(
            "policy: {policy}; evaluated at {}",
            now.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
        print_table(&decisions, false);
    }
    Ok(())
}

fn print_table(decisions: &[Decision], with_id: bool) {
    for d in decisions {
        let verdict = if d.keep { "keep" } else { "delete" };
        let line = if with_id {
            format!(
                "{}  {}  {verdict:<6}  {}",
                d.id,
                d.time.format("%Y-%m-%d %H:%M:%S"),
                d.reasons.join(", ")
            )
        } else {
            format!(
                "{}  {verdict:<6}  {}",
                rfc3339(d.time),
                d.reasons.join(", ")
            )
        };
        println!("{}", line.trim_end());
    }
    let kept = decisions.iter().filter(|d| d.keep).count();
    println!("keep {kept}, delete {}", decisions.len() - kept);
}

async fn set(json: bool, args: &RepoArgs, policy: &PolicyArgs, clear: bool) -> Result<()> {
    let mut repo = Repository::open(args.storage()?).await?;
    let new = if clear { None } else { Some(policy.policy()?) };
    // The configuration is rewritten whole: hold the exclusive lease meanwhile so that a
    // concurrent key change is not lost.
    let mut config = repo.config().clone();
    config.retention = new.clone();
    dr::core::lease::Lease::exclusive(&repo, "retention set", None)
        .await?
        .hold(async |_| repo.save_config(config).await)
        .await?;
    if json {
        print_json(&json!({ "retention": new }));
    } else {
        match new {
            Some(p) => println!("stored retention policy: {p}"),
            None => println!("removed the stored retention policy"),
        }
    }
    Ok(())
}

/// Apply a retention policy (the flags', else the repository's) and remove stale uploads.
pub async fn prune(json: bool, args: &PruneArgs) -> Result<()> {
    let repo = Repository::open(args.repo.storage()?).await?;
    let policy = if args.policy.given() {
        args.policy.policy()?
    } else {
        match &repo.config().retention {
            Some(p) if !p.is_empty() => p.clone(),
            _ => {
                return Err(Error::invalid(
                    "no retention policy: pass --keep-… flags, or store one with `drctl retention set --keep-…`",
                ))
            }
        }
    };
    let grace = &args.incomplete_grace;
    if grace.years > 0 || grace.months > 0 {
        return Err(Error::invalid(
            "--incomplete-grace takes days and hours only (e.g. 24h, 2d)",
        ));
    }
    let opts = PruneOptions {
        dry_run: args.dry_run,
        incomplete_grace: std::time::Duration::from_secs(
            (u64::from(grace.days) * 24 + u64::from(grace.hours)) * 3600,
        ),
        lease_wait: args.lock_wait.map(std::time::Duration::from_secs),
        ..Default::default()
    };
    let report = dr::core::prune(&repo, &policy, &opts).await?;
    if json {
        print_json(&prune_json(&report, &opts));
    } else {
        print_prune(&report, &policy);
    }
    Ok(())
}

/// The `retention plan` shape, plus `id`; incomplete uploads follow with `incomplete: true`
/// and the time of their newest object.
fn prune_json(report: &PruneReport, opts: &PruneOptions) -> serde_json::Value {
    let mut items: Vec<_> = report
        .decisions
        .iter()
        .map(|d| {
            json!({ "id": d.id, "time": rfc3339(d.time), "keep": d.keep, "reasons": d.reasons })
        })
        .collect();
    let grace = humanize(opts.incomplete_grace);
    for u in &report.incomplete {
        let reasons: Vec<String> = if u.removed {
            vec![]
        } else {
            vec![format!(
                "incomplete upload younger than the {grace} grace period"
            )]
        };
        items.push(json!({
            "id": u.id,
            "time": rfc3339(u.last_modified),
            "keep": !u.removed,
            "reasons": reasons,
            "incomplete": true,
        }));
    }
    serde_json::Value::Array(items)
}

fn humanize(d: std::time::Duration) -> String {
    let h = d.as_secs() / 3600;
    if h % 24 == 0 && h > 0 {
        format!("{}d", h / 24)
    } else {
        format!("{h}h")
    }
}

fn print_prune(report: &PruneReport, policy: &RetentionPolicy) {
    println!(
        "policy: {policy}; evaluated at {}",
        report.now.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    print_table(&report.decisions, true);
    for u in &report.incomplete {
        println!(
            "{}  incomplete upload, last written {}, {}: {}",
            u.id,
            rfc3339(u.last_modified),
            human_bytes(u.bytes),
            if u.removed {
                "remove"
            } else {
                "keep (within the grace period)"
            }
        );
    }
    let would = if report.dry_run {
        "would delete"
    } else {
        "deleted"
    };
    println!(
        "{would} {} backups ({}) and {} incomplete uploads{}",
        report.deleted.len(),
        human_bytes(report.freed_bytes),
        report.incomplete_removed.len(),
        if report.dry_run {
            "; nothing was deleted (dry run)"
        } else {
            ""
        }
    );
}
