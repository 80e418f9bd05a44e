//! Validation of `[jobs.*]`: each job's kind and the keys that kind takes, its schedule,
//! its retention (one policy per source) and the jobs that follow it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use toml::Spanned;

use dr_core::schedule::{
    parse_duration, CronExpr, JobKind, MissedRuns, Schedule, Tz, Window, WindowRule,
};
use dr_core::{Codec, Error, Result, RetentionPolicy};

use super::raw::{time_zone, RawJob, Src};
use super::types::{JobConfig, ReceiveConfig, ReplicaConfig};

/// What the rest of the file says that the jobs depend on.
pub(super) struct Context<'a> {
    pub has_database: bool,
    pub has_key: bool,
    /// `[key]` is a file (a physical drill's server reads WAL with it).
    pub key_is_file: bool,
    /// `[retention]` (the default policy when absent).
    pub retention: &'a RetentionPolicy,
    pub windows: &'a BTreeMap<String, Window>,
    /// The configuration file's directory: relative `dir`s are relative to it.
    pub base: Option<&'a Path>,
}

impl Context<'_> {
    /// `path` as written in the file: relative to the file's directory when relative.
    fn path(&self, path: &Path) -> PathBuf {
        match self.base {
            Some(base) if path.is_relative() => base.join(path),
            _ => path.to_path_buf(),
        }
    }
}

/// All the jobs, in name order; at least one.
pub(super) fn jobs(
    src: &Src,
    raw: &BTreeMap<String, RawJob>,
    ctx: &Context,
) -> Result<Vec<JobConfig>> {
    let any_job_retention = raw.values().any(|j| j.retention.is_some());
    // Backup jobs of one series (the hourly and daily database jobs) share one policy.
    let mut series_retention: BTreeMap<(bool, Option<PathBuf>), (&str, &RetentionPolicy)> =
        BTreeMap::new();
    let mut jobs = Vec::new();
    for (name, j) in raw {
        let job = job(src, name, j, raw, ctx, any_job_retention)?;
        if let Some(r) = &j.retention {
            let physical = j.physical.as_ref().is_some_and(|p| *p.get_ref());
            let series = (physical, j.dir.as_ref().map(|d| d.get_ref().clone()));
            match series_retention.get(&series) {
                Some((other, policy)) if *policy != r.get_ref() => {
                    return Err(src.err(
                        r.span(),
                        &format!("jobs.{name}.retention"),
                        Error::invalid(format!(
                            "jobs.{other} backs up the same source with another retention: a source has one policy"
                        )),
                    ))
                }
                _ => {
                    series_retention.insert(series, (name, r.get_ref()));
                }
            }
        }
        jobs.push(job);
    }
    if jobs.is_empty() {
        return Err(Error::invalid(
            "the configuration has no [jobs.<name>] table: nothing to run",
        ));
    }
    Ok(jobs)
}

