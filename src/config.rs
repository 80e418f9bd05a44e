//! `dr.toml`: one file that says what to back up, where to, with which key, when, how long
//! to keep it, and what the recovery objectives are. `drctl run --config dr.toml` runs it;
//! programs that embed dr load the same [`Config`] and build their [`Scheduler`] from it.
//!
//! ```toml
//! labels = ["prod"]                       # recorded in every backup
//!
//! [repository]
//! url = "s3://backups/prod"               # or file:///srv/backups, a directory, memory://
//! options = { region = "eu-west-1" }      # storage options (credentials: environment)
//!
//! [database]
//! url = "postgres://app@db.internal:5432/app"
//! password_env = "PGPASSWORD"             # the password comes only from the environment
//!
//! [key]
//! file = "/etc/dr/repo.key"               # or: passphrase_env = "DR_PASSPHRASE"
//!
//! [objectives]
//! rpo = "1h"                              # outcomes say whether the newest backup is within it
//! rto = "30m"                             # drills fail beyond it
//!
//! [retention]                             # restic's forget rules, per series (dr::core::retention)
//! keep_hourly = 24
//! keep_daily = 7
//!
//! [windows.maintenance]                   # first Sunday of the month, 02:00–04:00 UTC
//! start = "0 2 * * SUN#1"
//! length = "2h"
//!
//! [jobs.hourly]
//! kind = "backup"                         # backup, prune, verify, drill or replicate
//! cron = "0 * * * *"
//! time_zone = "UTC"                       # IANA name; UTC by default
//! jitter = "5m"
//! not_in = "maintenance"                  # or only_in = "maintenance"
//! missed = "skip"                         # or run_once (default)
//! labels = ["hourly"]
//! then = ["prune"]
//!
//! [jobs.uploads]
//! kind = "backup"
//! dir = "/srv/app/uploads"                # a directory instead of the database
//! cron = "30 * * * *"
//! retention = { keep_daily = 30 }         # this source's own policy (else [retention])
//!
//! [jobs.prune]
//! kind = "prune"                          # no cron: it runs after the backups
//! ```
//!
//! Validation is strict, so that a typo is an error rather than a silently different
//! schedule: unknown keys are refused, cron expressions, time zones, durations and
//! references to windows and jobs are checked, and every error names the key and, where
//! the file has it, the line (`line 14: jobs.hourly.cron: …`). Durations are whole numbers
//! with units `s`, `m` (minutes), `h`, `d` (`90s`, `1h30m`, `7d`); the retention table's
//! durations use restic's units instead (`m` is months there).
//!
//! Secrets never appear in the file: the database password comes from the environment
//! variable `database.password_env` (default `PGPASSWORD`, or `~/.pgpass`), a passphrase
//! from `key.passphrase_env`, and a URL with a password in it is refused.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use dr_core::schedule::{
    parse_duration, CronExpr, Job, JobKind, MissedRuns, Schedule, Scheduler, SchedulerOptions, Tz,
    Window, WindowRule,
};
use dr_core::{
    Error, ErrorKind, Repository, Result, RetentionPolicy, SeriesPolicies, SeriesSelector,
};

use crate::keys::KeySource;

/// A validated `dr.toml`. See the [module docs](self) for the format.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where backups live.
    pub repository: RepositoryConfig,
    /// The database backup jobs dump (required if there is a backup job).
    pub database: Option<DatabaseConfig>,
    /// Where the repository key comes from.
    pub key: KeyConfig,
    /// Labels recorded in every backup (each job can add its own).
    pub labels: Vec<String>,
    /// Recovery objectives.
    pub objectives: Objectives,
    /// The retention policy prune jobs apply to every series whose backup job has no
    /// `retention` of its own ([`Config::retention_policies`]).
    pub retention: RetentionPolicy,
    /// How the scheduler runs.
    pub scheduler: SchedulerConfig,
    /// Named windows that jobs refer to.
    pub windows: BTreeMap<String, Window>,
    /// The jobs, in name order.
    pub jobs: Vec<JobConfig>,
}

