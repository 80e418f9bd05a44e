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
    /// The retention policy `drctl prune` applies when given no `--keep-…` flags.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<crate::retention::RetentionPolicy>,
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

    /// Complete backups, newest first.
    pub async fn list_backups(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for (id, committed) in self.backup_dirs().await?.into_iter().rev() {
            if committed {
                out.push(self.manifest(&id).await?);
            }
        }
        Ok(out)
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

    /// Resolve `latest` or an id to a complete backup's manifest.
    pub async fn resolve(&self, id_or_latest: &str) -> Result<Manifest> {
        if id_or_latest == "latest" {
            let dirs = self.backup_dirs().await?;
            let newest = dirs.iter().rev().find(|(_, committed)| **committed);
            match newest {
                Some((id, _)) => self.manifest(id).await,
                None => Err(Error::new(
                    ErrorKind::NotFound,
                    format!("no complete backups in {}", self.storage.describe()),
                )),
            }
        } else {
            self.manifest(id_or_latest).await
        }
    }
}

/// A new backup id: `20261125T020000Z-pg-7f3a` (UTC start time, source, random suffix).
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
        started_at.format("%Y%m%dT%H%M%SZ"),
        if short.is_empty() { "x".into() } else { short },
        random_hex(2)?
    ))
}

/// Ids are plain path segments: letters, digits, `-`, `_`, `.`; no traversal.
pub fn check_backup_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!("'{id}' is not a valid backup id")))
    }
}

pub(crate) fn random_hex(n: usize) -> Result<String> {
    use ring::rand::SecureRandom;
    let mut buf = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut buf)
        .map_err(|_| Error::new(ErrorKind::Other, "the system random generator failed"))?;
    Ok(hex::encode(buf))
}