/// `[jobs.<name>]`.
fn job(
    src: &Src,
    name: &str,
    j: &RawJob,
    all_jobs: &BTreeMap<String, RawJob>,
    ctx: &Context,
    any_job_retention: bool,
) -> Result<JobConfig> {
    let key = |field: &str| format!("jobs.{name}.{field}");
    let invalid = |span: std::ops::Range<usize>, field: &str, message: &str| {
        src.err(span, &key(field), Error::invalid(message.to_string()))
    };
    src.check(&j.kind, &key("kind"), |_| {
        dr_core::schedule::check_job_name(name)
    })?;
    let kind = src.check(&j.kind, &key("kind"), |k| match k.parse::<JobKind>()? {
        JobKind::Custom(other) => Err(Error::invalid(format!(
            "unknown kind '{other}': use backup, prune, verify, drill, replicate or wal-receive"
        ))),
        kind => Ok(kind),
    })?;
    if let Some(dir) = &j.dir {
        if kind != JobKind::Backup {
            return Err(invalid(
                dir.span(),
                "dir",
                "only backup jobs back up a directory",
            ));
        }
    }
    if let Some(dir) = &j.dir {
        if is_bucket(dir.get_ref()) && !j.dedup.as_ref().is_some_and(|d| *d.get_ref()) {
            return Err(invalid(
                dir.span(),
                "dir",
                "a bucket prefix is backed up as deduplicated snapshots only: add dedup = true",
            ));
        }
    }
    if let Some(dedup) = &j.dedup {
        if j.dir.is_none() && *dedup.get_ref() {
            return Err(invalid(
                dedup.span(),
                "dedup",
                "dedup applies to directory backups: add dir = \"…\"",
            ));
        }
    }
    let physical = match &j.physical {
        Some(p) if *p.get_ref() => {
            let wrong = match kind {
                JobKind::Backup if j.dir.is_some() => {
                    Some("a physical backup copies the database cluster, not a dir")
                }
                JobKind::Backup if !ctx.has_database => {
                    Some("a physical backup job needs a [database] on the cluster to copy")
                }
                JobKind::Drill if !ctx.key_is_file => Some(
                    "a physical drill needs [key] file = …: the restored server's restore_command reads the WAL with it",
                ),
                JobKind::Backup | JobKind::Drill => None,
                _ => Some("only backup and drill jobs can be physical"),
            };
            if let Some(message) = wrong {
                return Err(invalid(p.span(), "physical", message));
            }
            true
        }
        _ => false,
    };
    if let Some(p) = &j.pgdata {
        if !(physical && kind == JobKind::Backup) {
            return Err(invalid(
                p.span(),
                "pgdata",
                "pgdata is where a physical backup job copies the data directory from: add physical = true to a backup job",
            ));
        }
    }
    if kind != JobKind::Replicate && (j.verify || !j.to_options.is_empty()) {
        return Err(invalid(
            j.kind.span(),
            "kind",
            "verify and to_options belong to replicate jobs",
        ));
    }
    if let Some(class) = &j.storage_class {
        if kind != JobKind::Backup && kind != JobKind::Replicate {
            return Err(invalid(
                class.span(),
                "storage_class",
                "only backup and replicate jobs write data with a storage class",
            ));
        }
    }
    let compression = match &j.compression {
        Some(c) if kind == JobKind::Backup => {
            Some(src.check(c, &key("compression"), |c| c.parse::<Codec>())?)
        }
        Some(c) => {
            return Err(invalid(
                c.span(),
                "compression",
                "only backup jobs compress (the others keep the backups' own compression)",
            ))
        }
        None => None,
    };
    let storage_class = j.storage_class.as_ref().map(|c| c.get_ref().clone());
    let jobs = match &j.jobs {
        Some(n) if kind != JobKind::Backup || j.dir.is_some() => {
            return Err(invalid(
                n.span(),
                "jobs",
                "only database backup jobs dump over several connections",
            ))
        }
        Some(n) => src.check(n, &key("jobs"), |n| match usize::try_from(*n) {
            Ok(n @ 1..=64) => Ok(n),
            _ => Err(Error::invalid(format!(
                "{n} is not a number of connections from 1 to 64"
            ))),
        })?,
        None => 1,
    };
    let to = match (&kind, &j.to) {
        (JobKind::Replicate, Some(url)) => Some(ReplicaConfig {
            url: url.get_ref().clone(),
            options: j.to_options.clone(),
            storage_class: storage_class.clone(),
            verify: j.verify,
        }),
        (JobKind::Replicate, None) => {
            return Err(invalid(
                j.kind.span(),
                "to",
                "a replicate job needs a destination URL (to = \"s3://…\")",
            ))
        }
        (_, Some(url)) => {
            return Err(invalid(
                url.span(),
                "to",
                "only replicate jobs have a destination",
            ))
        }
        (_, None) => None,
    };
    let receive = receive(src, name, j, &kind, ctx)?;
    let needs = match kind {
        JobKind::WalReceive if !ctx.has_database => Some(
            "a wal-receive job needs a [database] (a user with the REPLICATION attribute) to stream from",
        ),
        JobKind::Backup if !ctx.has_database && j.dir.is_none() => {
            Some("a backup job needs a [database] table, or a dir to back up")
        }
        JobKind::Prune if *ctx.retention == RetentionPolicy::default() && !any_job_retention => {
            Some("a prune job needs a [retention] policy (an empty policy deletes nothing)")
        }
        JobKind::Drill if !physical && (!ctx.has_database || !ctx.has_key) => Some(
            "a drill job needs a [database] (it restores beside it, into <name>_drill) and a [key]",
        ),
        JobKind::Verify if !ctx.has_key => {
            Some("a verify job needs a [key] that opens the backups")
        }
        _ => None,
    };
    if let Some(message) = needs {
        return Err(invalid(j.kind.span(), "kind", message));
    }
    let schedule = schedule(src, name, j, ctx.windows)?;
    if let Some(r) = &j.retention {
        if kind != JobKind::Backup {
            return Err(invalid(
                r.span(),
                "retention",
                "only backup jobs have a retention of their own (the [retention] table applies to the rest)",
            ));
        }
    }
    let mut then = Vec::new();
    for t in &j.then {
        src.check(t, &key("then"), |t| {
            if all_jobs
                .get(t)
                .is_some_and(|j| j.kind.get_ref() == JobKind::WalReceive.as_str())
            {
                Err(Error::invalid(format!(
                    "job '{t}' runs continuously: it cannot follow another job"
                )))
            } else if all_jobs.contains_key(t) && t != name {
                Ok(())
            } else if t == name {
                Err(Error::invalid(format!("job '{t}' cannot follow itself")))
            } else {
                Err(Error::invalid(format!("there is no [jobs.{t}]")))
            }
        })?;
        then.push(t.get_ref().clone());
    }
    Ok(JobConfig {
        name: name.to_string(),
        storage_class: if kind == JobKind::Backup {
            storage_class
        } else {
            None
        },
        kind,
        schedule,
        labels: j.labels.clone(),
        compression,
        then,
        all: j.all,
        dir: j.dir.as_ref().map(|d| match is_bucket(d.get_ref()) {
            true => d.get_ref().clone(),
            false => ctx.path(d.get_ref()),
        }),
        dedup: j.dedup.as_ref().is_some_and(|d| *d.get_ref()),
        to,
        physical,
        pgdata: j.pgdata.as_ref().map(|d| ctx.path(d.get_ref())),
        retention: j.retention.as_ref().map(|r| r.get_ref().clone()),
        jobs,
        receive,
    })
}

