//! Keys and recipients of a repository: turning what a user holds (a key file, an identity
//! file, a passphrase) into encryptors and decryptors, and changing a repository's keys
//! (add, revoke, rotate) by re-wrapping data keys in manifests, never touching data.
//!
//! A repository lists its keys in `dr-repo.json` ([`RepoKey`]). Public-key kinds (`x25519`,
//! `age`) store their public recipient there, so a backup host needs no secret at all:
//! [`public_encryptor`] wraps every new backup's data key for every listed recipient, and
//! the host cannot read what it wrote. Restoring needs a secret: a key file, an identity
//! file, or a passphrase ([`KeySource`]).

use std::path::PathBuf;

use chrono::Utc;

use dr_core::{
    Decryptor, EncryptionInfo, Encryptor, Error, ErrorKind, RepoConfig, RepoKey, Repository,
    Result, Transform,
};
use dr_crypto::{
    AeadDecryptor, AeadEncryptor, AgeDecryptor, AgeEncryptor, AgeRecipient, Cipher, Identity,
    KdfParams, MasterKey, Passphrase, Recipient, AGE_SCHEME, SCHEME,
};

/// Where the repository key comes from. Never from argv: a file path, or a passphrase read
/// from the environment or a prompt.
#[derive(Debug)]
pub enum KeySource {
    /// A key file or identity file: `drctl keygen` (X25519 identity), `drctl keygen
    /// --symmetric` (symmetric key), or `age-keygen` (age identity).
    File(PathBuf),
    /// A passphrase, stretched with the KDF parameters stored in the repository.
    Passphrase(Passphrase),
}

impl KeySource {
    /// A new repository key entry for `init`: the key and its public registration. A
    /// passphrase gets fresh KDF parameters (stored in the entry).
    pub fn register(&self) -> Result<(Identity, RepoKey)> {
        match self {
            KeySource::File(path) => {
                let identity = dr_crypto::read_identity_file(path)?;
                let entry = repo_key(&identity.to_recipient());
                Ok((identity, entry))
            }
            KeySource::Passphrase(p) => {
                let params = KdfParams::generate()?;
                let key = MasterKey::from_passphrase(p, &params)?;
                let json = serde_json::to_value(&params).expect("KDF parameters serialize");
                let entry = RepoKey {
                    id: key.key_id(),
                    kind: "passphrase".into(),
                    added_at: Utc::now(),
                    kdf: Some(json),
                    recipient: None,
                };
                Ok((Identity::Symmetric(key), entry))
            }
        }
    }

