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
    /// Repository URL: file:///dir, a directory path, or memory://.
    #[arg(long, env = "DR_REPO")]
    pub repo: String,
    /// Key file written by `drctl keygen`. A passphrase comes from DR_PASSPHRASE instead.
    #[arg(long, env = "DR_KEY_FILE")]
    pub key_file: Option<PathBuf>,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a new random key file (mode 0600). Refuses to overwrite.
    Keygen {
        /// Where to write the key.
        #[arg(long, short)]
        output: PathBuf,
    },
    /// Create a repository.
    Init {
        #[command(flatten)]
        repo: RepoArgs,
        /// Default compression: zstd, zstd:N, gzip, gzip:N or none.
        #[arg(long, default_value = "zstd:3")]
        compression: String,
        /// Cipher: aes-256-gcm or chacha20-poly1305.
        #[arg(long, default_value = "aes-256-gcm")]
        cipher: String,
    },
    /// Back up a PostgreSQL database.
    Backup {
        #[command(flatten)]
        repo: RepoArgs,
        /// Database URL (postgres://user@host:port/db). Put the password in PGPASSWORD or
        /// ~/.pgpass, not here: arguments are visible to every user of the machine.
        #[arg(long, env = "DR_DB")]
        db: String,
        /// A label to record (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        /// Compression for this backup, overriding the repository default.
        #[arg(long)]
        compression: Option<String>,
    },
    /// List complete backups, newest first.
    List {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Restore a backup into a database.
    Restore {
        #[command(flatten)]
        repo: RepoArgs,
        /// Backup id, or `latest`.
        id: String,
        /// Target database URL.
        #[arg(long, env = "DR_DB")]
        db: String,
        /// Create the target database (it must not exist).
        #[arg(long)]
        create: bool,
        /// Replace a non-empty target (restored beside it first, swapped in when complete).
        #[arg(long)]
        replace: bool,
        /// Do not restore object ownership (for a server without the original roles).
        #[arg(long)]
        no_owner: bool,
    },
    /// Read every stored byte of backups and check them; needs no database.
    Verify {
        #[command(flatten)]
        repo: RepoArgs,
        /// Backup id or `latest` (default: latest).
        id: Option<String>,
        /// Verify every complete backup.
        #[arg(long, conflicts_with = "id")]
        all: bool,
    },
    /// Write a backup's decrypted, decompressed payload to stdout (pipe it into pg_restore).
    Cat {
        #[command(flatten)]
        repo: RepoArgs,
        /// Backup id, or `latest`.
        id: String,
    },
    /// Run the whole job end to end on a throwaway PostgreSQL and a temporary repository.
    Demo {
        /// Size of the sample database (1 is about 40 MB).
        #[arg(long, default_value_t = 1)]
        scale: u32,
    },
}
