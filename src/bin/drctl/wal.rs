//! `drctl wal-push`, `wal-fetch`, `wal list|verify` and the point-in-time `restore --pgdata`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Subcommand};
use dr::core::wal::{base, ArchiveIndex, Lsn, RecoveryTarget, TargetTimeline, WalArchive};
use dr::core::{Error, ErrorKind, ReadOptions, Repository, Result};
use dr::db::wal::{
    ControlFile, Fetched, PusherCommand, TargetAction, WalFetcher, WalPusher, WalReceiver,
};
use serde_json::json;

use crate::args::{RepoArgs, SeriesArgs};
use crate::output::Output;

/// `drctl wal-push`: PostgreSQL's `archive_command`.
#[derive(Debug, Args)]
pub struct PushArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The server's data directory (default: the working directory, where PostgreSQL runs
    /// archive_command).
    #[arg(long, default_value = ".")]
    pub pgdata: PathBuf,
    /// Files pushed at once by the background pusher (or, with --foreground, by this call:
    /// the one asked for plus the next ones waiting). 1: only the file asked for, in this call.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Push ahead within this call only (the file asked for plus the next --parallel - 1
    /// waiting), without a background pusher.
    #[arg(long)]
    pub foreground: bool,
    /// Be the background pusher of --pgdata (what a call starts; not for people).
    #[arg(long, hide = true)]
    pub run_pusher: bool,
    /// The file to archive (`%p`).
    #[arg(required_unless_present = "run_pusher")]
    pub path: Option<PathBuf>,
}

/// `drctl wal-fetch`: PostgreSQL's `restore_command`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The recovering server's data directory (default: the working directory).
    #[arg(long, default_value = ".")]
    pub pgdata: PathBuf,
    /// Segments read ahead into pg_wal/dr_prefetch after each fetch (0: none).
    #[arg(long, default_value_t = 4)]
    pub prefetch: usize,
    /// The file PostgreSQL wants (`%f`).
    pub name: String,
    /// Where to write it (`%p`).
    pub dest: PathBuf,
}

/// `drctl wal-receive`: stream WAL continuously (RPO of seconds).
#[derive(Debug, Args)]
pub struct ReceiveArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
    /// The server to stream from (postgres://user@host:port/db, a user with REPLICATION).
    /// Put the password in PGPASSWORD or ~/.pgpass, not here.
    #[arg(long, env = "DR_DB")]
    pub db: String,
    /// Physical replication slot (created if missing; drop it with
    /// pg_drop_replication_slot when the receiver is retired, or WAL piles up on the server).
    #[arg(long, default_value = dr::db::wal::DEFAULT_SLOT)]
    pub slot: String,
    /// Local directory pg_receivewal writes into (on this host, not the server's disks).
    #[arg(long, default_value = "dr-wal-spool")]
    pub spool: PathBuf,
    /// Seconds between copies of the segment being written.
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
}

/// `drctl wal …`.
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Per cluster and timeline: archived ranges, gaps, the PITR window, the newest segment.
    List(StateArgs),
    /// Like list, but fails (exit 5) when a kept base backup cannot be restored or a gap
    /// breaks the chain after it.
    Verify(StateArgs),
}

/// Arguments of `wal list|verify`.
#[derive(Debug, Args)]
pub struct StateArgs {
    #[command(flatten)]
    pub repo: RepoArgs,
}