/// `[repository]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepositoryConfig {
    /// Repository URL: `s3://…`, `gs://…`, `az://…`, `file:///…`, a directory, `memory://`.
    pub url: String,
    /// Storage options (`region`, `endpoint`, …); credentials belong in the environment.
    pub options: BTreeMap<String, String>,
}

/// `[database]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseConfig {
    /// A connection URL without a password.
    pub url: String,
    /// The environment variable holding the password (default `PGPASSWORD`).
    pub password_env: String,
}

/// `[key]`: where the secret that opens the repository comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyConfig {
    /// No key: backups use the repository's public recipients only; verify jobs are not
    /// possible.
    None,
    /// A key or identity file (relative paths are relative to the configuration file).
    File(PathBuf),
    /// A passphrase in this environment variable.
    PassphraseEnv(String),
}

/// `[objectives]`: the recovery point and time objectives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Objectives {
    /// Recovery point objective: the most data (in time) that may be lost. Each job outcome
    /// says whether the newest complete backup is within it.
    pub rpo: Option<Duration>,
    /// Recovery time objective: how long a restore may take. Restore drills
    /// ([`crate::drill`]) fail when they take longer.
    pub rto: Option<Duration>,
}

/// `[scheduler]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerConfig {
    /// How many jobs run at once (default 1).
    pub max_concurrent: usize,
    /// On SIGINT/SIGTERM, how long a running job may take to finish before it is aborted
    /// (default `10m`).
    pub shutdown_grace: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            max_concurrent: 1,
            shutdown_grace: Duration::from_secs(600),
        }
    }
}

/// `[jobs.<name>]`.
#[derive(Debug, Clone, PartialEq)]
pub struct JobConfig {
    /// The job's name (the table's key).
    pub name: String,
    /// backup, prune, verify, drill or replicate.
    pub kind: JobKind,
    /// When it runs; `None` for a job that runs only after another or by hand.
    pub schedule: Option<Schedule>,
    /// Labels added to this job's backups (backup jobs).
    pub labels: Vec<String>,
    /// Jobs run after each successful run of this one.
    pub then: Vec<String>,
    /// Verify every backup rather than the newest (verify jobs).
    pub all: bool,
    /// Back up this directory (user uploads, exported files) instead of the database
    /// (backup jobs; relative paths are relative to the configuration file).
    pub dir: Option<PathBuf>,
    /// Where a replicate job copies backups to.
    pub to: Option<ReplicaConfig>,
    /// The retention of the series this backup job writes, instead of `[retention]`
    /// (e.g. the uploads directory kept 30 days while the database follows the runbook).
    pub retention: Option<RetentionPolicy>,
}

/// A replicate job's destination: `to`, `to_options`, `storage_class`, `verify`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// The destination URL (another region, another provider).
    pub url: String,
    /// Storage options of the destination; credentials belong in the environment.
    pub options: BTreeMap<String, String>,
    /// Storage class of the copied data (e.g. GLACIER for the cold copy).
    pub storage_class: Option<String>,
    /// Read every copied object back and check its SHA-256.
    pub verify: bool,
}

