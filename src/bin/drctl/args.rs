//! Argument structs and values that several commands share: the repository and its key,
//! the series a command looks at, a database URL. Command modules import them from here,
//! never from `cli`, so that `cli` (which names every command's arguments) imports nothing
//! that imports it back.

use std::path::PathBuf;

use clap::Args;
use dr::core::{Error, Result};

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

/// Parse a database URL; fill the password from PGPASSWORD and warn if the URL carries one.
pub fn db_config(url: &str) -> Result<tokio_postgres::Config> {
    let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
        Error::invalid("the database URL is malformed (expected postgres://user@host:port/db)")
            .with_source(e)
    })?;
    if config.get_password().is_some() {
        tracing::warn!("the database URL contains a password, which other users can read from the process list; use PGPASSWORD or ~/.pgpass");
    } else if let Ok(p) = std::env::var("PGPASSWORD") {
        config.password(p);
    }
    if config.get_user().is_none() {
        let user = std::env::var("PGUSER")
            .or_else(|_| std::env::var("USER"))
            .unwrap_or_else(|_| "postgres".into());
        config.user(user);
    }
    if config.get_hosts().is_empty() {
        config.host(std::env::var("PGHOST").as_deref().unwrap_or("localhost"));
    }
    if config.get_ports().is_empty() {
        if let Ok(port) = std::env::var("PGPORT").unwrap_or_default().parse::<u16>() {
            config.port(port);
        }
    }
    Ok(config)
}
