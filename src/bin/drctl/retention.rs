//! `drctl pin`, `drctl unpin`, `drctl retention plan|set|show` and `drctl prune`: retention
//! as restic's `forget` rules, previewable before anything is deleted.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, Subcommand};
use dr::core::prune::{PruneOptions, PruneReport};
use dr::core::retention::{
    parse_time_zone, BackupInfo, Decision, RetentionDuration, SeriesPolicies,
};
use dr::core::{Error, Result, RetentionPolicy, Series};
use serde_json::json;

use crate::args::{RepoArgs, SeriesArgs};
use crate::output::{human_bytes, print_json, Output};

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
    /// Keep archived WAL so that any point of this last stretch (e.g. 7d) can be recovered
    /// to, separately from backup retention; the backup that anchors the window is kept.
    /// Without it, WAL is kept from every kept physical backup onwards. Given alone to
    /// `prune`, it overrides the stored policy's window and keeps its backup rules.
    #[arg(long, value_name = "DURATION")]
    pub keep_pitr: Option<RetentionDuration>,
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
    /// Whether any policy flag was given (a lone --keep-pitr is not a policy: it overrides
    /// the stored one's window).
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
        policy.keep_pitr = self.keep_pitr;
        if policy.is_empty() && policy.keep_pitr.is_none() {
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
    /// Backup id, or `latest` (the newest backup of the series --series picks).
    pub id: String,
    #[command(flatten)]
    pub series: SeriesArgs,
}