// ----- the file as written ---------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    repository: RawRepository,
    #[serde(default)]
    database: Option<RawDatabase>,
    #[serde(default)]
    key: Option<RawKey>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    objectives: RawObjectives,
    #[serde(default)]
    retention: Option<RetentionPolicy>,
    #[serde(default)]
    scheduler: RawScheduler,
    #[serde(default)]
    windows: BTreeMap<String, RawWindow>,
    #[serde(default)]
    jobs: BTreeMap<String, RawJob>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRepository {
    url: Spanned<String>,
    #[serde(default)]
    options: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Spanned<String>,
    #[serde(default)]
    password_env: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    passphrase_env: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawObjectives {
    #[serde(default)]
    rpo: Option<Spanned<String>>,
    #[serde(default)]
    rto: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawScheduler {
    #[serde(default)]
    max_concurrent: Option<Spanned<i64>>,
    #[serde(default)]
    shutdown_grace: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWindow {
    start: Spanned<String>,
    length: Spanned<String>,
    #[serde(default)]
    time_zone: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    kind: Spanned<String>,
    #[serde(default)]
    cron: Option<Spanned<String>>,
    #[serde(default)]
    time_zone: Option<Spanned<String>>,
    #[serde(default)]
    jitter: Option<Spanned<String>>,
    #[serde(default)]
    only_in: Option<Spanned<String>>,
    #[serde(default)]
    not_in: Option<Spanned<String>>,
    #[serde(default)]
    missed: Option<Spanned<String>>,
    #[serde(default)]
    labels: Vec<String>,
    #[serde(default)]
    then: Vec<Spanned<String>>,
    #[serde(default)]
    all: bool,
    #[serde(default)]
    dir: Option<Spanned<PathBuf>>,
    #[serde(default)]
    to: Option<Spanned<String>>,
    #[serde(default)]
    to_options: BTreeMap<String, String>,
    #[serde(default)]
    storage_class: Option<String>,
    #[serde(default)]
    verify: bool,
    #[serde(default)]
    retention: Option<Spanned<RetentionPolicy>>,
}

/// Turns spans into "line N: key: message" errors.
struct Src<'a>(&'a str);

impl Src<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.0.len());
        self.0[..end].matches('\n').count() + 1
    }

    fn err(&self, span: Range<usize>, key: &str, e: Error) -> Error {
        Error::new(
            e.kind(),
            format!("line {}: {key}: {}", self.line(span), e.message()),
        )
        .with_source(e)
    }

    fn check<T, U>(
        &self,
        value: &Spanned<T>,
        key: &str,
        f: impl FnOnce(&T) -> Result<U>,
    ) -> Result<U> {
        f(value.get_ref()).map_err(|e| self.err(value.span(), key, e))
    }
}

fn time_zone(name: &str) -> Result<Tz> {
    name.parse::<Tz>().map_err(|_| {
        Error::invalid(format!(
            "'{name}' is not a known time zone (use an IANA name such as UTC or Europe/Berlin)"
        ))
    })
}

impl FromStr for Config {
    type Err = Error;

    /// Parse and validate a `dr.toml` text. Relative key paths stay relative to the current
    /// directory; [`Config::from_path`] makes them relative to the file.
    fn from_str(text: &str) -> Result<Config> {
        parse(text, None)
    }
}

