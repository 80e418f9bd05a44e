//! Signing keys: the writer keys of backup hosts whose signed manifests a signed repository
//! accepts, and the rotation of the administrative key.
//!
//! A host that writes backups must sign its manifests, or every reader ignores them. It
//! holds its own signing key (`drctl keygen --signing`), whose public half the administrator
//! lists in `dr-repo.json` ([`add_writer`]); the administrative key itself never leaves the
//! administrative host. See FORMAT.md, "Authenticated repository state", for why signatures
//! rather than a shared MAC key.

use std::path::Path;
use std::sync::Arc;

use chrono::Utc;
use dr_core::lease::Lease;
use dr_core::signing::{PublicKey, SigningKey};
use dr_core::{Error, ErrorKind, RepoWriter, Repository, Result};

/// List `public` (named `name`, e.g. its host) as a writer key. Needs the handle's signing
/// key to be the administrative key. Adding a listed key again changes nothing.
pub async fn add_writer(repo: &mut Repository, public: &PublicKey, name: &str) -> Result<bool> {
    Lease::exclusive(repo, "add writer", None)
        .await?
        .hold(async |_| list_writer(repo, public, name).await)
        .await
}

/// [`add_writer`] for a caller that holds the exclusive lease.
async fn list_writer(repo: &mut Repository, public: &PublicKey, name: &str) -> Result<bool> {
    let mut config = repo.config().clone();
    let id = public.key_id();
    if config.writers.iter().any(|w| w.id == id) {
        return Ok(false);
    }
    config.writers.push(RepoWriter {
        id,
        public_key: public.to_string(),
        name: name.to_owned(),
        added_at: Utc::now(),
    });
    repo.save_config(config).await?;
    Ok(true)
}

/// Remove writer key `id`. The backups it signed are re-signed with the administrative key
/// first (those that still authenticate: a forged one stays rejected), so they stay
/// listed. Returns how many were re-signed.
pub async fn remove_writer(repo: &mut Repository, id: &str) -> Result<usize> {
    Lease::exclusive(repo, "remove writer", None)
        .await?
        .hold(async |lease| {
            let mut config = repo.config().clone();
            if !config.writers.iter().any(|w| w.id == id) {
                return Err(Error::new(
                    ErrorKind::NotFound,
                    format!("{id} is not a writer key of this repository"),
                ));
            }
            let mut resigned = 0;
            for m in repo.list_backups().await? {
                if m.signature.as_ref().is_some_and(|s| s.key_id == id) {
                    lease.check()?;
                    repo.update_manifest(&m).await?;
                    resigned += 1;
                }
            }
            // Its audit entries so far stay verifiable; anything it signs later does not.
            let until_seq = dr_core::audit::head_seq(repo).await?;
            for w in config.writers.iter().filter(|w| w.id == id) {
                config.retired_keys.push(dr_core::handover::RetiredKey {
                    public_key: w.public_key.clone(),
                    until_seq,
                });
            }
            config.writers.retain(|w| w.id != id);
            repo.save_config(config).await?;
            Ok(resigned)
        })
        .await
}

/// What [`rotate_admin`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AdminRotation {
    /// The previous administrative key's id.
    pub from: String,
    /// The new one's.
    pub to: String,
    /// Backups whose manifests the previous key had signed, now signed by the new one.
    pub resigned: usize,
}

/// Replace the administrative key (the handle's key) with `new`, under the exclusive
/// lease, in an order that leaves every backup listed if it stops anywhere: `new` is first
/// listed as a writer, then re-signs the manifests the old key signed, then the old key
/// hands over (see `dr_core::handover`). Hosts that pinned the old key follow the handover.
pub async fn rotate_admin(repo: &mut Repository, new: Arc<SigningKey>) -> Result<AdminRotation> {
    let old_id =
        match repo.signing_key() {
            Some(k) => k.key_id(),
            None => return Err(Error::new(
                ErrorKind::WrongKey,
                "rotating the administrative key needs the current one: pass --signing-key FILE",
            )),
        };
    Lease::exclusive(repo, "rotate administrative key", None)
        .await?
        .hold(async |lease| {
            list_writer(repo, new.public_key(), "next administrative key").await?;
            let resigner = repo.clone().with_signing_key(new.clone());
            let mut resigned = 0;
            for m in repo.list_backups().await? {
                if m.signature.as_ref().is_some_and(|s| s.key_id == old_id) {
                    lease.check()?;
                    resigner.update_manifest(&m).await?;
                    resigned += 1;
                }
            }
            repo.hand_over_admin(new.clone()).await?;
            Ok(AdminRotation {
                from: old_id.clone(),
                to: new.key_id(),
                resigned,
            })
        })
        .await
}

/// The signing key in `DR_SIGNING_KEY`'s file, if set (for daemons; drctl has
/// `--signing-key`).
pub fn signing_key_from_env() -> Result<Option<Arc<SigningKey>>> {
    match std::env::var_os("DR_SIGNING_KEY").filter(|v| !v.is_empty()) {
        Some(path) => Ok(Some(Arc::new(dr_crypto::read_signing_key_file(
            Path::new(&path),
        )?))),
        None => Ok(None),
    }
}
