//! dr's job runners for the scheduler ([`dr_core::schedule`]): backup, prune, verify,
//! restore drills, replication to a second region, and the continuous WAL receiver.
//!
//! Each is a [`JobRunner`] holding the settings of one job (which database, which labels,
//! which policy), so several jobs of one kind (hourly and daily backups with different
//! labels) are several runners. Their summaries carry figures for dashboards: bytes, counts,
//! ids and durations.
//!
//! ```no_run
//! # async fn run(repo: dr::core::Repository, key: dr::crypto::Identity) -> dr::core::Result<()> {
//! use std::sync::Arc;
//! use dr::core::schedule::{Job, JobKind, Schedule, Scheduler, SchedulerOptions};
//! use dr::jobs::{BackupJob, PruneJob};
//!
//! let db: tokio_postgres::Config = "host=127.0.0.1 user=app dbname=app".parse().unwrap();
//! let backup = BackupJob::new(
//!     Arc::new(dr::db::PgDumper::new(db)),
//!     Arc::new(dr::keys::encryptor(&repo, key)?),
//! )
//! .labels(["daily"]);
//! let policy = dr::core::RetentionPolicy { keep_daily: Some(7), ..Default::default() };
//! let scheduler = Scheduler::new(repo, SchedulerOptions::default(), vec![
//!     Job::new("daily", JobKind::Backup, Arc::new(backup))
//!         .schedule(Schedule::cron_utc("0 2 * * *")?)
//!         .then("prune"),
//!     Job::new("prune", JobKind::Prune, Arc::new(PruneJob::new(policy))),
//! ])?;
//! scheduler.start().await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;

use async_trait::async_trait;

pub use crate::wal_receive_job::WalReceiveJob;
use dr_core::prune::{prune, PruneOptions};
use dr_core::schedule::{JobContext, JobRunner, JobSummary};
use dr_core::{
    BackupOptions, Codec, Decryptor, Dumper, Encryptor, PieceDumper, ReadOptions, Result,
    SeriesPolicies, SeriesSelector,
};

/// Backs up a source into the scheduler's repository.
pub struct BackupJob {
    dumper: Source,
    encryptor: Arc<dyn Encryptor>,
    labels: Vec<String>,
    codec: Option<Codec>,
    storage_class: Option<String>,
}

impl std::fmt::Debug for BackupJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackupJob")
            .field("labels", &self.labels)
            .field("codec", &self.codec)
            .field("storage_class", &self.storage_class)
            .finish_non_exhaustive()
    }
}

/// What a backup job dumps: one stream, or pieces uploaded N at a time.
enum Source {
    Stream(Arc<dyn Dumper>),
    Pieces(Arc<dyn PieceDumper>, usize),
}

impl BackupJob {
    /// Back up what `dumper` produces, encrypted by `encryptor` (see [`crate::keys::encryptor`]
    /// and [`crate::keys::public_encryptor`]), with the repository's default compression.
    pub fn new(dumper: Arc<dyn Dumper>, encryptor: Arc<dyn Encryptor>) -> BackupJob {
        Self::of(Source::Stream(dumper), encryptor)
    }

    /// Back up what `dumper` produces as pieces (a database dumped over several
    /// connections, `dr_db::PgDumper::jobs`), uploading `uploads` pieces at once.
    pub fn pieces(
        dumper: Arc<dyn PieceDumper>,
        encryptor: Arc<dyn Encryptor>,
        uploads: usize,
    ) -> BackupJob {
        Self::of(Source::Pieces(dumper, uploads), encryptor)
    }

    fn of(dumper: Source, encryptor: Arc<dyn Encryptor>) -> BackupJob {
        BackupJob {
            dumper,
            encryptor,
            labels: Vec::new(),
            codec: None,
            storage_class: None,
        }
    }

    /// Record these labels in each backup's manifest (retention policies select by label).
    pub fn labels<I, S>(mut self, labels: I) -> BackupJob
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.labels = labels.into_iter().map(Into::into).collect();
        self
    }

    /// Compress with `codec` instead of the repository default.
    pub fn codec(mut self, codec: Codec) -> BackupJob {
        self.codec = Some(codec);
        self
    }

    /// Store the backup data in `class` (S3 STANDARD_IA, GLACIER, …) instead of the
    /// repository default.
    pub fn storage_class(mut self, class: impl Into<String>) -> BackupJob {
        self.storage_class = Some(class.into());
        self
    }
}

