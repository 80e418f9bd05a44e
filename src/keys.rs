//! Turning what a user holds (a key file, a passphrase) into the repository's key.

use std::path::PathBuf;

use chrono::Utc;
use dr_core::{Error, ErrorKind, RepoConfig, RepoKey, Repository, Result};
use dr_crypto::{AeadDecryptor, AeadEncryptor, Cipher, KdfParams, MasterKey, Passphrase};

/// Where the repository key comes from. Never from argv: a file path, or a passphrase read
/// from the environment or a prompt.
#[derive(Debug)]
pub enum KeySource {
    /// A key file written by `drctl keygen`.
    File(PathBuf),
    /// A passphrase, stretched with the KDF parameters stored in the repository.
    Passphrase(Passphrase),
}

impl KeySource {
    /// A new repository key entry for `init`: the key and its public registration.
    pub fn register(&self) -> Result<(MasterKey, RepoKey)> {
        let (key, kind, kdf) = match self {
            KeySource::File(path) => (dr_crypto::read_key_file(path)?, "key-file", None),
            KeySource::Passphrase(p) => {
                let params = KdfParams::generate()?;
                let key = MasterKey::from_passphrase(p, &params)?;
                let json = serde_json::to_value(&params).expect("KDF parameters serialize");
                (key, "passphrase", Some(json))
            }
        };
        let entry = RepoKey {
            id: key.key_id(),
            kind: kind.into(),
            added_at: Utc::now(),
            kdf,
        };
        Ok((key, entry))
    }

    /// The repository key this source holds, checked against the repository's key list, so
    /// that a wrong key fails before any work starts.
    pub fn unlock(&self, config: &RepoConfig) -> Result<MasterKey> {
        let known: Vec<&str> = config.keys.iter().map(|k| k.id.as_str()).collect();
        match self {
            KeySource::File(path) => {
                let key = dr_crypto::read_key_file(path)?;
                let id = key.key_id();
                if known.contains(&id.as_str()) {
                    Ok(key)
                } else {
                    Err(Error::new(
                        ErrorKind::WrongKey,
                        format!(
                            "key file {} holds key {id}, which is not a key of this repository (its keys: {})",
                            path.display(),
                            known.join(", ")
                        ),
                    ))
                }
            }
            KeySource::Passphrase(p) => {
                for entry in config.keys.iter().filter(|k| k.kind == "passphrase") {
                    let Some(kdf) = &entry.kdf else { continue };
                    let params: KdfParams = serde_json::from_value(kdf.clone()).map_err(|e| {
                        Error::corrupt(format!("KDF parameters of key {} are malformed", entry.id))
                            .with_source(e)
                    })?;
                    let key = MasterKey::from_passphrase(p, &params)?;
                    if key.key_id() == entry.id {
                        return Ok(key);
                    }
                }
                Err(Error::new(
                    ErrorKind::WrongKey,
                    format!(
                        "the passphrase opens none of this repository's keys (its keys: {})",
                        known.join(", ")
                    ),
                ))
            }
        }
    }
}

/// The encryptor for new backups in `repo`: the repository's cipher, data keys wrapped for
/// `key`.
pub fn encryptor(repo: &Repository, key: MasterKey) -> Result<AeadEncryptor> {
    let cipher: Cipher = repo.config().defaults.cipher.parse()?;
    AeadEncryptor::new(cipher, vec![key])
}

/// The decryptor for backups in `repo`.
pub fn decryptor(key: MasterKey) -> AeadDecryptor {
    AeadDecryptor::new(vec![key])
}