    /// The secret this source holds, checked against the repository's key list, so that a
    /// wrong key fails before any work starts ([`ErrorKind::WrongKey`]).
    pub fn unlock(&self, config: &RepoConfig) -> Result<Identity> {
        let known: Vec<&str> = config.keys.iter().map(|k| k.id.as_str()).collect();
        match self {
            KeySource::File(path) => {
                let key = dr_crypto::read_identity_file(path)?;
                let id = key.key_id();
                if known.contains(&id.as_str()) {
                    Ok(key)
                } else {
                    Err(Error::new(
                        ErrorKind::WrongKey,
                        format!(
                            "key file {} holds key {id}, which is not a key of this repository (its keys: {})",
                            path.display(),
                            describe_keys(config)
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
                        return Ok(Identity::Symmetric(key));
                    }
                }
                Err(Error::new(
                    ErrorKind::WrongKey,
                    format!(
                        "the passphrase opens none of this repository's keys (its keys: {})",
                        describe_keys(config)
                    ),
                ))
            }
        }
    }
}

/// The keys a new repository starts with: the secret key `source` (a key file's identity, or
/// a passphrase with fresh KDF parameters) and every public recipient in `recipients` (their
/// text, e.g. `dr-x25519-v1-…` or `age1…`), without repeats. Refuses an empty list, and a key
/// the repository's `encryption` scheme cannot use: an age repository takes age keys only,
/// a dr-aead-v1 repository no age key.
pub fn initial_keys(
    source: Option<&KeySource>,
    recipients: &[String],
    encryption: &str,
) -> Result<Vec<RepoKey>> {
    let mut keys: Vec<RepoKey> = Vec::new();
    if let Some(source) = source {
        let (_, entry) = source.register()?;
        keys.push(entry);
    }
    for text in recipients {
        let entry = repo_key(&Recipient::parse(text)?);
        if !keys.iter().any(|k| k.id == entry.id) {
            keys.push(entry);
        }
    }
    if keys.is_empty() {
        return Err(Error::invalid(
            "no key given: pass --recipient PUB (repeatable; from `drctl keygen`), or \
         --key-file FILE (or set DR_KEY_FILE), or set DR_PASSPHRASE",
        ));
    }
    let age_repository = encryption == AGE_SCHEME;
    for k in &keys {
        if age_repository != (k.kind == "age") {
            return Err(Error::invalid(if age_repository {
                format!(
                    "key {} is of kind {}: an age-format repository takes age1… recipients and \
                 age identity files (age-keygen) only",
                    k.id, k.kind
                )
            } else {
                format!(
                    "key {} is an age key: pass --format age for an age-format repository",
                    k.id
                )
            }));
        }
    }
    Ok(keys)
}

/// `id (kind), …` for messages.
pub fn describe_keys(config: &RepoConfig) -> String {
    if config.keys.is_empty() {
        return "none".into();
    }
    config
        .keys
        .iter()
        .map(|k| format!("{} ({})", k.id, k.kind))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The registration of `recipient` in `dr-repo.json`: its id and kind, and for public kinds
/// the public text. A symmetric key registers as `key-file`.
pub fn repo_key(recipient: &Recipient) -> RepoKey {
    RepoKey {
        id: recipient.key_id(),
        kind: recipient.kind().into(),
        added_at: Utc::now(),
        kdf: None,
        recipient: recipient.public_text(),
    }
}

/// The public recipients listed in the repository's configuration (kinds `x25519`, `age`).
pub fn public_recipients(config: &RepoConfig) -> Result<Vec<Recipient>> {
    config
        .keys
        .iter()
        .filter_map(|k| k.recipient.as_deref().map(|r| (k, r)))
        .map(|(k, text)| {
            let r = Recipient::parse(text).map_err(|e| {
                Error::corrupt(format!(
                    "dr-repo.json lists key {} with a malformed public recipient",
                    k.id
                ))
                .with_source(e)
            })?;
            if r.key_id() != k.id {
                return Err(Error::corrupt(format!(
                    "dr-repo.json lists key {} with the public recipient of key {}",
                    k.id,
                    r.key_id()
                )));
            }
            Ok(r)
        })
        .collect()
}

/// Encrypts new backups of a repository with its configured format: `dr-aead-v1` (data keys
/// wrapped in the manifest) or `age` (standard age files).
#[derive(Debug)]
pub enum RepoEncryptor {
    /// `dr-aead-v1`.
    Aead(AeadEncryptor),
    /// Standard age files.
    Age(AgeEncryptor),
}

impl RepoEncryptor {
    /// The ids of the keys every new backup opens with.
    pub fn key_ids(&self) -> Vec<String> {
        match self {
            RepoEncryptor::Aead(e) => e.key_ids(),
            RepoEncryptor::Age(e) => e.key_ids(),
        }
    }
}

impl Encryptor for RepoEncryptor {
    fn encrypt_stream(&self) -> Result<(EncryptionInfo, Box<dyn Transform>)> {
        match self {
            RepoEncryptor::Aead(e) => e.encrypt_stream(),
            RepoEncryptor::Age(e) => e.encrypt_stream(),
        }
    }

    fn encrypt_pieces(&self) -> Result<(EncryptionInfo, Box<dyn dr_core::PieceSealer>)> {
        match self {
            RepoEncryptor::Aead(e) => e.encrypt_pieces(),
            RepoEncryptor::Age(e) => e.encrypt_pieces(),
        }
    }
}

/// The encryptor for new backups in `repo`, for a host that holds `key` (a repository key,
/// see [`KeySource::unlock`]): data keys are wrapped for every public recipient of the
/// repository and, if `key` is symmetric, for `key` too.
pub fn encryptor(repo: &Repository, key: impl Into<Identity>) -> Result<RepoEncryptor> {
    build_encryptor(repo, Some(key.into()))
}

/// The encryptor for a host that holds no secret at all: data keys are wrapped for the
/// repository's public recipients only. Fails with [`ErrorKind::InvalidInput`] if the
/// repository has none (it then needs its key file or passphrase to back up).
pub fn public_encryptor(repo: &Repository) -> Result<RepoEncryptor> {
    build_encryptor(repo, None)
}

fn build_encryptor(repo: &Repository, key: Option<Identity>) -> Result<RepoEncryptor> {
    let config = repo.config();
    let public = public_recipients(config)?;
    if config.defaults.encryption == AGE_SCHEME {
        let recipients: Vec<AgeRecipient> = public
            .into_iter()
            .filter_map(|r| match r {
                Recipient::Age(a) => Some(a),
                _ => None,
            })
            .collect();
        return AgeEncryptor::new(recipients).map(RepoEncryptor::Age);
    }
    if config.defaults.encryption != SCHEME {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "the repository's encryption scheme {:?} is unknown to this dr",
                config.defaults.encryption
            ),
        ));
    }
    let cipher: Cipher = config.defaults.cipher.parse()?;
    let mut recipients = public;
    if let Some(Identity::Symmetric(k)) = key {
        recipients.push(Recipient::Symmetric(k));
    }
    if recipients.is_empty() {
        return Err(Error::invalid(format!(
            "this repository has no public recipients, so backing up needs one of its keys \
             (its keys: {}): pass --key-file FILE (or set DR_KEY_FILE), or set DR_PASSPHRASE",
            describe_keys(config)
        )));
    }
    AeadEncryptor::to_recipients(cipher, recipients).map(RepoEncryptor::Aead)
}