#[async_trait]
impl JobRunner for BackupJob {
    async fn run(&self, ctx: &JobContext) -> Result<JobSummary> {
        let opts = BackupOptions {
            codec: self.codec,
            labels: self.labels.clone(),
            storage_class: self.storage_class.clone(),
            progress: Some(ctx.progress_sink()),
            clock: Some(ctx.clock().clone()),
            ..Default::default()
        };
        let repo = ctx.repository();
        let m = match &self.dumper {
            Source::Stream(d) => {
                dr_core::backup(repo, d.as_ref(), self.encryptor.as_ref(), &opts).await?
            }
            Source::Pieces(d, uploads) => {
                dr_core::backup_pieces(repo, d.as_ref(), self.encryptor.as_ref(), &opts, *uploads)
                    .await?
            }
        };
        let rows: u64 = m.stats.tables.iter().map(|t| t.rows).sum();
        Ok(JobSummary::new(format!(
            "backup {}: {} bytes raw, {} bytes stored, {} tables",
            m.id,
            m.raw_bytes,
            m.stored_bytes,
            m.stats.tables.len()
        ))
        .figure("backup_id", m.id.clone())
        .figure("raw_bytes", m.raw_bytes)
        .figure("stored_bytes", m.stored_bytes)
        .figure("duration_ms", m.duration_ms())
        .figure("tables", m.stats.tables.len())
        .figure("rows", rows))
    }
}

/// Backs up a directory or a bucket prefix (a storage URL in `dir`) as deduplicated,
/// incremental snapshots ([`crate::file_backups::backup_source`]): with a decryptor, files
/// (objects) unchanged since the
/// previous snapshot are not read; a write-only host reads the dedup key file named by
/// `DR_DEDUP_KEY_FILE`.
pub struct FilesBackupJob {
    dir: std::path::PathBuf,
    encryptor: Arc<dyn Encryptor>,
    decryptor: Option<Arc<dyn Decryptor>>,
    labels: Vec<String>,
    codec: Option<Codec>,
    storage_class: Option<String>,
}

impl std::fmt::Debug for FilesBackupJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesBackupJob")
            .field("dir", &self.dir)
            .field("labels", &self.labels)
            .field("storage_class", &self.storage_class)
            .finish_non_exhaustive()
    }
}

impl FilesBackupJob {
    /// Snapshots of `dir`, encrypted by `encryptor`; `decryptor` (a host holding a key)
    /// makes them incremental by reading the previous snapshot.
    pub fn new(
        dir: std::path::PathBuf,
        encryptor: Arc<dyn Encryptor>,
        decryptor: Option<Arc<dyn Decryptor>>,
    ) -> FilesBackupJob {
        FilesBackupJob {
            dir,
            encryptor,
            decryptor,
            labels: Vec::new(),
            codec: None,
            storage_class: None,
        }
    }

    /// Record these labels in each snapshot's manifest.
    pub fn labels(mut self, labels: Vec<String>) -> FilesBackupJob {
        self.labels = labels;
        self
    }

    /// Compress the snapshot tree with `codec` (chunks are always zstd).
    pub fn codec(mut self, codec: Codec) -> FilesBackupJob {
        self.codec = Some(codec);
        self
    }

    /// Store packs and the tree in `class` (e.g. GLACIER for QR images).
    pub fn storage_class(mut self, class: impl Into<String>) -> FilesBackupJob {
        self.storage_class = Some(class.into());
        self
    }
}

#[async_trait]
impl JobRunner for FilesBackupJob {
    async fn run(&self, ctx: &JobContext) -> Result<JobSummary> {
        let opts = BackupOptions {
            codec: self.codec,
            labels: self.labels.clone(),
            storage_class: self.storage_class.clone(),
            clock: Some(ctx.clock().clone()),
            ..Default::default()
        };
        let key_file = std::env::var_os("DR_DEDUP_KEY_FILE").map(std::path::PathBuf::from);
        let source = crate::file_backups::tree_source(&self.dir)?;
        let (m, r) = crate::file_backups::backup_source(
            ctx.repository(),
            &source,
            self.encryptor.clone(),
            self.decryptor.clone(),
            key_file.as_deref(),
            &opts,
        )
        .await?;
        Ok(JobSummary::new(format!(
            "snapshot {}: {} files ({} read, {} unchanged), {} bytes new, {} bytes stored",
            m.id,
            r.counts.files,
            r.counts.files_read,
            r.counts.files_unchanged,
            r.counts.bytes_new,
            r.bytes_stored
        ))
        .figure("backup_id", m.id.clone())
        .figure("files", r.counts.files)
        .figure("files_read", r.counts.files_read)
        .figure("files_unchanged", r.counts.files_unchanged)
        .figure("bytes_new", r.counts.bytes_new)
        .figure("stored_bytes", r.bytes_stored)
        .figure("duration_ms", m.duration_ms()))
    }
}

/// Applies retention to the scheduler's repository ([`dr_core::prune()`]), each backup series
/// under its own policy.
#[derive(Debug, Clone)]
pub struct PruneJob {
    policy: SeriesPolicies,
    opts: PruneOptions,
}

