//! Signing an existing, unsigned repository (`drctl repo upgrade`): see FORMAT.md,
//! "Upgrading".

use bytes::Bytes;
use serde::Serialize;

use crate::error::{Error, Result, ResultExt};
use crate::repo::Repository;
use crate::storage::{PutOptions, StorageExt};

/// What [`Repository::upgrade`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UpgradeReport {
    /// The administrative key's id.
    pub admin_key_id: String,
    /// Whether `dr-repo.json` was signed now (false: it already was).
    pub signed_state: bool,
    /// Complete backups.
    pub backups: usize,
    /// Manifests signed now.
    pub manifests_signed: usize,
}

impl Repository {
    /// Sign an unsigned repository with this handle's signing key, which becomes its
    /// administrative key: the state first, then every manifest that does not yet
    /// authenticate. Whatever the storage holds now is what gets signed, so run `verify`
    /// first if the bucket may already have been tampered with. Re-running finishes an
    /// interrupted upgrade; on a signed repository it needs the administrative key.
    pub async fn upgrade(&mut self) -> Result<UpgradeReport> {
        let admin = self.signing_key().cloned().ok_or_else(|| {
            Error::invalid(
                "upgrading needs the key that will become the administrative key: pass \
                 --signing-key FILE (create one with `drctl keygen --signing -o admin.key`)",
            )
        })?;
        crate::lease::Lease::exclusive(self, "repository upgrade", None)
            .await?
            .hold(async |lease| {
                let signed_state = !self.is_signed();
                if signed_state {
                    let config = self.config().clone().signed_by(&admin)?;
                    self.save_config(config).await?;
                }
                let (good, rejected) = self.list_backups_and_rejected().await?;
                let mut manifests_signed = 0;
                for r in &rejected {
                    lease.check()?;
                    let (mut m, _) = self.read_manifest(&r.id).await?;
                    self.seal_manifest(&mut m)?;
                    self.storage()
                        .put_bytes(
                            &Self::manifest_path(&m.id),
                            Bytes::from(m.to_json()),
                            PutOptions::default(),
                        )
                        .await
                        .context("backup", &m.id)?;
                    manifests_signed += 1;
                }
                Ok(UpgradeReport {
                    admin_key_id: admin.key_id(),
                    signed_state,
                    backups: good.len() + rejected.len(),
                    manifests_signed,
                })
            })
            .await
    }
}