/// `drctl retention …`.
#[derive(Debug, Subcommand)]
pub enum RetentionCommand {
    /// Preview a policy on a list of backup times: which would be kept, and why.
    Plan {
        /// A file with one RFC 3339 timestamp per line, optionally followed by the backup's
        /// series (kind:origin:name; each series is kept on its own), blank lines and
        /// # comments skipped; or - for standard input.
        #[arg(long, value_name = "FILE")]
        times_file: PathBuf,
        /// Evaluate as of this time (RFC 3339); default now.
        #[arg(long, value_name = "RFC3339")]
        now: Option<String>,
        #[command(flatten)]
        policy: PolicyArgs,
    },
    /// Store a policy in the repository's configuration; `drctl prune` uses it when given
    /// no --keep-… flags. With --series, the policy of those series only (others keep the
    /// repository's default policy).
    Set {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        policy: PolicyArgs,
        #[command(flatten)]
        series: SeriesArgs,
        /// Remove the stored policy instead.
        #[arg(long, conflicts_with_all = ["keep_last", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly", "keep_yearly", "keep_within", "keep_within_hourly", "keep_within_daily", "keep_within_weekly", "keep_within_monthly", "keep_within_yearly", "keep_pitr"])]
        clear: bool,
    },
    /// Print the policies stored in the repository's configuration.
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
    /// Prune only these series (the policy applies to them; every other series is left
    /// alone).
    #[command(flatten)]
    pub series: SeriesArgs,
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
pub async fn pin(out: Output, args: &PinArgs, pinned: bool) -> Result<()> {
    let repo = args.repo.open_for_writing().await?;
    let mut manifest = repo.resolve(&args.id, &args.series.selector()).await?;
    let changed = manifest.pinned != pinned;
    if changed {
        manifest.pinned = pinned;
        repo.update_manifest(&manifest).await?;
    }
    let verb = if pinned { "pinned" } else { "unpinned" };
    if out.is_json() {
        print_json(&json!({ "id": manifest.id, "pinned": pinned, "changed": changed }));
    } else if changed {
        println!("{verb} backup {}", manifest.id);
    } else {
        println!("backup {} was already {verb}", manifest.id);
    }
    Ok(())
}

/// `drctl retention …`.
pub async fn run(out: Output, command: RetentionCommand) -> Result<()> {
    match command {
        RetentionCommand::Plan {
            times_file,
            now,
            policy,
        } => plan(out, &times_file, now.as_deref(), &policy),
        RetentionCommand::Set {
            repo,
            policy,
            series,
            clear,
        } => set(out, &repo, &policy, &series, clear).await,
        RetentionCommand::Show { repo } => {
            let repo = repo.open().await?;
            let config = repo.config();
            if out.is_json() {
                print_json(&json!({
                    "retention": config.retention,
                    "series": config.retention_series,
                }));
            } else {
                match &config.retention {
                    Some(p) => println!("{p}"),
                    None => println!("no retention policy stored"),
                }
                for p in &config.retention_series {
                    println!("series {}: {}", p.selector, p.policy);
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
        let where_ = || format!("line {} of {}", n + 1, path.display());
        let (time, series) = match line.split_once(char::is_whitespace) {
            Some((time, series)) => (time, Some(series.trim())),
            None => (line, None),
        };
        let time = parse_time(time, &where_())?;
        let series: Series = match series {
            Some(s) => s
                .parse()
                .map_err(|e: Error| Error::invalid(format!("{}: {}", where_(), e.message())))?,
            None => Series::default(),
        };
        backups.push(BackupInfo::new(line, time).in_series(series));
    }
    Ok(backups)
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

fn plan(out: Output, times_file: &Path, now: Option<&str>, args: &PolicyArgs) -> Result<()> {
    let policy = args.policy()?;
    let now = now
        .map(|t| parse_time(t, "--now"))
        .transpose()?
        .unwrap_or_else(Utc::now);
    let backups = read_times(times_file)?;
    let decisions = SeriesPolicies::new(policy.clone()).evaluate(&backups, now);
    if out.is_json() {
        let items: Vec<_> = decisions
            .iter()
            .map(|d| {
                let mut item =
                    json!({ "time": rfc3339(d.time), "keep": d.keep, "reasons": d.reasons });
                if d.series != Series::default() {
                    item["series"] = json!(d.series);
                }
                item
            })
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

/// One line a decision, grouped by series (newest first within each) when there are
/// several, each group headed by its series.
fn print_table(decisions: &[Decision], with_id: bool) {
    let mut series: Vec<&Series> = decisions.iter().map(|d| &d.series).collect();
    series.sort();
    series.dedup();
    for s in series {
        if *s != Series::default() {
            println!("series {s}");
        }
        for d in decisions.iter().filter(|d| d.series == *s) {
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
    }
    let kept = decisions.iter().filter(|d| d.keep).count();
    println!("keep {kept}, delete {}", decisions.len() - kept);
}

async fn set(
    out: Output,
    args: &RepoArgs,
    policy: &PolicyArgs,
    series: &SeriesArgs,
    clear: bool,
) -> Result<()> {
    let mut repo = args.open_for_writing().await?;
    let new = if clear { None } else { Some(policy.policy()?) };
    // The configuration is rewritten whole: hold the exclusive lease meanwhile so that a
    // concurrent key change is not lost.
    let mut config = repo.config().clone();
    match &series.series {
        None => config.retention = new.clone(),
        Some(selector) => {
            config.retention_series.retain(|p| p.selector != *selector);
            if let Some(p) = &new {
                config
                    .retention_series
                    .push(dr::core::retention::SeriesPolicy {
                        selector: selector.clone(),
                        policy: p.clone(),
                    });
            }
        }
    }
    dr::core::lease::Lease::exclusive(&repo, "retention set", None)
        .await?
        .hold(async |_| repo.save_config(config).await)
        .await?;
    let of = series
        .series
        .as_ref()
        .map(|s| format!(" of series {s}"))
        .unwrap_or_default();
    if out.is_json() {
        print_json(&json!({ "retention": new, "series": series.series }));
    } else {
        match new {
            Some(p) => println!("stored retention policy{of}: {p}"),
            None => println!("removed the stored retention policy{of}"),
        }
    }
    Ok(())
}

/// Apply a retention policy (the flags', else the repository's) and remove stale uploads.
pub async fn prune(out: Output, args: &PruneArgs) -> Result<()> {
    let repo = args.repo.open_for_writing().await?;
    let policy = if args.policy.given() {
        SeriesPolicies::new(args.policy.policy()?)
    } else {
        repo.config()
            .retention_policies()
            .filter(|p| !p.is_empty() || has_pitr_window(p))
            .ok_or_else(|| {
                Error::invalid(
                    "no retention policy: pass --keep-… flags, or store one with `drctl retention set --keep-…`",
                )
            })?
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
        series: args.series.selector(),
        keep_pitr: args.policy.keep_pitr,
        ..Default::default()
    };
    let report = dr::core::prune(&repo, &policy, &opts).await?;
    let packs = prune_packs(&repo, args, &opts).await?;
    if out.is_json() {
        let mut json = prune_json(&report, &opts);
        if let (Some(p), serde_json::Value::Array(items)) = (&packs, &mut json) {
            items.push(json!({ "file_packs": p, "keep": false, "reasons": [] }));
        }
        print_json(&json);
    } else {
        print_prune(&report, &policy);
        if let Some(p) = &packs {
            println!(
                "file packs: {} deleted, {} repacked into {}, {} orphaned deleted, {} chunks removed, {} freed{}",
                p.packs_deleted,
                p.packs_repacked,
                p.packs_written,
                p.orphans_deleted,
                p.chunks_removed,
                crate::output::human_bytes(p.bytes_freed.max(0) as u64),
                if opts.dry_run { " (dry run)" } else { "" }
            );
        }
    }
    Ok(())
}

/// After the backups a policy drops are gone, the packs of deduplicated file backups that
/// no snapshot needs any more (needs a repository key: snapshot trees are encrypted).
async fn prune_packs(
    repo: &dr::core::Repository,
    args: &PruneArgs,
    opts: &PruneOptions,
) -> Result<Option<dr::files::dedup::PackPruneReport>> {
    if !dr::file_backups::has_packs(repo).await? {
        return Ok(None);
    }
    let Ok(identity) = crate::key::unlock(&args.repo, repo) else {
        tracing::warn!(
            "file packs not pruned: reading snapshot trees needs a repository key (--key-file)"
        );
        return Ok(None);
    };
    let encryptor = dr::keys::encryptor(repo, identity.clone())?;
    let decryptor = dr::keys::decryptor(identity);
    dr::file_backups::prune_packs(
        repo,
        &encryptor,
        &decryptor,
        opts.incomplete_grace,
        opts.dry_run,
        opts.lease_wait,
    )
    .await
    .map(Some)
}

/// Whether any of `policies` sets a PITR window (a policy of WAL retention alone).
fn has_pitr_window(policies: &SeriesPolicies) -> bool {
    policies.default.keep_pitr.is_some()
        || policies.series.iter().any(|p| p.policy.keep_pitr.is_some())
}

/// The `retention plan` shape, plus `id`; incomplete uploads follow with `incomplete: true`
/// and the time of their newest object.
fn prune_json(report: &PruneReport, opts: &PruneOptions) -> serde_json::Value {
    let mut items: Vec<_> = report
        .decisions
        .iter()
        .map(|d| {
            json!({ "id": d.id, "series": d.series, "time": rfc3339(d.time), "keep": d.keep, "reasons": d.reasons })
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
    for w in &report.wal {
        for f in &w.plan.files {
            items.push(json!({
                "wal_file": f.name,
                "cluster": w.system_identifier,
                "keep": f.keep,
                "reasons": f.reasons,
            }));
        }
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

fn print_prune(report: &PruneReport, policy: &SeriesPolicies) {
    println!(
        "policy: {}; evaluated at {}",
        policy.default,
        report.now.to_rfc3339_opts(SecondsFormat::Secs, true)
    );
    for p in &policy.series {
        println!("policy of series {}: {}", p.selector, p.policy);
    }
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
    for u in &report.undeletable {
        println!(
            "{}  the store refused the deletion (kept; the next prune tries again): {}",
            u.id, u.error
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
    for w in &report.wal {
        println!(
            "WAL of cluster {}: {would} {} of {} archived files{}",
            w.system_identifier,
            w.deleted.len(),
            w.plan.files.len(),
            w.plan
                .window_start
                .map(|t| format!("; PITR window from {}", t.format("%Y-%m-%d %H:%M:%S UTC")))
                .unwrap_or_default()
        );
    }
}
