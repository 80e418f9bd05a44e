//! The command-line interface, declared with clap.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::args::{RepoArgs, SeriesArgs};

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
        /// A directory to back up instead (user uploads, exported files), as a tar archive
        /// (or, with --dedup, as a deduplicated incremental snapshot). With --dedup it may
        /// also be a bucket prefix: s3://bucket/prefix/, gs://…, az://…, file://… (settings
        /// from the environment: AWS_*, GOOGLE_*, AZURE_*).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Back up --dir as a deduplicated snapshot: only chunks no backup stored yet are
        /// stored, and files unchanged since this host's previous snapshot of the directory
        /// (objects whose key, size and ETag are unchanged) are not read. The JSON output
        /// adds `files`: files read and unchanged, bytes new and stored.
        #[arg(long, requires = "dir")]
        dedup: bool,
        /// The repository's dedup key, for a host that holds only public recipients (export
        /// it on a key holder with `drctl dedup-key`).
        #[arg(long, env = "DR_DEDUP_KEY_FILE", requires = "dedup")]
        dedup_key_file: Option<PathBuf>,
        /// A physical base backup of the whole cluster --db connects to (pg_basebackup over
        /// a replication connection), for point-in-time recovery with the WAL archive.
        #[arg(long, requires = "db")]
        physical: bool,
        /// With --physical, on the database host: copy this data directory (and its
        /// tablespaces) between pg_backup_start() and pg_backup_stop() instead of running
        /// pg_basebackup; the manifest records every file's size and SHA-256.
        #[arg(long, requires = "physical")]
        pgdata: Option<PathBuf>,
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
        /// Dump over N connections sharing one snapshot (pg_dump -Fd -j N) and upload N
        /// pieces at once; the backup is stored as a directory archive, one object per
        /// file, which `restore --jobs` restores in parallel. Spools the files pg_dump has
        /// written until they are uploaded (in $TMPDIR).
        #[arg(long, default_value_t = 1, value_name = "N", conflicts_with_all = ["dir", "physical"])]
        jobs: usize,
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
            required_unless_present_any = ["dir", "pgdata", "to"],
            conflicts_with = "dir"
        )]
        db: Option<String>,
        /// Target directory of a directory backup (missing or empty, unless --replace).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Restore a deduplicated snapshot into this bucket prefix instead (s3://bucket/
        /// prefix/, gs://…, az://…, file://…; settings from the environment): one object
        /// per file, each made visible only after its size and BLAKE3 match. The prefix must
        /// be empty unless --replace (which overwrites objects of the same keys).
        #[arg(long, value_name = "URL", conflicts_with_all = ["dir", "db"])]
        to: Option<String>,
        /// With --to: the storage class of the restored objects.
        #[arg(long, requires = "to")]
        storage_class: Option<String>,
        #[command(flatten)]
        pitr: crate::wal::PitrArgs,
        /// Create the target database (it must not exist).
        #[arg(long, conflicts_with = "dir")]
        create: bool,
        /// Replace a non-empty target (restored beside it first, swapped in when complete).
        #[arg(long)]
        replace: bool,
        /// Do not restore object ownership (for a server without the original roles).
        #[arg(long)]
        no_owner: bool,
        /// Restore only this table (repeatable; `name` or `schema.name`), with what it
        /// needs (schema, types, sequences, indexes, constraints), e.g. into a scratch
        /// database made with --create.
        #[arg(long = "table", value_name = "TABLE", conflicts_with = "dir")]
        tables: Vec<dr::db::tables::TableName>,
        /// Restore over N connections (pg_restore -j N: tables loaded, indexes and
        /// constraints built in parallel), streaming; needs a backup taken with --jobs (a
        /// one-stream backup restores over one connection, with a notice).
        #[arg(long, default_value_t = 1, value_name = "N", conflicts_with = "dir")]
        jobs: usize,
        /// Of a deduplicated snapshot, restore only paths matching this glob (repeatable;
        /// `*` also matches `/`; a matching directory brings everything under it).
        #[arg(long = "include", value_name = "GLOB")]
        include: Vec<String>,
        /// Of a deduplicated snapshot, leave out paths matching this glob (repeatable).
        #[arg(long = "exclude", value_name = "GLOB")]
        exclude: Vec<String>,
    },
    /// List the files of a deduplicated directory snapshot (under PATH, if given).
    Ls {
        #[command(flatten)]
        repo: RepoArgs,
        /// Snapshot id, or `latest`.
        id: String,
        /// Only this path and what lies under it.
        path: Option<String>,
        #[command(flatten)]
        series: SeriesArgs,
    },
    /// Write the repository's dedup key to a new file (mode 0600), for hosts that back up
    /// directories holding only public recipients. It decrypts nothing.
    DedupKey {
        #[command(flatten)]
        repo: RepoArgs,
        /// The file to create.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Which rows of a live database differ from a backup or another database (by primary
    /// key, without pulling whole tables across); exit code 1 when some do.
    Diff(crate::diff::DiffArgs),
    /// Restore drill: restore a backup into a scratch database, check it (row counts,
    /// orphaned rows), measure RTO and RPO against objectives, drop it.
    Drill(crate::drill::DrillArgs),
    /// Recoverability against the objectives, per series: newest backup and its age, last
    /// verify, last drill; exit 0 ok, 1 warning, 2 breached, 3 unknown.
    Status(crate::status::StatusArgs),
    /// A report people read: objectives, RTO/RPO measured by drills over time, backup sizes
    /// and durations, last results and failures, as one self-contained HTML page or Markdown.
    Report(crate::report::ReportArgs),
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
    /// Write a backup's decrypted, decompressed payload to stdout (pipe it into pg_restore);
    /// a backup taken with --jobs comes out as one custom-format archive too.
    Cat {
        #[command(flatten)]
        repo: RepoArgs,
        /// Backup id, or `latest` (of the series --series picks; of any series by default).
        id: String,
        #[command(flatten)]
        series: SeriesArgs,
        /// Write a backup taken with --jobs (a directory archive) into this folder (missing
        /// or empty), for `pg_restore -Fd DIR`.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
        /// Of a deduplicated snapshot, write this one file instead.
        #[arg(long, value_name = "PATH", conflicts_with = "dir")]
        file: Option<String>,
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
    #[cfg(feature = "demo")]
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
    /// archive_command: archive one WAL file (%p) of the server in the working directory,
    /// compressed and encrypted; exit 0 only once it is stored.
    WalPush(crate::wal::PushArgs),
    /// restore_command: write the archived WAL file %f to %p (exit 1: not archived; 126: an
    /// error that must stop recovery — damage, a gap, a wrong key).
    WalFetch(crate::wal::FetchArgs),
    /// Stream WAL continuously from a server (pg_receivewal on a replication slot): each
    /// completed segment is archived as wal-push would, and the segment being written is
    /// stored every few seconds, so losing the primary loses seconds. Runs until SIGTERM.
    WalReceive(crate::wal::ReceiveArgs),
    /// The WAL archive: list its ranges, gaps and PITR window, or verify it.
    Wal {
        #[command(subcommand)]
        command: crate::wal::WalCommand,
    },
    /// Delete the backups a retention policy does not keep (manifest first, then data) and
    /// incomplete uploads older than a grace period.
    Prune(crate::retention::PruneArgs),
}
