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
use crate::signing::{self, PublicKey, Signature, SigningKey};
use crate::storage::{PutOptions, StorageExt, StorageTarget};

pub mod audit;
pub mod handover;

/// The newest repository format this version understands: 2 is a signed repository
/// (`admin_key` and `signature` present), which older dr versions refuse.
pub const REPO_FORMAT: u32 = 2;
/// The format of a repository whose state is not signed (created before signatures, or by
/// [`Repository::init`] without a key).
pub const UNSIGNED_REPO_FORMAT: u32 = 1;
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
    /// The administrative key (`dr-ed25519-v1-…`) whose signature `signature` must be: only
    /// its holder can change the keys, defaults, retention or writers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_key: Option<String>,
    /// Writer keys: backup hosts that may sign manifests (but not change this file).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writers: Vec<RepoWriter>,
    /// The bucket's Object Lock default retention in days, if it has one: objects cannot be
    /// deleted until that long after they were written, so retention never plans such a
    /// deletion (`drctl init --object-lock-days N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_lock_days: Option<u32>,
    /// Handovers of the administrative key, newest last: hosts that pinned an earlier key
    /// follow them (see [`crate::handover`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admin_handovers: Vec<crate::handover::Handover>,
    /// Keys that no longer sign (a previous administrative key, removed writers), with the
    /// last audit entry each may have signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired_keys: Vec<crate::handover::RetiredKey>,
    /// The newest audit entry when this state was signed: removing entries up to it is
    /// detected (see [`crate::audit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_head: Option<crate::audit::AuditHead>,
    /// The administrative key's signature of everything else in this file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// A backup host's signing key, listed by the administrator so that readers accept the
/// manifests it signs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RepoWriter {
    /// Its key id.
    pub id: String,
    /// The public key, `dr-ed25519-v1-…`.
    pub public_key: String,
    /// Who it is (a host name), for people.
    #[serde(default)]
    pub name: String,
    /// When it was added.
    pub added_at: DateTime<Utc>,
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
            format: UNSIGNED_REPO_FORMAT,
            repository_id: random_hex(16)?,
            created_at: Utc::now(),
            defaults,
            keys,
            retention: None,
            retention_series: Vec::new(),
            admin_key: None,
            writers: Vec::new(),
            object_lock_days: None,
            admin_handovers: Vec::new(),
            retired_keys: Vec::new(),
            audit_head: None,
            signature: None,
        })
    }
}

impl RepoConfig {
    /// The keys whose signature a manifest may carry: the administrative key and the writers.
    pub fn manifest_signers(&self) -> Vec<PublicKey> {
        self.admin_key
            .iter()
            .chain(self.writers.iter().map(|w| &w.public_key))
            .filter_map(|k| PublicKey::parse(k).ok())
            .collect()
    }

    /// This configuration signed by `admin`, which becomes (or must already be) its
    /// administrative key; the format becomes [`REPO_FORMAT`].
    pub fn signed_by(mut self, admin: &SigningKey) -> Result<RepoConfig> {
        let public = admin.public_key().to_string();
        match &self.admin_key {
            Some(existing) if *existing != public => {
                return Err(Error::new(
                    ErrorKind::WrongKey,
                    format!(
                        "signing key {} is not this repository's administrative key ({}): changing \
                         dr-repo.json needs the administrative key",
                        admin.key_id(),
                        PublicKey::parse(existing).map(|k| k.key_id()).unwrap_or_default()
                    ),
                ))
            }
            _ => {}
        }
        self.admin_key = Some(public);
        self.format = REPO_FORMAT;
        self.signature = None;
        let value = serde_json::to_value(&self).expect("config serializes");
        self.signature = Some(signing::sign_state(admin, &value));
        Ok(self)
    }

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
    /// The host's signing key (administrative or writer), if it holds one.
    signer: Option<Arc<SigningKey>>,
    /// Whether listing fails on a manifest that does not authenticate (else it is skipped,
    /// with a warning naming it).
    refuse_unauthenticated: bool,
}

/// A committed backup whose manifest failed authentication, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    /// The backup id (its directory name).
    pub id: String,
    /// One line: what failed.
    pub cause: String,
}