impl PruneJob {
    /// Prune by `policy` (one [`dr_core::RetentionPolicy`] for every series, or [`SeriesPolicies`]),
    /// with default options (incomplete uploads older than a day are removed; the exclusive
    /// lease is waited for up to a minute).
    pub fn new(policy: impl Into<SeriesPolicies>) -> PruneJob {
        PruneJob {
            policy: policy.into(),
            opts: PruneOptions {
                lease_wait: Some(std::time::Duration::from_secs(60)),
                ..Default::default()
            },
        }
    }

    /// With explicit prune options.
    pub fn options(mut self, opts: PruneOptions) -> PruneJob {
        self.opts = opts;
        self
    }
}

#[async_trait]
impl JobRunner for PruneJob {
    async fn run(&self, ctx: &JobContext) -> Result<JobSummary> {
        let report = prune(ctx.repository(), &self.policy, &self.opts).await?;
        let kept = report.decisions.iter().filter(|d| d.keep).count();
        Ok(JobSummary::new(format!(
            "pruned {} backups ({} bytes), kept {kept}, removed {} incomplete uploads",
            report.deleted.len(),
            report.freed_bytes,
            report.incomplete_removed.len()
        ))
        .figure("deleted", report.deleted.len())
        .figure("freed_bytes", report.freed_bytes)
        .figure("kept", kept)
        .figure("incomplete_removed", report.incomplete_removed.len())
        .figure("dry_run", report.dry_run))
    }
}

/// Reads back the newest backup of every series (or every backup) and checks it: sizes, SHA-256,
/// authentication tags, decompression, and row counts ([`crate::verify::verify_backup`]).
pub struct VerifyJob {
    decryptor: Arc<dyn Decryptor>,
    all: bool,
}

impl std::fmt::Debug for VerifyJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyJob")
            .field("all", &self.all)
            .finish_non_exhaustive()
    }
}

impl VerifyJob {
    /// Verify the newest complete backup of every series with `decryptor` (see
    /// [`crate::keys::decryptor`]).
    pub fn new(decryptor: Arc<dyn Decryptor>) -> VerifyJob {
        VerifyJob {
            decryptor,
            all: false,
        }
    }

    /// Verify every complete backup instead of the newest only.
    pub fn all(mut self, all: bool) -> VerifyJob {
        self.all = all;
        self
    }
}

#[async_trait]
impl JobRunner for VerifyJob {
    async fn run(&self, ctx: &JobContext) -> Result<JobSummary> {
        let repo = ctx.repository();
        let manifests = if self.all {
            repo.list_backups().await?
        } else {
            repo.newest_per_series(&SeriesSelector::any()).await?
        };
        let opts = ReadOptions {
            progress: Some(ctx.progress_sink()),
            ..Default::default()
        };
        let (mut stored, mut tables, mut rows) = (0u64, 0usize, 0u64);
        for m in &manifests {
            let r = crate::verify::verify_backup(repo, m, self.decryptor.as_ref(), &opts).await?;
            stored += r.stored_bytes;
            tables += r.tables_checked;
            rows += r.rows_checked;
        }
        let newest = manifests.first().map(|m| m.id.clone()).unwrap_or_default();
        Ok(JobSummary::new(format!(
            "verified {} backup(s) (newest {newest}): {stored} bytes read, {tables} tables / {rows} rows re-counted",
            manifests.len()
        ))
        .figure("backups", manifests.len())
        .figure("newest_backup_id", newest)
        .figure("stored_bytes", stored)
        .figure("tables_checked", tables)
        .figure("rows_checked", rows))
    }
}

/// Restores the newest database backup into a scratch database, checks it and measures RTO and RPO
/// against the objectives ([`crate::drill::drill`]); a drill that misses an objective or
/// finds orphaned rows is a failed run.
pub struct DrillJob {
    decryptor: Arc<dyn Decryptor>,
    scratch: tokio_postgres::Config,
    opts: crate::drill::DrillOptions,
}

impl std::fmt::Debug for DrillJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrillJob")
            .field("scratch", &self.scratch.get_dbname())
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl DrillJob {
    /// Drill into the database `scratch` names (created and dropped by each run), judged
    /// against `objectives`, running `checks` on the restored database.
    pub fn new(
        decryptor: Arc<dyn Decryptor>,
        scratch: tokio_postgres::Config,
        objectives: crate::drill::Objectives,
        checks: dr_db::checks::IntegrityChecks,
    ) -> DrillJob {
        DrillJob {
            decryptor,
            scratch,
            opts: crate::drill::DrillOptions {
                objectives,
                checks,
                no_owner: true,
                ..Default::default()
            },
        }
    }
}

