//! The repository: what lies in storage, and how to find it.
//!
//! ```text
//! <root>/dr-repo.json                  format version, repository id, defaults, key list
//! <root>/backups/<id>/manifest.json    written LAST: its presence is the commit of the backup
//! <root>/backups/<id>/payload-0000     the compressed, encrypted payload
//! ```
//! Anything under `backups/<id>/` without a manifest is an incomplete backup: never listed
//! as restorable.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::codec::Codec;
use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::manifest::Manifest;
pub use crate::names::check_backup_id;
use crate::names::random_hex;
use crate::series::{Series, SeriesSelector};
use crate::storage::{PutOptions, StorageExt, StorageTarget};

/// The repository format this version writes.
pub const REPO_FORMAT: u32 = 1;
/// Path of the repository's configuration object.
pub const CONFIG_PATH: &str = "dr-repo.json";
/// Prefix under which backups live.
pub const BACKUPS_PREFIX: &str = "backups/";

/// `dr-repo.json`: the repository's identity, defaults, and the keys that may open it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoConfig {
    /// Repository format version ([`REPO_FORMAT`]).
    pub format: u32,
    /// Random id, to tell repositories apart (and copies of one).
    pub repository_id: String,
    /// When the repository was created.
    pub created_at: DateTime<Utc>,
    /// Defaults for new backups.
    pub defaults: RepoDefaults,
    /// Keys whose holders may open backups. Public information only: ids and KDF parameters.
    pub keys: Vec<RepoKey>,
    /// The retention policy `drctl prune` applies when given no `--keep-…` flags: to every
    /// series that `retention_series` has no policy for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::RetentionPolicy>,
    /// Policies of particular series (the first whose selector matches applies).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retention_series: Vec<crate::retention::SeriesPolicy>,
}

/// Defaults applied to new backups unless a caller overrides them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoDefaults {
    /// Compression codec.
    pub compression: Codec,
    /// Encryption scheme, e.g. `dr-aead-v1`.
    pub encryption: String,
    /// AEAD cipher, e.g. `aes-256-gcm`.
    pub cipher: String,
    /// Storage class for data objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// A key registered with the repository (never the key itself).
///
/// Kinds: `key-file` and `passphrase` are symmetric (only their holder can wrap for them);
/// `x25519` (dr-aead-v1) and `age` (age-format repositories) are public-key recipients whose
/// public half is stored here, so that a backup host needs no secret to write backups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoKey {
    /// Public key id, as in wrapped keys.
    pub id: String,
    /// `key-file`, `passphrase`, `x25519` or `age`.
    pub kind: String,
    /// When it was added.
    pub added_at: DateTime<Utc>,
    /// Key-derivation parameters for passphrase keys (interpreted by dr-crypto).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kdf: Option<serde_json::Value>,
    /// The public recipient (`dr-x25519-v1-…` or `age1…`) of a public-key kind; every new
    /// backup's data key is wrapped for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient: Option<String>,
}

impl RepoConfig {
    /// A new configuration with a random id.
    pub fn new(defaults: RepoDefaults, keys: Vec<RepoKey>) -> Result<Self> {
        Ok(RepoConfig {
            format: REPO_FORMAT,
            repository_id: random_hex(16)?,
            created_at: Utc::now(),
            defaults,
            keys,
            retention: None,
            retention_series: Vec::new(),
        })
    }
}

impl RepoConfig {
    /// The stored retention policies, if any is stored.
    pub fn retention_policies(&self) -> Option<crate::retention::SeriesPolicies> {
        if self.retention.is_none() && self.retention_series.is_empty() {
            return None;
        }
        Some(crate::retention::SeriesPolicies {
            default: self.retention.clone().unwrap_or_default(),
            series: self.retention_series.clone(),
        })
    }
}

/// An opened repository on some storage target.
#[derive(Debug, Clone)]
pub struct Repository {
    storage: Arc<dyn StorageTarget>,
    config: RepoConfig,
}