/// The point-in-time part of `drctl restore`.
#[derive(Debug, Args, Clone, Default)]
pub struct PitrArgs {
    /// Restore a physical base backup into this data directory (missing or empty) and
    /// prepare recovery to a target; start the server on it to recover.
    #[arg(long, conflicts_with_all = ["db", "dir"])]
    pub pgdata: Option<PathBuf>,
    /// Recover to this time (RFC 3339, e.g. 2026-12-01T01:50:00Z).
    #[arg(long, requires = "pgdata", group = "target")]
    pub target_time: Option<String>,
    /// Recover to this WAL position (e.g. 0/3000148).
    #[arg(long, requires = "pgdata", group = "target")]
    pub target_lsn: Option<String>,
    /// Recover until this transaction has committed.
    #[arg(long, requires = "pgdata", group = "target")]
    pub target_xid: Option<u64>,
    /// Recover to this restore point (pg_create_restore_point).
    #[arg(long, requires = "pgdata", group = "target")]
    pub target_name: Option<String>,
    /// At the target: promote (default), pause or shutdown.
    #[arg(long, requires = "pgdata", default_value = "promote")]
    pub target_action: String,
    /// Timeline to follow: latest (default), current or a number.
    #[arg(long, requires = "pgdata", default_value = "latest")]
    pub target_timeline: String,
    /// Keep archive_mode as it was in the backup (by default the restored copy does not
    /// archive, so it never pushes WAL into the production archive).
    #[arg(long, requires = "pgdata")]
    pub archive: bool,
    /// Restore the tablespace that was at OLD into NEW (repeatable); by default each goes
    /// to <pgdata>-tablespace-<oid> beside the data directory. Targets must be missing or
    /// empty.
    #[arg(long = "tablespace-map", value_name = "OLD=NEW", requires = "pgdata")]
    pub tablespace_map: Vec<String>,
}

/// Exit status that makes PostgreSQL abort recovery instead of taking it as "not found"
/// (it treats any status above 125 like a signal).
pub const FETCH_FATAL: i32 = 126;

pub async fn push(out: Output, args: PushArgs) -> Result<()> {
    let repo = Repository::open(args.repo.storage()?).await?;
    let encryptor = crate::key::backup_encryptor(&args.repo, &repo)?;
    let mut pusher =
        WalPusher::new(repo, Arc::new(encryptor), &args.pgdata).parallel(args.parallel);
    if args.run_pusher {
        // Detached, with no one reading its output: a failure is recorded in the spool.
        pusher.run_pusher().await?;
        return Ok(());
    }
    if !args.foreground {
        pusher = pusher.background(pusher_command()?);
    }
    let path = args.path.expect("clap requires it without --run-pusher");
    let path = if path.is_absolute() {
        path
    } else {
        args.pgdata.join(path)
    };
    let report = pusher.push(&path).await?;
    out.result(&report, |r| {
        tracing::info!(file = %r.name, outcome = ?r.outcome, ahead = r.ahead.len(), ms = r.duration_ms, "archived");
    });
    Ok(())
}

/// The background pusher a call starts: this drctl with this call's arguments (the same
/// repository, key and data directory; secrets come from the inherited environment or files,
/// never argv) plus `--run-pusher`.
fn pusher_command() -> Result<PusherCommand> {
    let program = std::env::current_exe()
        .map_err(|e| Error::io("cannot tell where drctl is installed", e))?;
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    args.push("--run-pusher".into());
    Ok(PusherCommand { program, args })
}

/// Stream until SIGINT or SIGTERM, then store what was received and print the report.
pub async fn receive(out: Output, args: ReceiveArgs) -> Result<()> {
    if !(args.interval.is_finite() && args.interval > 0.0) {
        return Err(Error::invalid(format!(
            "--interval {} is not a positive number of seconds",
            args.interval
        )));
    }
    let repo = Repository::open(args.repo.storage()?).await?;
    let encryptor = crate::key::backup_encryptor(&args.repo, &repo)?;
    let receiver = WalReceiver::new(
        repo,
        Arc::new(encryptor),
        crate::args::db_config(&args.db)?,
        &args.spool,
    )
    .slot(&args.slot)
    .interval(std::time::Duration::from_secs_f64(args.interval));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("cannot listen for SIGTERM", e))?;
    let stop = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let report = receiver.run(stop).await?;
    out.result(&report, |r| println!("{r}"));
    Ok(())
}