/// Opens backups of either format with the identity it holds.
#[derive(Debug)]
pub struct RepoDecryptor {
    aead: AeadDecryptor,
    age: AgeDecryptor,
}

impl Decryptor for RepoDecryptor {
    fn decrypt_stream(&self, info: &EncryptionInfo) -> Result<Box<dyn Transform>> {
        if info.scheme == AGE_SCHEME {
            self.age.decrypt_stream(info)
        } else {
            self.aead.decrypt_stream(info)
        }
    }

    fn decrypt_piece(&self, info: &EncryptionInfo, name: &str) -> Result<Box<dyn Transform>> {
        if info.scheme == AGE_SCHEME {
            self.age.decrypt_piece(info, name)
        } else {
            self.aead.decrypt_piece(info, name)
        }
    }
}

/// The decryptor for backups opened by `key`.
pub fn decryptor(key: impl Into<Identity>) -> RepoDecryptor {
    let key = key.into();
    match key {
        Identity::Age(a) => RepoDecryptor {
            aead: AeadDecryptor::with_identities(Vec::new()),
            age: AgeDecryptor::new(vec![a]),
        },
        other => RepoDecryptor {
            aead: AeadDecryptor::with_identities(vec![other]),
            age: AgeDecryptor::new(Vec::new()),
        },
    }
}

mod change;
pub use change::{add_key, change_keys, revoke_key, rotate_key, RewrapReport};

#[cfg(test)]
mod tests {
    use super::*;
    use dr_crypto::{AgeIdentity, X25519Identity};

    fn recipient_text(identity: impl Into<Identity>) -> String {
        let identity: Identity = identity.into();
        identity.to_recipient().public_text().expect("a public key")
    }

    #[test]
    fn initial_keys_list_each_key_once_and_only_kinds_the_scheme_can_use() {
        let x = recipient_text(X25519Identity::generate().unwrap());
        let age = recipient_text(AgeIdentity::generate());

        let keys = initial_keys(None, &[x.clone(), x.clone()], SCHEME).unwrap();
        assert_eq!(keys.len(), 1, "a repeated recipient is listed once");
        assert_eq!(keys[0].kind, "x25519");
        assert_eq!(
            initial_keys(None, std::slice::from_ref(&age), AGE_SCHEME).unwrap()[0].kind,
            "age"
        );

        let e = initial_keys(None, &[], SCHEME).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().starts_with("no key given"), "{e}");

        let e = initial_keys(None, &[x, age.clone()], SCHEME).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("is an age key"), "{e}");

        let x25519 = recipient_text(X25519Identity::generate().unwrap());
        let e = initial_keys(None, &[age, x25519], AGE_SCHEME).unwrap_err();
        assert!(
            e.message()
                .contains("is of kind x25519: an age-format repository"),
            "{e}"
        );
    }
}
