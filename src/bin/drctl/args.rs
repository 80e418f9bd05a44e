//! Argument structs and values that several commands share: the repository and its key,
//! the series a command looks at, a database URL. Command modules import them from here,
//! never from `cli`, so that `cli` (which names every command's arguments) imports nothing
//! that imports it back.

use std::path::PathBuf;

use clap::Args;
use dr::core::Result;

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
}

impl RepoArgs {
    /// The storage target `--repo` names, with the `--storage-opt` settings, retrying
    /// transient errors (and resuming interrupted reads) with the default policy.
    pub fn storage(&self) -> Result<std::sync::Arc<dyn dr::core::StorageTarget>> {
        Ok(crate::storage::open(&self.repo, &self.storage_opts)?.retrying())
    }

    /// The most memory one upload to this repository holds (part size × (parts in flight
    /// + 1)), as configured by `--storage-opt`.
    pub fn upload_memory_budget(&self) -> Result<u64> {
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
    pub fn within(&self, usable: dr::core::SeriesSelector) -> Result<dr::core::SeriesSelector> {
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

/// The database `url` names, completed from the libpq environment ([`dr::db::config_from_url`]).
pub fn db_config(url: &str) -> Result<tokio_postgres::Config> {
    dr::db::config_from_url(url, "PGPASSWORD")
}
