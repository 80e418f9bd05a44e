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
    pub async fn open(&self) -> Result<dr::core::Repository> {
        self.open_with(false).await
    }

    /// For commands that encrypt, delete or change anything: unsigned state is refused.
    pub async fn open_for_writing(&self) -> Result<dr::core::Repository> {
        self.open_with(true).await
    }

    async fn open_with(&self, require_signed: bool) -> Result<dr::core::Repository> {
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
    pub fn signing_key(&self) -> Result<Option<std::sync::Arc<dr::core::signing::SigningKey>>> {
        self.signing_key
            .as_deref()
            .map(|p| dr::crypto::read_signing_key_file(p).map(std::sync::Arc::new))
            .transpose()
    }

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
