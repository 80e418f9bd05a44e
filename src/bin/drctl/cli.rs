//! The command-line interface, declared with clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// dr: streaming, encrypted, verified PostgreSQL backups.
#[derive(Debug, Parser)]
#[command(name = "drctl", version, about, long_about = None)]
pub struct Cli {
    /// Print machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More logging on stderr (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// The repository and the key that opens it.
#[derive(Debug, Args, Clone)]
pub struct RepoArgs {
    /// Repository URL: s3://bucket/prefix, gs://bucket/prefix, az://container/prefix,
    /// file:///dir, a directory path, or memory://.
    #[arg(long, env = "DR_REPO")]
    pub repo: String,
    /// Key file written by `drctl keygen`. A passphrase comes from DR_PASSPHRASE instead.
    #[arg(long, env = "DR_KEY_FILE")]
    pub key_file: Option<PathBuf>,
    /// A storage setting KEY=VALUE (repeatable), e.g. endpoint=http://minio:9000,
    /// region=eu-west-1, allow_http=true, part_size=16MiB, max_parts=1000. Put credentials in
    /// the cloud's environment variables (AWS_*, GOOGLE_*, AZURE_*), not here: arguments are
    /// visible to every user of the machine.
    #[arg(long = "storage-opt", value_name = "KEY=VALUE")]
    pub storage_opts: Vec<String>,
    /// Signing key file (`drctl keygen --signing`): the repository's administrative key on an
    /// administrative host, a writer key on a backup host.
    #[arg(long, env = "DR_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Fail when a backup's manifest does not authenticate, instead of ignoring that backup
    /// with a warning naming it.
    #[arg(long, env = "DR_REFUSE_UNAUTHENTICATED")]
    pub refuse_unauthenticated: bool,
}

impl RepoArgs {
    /// The repository, its signed state checked against this host's pin (recorded at first
    /// use, see `dr::core::trust`), with the signing key if one is given. Unsigned state
    /// (a repository never upgraded) is accepted with a warning: reading must keep working.
    pub async fn open(&self) -> dr::core::Result<dr::core::Repository> {
        self.open_with(false).await
    }

    /// For commands that encrypt, delete or change anything: unsigned state is refused.
    pub async fn open_for_writing(&self) -> dr::core::Result<dr::core::Repository> {
        self.open_with(true).await
    }

    async fn open_with(&self, require_signed: bool) -> dr::core::Result<dr::core::Repository> {
        let policy = dr::core::trust::TrustPolicy {
            store: dr::core::trust::TrustStore::from_env(),
            require_signed,
        };
        let repo = dr::core::trust::open_trusted(self.storage()?, &policy).await?;
        if !repo.is_signed() {
            tracing::warn!(
                "dr-repo.json is not signed: its keys and retention policy are not \
                 authenticated (run `drctl repo upgrade`)"
            );
        }
        let repo = repo.refuse_unauthenticated(self.refuse_unauthenticated);
        Ok(match self.signing_key()? {
            Some(key) => repo.with_signing_key(key),
            None => repo,
        })
    }

    /// The signing key `--signing-key` names, if any.
    pub fn signing_key(
        &self,
    ) -> dr::core::Result<Option<std::sync::Arc<dr::core::signing::SigningKey>>> {
        self.signing_key
            .as_deref()
            .map(|p| dr::crypto::read_signing_key_file(p).map(std::sync::Arc::new))
            .transpose()
    }

    /// The storage target `--repo` names, with the `--storage-opt` settings, retrying
    /// transient errors (and resuming interrupted reads) with the default policy.
    pub fn storage(&self) -> dr::core::Result<std::sync::Arc<dyn dr::core::StorageTarget>> {
        Ok(crate::storage::open(&self.repo, &self.storage_opts)?.retrying())
    }