/// A wal-receive job's `spool`, `slot` and `interval` (which belong to it alone); it runs
/// continuously, so it has no `cron` and nothing follows it.
fn receive(
    src: &Src,
    name: &str,
    j: &RawJob,
    kind: &JobKind,
    ctx: &Context,
) -> Result<Option<ReceiveConfig>> {
    let key = |field: &str| format!("jobs.{name}.{field}");
    if *kind != JobKind::WalReceive {
        let own = [
            ("spool", j.spool.as_ref().map(|s| s.span())),
            ("slot", j.slot.as_ref().map(|s| s.span())),
            ("interval", j.interval.as_ref().map(|s| s.span())),
        ];
        if let Some((field, Some(span))) = own.into_iter().find(|(_, s)| s.is_some()) {
            return Err(src.err(
                span,
                &key(field),
                Error::invalid("spool, slot and interval belong to wal-receive jobs"),
            ));
        }
        return Ok(None);
    }
    let continuous = |span: std::ops::Range<usize>, field: &str, what: &str| {
        src.err(
            span,
            &key(field),
            Error::invalid(format!(
                "a wal-receive job runs continuously (restarted when it ends): {what}"
            )),
        )
    };
    if let Some(cron) = &j.cron {
        return Err(continuous(cron.span(), "cron", "it has no cron"));
    }
    if let Some(t) = j.then.first() {
        return Err(continuous(t.span(), "then", "no job follows it"));
    }
    let Some(spool) = &j.spool else {
        return Err(src.err(
            j.kind.span(),
            &key("spool"),
            Error::invalid(
                "a wal-receive job needs a spool: the local directory pg_receivewal writes into (e.g. spool = \"/var/lib/dr/wal-spool\")",
            ),
        ));
    };
    let spool = match ctx.base {
        Some(base) if spool.get_ref().is_relative() => base.join(spool.get_ref()),
        _ => spool.get_ref().clone(),
    };
    let slot = match &j.slot {
        Some(s) => Some(src.check(s, &key("slot"), |s| {
            dr_db::wal::check_slot_name(s).map(|()| s.clone())
        })?),
        None => None,
    };
    let interval = match &j.interval {
        Some(i) => Some(
            src.check(i, &key("interval"), |i| match parse_duration(i)? {
                d if d.is_zero() => Err(Error::invalid("the interval must be at least 1s")),
                d => Ok(d),
            })?,
        ),
        None => None,
    };
    Ok(Some(ReceiveConfig {
        spool,
        slot,
        interval,
    }))
}