impl Repository {
    /// Create a repository: writes `dr-repo.json` only if none exists.
    pub async fn init(storage: Arc<dyn StorageTarget>, config: RepoConfig) -> Result<Self> {
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        match storage
            .put_if_absent(CONFIG_PATH, Bytes::from(json), PutOptions::default())
            .await
        {
            Ok(()) => Ok(Repository { storage, config }),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("a dr repository already exists at {}", storage.describe()),
            )),
            Err(e) => Err(e.with_context("repository", storage.describe())),
        }
    }

    /// Open an existing repository.
    pub async fn open(storage: Arc<dyn StorageTarget>) -> Result<Self> {
        let bytes = match storage.get_bytes(CONFIG_PATH).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!(
                        "no dr repository at {} (no {CONFIG_PATH}): create one with `drctl init`",
                        storage.describe()
                    ),
                ))
            }
            Err(e) => return Err(e.with_context("repository", storage.describe())),
        };
        let config: RepoConfig = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(format!("{CONFIG_PATH} is malformed"))
                .with_source(e)
                .with_context("repository", storage.describe())
        })?;
        if config.format > REPO_FORMAT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "repository format {} is newer than this dr understands ({REPO_FORMAT}): upgrade dr",
                    config.format
                ),
            ));
        }
        Ok(Repository { storage, config })
    }

    /// The storage target underneath.
    pub fn storage(&self) -> &Arc<dyn StorageTarget> {
        &self.storage
    }

    /// The repository's configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Replace `dr-repo.json` (key changes, new defaults).
    pub async fn save_config(&mut self, config: RepoConfig) -> Result<()> {
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        self.storage
            .put_bytes(CONFIG_PATH, Bytes::from(json), PutOptions::default())
            .await?;
        self.config = config;
        Ok(())
    }

    /// Path of a backup's manifest.
    pub fn manifest_path(id: &str) -> String {
        format!("{BACKUPS_PREFIX}{id}/manifest.json")
    }

    /// Path of a backup's `n`th payload object.
    pub fn payload_path(id: &str, n: usize) -> String {
        format!("{BACKUPS_PREFIX}{id}/payload-{n:04}")
    }

    /// Every backup id that has objects in storage, committed or not.
    async fn backup_dirs(&self) -> Result<BTreeMap<String, bool>> {
        let mut dirs = BTreeMap::new();
        for o in self.storage.list(BACKUPS_PREFIX).await? {
            let rest = &o.path[BACKUPS_PREFIX.len()..];
            if let Some((id, name)) = rest.split_once('/') {
                let committed = dirs.entry(id.to_string()).or_insert(false);
                *committed |= name == "manifest.json";
            }
        }
        Ok(dirs)
    }

    /// Complete backups, newest first: by the finish time their manifests record, ties
    /// broken by id (never by the id alone, whose time is the start and may be coarse).
    ///
    /// Legacy manifests (written before series existed) are given the origin of the one
    /// known series of their kind and name ([`Series::adopt_legacy`]).
    pub async fn list_backups(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for (id, committed) in self.backup_dirs().await? {
            if committed {
                out.push(self.manifest(&id).await?);
            }
        }
        Series::adopt_legacy(out.iter_mut().map(|m| &mut m.series));
        out.sort_by(newest_first);
        Ok(out)
    }

    /// Complete backups of the series `selector` picks, newest first.
    pub async fn list_series(&self, selector: &SeriesSelector) -> Result<Vec<Manifest>> {
        let mut all = self.list_backups().await?;
        all.retain(|m| selector.matches(&m.series));
        Ok(all)
    }

    /// The newest complete backup of each series `selector` picks, newest first.
    pub async fn newest_per_series(&self, selector: &SeriesSelector) -> Result<Vec<Manifest>> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = self.list_series(selector).await?;
        out.retain(|m| seen.insert(m.series.clone()));
        Ok(out)
    }

    /// The newest complete backup of the series `selector` picks.
    pub async fn latest(&self, selector: &SeriesSelector) -> Result<Manifest> {
        self.list_series(selector)
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| {
                let which = if selector.is_any() {
                    String::new()
                } else {
                    format!(" of series '{selector}'")
                };
                Error::new(
                    ErrorKind::NotFound,
                    format!("no complete backups{which} in {}", self.storage.describe()),
                )
            })
    }

    /// Ids of backups that have data but no manifest: failed or running.
    pub async fn list_incomplete(&self) -> Result<Vec<String>> {
        Ok(self
            .backup_dirs()
            .await?
            .into_iter()
            .filter(|(_, committed)| !committed)
            .map(|(id, _)| id)
            .collect())
    }

    /// The manifest of backup `id`.
    pub async fn manifest(&self, id: &str) -> Result<Manifest> {
        check_backup_id(id)?;
        let bytes = match self.storage.get_bytes(&Self::manifest_path(id)).await {
            Ok(b) => b,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no complete backup '{id}' in {}", self.storage.describe()),
                ))
            }
            Err(e) => return Err(e.with_context("backup", id)),
        };
        let m = Manifest::from_json(&bytes).context("backup", id)?;
        if m.id != id {
            return Err(Error::corrupt(format!(
                "manifest of backup '{id}' names another backup '{}'",
                m.id
            )));
        }
        Ok(m)
    }

    /// Replace the manifest of an already committed backup (pin/unpin, re-wrapped data keys).
    ///
    /// The data objects are untouched. The new manifest must describe the same backup (same
    /// id and objects); the write replaces the old one atomically on every supported store.
    pub async fn update_manifest(&self, manifest: &Manifest) -> Result<()> {
        let current = self.manifest(&manifest.id).await?;
        if current.objects != manifest.objects {
            return Err(Error::invalid(format!(
                "refusing to rewrite the manifest of backup '{}' with different objects",
                manifest.id
            )));
        }
        self.storage
            .put_bytes(
                &Self::manifest_path(&manifest.id),
                Bytes::from(manifest.to_json()),
                PutOptions::default(),
            )
            .await
            .context("backup", &manifest.id)
    }

    /// Resolve `latest` or an id to a complete backup's manifest, of a series `selector`
    /// picks: `latest` is the newest such backup ([`Repository::latest`]); an id of a
    /// backup of another series is refused, naming the series it belongs to.
    ///
    /// Commands pass the kind of source they can use (a database restore
    /// `SeriesSelector::kind("postgres")`), narrowed by the user's `--series`.
    pub async fn resolve(&self, id_or_latest: &str, selector: &SeriesSelector) -> Result<Manifest> {
        if id_or_latest == "latest" {
            return self.latest(selector).await;
        }
        let m = self.manifest(id_or_latest).await?;
        if !selector.matches(&m.series) {
            return Err(Error::invalid(format!(
                "backup '{}' belongs to series '{}', not to '{selector}'",
                m.id, m.series
            )));
        }
        Ok(m)
    }
}

/// Newest first by finish time, then by id (the order of [`Repository::list_backups`]).
pub fn newest_first(a: &Manifest, b: &Manifest) -> std::cmp::Ordering {
    b.finished_at
        .cmp(&a.finished_at)
        .then_with(|| b.id.cmp(&a.id))
}

/// A new backup id: `20261125T020000.123Z-pg-7f3a` (UTC start time to the millisecond,
/// source, random suffix). Ids written before sub-second precision lack the `.123`.
pub fn new_backup_id(started_at: DateTime<Utc>, source_kind: &str) -> Result<String> {
    let short: String = match source_kind {
        "postgres" => "pg".into(),
        other => other
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase(),
    };
    Ok(format!(
        "{}-{}-{}",
        started_at.format("%Y%m%dT%H%M%S%.3fZ"),
        if short.is_empty() { "x".into() } else { short },
        random_hex(2)?
    ))
}
