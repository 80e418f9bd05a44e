//! Which administrative key a host trusts for a repository: pinned at first use.
//!
//! A signature only helps if the verifier knows whose it must be: an attacker who can write
//! the bucket could otherwise replace `dr-repo.json` whole, signed with a key of their own.
//! So the first time a host opens a signed repository it records the repository's location,
//! id and administrative public key in a small local file (ssh's `known_hosts`, per
//! repository), and from then on refuses a `dr-repo.json` signed by any other key, one with
//! another repository id, or one without a signature. The pin is keyed by the location (the
//! storage URL without credentials), never by anything the bucket says about itself.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::repo::Repository;
use crate::storage::StorageTarget;

/// A directory of pins, one JSON file per repository location.
#[derive(Debug, Clone)]
pub struct TrustStore {
    dir: PathBuf,
}

/// What a host recorded about a repository when it first opened it signed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    /// The storage location, as [`StorageTarget::describe`] gives it.
    pub location: String,
    /// The repository id it held.
    pub repository_id: String,
    /// Its administrative key (`dr-ed25519-v1-…`).
    pub admin_key: String,
    /// When the pin was recorded.
    pub pinned_at: DateTime<Utc>,
}

/// How a repository's state matched the host's pin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// Signed by the pinned key.
    Matched,
    /// Signed, and pinned now for the first time (the file is named).
    PinnedNow(PathBuf),
    /// Signed by a key that a chain of handovers leads to from the pinned key: pinned now
    /// (the file is named).
    FollowedHandover(PathBuf),
    /// Not signed and never pinned: a repository from before signatures.
    Unsigned,
}

impl TrustStore {
    /// Pins in `dir` (created, mode 0700, when the first pin is written).
    pub fn new(dir: impl Into<PathBuf>) -> TrustStore {
        TrustStore { dir: dir.into() }
    }

    /// `$DR_TRUST_DIR`, else `$XDG_CONFIG_HOME/dr/trust`, else `$HOME/.config/dr/trust`.
    pub fn from_env() -> Option<TrustStore> {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        if let Some(dir) = var("DR_TRUST_DIR") {
            return Some(TrustStore::new(dir));
        }
        let config = var("XDG_CONFIG_HOME")
            .map(PathBuf::from)
            .or_else(|| var("HOME").map(|h| Path::new(&h).join(".config")))?;
        Some(TrustStore::new(config.join("dr").join("trust")))
    }

    /// The pin file of a location.
    pub fn path_for(&self, location: &str) -> PathBuf {
        let digest = ring::digest::digest(&ring::digest::SHA256, location.as_bytes());
        self.dir
            .join(format!("{}.json", hex::encode(&digest.as_ref()[..16])))
    }

    /// Compare the opened repository with the pin for its location; pin it if it is signed
    /// and was never pinned. Fails (one line, naming the pin file) if the repository's
    /// administrative key or id differ from the pin, or it is unsigned but was pinned.
    pub fn check(&self, repo: &Repository) -> Result<PinOutcome> {
        let location = repo.storage().describe();
        let path = self.path_for(&location);
        let config = repo.config();
        let pin = match std::fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice::<Pin>(&bytes).map_err(|e| {
                Error::corrupt(format!("the pin file {} is malformed", path.display()))
                    .with_source(e)
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                return Err(
                    Error::io("reading the pin file", e).with_context("path", path.display())
                )
            }
        };
        match (pin, &config.admin_key) {
            (Some(pin), Some(admin))
                if *admin == pin.admin_key && config.repository_id == pin.repository_id =>
            {
                Ok(PinOutcome::Matched)
            }
            (Some(pin), Some(admin))
                if config.repository_id == pin.repository_id
                    && crate::handover::leads_to_current_admin(&pin.admin_key, config) =>
            {
                let path = self.pin(repo)?;
                tracing::info!(
                    from = %short(&pin.admin_key),
                    to = %short(admin),
                    "followed the handover of the repository's administrative key"
                );
                Ok(PinOutcome::FollowedHandover(path))
            }
            (Some(pin), admin) => Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "dr-repo.json at {location} is {} (repository {}), but this host pinned \
                     administrative key {} of repository {} on {}: the file was replaced; if an \
                     administrator really changed it, remove {} and run again",
                    match admin {
                        Some(a) => format!("signed by another key ({})", short(a)),
                        None => "not signed".into(),
                    },
                    config.repository_id,
                    short(&pin.admin_key),
                    pin.repository_id,
                    pin.pinned_at.format("%Y-%m-%d"),
                    path.display()
                ),
            )),
            (None, Some(admin)) => {
                let pin = Pin {
                    location,
                    repository_id: config.repository_id.clone(),
                    admin_key: admin.clone(),
                    pinned_at: Utc::now(),
                };
                self.write(&path, &pin)?;
                tracing::info!(pin = %path.display(), admin_key = %short(admin), "pinned the repository's administrative key");
                Ok(PinOutcome::PinnedNow(path))
            }
            (None, None) => Ok(PinOutcome::Unsigned),
        }
    }

    /// Record `repo`'s current administrative key, replacing any pin (after an upgrade, or
    /// when an administrator deliberately provisions a host).
    pub fn pin(&self, repo: &Repository) -> Result<PathBuf> {
        let config = repo.config();
        let admin = config.admin_key.clone().ok_or_else(|| {
            Error::invalid(
                "the repository is not signed: nothing to pin (run `drctl repo upgrade`)",
            )
        })?;
        let location = repo.storage().describe();
        let path = self.path_for(&location);
        self.write(
            &path,
            &Pin {
                location,
                repository_id: config.repository_id.clone(),
                admin_key: admin,
                pinned_at: Utc::now(),
            },
        )?;
        Ok(path)
    }

    fn write(&self, path: &Path, pin: &Pin) -> Result<()> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            builder.mode(0o700);
        }
        builder.create(&self.dir).map_err(|e| {
            Error::io("creating the trust directory", e).with_context("path", self.dir.display())
        })?;
        let tmp = path.with_extension("tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(pin).expect("pins serialize"),
        )
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| Error::io("writing the pin file", e).with_context("path", path.display()))
    }
}

/// What a caller demands of a repository's state before using it.
#[derive(Debug, Clone, Default)]
pub struct TrustPolicy {
    /// Pins to check (and record at first use); `None` checks the signature only.
    pub store: Option<TrustStore>,
    /// Refuse a repository whose state is not signed (for anything that encrypts, deletes
    /// or changes the repository).
    pub require_signed: bool,
}

/// Open a repository and check its state against `policy`: the signature (always, if there
/// is one), the pin, and whether unsigned state is acceptable.
pub async fn open_trusted(
    storage: Arc<dyn StorageTarget>,
    policy: &TrustPolicy,
) -> Result<Repository> {
    let repo = Repository::open(storage).await?;
    let outcome = match &policy.store {
        Some(store) => store.check(&repo)?,
        None if repo.is_signed() => PinOutcome::Matched,
        None => PinOutcome::Unsigned,
    };
    if outcome == PinOutcome::Unsigned && policy.require_signed {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "dr-repo.json at {} is not signed, so a change to its keys or retention by \
                 anyone who can write the bucket would go unnoticed: run `drctl repo upgrade` \
                 with the administrative key (--signing-key FILE) first",
                repo.storage().describe()
            ),
        ));
    }
    Ok(repo)
}

/// A public key's id, for messages.
fn short(key: &str) -> String {
    crate::signing::PublicKey::parse(key)
        .map(|k| k.key_id())
        .unwrap_or_else(|_| key.chars().take(30).collect())
}
