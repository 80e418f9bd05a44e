//! Writer keys: the backup hosts whose signed manifests a signed repository accepts.
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
        .hold(async |_| {
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
        })
        .await
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
            config.writers.retain(|w| w.id != id);
            repo.save_config(config).await?;
            Ok(resigned)
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