impl Config {
    /// Read, parse and validate the file at `path`. Errors carry the file as context.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Config> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| {
            let kind = if e.kind() == std::io::ErrorKind::NotFound {
                ErrorKind::NotFound
            } else {
                ErrorKind::Io
            };
            Error::new(
                kind,
                format!("cannot read the configuration file {}", path.display()),
            )
            .with_source(e)
        })?;
        parse(&text, path.parent()).map_err(|e| e.with_context("file", path.display()))
    }

    /// The job named `name`.
    pub fn job(&self, name: &str) -> Option<&JobConfig> {
        self.jobs.iter().find(|j| j.name == name)
    }

    /// The policies prune jobs apply: `[retention]` for every series, except the series of
    /// backup jobs that carry a `retention` of their own (a directory job: `files` backups
    /// of that directory on this host; a database job: `postgres` backups of the database
    /// `[database]` names).
    pub fn retention_policies(&self) -> Result<SeriesPolicies> {
        let mut policies = SeriesPolicies::new(self.retention.clone());
        for job in &self.jobs {
            if let Some(policy) = &job.retention {
                policies.set(self.series_of(job)?, policy.clone());
            }
        }
        Ok(policies)
    }

    /// The series a backup job's backups belong to, as far as the file tells.
    fn series_of(&self, job: &JobConfig) -> Result<SeriesSelector> {
        Ok(match &job.dir {
            Some(dir) => SeriesSelector {
                kind: Some(crate::files::KIND.into()),
                origin: Some(dr_core::names::host_name()),
                name: Some(
                    std::fs::canonicalize(dir)
                        .unwrap_or_else(|_| dir.clone())
                        .display()
                        .to_string(),
                ),
                word: None,
            },
            None => {
                let db = self.database_config()?;
                SeriesSelector {
                    kind: Some(dr_db::SOURCE_KIND.into()),
                    name: db.get_dbname().or(db.get_user()).map(str::to_owned),
                    ..Default::default()
                }
            }
        })
    }

    /// Open the repository, retrying transient storage errors with the default policy (a
    /// daemon must ride out a dropped connection).
    pub async fn open_repository(&self) -> Result<Repository> {
        let storage = dr_storage::open(
            &self.repository.url,
            &self.repository.options.iter().collect::<Vec<_>>(),
        )?
        .retrying();
        // Signed state is checked against this host's pin; manifests are signed with the
        // key in DR_SIGNING_KEY, if any (see `dr::writers`).
        let policy = dr_core::trust::TrustPolicy {
            store: dr_core::trust::TrustStore::from_env(),
            require_signed: false,
        };
        let repo = dr_core::trust::open_trusted(storage, &policy).await?;
        Ok(match crate::writers::signing_key_from_env()? {
            Some(key) => repo.with_signing_key(key),
            None => repo,
        })
    }

    /// The key source, reading a passphrase from its environment variable. `None` without
    /// a `[key]`.
    pub fn key_source(&self) -> Result<Option<KeySource>> {
        match &self.key {
            KeyConfig::None => Ok(None),
            KeyConfig::File(p) => Ok(Some(KeySource::File(p.clone()))),
            KeyConfig::PassphraseEnv(var) => match std::env::var(var) {
                Ok(p) if !p.is_empty() => {
                    Ok(Some(KeySource::Passphrase(dr_crypto::Passphrase::new(p))))
                }
                _ => Err(Error::invalid(format!(
                    "key.passphrase_env names {var}, which is not set: export the passphrase in {var}"
                ))),
            },
        }
    }

    /// The database connection, with the password from `database.password_env` if set.
    pub fn database_config(&self) -> Result<tokio_postgres::Config> {
        let db = self.database.as_ref().ok_or_else(|| {
            Error::invalid("the configuration has no [database] (backup jobs need one)")
        })?;
        let mut config: tokio_postgres::Config = db.url.parse().map_err(|e| {
            Error::invalid("database.url is malformed (expected postgres://user@host:port/db)")
                .with_source(e)
        })?;
        if let Ok(p) = std::env::var(&db.password_env) {
            config.password(p);
        }
        Ok(config)
    }

    /// Where drills restore to: the database `<database>_drill` on the database's server,
    /// created and dropped by each drill.
    pub fn drill_config(&self) -> Result<tokio_postgres::Config> {
        let mut config = self.database_config()?;
        let name = config
            .get_dbname()
            .ok_or_else(|| Error::invalid("database.url names no database"))?
            .to_string();
        config.dbname(format!("{name}_drill"));
        Ok(config)
    }

    /// The scheduler's options: the RPO and concurrency from this file, the system clock.
    pub fn scheduler_options(&self) -> SchedulerOptions {
        SchedulerOptions {
            rpo: self.objectives.rpo,
            max_concurrent: self.scheduler.max_concurrent,
            ..SchedulerOptions::default()
        }
    }

    /// The jobs with dr's runners ([`crate::jobs`]) for `repo`: opens the key once (a
    /// passphrase's KDF is slow) and checks it against the repository.
    pub fn build_jobs(&self, repo: &Repository) -> Result<Vec<Job>> {
        let identity = match self.key_source()? {
            Some(source) => Some(source.unlock(repo.config())?),
            None => None,
        };
        // Verify and drill jobs read backups: they need the key itself.
        let decryptor = |job: &str| -> Result<Arc<dyn dr_core::Decryptor>> {
            let key = identity.clone().ok_or_else(|| {
                Error::invalid(format!("job '{job}' reads backups, which needs a [key]"))
            })?;
            Ok(Arc::new(crate::keys::decryptor(key)))
        };
        let mut jobs = Vec::new();
        for jc in &self.jobs {
            let runner: Arc<dyn dr_core::schedule::JobRunner> = match &jc.kind {
                JobKind::Backup => {
                    let encryptor = match &identity {
                        Some(key) => crate::keys::encryptor(repo, key.clone())?,
                        None => crate::keys::public_encryptor(repo)?,
                    };
                    let mut labels = self.labels.clone();
                    labels.extend(jc.labels.iter().cloned());
                    let dumper: Arc<dyn dr_core::Dumper> = match &jc.dir {
                        Some(dir) => Arc::new(crate::files::DirDumper::new(dir)),
                        None => Arc::new(dr_db::PgDumper::new(self.database_config()?)),
                    };
                    Arc::new(
                        crate::jobs::BackupJob::new(dumper, Arc::new(encryptor)).labels(labels),
                    )
                }
                JobKind::Prune => Arc::new(crate::jobs::PruneJob::new(self.retention_policies()?)),
                JobKind::Verify => {
                    Arc::new(crate::jobs::VerifyJob::new(decryptor(&jc.name)?).all(jc.all))
                }
                JobKind::Drill => Arc::new(crate::jobs::DrillJob::new(
                    decryptor(&jc.name)?,
                    self.drill_config()?,
                    self.objectives,
                )),
                JobKind::Replicate => {
                    let to = jc.to.as_ref().ok_or_else(|| {
                        Error::invalid(format!("job '{}' has no destination", jc.name))
                    })?;
                    let in_job = |e: Error| e.with_context("job", &jc.name);
                    dr_storage::create_local_dir(&to.url).map_err(in_job)?;
                    let storage = dr_storage::open(&to.url, &to.options.iter().collect::<Vec<_>>())
                        .map_err(in_job)?
                        .retrying();
                    Arc::new(crate::jobs::ReplicateJob::new(
                        storage,
                        dr_core::replicate::ReplicateOptions {
                            storage_class: to.storage_class.clone(),
                            verify: to.verify,
                            lease_wait: Some(std::time::Duration::from_secs(60)),
                        },
                    ))
                }
                JobKind::Custom(kind) => {
                    return Err(Error::invalid(format!(
                        "job '{}' has kind '{kind}', which dr.toml cannot run",
                        jc.name
                    )))
                }
            };
            let mut job = Job::new(jc.name.clone(), jc.kind.clone(), runner);
            if let Some(s) = &jc.schedule {
                job = job.schedule(s.clone());
            }
            for t in &jc.then {
                job = job.then(t.clone());
            }
            jobs.push(job);
        }
        Ok(jobs)
    }

    /// Open the repository and build a [`Scheduler`] for every job (not started).
    pub async fn scheduler(&self) -> Result<Scheduler> {
        let repo = self.open_repository().await?;
        let jobs = self.build_jobs(&repo)?;
        Scheduler::new(repo, self.scheduler_options(), jobs)
    }
}