    /// The most memory one upload to this repository holds (part size × (parts in flight
    /// + 1)), as configured by `--storage-opt`.
    pub fn upload_memory_budget(&self) -> dr::core::Result<u64> {
        Ok(crate::storage::open(&self.repo, &self.storage_opts)?.upload_memory_budget())
    }
}

/// `--series`: which backup series a command looks at.
#[derive(Debug, Args, Clone, Default)]
pub struct SeriesArgs {
    /// Only backups of these series: a kind (postgres, files), a name (a database, a
    /// directory path), or kind:origin:name with * for any part (postgres:*:app).
    #[arg(long = "series", alias = "source", value_name = "SELECTOR")]
    pub series: Option<dr::core::SeriesSelector>,
}

impl SeriesArgs {
    /// The user's selector, narrowed to the series a command can use (e.g. the database
    /// backups a database restore reads).
    pub fn within(
        &self,
        usable: dr::core::SeriesSelector,
    ) -> dr::core::Result<dr::core::SeriesSelector> {
        match &self.series {
            Some(s) => usable.and(s),
            None => Ok(usable),
        }
    }

    /// The user's selector, or every series.
    pub fn selector(&self) -> dr::core::SeriesSelector {
        self.series.clone().unwrap_or_default()
    }
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new secret identity file (mode 0600) and print its public recipient.
    /// Refuses to overwrite.
    Keygen {
        /// Where to write the key.
        #[arg(long, short)]
        output: PathBuf,
        /// Write a symmetric key file (DR-KEY-V1) instead of an X25519 identity.
        #[arg(long, conflicts_with = "age")]
        symmetric: bool,
        /// Write an age identity (AGE-SECRET-KEY-1…, for --format age repositories).
        #[arg(long, conflicts_with = "signing")]
        age: bool,
        /// Write an Ed25519 signing key: a repository's administrative key, or a backup
        /// host's writer key (prints its public key).
        #[arg(long, conflicts_with = "symmetric")]
        signing: bool,
    },
    /// The repository's audit trail: every key, retention, writer, pin and prune change,
    /// oldest first, checked (signatures, chain, nothing removed).
    Log {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// The repository itself: sign an existing one (upgrade), re-pin its administrative key.
    Repo {
        #[command(subcommand)]
        command: crate::repo::RepoCommand,
    },
    /// The repository's keys: list, add, revoke, rotate (rewrites manifests, never data).
    Key {
        #[command(subcommand)]
        command: crate::key::KeyCommand,
    },
    /// Measure this machine.
    Bench {
        #[command(subcommand)]
        command: crate::bench::BenchCommand,
    },
    /// Create a repository.
    Init {
        #[command(flatten)]
        repo: RepoArgs,
        /// Default compression: zstd, zstd:N, gzip, gzip:N or none.
        #[arg(long, default_value = "zstd:1")]
        compression: String,
        /// Cipher: aes-256-gcm or chacha20-poly1305.
        #[arg(long, default_value = "aes-256-gcm")]
        cipher: String,
        /// A public recipient every backup is encrypted to (repeatable): dr-x25519-v1-… from
        /// `drctl keygen`, or age1… with --format age. A host with only recipients can back
        /// up but not restore.
        #[arg(long = "recipient")]
        recipients: Vec<String>,
        /// The bucket's Object Lock default retention in days: retention then never plans
        /// to delete a backup younger than that (the store would refuse).
        #[arg(long, value_name = "DAYS")]
        object_lock_days: Option<u32>,
        /// Encryption format: dr (dr-aead-v1, default) or age (standard age files).
        #[arg(long, default_value = "dr")]
        format: String,
        /// Default storage class for backup data (S3 STANDARD_IA, GLACIER, DEEP_ARCHIVE…;
        /// GCS NEARLINE, COLDLINE, ARCHIVE; Azure Hot, Cool, Cold, Archive). Ignored by
        /// file:// repositories.
        #[arg(long)]
        storage_class: Option<String>,
    },
    /// Back up a PostgreSQL database, or a directory of files.
    Backup {
        #[command(flatten)]
        repo: RepoArgs,
        /// Database URL (postgres://user@host:port/db). Put the password in PGPASSWORD or
        /// ~/.pgpass, not here: arguments are visible to every user of the machine.
        #[arg(
            long,
            env = "DR_DB",
            required_unless_present = "dir",
            conflicts_with = "dir"
        )]
        db: Option<String>,
        /// A directory to back up instead (user uploads, exported files), as a tar archive.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// A label to record (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Compression for this backup, overriding the repository default.
        #[arg(long)]
        compression: Option<String>,
        /// Storage class for this backup's data, overriding the repository default
        /// (e.g. STANDARD_IA, GLACIER, DEEP_ARCHIVE). Archived backups must be thawed in the
        /// store before they can be restored.
        #[arg(long)]
        storage_class: Option<String>,
    },
    /// List complete backups, newest first, with the series each belongs to.
    List {
        #[command(flatten)]
        repo: RepoArgs,
        #[command(flatten)]
        series: SeriesArgs,
    },
    /// Restore a backup into a database, or a directory backup into a directory.
    Restore {
        #[command(flatten)]
        repo: RepoArgs,
        /// Backup id, or `latest`: the newest backup of the kind the target takes (a
        /// database backup for --db, a directory backup for --dir), narrowed by --series.
        id: String,
        #[command(flatten)]
        series: SeriesArgs,
        /// Target database URL.
        #[arg(
            long,
            env = "DR_DB",
            required_unless_present = "dir",
            conflicts_with = "dir"
        )]
        db: Option<String>,
        /// Target directory of a directory backup (missing or empty, unless --replace).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Create the target database (it must not exist).
        #[arg(long, conflicts_with = "dir")]
        create: bool,
        /// Replace a non-empty target (restored beside it first, swapped in when complete).
        #[arg(long)]
        replace: bool,
        /// Do not restore object ownership (for a server without the original roles).
        #[arg(long)]
        no_owner: bool,
    },
    /// Restore drill: restore a backup into a scratch database, check it (row counts,
    /// orphaned rows), measure RTO and RPO against objectives, drop it.
    Drill(crate::drill::DrillArgs),
    /// Read every stored byte of backups and check them; needs no database.
    Verify {
        #[command(flatten)]
        repo: RepoArgs,
        /// Backup id, or `latest` (the newest backup of the series --series picks). Default:
        /// the newest backup of every series.
        id: Option<String>,
        #[command(flatten)]
        series: SeriesArgs,
        /// Verify every complete backup.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Write a backup's decrypted, decompressed payload to stdout (pipe it into pg_restore).
    Cat {
        #[command(flatten)]
        repo: RepoArgs,
        /// Backup id, or `latest` (of the series --series picks; of any series by default).
        id: String,
        #[command(flatten)]
        series: SeriesArgs,
    },
    /// Run the schedule of a dr.toml in the foreground until SIGINT/SIGTERM, or one job now.
    Run {
        /// The configuration file (see examples/dr.toml).
        #[arg(long, env = "DR_CONFIG")]
        config: PathBuf,
        /// Run this job now (and the jobs listed in its `then`), print the outcome, and
        /// exit with it.
        #[arg(long, value_name = "JOB")]
        once: Option<String>,
    },
    /// Run the whole job end to end on a throwaway PostgreSQL and a temporary repository.
    Demo {
        /// Size of the sample database (1 is about 40 MB).
        #[arg(long, default_value_t = 1)]
        scale: u32,
    },
    /// Copy complete backups to a second storage target (another region), checked end to end.
    Replicate(crate::replicate::ReplicateArgs),
    /// Repository leases: list them, break one left by a crashed process.
    Lock {
        #[command(subcommand)]
        command: crate::lock::LockCommand,
    },
    /// Pin a backup: retention never deletes it.
    Pin(crate::retention::PinArgs),
    /// Unpin a backup: retention decides about it again.
    Unpin(crate::retention::PinArgs),
    /// Retention policies: preview one on a list of times, store one in the repository.
    Retention {
        #[command(subcommand)]
        command: crate::retention::RetentionCommand,
    },
    /// Delete the backups a retention policy does not keep (manifest first, then data) and
    /// incomplete uploads older than a grace period.
    Prune(crate::retention::PruneArgs),
}