/// Returns the process exit code: 0 written, 1 not archived (the end of the archive).
/// Errors are printed and mapped to [`FETCH_FATAL`] by the caller.
pub async fn fetch(out: Output, args: FetchArgs) -> Result<i32> {
    let repo = Repository::open(args.repo.storage()?).await?;
    let decryptor = dr::keys::decryptor(crate::key::unlock(&args.repo, &repo)?);
    let control = ControlFile::read(&args.pgdata)?;
    let mut fetcher =
        WalFetcher::new(&repo, Arc::new(decryptor), control.system_identifier).await?;
    if args.prefetch > 0 {
        fetcher = fetcher.prefetch_dir(args.pgdata.join("pg_wal").join("dr_prefetch"));
    }
    let dest = if args.dest.is_absolute() {
        args.dest.clone()
    } else {
        args.pgdata.join(&args.dest)
    };
    let outcome = fetcher.fetch(&args.name, &dest).await?;
    // PostgreSQL reads only the exit status; the text form stays quiet in its log.
    out.result(&json!({ "name": args.name, "outcome": outcome }), |_| {});
    if outcome == Fetched::NotFound {
        return Ok(1);
    }
    if args.prefetch > 0 {
        // Best effort: a failed read-ahead is read again, and checked, when asked for.
        if let Err(e) = fetcher.prefetch_after(&args.name, args.prefetch).await {
            tracing::debug!(error = %e.report(), "prefetch failed");
        }
    }
    Ok(0)
}

pub async fn state(out: Output, command: WalCommand) -> Result<()> {
    let (args, strict) = match &command {
        WalCommand::List(a) => (a, false),
        WalCommand::Verify(a) => (a, true),
    };
    let repo = Repository::open(args.repo.storage()?).await?;
    let clusters = WalArchive::clusters(&repo).await?;
    let physical = repo
        .list_series(&dr::core::SeriesSelector::kind(base::PHYSICAL_KIND))
        .await?;
    let mut clusters_json = Vec::new();
    let mut problems = Vec::new();
    for c in clusters {
        let archive = WalArchive::open(&repo, c.system_identifier).await?;
        let index = archive.index(true).await?;
        let backups: Vec<_> = physical
            .iter()
            .filter(|m| base::system_identifier(m).ok() == Some(c.system_identifier))
            .map(base::base_backup)
            .collect::<Result<_>>()?;
        let reach: Vec<_> = backups.iter().map(|b| index.reach(b)).collect();
        for r in &reach {
            if !r.consistent {
                problems.push(format!(
                    "cluster {}: base backup {} lacks part of its own WAL",
                    c.system_identifier, r.id
                ));
            }
        }
        let gaps = index.gaps();
        for g in &gaps {
            problems.push(format!(
                "cluster {}: timeline {} misses {} segment(s) {}..{}",
                c.system_identifier, g.timeline, g.segments, g.first, g.last
            ));
        }
        let window = index.window(&backups);
        if !out.is_json() {
            print_cluster(c.system_identifier, &index, &gaps, &window);
        }
        clusters_json.push(json!({
            "system_identifier": c.system_identifier.to_string(),
            "segment_bytes": c.segment_bytes.bytes(),
            "ranges": index.ranges(),
            "gaps": gaps,
            "window": window,
            "backups": reach,
            "newest_age_seconds": index.newest().map(|(_, i)| (chrono::Utc::now() - i.time()).num_seconds()),
        }));
    }
    // Text was printed cluster by cluster above.
    out.result(&clusters_json, |_| {});
    if strict && !problems.is_empty() {
        return Err(Error::new(ErrorKind::Corrupt, problems.join("; ")));
    }
    Ok(())
}

fn print_cluster(
    sysid: u64,
    index: &ArchiveIndex,
    gaps: &[dr::core::wal::Gap],
    window: &[dr::core::wal::Recoverable],
) {
    println!("cluster {sysid}");
    let fmt = |t: chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S UTC").to_string();
    for r in index.ranges() {
        println!(
            "  timeline {}: {}..{} ({} segments{}), {} .. {}",
            r.timeline,
            r.first,
            r.last,
            r.segments,
            if r.partial_end {
                ", then a partial"
            } else {
                ""
            },
            fmt(r.from),
            fmt(r.to)
        );
    }
    for g in gaps {
        println!(
            "  GAP on timeline {}: {}..{} ({} segments missing)",
            g.timeline, g.first, g.last, g.segments
        );
    }
    if window.is_empty() {
        println!("  PITR window: none (no base backup with its WAL)");
    }
    for w in window {
        println!("  PITR window: {} .. {}", fmt(w.from), fmt(w.to));
    }
    if let Some((f, i)) = index.newest() {
        println!(
            "  newest: {} ({} s ago)",
            f.name(index.segment_size()),
            (chrono::Utc::now() - i.time()).num_seconds()
        );
    }
}