/// The job's schedule from `cron` and the keys that refine it; `None` without `cron`
/// (a job that runs after another or by hand), when those keys must be absent too.
fn schedule(
    src: &Src,
    name: &str,
    j: &RawJob,
    windows: &BTreeMap<String, Window>,
) -> Result<Option<Schedule>> {
    let key = |field: &str| format!("jobs.{name}.{field}");
    let Some(cron) = &j.cron else {
        for (field, present) in [
            ("time_zone", j.time_zone.is_some()),
            ("jitter", j.jitter.is_some()),
            ("only_in", j.only_in.is_some()),
            ("not_in", j.not_in.is_some()),
            ("missed", j.missed.is_some()),
        ] {
            if present {
                return Err(src.err(
                    j.kind.span(),
                    &key(field),
                    Error::invalid("is set but the job has no cron expression"),
                ));
            }
        }
        return Ok(None);
    };
    let tz = match &j.time_zone {
        Some(t) => src.check(t, &key("time_zone"), |t| time_zone(t))?,
        None => Tz::UTC,
    };
    let mut s = Schedule::new(src.check(cron, &key("cron"), |c| CronExpr::new(c, tz))?);
    if let Some(jit) = &j.jitter {
        s.jitter = src.check(jit, &key("jitter"), |t| parse_duration(t))?;
    }
    let window = |v: &Spanned<String>, field: &str| {
        src.check(v, &key(field), |w| {
            windows.get(w).cloned().ok_or_else(|| {
                Error::invalid(format!(
                    "there is no [windows.{w}] (windows: {})",
                    windows.keys().cloned().collect::<Vec<_>>().join(", ")
                ))
            })
        })
    };
    s.window = match (&j.only_in, &j.not_in) {
        (Some(_), Some(n)) => {
            return Err(src.err(
                n.span(),
                &key("not_in"),
                Error::invalid("a job has only_in or not_in, not both"),
            ))
        }
        (Some(w), None) => WindowRule::OnlyIn(window(w, "only_in")?),
        (None, Some(w)) => WindowRule::NotIn(window(w, "not_in")?),
        (None, None) => WindowRule::Anytime,
    };
    if let Some(m) = &j.missed {
        s.missed = src.check(m, &key("missed"), |m| m.parse::<MissedRuns>())?;
    }
    Ok(Some(s))
}

/// Whether a `dir` value is a storage URL (a bucket prefix), not a path.
fn is_bucket(dir: &std::path::Path) -> bool {
    dir.to_str().is_some_and(crate::file_backups::is_bucket_url)
}