impl Repository {
    /// Create a repository: writes `dr-repo.json` only if none exists.
    pub async fn init(storage: Arc<dyn StorageTarget>, config: RepoConfig) -> Result<Self> {
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        match storage
            .put_if_absent(CONFIG_PATH, Bytes::from(json), PutOptions::default())
            .await
        {
            Ok(()) => Ok(Repository::new(storage, config)),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("a dr repository already exists at {}", storage.describe()),
            )),
            Err(e) => Err(e.with_context("repository", storage.describe())),
        }
    }

    /// Create a signed repository: `admin` becomes its administrative key, signs the state,
    /// and is kept as this handle's signing key.
    pub async fn init_signed(
        storage: Arc<dyn StorageTarget>,
        config: RepoConfig,
        admin: Arc<SigningKey>,
    ) -> Result<Self> {
        let config = config.signed_by(&admin)?;
        Ok(Repository::init(storage, config)
            .await?
            .with_signing_key(admin))
    }

    fn new(storage: Arc<dyn StorageTarget>, config: RepoConfig) -> Repository {
        Repository {
            storage,
            config,
            signer: None,
            refuse_unauthenticated: false,
        }
    }

    /// Use `key` (the administrative key, or a writer key listed in `dr-repo.json`) to sign
    /// what this handle writes: manifests, and with the administrative key the state.
    pub fn with_signing_key(mut self, key: Arc<SigningKey>) -> Repository {
        self.signer = Some(key);
        self
    }

    /// Make listing fail on a manifest that does not authenticate, instead of skipping it.
    pub fn refuse_unauthenticated(mut self, refuse: bool) -> Repository {
        self.refuse_unauthenticated = refuse;
        self
    }

    /// The signing key this handle holds, if any.
    pub fn signing_key(&self) -> Option<&Arc<SigningKey>> {
        self.signer.as_ref()
    }

    /// Append an audit entry signed with this handle's key, if the repository is signed
    /// (an unsigned repository keeps no trail). Fails without a usable key.
    pub async fn audit(&self, action: &str, details: serde_json::Value) -> Result<()> {
        if !self.is_signed() {
            return Ok(());
        }
        self.check_can_sign_manifests()?;
        let key = self.signer.as_ref().expect("checked above");
        crate::audit::append(self, key, action, details).await?;
        Ok(())
    }

    /// Whether the repository's state is signed (then every manifest must be, too).
    pub fn is_signed(&self) -> bool {
        self.config.signature.is_some()
    }

    /// Open an existing repository. A signed `dr-repo.json` must verify with the
    /// administrative key it names (see [`crate::trust`] for checking that key against a
    /// pin); an unsigned one is accepted here, and refused by [`crate::trust::open_trusted`]
    /// when the caller requires signatures.
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
        let malformed = |e: serde_json::Error| {
            Error::corrupt(format!("{CONFIG_PATH} is malformed"))
                .with_source(e)
                .with_context("repository", storage.describe())
        };
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(malformed)?;
        let config: RepoConfig = serde_json::from_value(value.clone()).map_err(malformed)?;
        if config.format > REPO_FORMAT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "repository format {} is newer than this dr understands ({REPO_FORMAT}): upgrade dr",
                    config.format
                ),
            ));
        }
        if config.format >= REPO_FORMAT || config.admin_key.is_some() || config.signature.is_some()
        {
            let admin = config.admin_key.as_deref().ok_or_else(|| {
                Error::corrupt(format!(
                    "{CONFIG_PATH} is a signed repository's (format {}) but names no administrative key",
                    config.format
                ))
            });
            let admin = admin.and_then(|a| {
                PublicKey::parse(a).map_err(|e| {
                    Error::corrupt(format!("{CONFIG_PATH} has a malformed administrative key"))
                        .with_source(e)
                })
            });
            admin
                .and_then(|a| signing::verify_state(&a, &value))
                .map_err(|e| e.with_context("repository", storage.describe()))?;
        }
        Ok(Repository::new(storage, config))
    }

    /// The storage target underneath.
    pub fn storage(&self) -> &Arc<dyn StorageTarget> {
        &self.storage
    }

    /// The repository's configuration.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// Replace `dr-repo.json` (key changes, new defaults). A signed repository's new state is
    /// signed with this handle's signing key, which must be the administrative key.
    pub async fn save_config(&mut self, config: RepoConfig) -> Result<()> {
        let config = if self.is_signed() || config.admin_key.is_some() {
            let admin = self.signer.as_ref().ok_or_else(|| {
                Error::new(
                    ErrorKind::WrongKey,
                    "changing dr-repo.json of a signed repository needs its administrative key: \
                     pass --signing-key FILE (or set DR_SIGNING_KEY)",
                )
            })?;
            if self.is_signed() && config.admin_key != self.config.admin_key {
                return Err(Error::invalid(
                    "refusing to change the administrative key of a signed repository",
                ));
            }
            // Check the key before recording anything, then record the change first.
            let mut config = config.signed_by(admin)?;
            let details = crate::audit::state_change(&self.config, &config);
            config.audit_head = Some(crate::audit::append(self, admin, "state", details).await?);
            config.signed_by(admin)?
        } else {
            config
        };
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        self.storage
            .put_bytes(CONFIG_PATH, Bytes::from(json), PutOptions::default())
            .await?;
        self.config = config;
        Ok(())
    }

    /// Hand the repository over to a new administrative key. This handle's key, the current
    /// administrative key, signs an audit entry and a handover to `new` (so hosts that pinned
    /// it follow, see [`crate::handover`]); `new` signs the new state, in which the old key
    /// is retired. Manifests the old key signed must be re-signed first (as
    /// `dr::writers::rotate_admin` does), or readers ignore them from now on.
    pub async fn hand_over_admin(&mut self, new: Arc<SigningKey>) -> Result<()> {
        if !self.is_signed() {
            return Err(Error::invalid(
                "the repository is not signed: there is no administrative key to hand over \
                 (run `drctl repo upgrade`)",
            ));
        }
        let old = self
            .signer
            .clone()
            .filter(|k| self.config.admin_key.as_deref() == Some(&k.public_key().to_string()))
            .ok_or_else(|| {
                Error::new(
                    ErrorKind::WrongKey,
                    "handing over the administrative key needs the current administrative key: \
                     pass --signing-key FILE (or set DR_SIGNING_KEY)",
                )
            })?;
        if new.public_key() == old.public_key() {
            return Err(Error::invalid(
                "the new administrative key is the current one: generate a new key with \
                 `drctl keygen --signing`",
            ));
        }
        let details = serde_json::json!({ "from": old.key_id(), "to": new.key_id() });
        let head = crate::audit::append(self, &old, "admin-handover", details).await?;
        let mut config = self.config.clone();
        let new_public = new.public_key().to_string();
        config.admin_handovers.push(crate::handover::hand_over(
            &old,
            &config.repository_id,
            new.public_key(),
            head.seq,
        ));
        config.retired_keys.push(crate::handover::RetiredKey {
            public_key: old.public_key().to_string(),
            until_seq: head.seq,
        });
        config.writers.retain(|w| w.public_key != new_public);
        config.admin_key = Some(new_public);
        config.audit_head = Some(head);
        let config = config.signed_by(&new)?;
        let json = serde_json::to_vec_pretty(&config).expect("config serializes");
        self.storage
            .put_bytes(CONFIG_PATH, Bytes::from(json), PutOptions::default())
            .await?;
        self.config = config;
        self.signer = Some(new);
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
    ///
    /// In a signed repository a manifest that does not authenticate is skipped with a warning
    /// naming it, or fails the listing if the handle was made with
    /// [`Repository::refuse_unauthenticated`].
    pub async fn list_backups(&self) -> Result<Vec<Manifest>> {
        let (good, rejected) = self.list_backups_and_rejected().await?;
        if let Some(r) = rejected.first() {
            if self.refuse_unauthenticated {
                return Err(Error::corrupt(format!(
                    "backup '{}' is not authenticated: {}",
                    r.id, r.cause
                )));
            }
        }
        for r in &rejected {
            tracing::warn!(
                "ignoring backup {}: its manifest is not authenticated: {}",
                r.id,
                r.cause
            );
        }
        Ok(good)
    }

    /// Complete backups, newest first, and the committed backups whose manifests failed
    /// authentication (see [`Repository::list_backups`]).
    pub async fn list_backups_and_rejected(&self) -> Result<(Vec<Manifest>, Vec<Rejected>)> {
        let mut out = Vec::new();
        let mut rejected = Vec::new();
        for (id, committed) in self.backup_dirs().await? {
            if committed {
                let (m, value) = self.read_manifest(&id).await?;
                match self.authenticate(&value) {
                    Ok(()) => out.push(m),
                    Err(e) => rejected.push(Rejected {
                        id,
                        cause: e.message().to_string(),
                    }),
                }
            }
        }
        Series::adopt_legacy(out.iter_mut().map(|m| &mut m.series));
        out.sort_by(newest_first);
        Ok((out, rejected))
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

    /// The manifest of backup `id`; in a signed repository it must authenticate.
    pub async fn manifest(&self, id: &str) -> Result<Manifest> {
        let (m, value) = self.read_manifest(id).await?;
        self.authenticate(&value).map_err(|e| {
            Error::corrupt(format!(
                "backup '{id}' is not authenticated: {}",
                e.message()
            ))
        })?;
        Ok(m)
    }

    /// Check a manifest's signature (as read, before any legacy fix-ups), if the repository
    /// is signed: by the administrative key or a listed writer, over this repository's id.
    fn authenticate(&self, manifest: &serde_json::Value) -> Result<()> {
        if !self.is_signed() {
            return Ok(());
        }
        signing::verify_manifest(
            &self.config.manifest_signers(),
            &self.config.repository_id,
            manifest,
        )
    }

    /// Fail unless this handle can sign manifests of this repository (a signed repository
    /// accepts no other): call before encrypting anything.
    pub fn check_can_sign_manifests(&self) -> Result<()> {
        if !self.is_signed() {
            return Ok(());
        }
        let signers = self.config.manifest_signers();
        match &self.signer {
            Some(k) if signers.contains(k.public_key()) => Ok(()),
            Some(k) => Err(Error::new(
                ErrorKind::WrongKey,
                format!(
                    "signing key {} is neither the administrative key nor a writer key of this \
                     repository: an administrator adds it with `drctl key add-writer --public-key {}`",
                    k.key_id(),
                    k.public_key()
                ),
            )),
            None => Err(Error::new(
                ErrorKind::WrongKey,
                "this repository accepts only signed backups: pass --signing-key FILE (or set \
                 DR_SIGNING_KEY), a writer key (`drctl keygen --signing`) that an administrator \
                 added with `drctl key add-writer`",
            )),
        }
    }

    /// Sign `manifest` with this handle's key if the repository is signed (see
    /// [`Repository::check_can_sign_manifests`]); leave it alone otherwise.
    pub fn seal_manifest(&self, manifest: &mut Manifest) -> Result<()> {
        if !self.is_signed() {
            return Ok(());
        }
        self.check_can_sign_manifests()?;
        let key = self.signer.as_ref().expect("checked above");
        manifest.signature = None;
        let value = serde_json::to_value(&*manifest).expect("a manifest serializes");
        manifest.signature = Some(signing::sign_manifest(
            key,
            &self.config.repository_id,
            &value,
        ));
        Ok(())
    }

    pub(crate) async fn read_manifest(&self, id: &str) -> Result<(Manifest, serde_json::Value)> {
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
        let value = serde_json::from_slice(&bytes).expect("parsed above as a manifest");
        Ok((m, value))
    }

    /// Replace the manifest of an already committed backup (pin/unpin, re-wrapped data keys).
    ///
    /// The data objects are untouched. The new manifest must describe the same backup (same
    /// id and objects); the write replaces the old one atomically on every supported store.
    ///
    /// In a signed repository the new manifest is signed with this handle's key; without one,
    /// only changes the signature does not cover (wrapped keys) are accepted.
    pub async fn update_manifest(&self, manifest: &Manifest) -> Result<()> {
        let current = self.manifest(&manifest.id).await?;
        if current.objects != manifest.objects {
            return Err(Error::invalid(format!(
                "refusing to rewrite the manifest of backup '{}' with different objects",
                manifest.id
            )));
        }
        let mut manifest = manifest.clone();
        if self.is_signed() {
            if self.signer.is_some() {
                self.seal_manifest(&mut manifest)?;
                if current.pinned != manifest.pinned || current.labels != manifest.labels {
                    let action = match (current.pinned, manifest.pinned) {
                        (false, true) => "pin",
                        (true, false) => "unpin",
                        _ => "labels",
                    };
                    let details =
                        serde_json::json!({ "backup": manifest.id, "labels": manifest.labels });
                    self.audit(action, details).await?;
                }
            } else {
                let value = serde_json::to_value(&manifest).expect("a manifest serializes");
                self.authenticate(&value).map_err(|_| {
                    Error::new(
                        ErrorKind::WrongKey,
                        format!(
                            "changing backup '{}' needs a signing key (the administrative key or \
                             a writer key): pass --signing-key FILE (or set DR_SIGNING_KEY)",
                            manifest.id
                        ),
                    )
                })?;
            }
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