/// The recovery target the flags name.
pub fn target(args: &PitrArgs) -> Result<RecoveryTarget> {
    if let Some(t) = &args.target_time {
        let t = chrono::DateTime::parse_from_rfc3339(t).map_err(|_| {
            Error::invalid(format!(
                "--target-time '{t}' is not an RFC 3339 time (e.g. 2026-12-01T01:50:00Z)"
            ))
        })?;
        return Ok(RecoveryTarget::Time(t.with_timezone(&chrono::Utc)));
    }
    if let Some(l) = &args.target_lsn {
        return Ok(RecoveryTarget::Lsn(l.parse::<Lsn>()?));
    }
    if let Some(x) = args.target_xid {
        return Ok(RecoveryTarget::Xid(x));
    }
    if let Some(n) = &args.target_name {
        return Ok(RecoveryTarget::Name(n.clone()));
    }
    Ok(RecoveryTarget::Latest)
}

/// The `restore_command` for a restored server: this drctl, this repository, this key
/// file (a path; never a secret in the command line).
pub fn restore_command(repo: &RepoArgs) -> Result<String> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("cannot tell where drctl is installed", e))?;
    let key = repo.key_file.as_ref().ok_or_else(|| {
        Error::invalid(
            "a point-in-time restore needs --key-file (or DR_KEY_FILE): the restored server's \
             restore_command reads the archived WAL with it",
        )
    })?;
    let key = std::path::absolute(key).map_err(|e| Error::io("cannot resolve --key-file", e))?;
    let repo_url = if Path::new(&repo.repo).exists() {
        std::path::absolute(&repo.repo)
            .map_err(|e| Error::io("cannot resolve --repo", e))?
            .display()
            .to_string()
    } else {
        repo.repo.clone()
    };
    Ok(dr::pitr::restore_command(
        &exe,
        &repo_url,
        &key,
        &repo.storage_opts,
    ))
}

pub async fn restore(
    out: Output,
    repo_args: &RepoArgs,
    id: &str,
    series: &SeriesArgs,
    args: &PitrArgs,
) -> Result<()> {
    let pgdata = args.pgdata.clone().expect("called with --pgdata");
    let req = dr::pitr::PitrRequest {
        backup: Some(id.to_string()),
        series: series.selector(),
        pgdata: std::path::absolute(&pgdata)
            .map_err(|e| Error::io("cannot resolve --pgdata", e))?,
        target: target(args)?,
        action: args.target_action.parse::<TargetAction>()?,
        timeline: args.target_timeline.parse::<TargetTimeline>()?,
        archive: args.archive,
        restore_command: restore_command(repo_args)?,
        tablespaces: args
            .tablespace_map
            .iter()
            .map(|pair| {
                let (old, new) = pair.split_once('=').ok_or_else(|| {
                    Error::invalid(format!("--tablespace-map '{pair}' is not OLD=NEW"))
                })?;
                Ok((PathBuf::from(old), PathBuf::from(new)))
            })
            .collect::<Result<_>>()?,
    };
    let repo = Repository::open(repo_args.storage()?).await?;
    let decryptor = dr::keys::decryptor(crate::key::unlock(repo_args, &repo)?);
    let started = std::time::Instant::now();
    let r = dr::pitr::restore_to_point(&repo, &decryptor, &req, &ReadOptions::default()).await?;
    let ms = started.elapsed().as_millis() as u64;
    let report = json!({
            "id": r.backup.id,
            "system_identifier": r.system_identifier.to_string(),
            "pgdata": req.pgdata,
            "target": req.target.to_string(),
            "timeline": r.plan.timeline,
            "first_segment": r.plan.first_segment,
            "last_segment": r.plan.last_segment,
            "reaches": r.plan.reaches,
            "duration_ms": ms,
    });
    out.result(&report, |_| {
        println!(
            "restored base backup {} into {} ({:.1} s); recovery to {} on timeline {} is \
             prepared (WAL {} .. {}): start the server on it to recover",
            r.backup.id,
            req.pgdata.display(),
            ms as f64 / 1000.0,
            req.target,
            r.plan.timeline,
            r.plan.first_segment,
            r.plan.last_segment
        );
    });
    Ok(())
}