fn parse(text: &str, base: Option<&Path>) -> Result<Config> {
    let src = Src(text);
    let raw: RawConfig = toml::from_str(text).map_err(|e| {
        let msg = e.message().trim().to_string();
        let at = e
            .span()
            .map(|s| format!("line {}: ", src.line(s)))
            .unwrap_or_default();
        Error::invalid(format!("{at}{msg}"))
    })?;

    // [repository]
    let url = src.check(&raw.repository.url, "repository.url", |u| {
        if u.trim().is_empty() {
            return Err(Error::invalid("must not be empty"));
        }
        Ok(u.trim().to_string())
    })?;
    let repository = RepositoryConfig {
        url,
        options: raw.repository.options,
    };

    // [database]
    let database = match raw.database {
        None => None,
        Some(db) => {
            let url = src.check(&db.url, "database.url", |u| {
                let parsed: tokio_postgres::Config = u.parse().map_err(|e| {
                    Error::invalid("malformed (expected postgres://user@host:port/db)")
                        .with_source(e)
                })?;
                if parsed.get_password().is_some() {
                    return Err(Error::invalid(
                        "contains a password: remove it and put it in the environment variable named by database.password_env (default PGPASSWORD), or in ~/.pgpass",
                    ));
                }
                Ok(u.clone())
            })?;
            Some(DatabaseConfig {
                url,
                password_env: db.password_env.unwrap_or_else(|| "PGPASSWORD".into()),
            })
        }
    };

    // [key]
    let key_config = match raw.key {
        None => KeyConfig::None,
        Some(RawKey {
            file: Some(_),
            passphrase_env: Some(_),
        }) => {
            return Err(Error::invalid(
                "key: give either file or passphrase_env, not both",
            ))
        }
        Some(RawKey {
            file: Some(f),
            passphrase_env: None,
        }) => KeyConfig::File(match base {
            Some(dir) if f.is_relative() => dir.join(f),
            _ => f,
        }),
        Some(RawKey {
            file: None,
            passphrase_env: Some(v),
        }) => KeyConfig::PassphraseEnv(v),
        Some(RawKey {
            file: None,
            passphrase_env: None,
        }) => return Err(Error::invalid("key: give file or passphrase_env")),
    };

    // [objectives]
    let duration = |v: &Option<Spanned<String>>, key: &str| -> Result<Option<Duration>> {
        v.as_ref()
            .map(|s| src.check(s, key, |t| parse_duration(t)))
            .transpose()
    };
    let objectives = Objectives {
        rpo: duration(&raw.objectives.rpo, "objectives.rpo")?,
        rto: duration(&raw.objectives.rto, "objectives.rto")?,
    };

    // [scheduler]
    let mut scheduler = SchedulerConfig::default();
    if let Some(n) = &raw.scheduler.max_concurrent {
        scheduler.max_concurrent = src.check(n, "scheduler.max_concurrent", |n| {
            if (1..=64).contains(n) {
                Ok(*n as usize)
            } else {
                Err(Error::invalid("must be between 1 and 64"))
            }
        })?;
    }
    if let Some(g) = duration(&raw.scheduler.shutdown_grace, "scheduler.shutdown_grace")? {
        scheduler.shutdown_grace = g;
    }

    // [windows.*]
    let mut windows = BTreeMap::new();
    for (name, w) in &raw.windows {
        let key = |field: &str| format!("windows.{name}.{field}");
        let tz = match &w.time_zone {
            Some(t) => src.check(t, &key("time_zone"), |t| time_zone(t))?,
            None => Tz::UTC,
        };
        let start = src.check(&w.start, &key("start"), |s| CronExpr::new(s, tz))?;
        let length = src.check(&w.length, &key("length"), |l| parse_duration(l))?;
        let window = src.check(&w.length, &key("length"), |_| Window::new(start, length))?;
        windows.insert(name.clone(), window);
    }

    // [jobs.*]
    let retention = raw.retention.unwrap_or_default();
    let any_job_retention = raw.jobs.values().any(|j| j.retention.is_some());
    // Backup jobs of one series (the hourly and daily database jobs) share one policy.
    let mut series_retention: BTreeMap<Option<PathBuf>, (String, RetentionPolicy)> =
        BTreeMap::new();
    let mut jobs = Vec::new();
    for (name, j) in &raw.jobs {
        let key = |field: &str| format!("jobs.{name}.{field}");
        src.check(&j.kind, &key("kind"), |_| {
            dr_core::schedule::check_job_name(name)
        })?;
        let kind = src.check(&j.kind, &key("kind"), |k| match k.parse::<JobKind>()? {
            JobKind::Custom(other) => Err(Error::invalid(format!(
                "unknown kind '{other}': use backup, prune, verify, drill or replicate"
            ))),
            kind => Ok(kind),
        })?;
        if let Some(dir) = &j.dir {
            if kind != JobKind::Backup {
                return Err(src.err(
                    dir.span(),
                    &key("dir"),
                    Error::invalid("only backup jobs back up a directory"),
                ));
            }
        }
        if kind != JobKind::Replicate
            && (j.storage_class.is_some() || j.verify || !j.to_options.is_empty())
        {
            return Err(src.err(
                j.kind.span(),
                &key("kind"),
                Error::invalid("storage_class, verify and to_options belong to replicate jobs"),
            ));
        }
        let to = match (&kind, &j.to) {
            (JobKind::Replicate, Some(url)) => Some(ReplicaConfig {
                url: url.get_ref().clone(),
                options: j.to_options.clone(),
                storage_class: j.storage_class.clone(),
                verify: j.verify,
            }),
            (JobKind::Replicate, None) => {
                return Err(src.err(
                    j.kind.span(),
                    &key("to"),
                    Error::invalid("a replicate job needs a destination URL (to = \"s3://…\")"),
                ))
            }
            (_, Some(url)) => {
                return Err(src.err(
                    url.span(),
                    &key("to"),
                    Error::invalid("only replicate jobs have a destination"),
                ))
            }
            (_, None) => None,
        };
        match kind {
            JobKind::Backup if database.is_none() && j.dir.is_none() => {
                return Err(src.err(
                    j.kind.span(),
                    &key("kind"),
                    Error::invalid("a backup job needs a [database] table, or a dir to back up"),
                ))
            }
            JobKind::Prune if retention == RetentionPolicy::default() && !any_job_retention => {
                return Err(src.err(
                    j.kind.span(),
                    &key("kind"),
                    Error::invalid(
                        "a prune job needs a [retention] policy (an empty policy deletes nothing)",
                    ),
                ))
            }
            JobKind::Drill if database.is_none() || key_config == KeyConfig::None => {
                return Err(src.err(
                    j.kind.span(),
                    &key("kind"),
                    Error::invalid(
                        "a drill job needs a [database] (it restores beside it, into <name>_drill) and a [key]",
                    ),
                ))
            }
            JobKind::Verify if key_config == KeyConfig::None => {
                return Err(src.err(
                    j.kind.span(),
                    &key("kind"),
                    Error::invalid("a verify job needs a [key] that opens the backups"),
                ))
            }
            _ => {}
        }
        let schedule = match &j.cron {
            None => {
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
                None
            }
            Some(cron) => {
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
                Some(s)
            }
        };
        if let Some(r) = &j.retention {
            if kind != JobKind::Backup {
                return Err(src.err(
                    r.span(),
                    &key("retention"),
                    Error::invalid("only backup jobs have a retention of their own (the [retention] table applies to the rest)"),
                ));
            }
            let series = j.dir.as_ref().map(|d| d.get_ref().clone());
            match series_retention.get(&series) {
                Some((other, policy)) if policy != r.get_ref() => {
                    return Err(src.err(
                        r.span(),
                        &key("retention"),
                        Error::invalid(format!(
                            "jobs.{other} backs up the same source with another retention: a source has one policy"
                        )),
                    ))
                }
                _ => {
                    series_retention.insert(series, (name.clone(), r.get_ref().clone()));
                }
            }
        }
        let mut then = Vec::new();
        for t in &j.then {
            src.check(t, &key("then"), |t| {
                if raw.jobs.contains_key(t) && t != name {
                    Ok(())
                } else if t == name {
                    Err(Error::invalid(format!("job '{t}' cannot follow itself")))
                } else {
                    Err(Error::invalid(format!("there is no [jobs.{t}]")))
                }
            })?;
            then.push(t.get_ref().clone());
        }
        jobs.push(JobConfig {
            name: name.clone(),
            kind,
            schedule,
            labels: j.labels.clone(),
            then,
            all: j.all,
            dir: j.dir.as_ref().map(|d| match base {
                Some(base) if d.get_ref().is_relative() => base.join(d.get_ref()),
                _ => d.get_ref().clone(),
            }),
            to,
            retention: j.retention.as_ref().map(|r| r.get_ref().clone()),
        });
    }
    if jobs.is_empty() {
        return Err(Error::invalid(
            "the configuration has no [jobs.<name>] table: nothing to run",
        ));
    }

    Ok(Config {
        repository,
        database,
        key: key_config,
        labels: raw.labels,
        objectives,
        retention,
        scheduler,
        windows,
        jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[repository]
url = "memory://"

[database]
url = "postgres://app@127.0.0.1:5432/app"

[jobs.nightly]
kind = "backup"
cron = "0 2 * * *"
"#;

    #[test]
    fn minimal_config_parses_with_defaults() {
        let c: Config = MINIMAL.parse().unwrap();
        assert_eq!(c.jobs.len(), 1);
        let s = c.jobs[0].schedule.as_ref().unwrap();
        assert_eq!(s.cron.as_str(), "0 2 * * *");
        assert_eq!(s.missed, MissedRuns::RunOnce);
        assert_eq!(c.database.unwrap().password_env, "PGPASSWORD");
        assert_eq!(c.scheduler.max_concurrent, 1);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let text = MINIMAL.replace("0 2 * * *", "0 2 * *");
        let e = text.parse::<Config>().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(
            e.to_string().starts_with("line 10: jobs.nightly.cron: "),
            "{e}"
        );
        let text = MINIMAL.replace("cron =", "corn =");
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(e.contains("line 10") && e.contains("corn"), "{e}");
    }

    #[test]
    fn a_password_in_the_database_url_is_refused() {
        let text = MINIMAL.replace("app@", "app:hunter2@");
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(
            e.contains("database.url") && e.contains("PGPASSWORD"),
            "{e}"
        );
        assert!(!e.contains("hunter2"), "no secrets in messages: {e}");
    }

    #[test]
    fn backup_jobs_carry_the_retention_of_their_series() {
        let text = format!(
            "{MINIMAL}\n[retention]\nkeep_daily = 7\n\n[jobs.uploads]\nkind = \"backup\"\ndir = \"/srv/uploads\"\nretention = {{ keep_last = 3 }}\n\n[jobs.prune]\nkind = \"prune\"\n"
        );
        let c: Config = text.parse().unwrap();
        let policies = c.retention_policies().unwrap();
        assert_eq!(policies.default.keep_daily, Some(7));
        let uploads: dr_core::Series =
            format!("files:{}:/srv/uploads", dr_core::names::host_name())
                .parse()
                .unwrap();
        assert_eq!(policies.policy_for(&uploads).keep_last, Some(3));
        let db: dr_core::Series = "postgres:7301:app".parse().unwrap();
        assert_eq!(policies.policy_for(&db).keep_daily, Some(7));
    }

    #[test]
    fn one_source_has_one_retention() {
        let text = format!(
            "{MINIMAL}retention = {{ keep_last = 3 }}\n\n[jobs.hourly]\nkind = \"backup\"\ncron = \"0 * * * *\"\nretention = {{ keep_last = 4 }}\n"
        );
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(e.contains("same source with another retention"), "{e}");
        let text =
            format!("{MINIMAL}\n[jobs.prune]\nkind = \"prune\"\nretention = {{ keep_last = 4 }}\n");
        let e = text.parse::<Config>().unwrap_err().to_string();
        assert!(
            e.contains("jobs.prune.retention") && e.contains("only backup jobs"),
            "{e}"
        );
    }
}