#[async_trait]
impl JobRunner for DrillJob {
    async fn run(&self, ctx: &JobContext) -> Result<JobSummary> {
        let repo = ctx.repository();
        let latest = repo
            .latest(&SeriesSelector::kind(dr_db::SOURCE_KIND))
            .await?;
        let mut opts = self.opts.clone();
        opts.read.progress = Some(ctx.progress_sink());
        let report = crate::drill::drill(
            repo,
            &latest,
            self.decryptor.as_ref(),
            self.scratch.clone(),
            &opts,
        )
        .await?;
        if let Some(e) = crate::drill::failure(&report, &opts.objectives) {
            return Err(e);
        }
        Ok(JobSummary::new(format!(
            "drill of {}: restored and checked in {} ms, data {} s old, {} tables / {} rows, {} foreign keys without orphans",
            report.id,
            report.restore_ms,
            report.backup_age_secs,
            report.tables_checked,
            report.rows_checked,
            report.foreign_keys.len()
        ))
        .figure("backup_id", report.id.clone())
        .figure("restore_ms", report.restore_ms)
        .figure("backup_age_secs", report.backup_age_secs)
        .figure("tables_checked", report.tables_checked)
        .figure("rows_checked", report.rows_checked)
        .figure("foreign_keys", report.foreign_keys.len())
        .figure(
            "checks_passed",
            report.checks.iter().filter(|c| c.passed).count(),
        ))
    }
}

/// Drills the newest physical base backup with the archived WAL
/// ([`crate::physical_drill::physical_drill`]): a drill that misses an objective, stops
/// recovery early or fails a check is a failed run.
pub struct PhysicalDrillJob {
    decryptor: Arc<dyn Decryptor>,
    opts: crate::physical_drill::PhysicalDrillOptions,
}

impl std::fmt::Debug for PhysicalDrillJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhysicalDrillJob")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl PhysicalDrillJob {
    /// Drill with `opts` (its restore_command, target, objectives and checks).
    pub fn new(
        decryptor: Arc<dyn Decryptor>,
        opts: crate::physical_drill::PhysicalDrillOptions,
    ) -> PhysicalDrillJob {
        PhysicalDrillJob { decryptor, opts }
    }
}

#[async_trait]
impl JobRunner for PhysicalDrillJob {
    async fn run(&self, ctx: &JobContext) -> Result<JobSummary> {
        let repo = ctx.repository();
        let latest = repo
            .latest(&SeriesSelector::kind(dr_core::wal::base::PHYSICAL_KIND))
            .await?;
        let mut opts = self.opts.clone();
        opts.read.progress = Some(ctx.progress_sink());
        let report =
            crate::physical_drill::physical_drill(repo, &latest, self.decryptor.as_ref(), &opts)
                .await?;
        if let Some(e) = crate::physical_drill::failure(&report, &opts.objectives) {
            return Err(e);
        }
        Ok(JobSummary::new(format!(
            "physical drill of {}: recovered to {} in {} ms, {} s of data lost, {} checks passed",
            report.id,
            report.target,
            report.recovery_ms,
            report.recovery_point_secs,
            report.checks.len()
        ))
        .figure("backup_id", report.id.clone())
        .figure("recovery_ms", report.recovery_ms)
        .figure("recovery_point_secs", report.recovery_point_secs)
        .figure("checks_passed", report.checks.len()))
    }
}

/// Copies every complete backup the destination lacks to a second storage target
/// ([`dr_core::replicate::replicate`]): the runbook's copy in another region.
pub struct ReplicateJob {
    to: Arc<dyn dr_core::StorageTarget>,
    opts: dr_core::replicate::ReplicateOptions,
}

impl std::fmt::Debug for ReplicateJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicateJob")
            .field("to", &self.to.describe())
            .field("opts", &self.opts)
            .finish()
    }
}

impl ReplicateJob {
    /// Replicate into `to` with `opts` (storage class at the destination, read-back check).
    pub fn new(
        to: Arc<dyn dr_core::StorageTarget>,
        opts: dr_core::replicate::ReplicateOptions,
    ) -> ReplicateJob {
        ReplicateJob { to, opts }
    }
}

#[async_trait]
impl JobRunner for ReplicateJob {
    async fn run(&self, ctx: &JobContext) -> Result<JobSummary> {
        let report = dr_core::replicate::replicate(
            ctx.repository(),
            self.to.clone(),
            dr_core::replicate::Selection::All,
            &self.opts,
        )
        .await?;
        Ok(JobSummary::new(format!(
            "replicated {} backups ({} bytes) to {}; {} already there",
            report.copied.len(),
            report.bytes_copied,
            self.to.describe(),
            report.skipped.len()
        ))
        .figure("copied", report.copied.len())
        .figure("skipped", report.skipped.len())
        .figure("bytes_copied", report.bytes_copied)
        .figure("duration_ms", report.duration_ms))
    }
}
