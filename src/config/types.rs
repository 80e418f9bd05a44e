//! A validated `dr.toml` as values: one type per table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use dr_core::schedule::{JobKind, Schedule, Window};
use dr_core::{Codec, RetentionPolicy};

use crate::drill::Objectives;

/// A validated `dr.toml`. See the [module docs](super) for the format.
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
    /// Recovery objectives (`[objectives]`), which drills are judged against.
    pub objectives: Objectives,
    /// `[checks]`: what drills check beyond row counts and foreign keys.
    pub checks: dr_db::checks::IntegrityChecks,
    /// The retention policy prune jobs apply to every series whose backup job has no
    /// `retention` of its own ([`Config::retention_policies`]).
    pub retention: RetentionPolicy,
    /// How the scheduler runs.
    pub scheduler: SchedulerConfig,
    /// Named windows that jobs refer to.
    pub windows: BTreeMap<String, Window>,
    /// The jobs, in name order.
    pub jobs: Vec<JobConfig>,
    /// `[monitoring]`: metrics server and webhooks ([`crate::monitoring`]).
    pub monitoring: crate::monitoring::MonitoringConfig,
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
    /// backup, prune, verify, drill, replicate or wal-receive.
    pub kind: JobKind,
    /// When it runs; `None` for a job that runs only after another or by hand.
    pub schedule: Option<Schedule>,
    /// Labels added to this job's backups (backup jobs), after the file's own `labels`.
    pub labels: Vec<String>,
    /// Compression of this job's backups instead of the repository default (backup jobs;
    /// `drctl backup --compression`).
    pub compression: Option<Codec>,
    /// Storage class of this job's backup data instead of the repository default (backup
    /// jobs; `drctl backup --storage-class`). A replicate job's `storage_class` is in `to`.
    pub storage_class: Option<String>,
    /// Jobs run after each successful run of this one.
    pub then: Vec<String>,
    /// Verify every backup rather than the newest (verify jobs).
    pub all: bool,
    /// Back up this directory (user uploads, exported files) instead of the database
    /// (backup jobs; relative paths are relative to the configuration file), or the bucket
    /// prefix a storage URL names (`s3://bucket/prefix/`, `gs://…`, `az://…`, `file://…`;
    /// needs `dedup`).
    pub dir: Option<PathBuf>,
    /// Back up `dir` as deduplicated, incremental snapshots (`drctl backup --dedup`) rather
    /// than a tar archive each time.
    pub dedup: bool,
    /// Where a replicate job copies backups to.
    pub to: Option<ReplicaConfig>,
    /// Backup jobs: a physical base backup of the whole cluster `[database]` is on
    /// (`drctl backup --physical`) instead of a dump of the database. Drill jobs: drill the
    /// newest physical base backup with the archived WAL (`drctl drill --physical`), which
    /// needs a key file.
    pub physical: bool,
    /// Physical backup jobs on the database host: copy this data directory between
    /// `pg_backup_start()` and `pg_backup_stop()` (`drctl backup --physical --pgdata`)
    /// instead of streaming `pg_basebackup`.
    pub pgdata: Option<PathBuf>,
    /// The retention of the series this backup job writes, instead of `[retention]`
    /// (e.g. the uploads directory kept 30 days while the database follows the runbook).
    pub retention: Option<RetentionPolicy>,
    /// Dump over this many connections, stored as pieces (database backup jobs;
    /// `drctl backup --jobs`); 1 is one stream.
    pub jobs: usize,
    /// A wal-receive job's settings (`drctl wal-receive`): it streams `[database]`'s WAL
    /// continuously, restarted with a backoff when it ends.
    pub receive: Option<ReceiveConfig>,
}

/// A wal-receive job's `spool`, `slot` and `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiveConfig {
    /// Local directory `pg_receivewal` writes into (relative paths are relative to the
    /// configuration file).
    pub spool: PathBuf,
    /// The physical replication slot (created if missing; default `dr_receive`).
    pub slot: Option<String>,
    /// How often the growing segment is stored (default 2 s).
    pub interval: Option<Duration>,
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
