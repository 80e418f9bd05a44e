//! Keys and recipients of a repository: turning what a user holds (a key file, an identity
//! file, a passphrase) into encryptors and decryptors, and changing a repository's keys
//! (add, revoke, rotate) by re-wrapping data keys in manifests, never touching data.
//!
//! A repository lists its keys in `dr-repo.json` ([`RepoKey`]). Public-key kinds (`x25519`,
//! `age`) store their public recipient there, so a backup host needs no secret at all:
//! [`public_encryptor`] wraps every new backup's data key for every listed recipient, and
//! the host cannot read what it wrote. Restoring needs a secret: a key file, an identity
//! file, or a passphrase ([`KeySource`]).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use dr_core::lease::Lease;
use dr_core::{
    Decryptor, EncryptionInfo, Encryptor, Error, ErrorKind, Manifest, RepoConfig, RepoKey,
    Repository, Result, Transform,
};
use dr_crypto::{
    AeadDecryptor, AeadEncryptor, AgeDecryptor, AgeEncryptor, AgeRecipient, Cipher, Identity,
    KdfParams, MasterKey, Passphrase, Recipient, AGE_SCHEME, SCHEME,
};
use dr_files::dedup::WrappedObject;

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

/// What a key change did.
#[derive(Debug, Clone, Serialize)]
pub struct RewrapReport {
    /// Complete backups in the repository.
    pub backups: usize,
    /// Manifests rewritten to add wrapped keys.
    pub wraps_added: usize,
    /// Manifests rewritten to remove wrapped keys of revoked keys.
    pub wraps_removed: usize,
    /// Archived WAL files (each has its own wrapped data key, in its record).
    pub wal_files: usize,
    /// WAL records rewritten to add wrapped keys.
    pub wal_wraps_added: usize,
    /// WAL records rewritten to remove wrapped keys of revoked keys.
    pub wal_wraps_removed: usize,
    /// Key ids added to the repository.
    pub added: Vec<String>,
    /// Key ids revoked.
    pub removed: Vec<String>,
    /// The repository's keys afterwards.
    pub keys: Vec<String>,
    /// Wall time.
    pub duration_ms: u64,
}

/// Manifests read or written at once.
const CONCURRENCY: usize = 16;

/// Add `new` as a key of the repository and wrap every backup's data key for it, unwrapping
/// with `opener` (a current key). See [`change_keys`].
pub async fn add_key(
    repo: &mut Repository,
    opener: &Identity,
    new: Recipient,
) -> Result<RewrapReport> {
    change_keys(repo, Some(opener), vec![new], Vec::new()).await
}

/// Revoke key `key_id`: remove it from the repository and its wrapped keys from every
/// manifest. `opener` is needed only if some backup would otherwise be left without a
/// current key (it then gets a wrap for every remaining public recipient). See
/// [`change_keys`].
pub async fn revoke_key(
    repo: &mut Repository,
    opener: Option<&Identity>,
    key_id: &str,
) -> Result<RewrapReport> {
    change_keys(repo, opener, Vec::new(), vec![key_id.to_owned()]).await
}

/// Replace `old` by `new` in one step: add `new` everywhere, then revoke `old`.
pub async fn rotate_key(
    repo: &mut Repository,
    old: &Identity,
    new: Recipient,
) -> Result<RewrapReport> {
    change_keys(repo, Some(old), vec![new], vec![old.key_id()]).await
}

/// Change a repository's keys: add `add`, revoke the key ids in `remove`, and re-wrap every
/// backup's and every archived WAL file's data key to match, rewriting manifests and WAL
/// records only (the data objects keep their bytes and checksums). The pack indexes and the
/// dedup key of deduplicated file backups hold wrapped keys too, and are re-wrapped in the
/// same steps as manifests.
///
/// Order, so that an interruption at any point leaves every backup openable by a current
/// key, and re-running the same call finishes the job:
/// 1. read every manifest and compute the new wraps (nothing is written if any backup could
///    not be re-wrapped: the error names them);
/// 2. write the manifests that gain wrapped keys;
/// 3. write `dr-repo.json` with the new key list;
/// 4. remove the revoked keys' wraps from every manifest (listed again, to include backups
///    committed meanwhile).
///
/// `opener` must be a current key of the repository or one being revoked (so that a rotation
/// interrupted after step 3 can be re-run with the old key). dr-aead-v1 repositories only:
/// an age repository keeps its wrapped keys in each object's header, which cannot change
/// without rewriting the object ([`ErrorKind::Unsupported`], see FORMAT.md).
///
/// The whole change holds the repository's exclusive lease ([`Lease::exclusive`]); if another
/// process holds it, this fails at once with [`ErrorKind::Locked`].
pub async fn change_keys(
    repo: &mut Repository,
    opener: Option<&Identity>,
    add: Vec<Recipient>,
    remove: Vec<String>,
) -> Result<RewrapReport> {
    Lease::exclusive(repo, "key change", None)
        .await?
        .hold(async |lease| change_keys_holding(repo, lease, opener, add, remove).await)
        .await
}

async fn change_keys_holding(
    repo: &mut Repository,
    lease: &Lease,
    opener: Option<&Identity>,
    add: Vec<Recipient>,
    remove: Vec<String>,
) -> Result<RewrapReport> {
    let started = Instant::now();
    let config = repo.config().clone();
    if config.defaults.encryption == AGE_SCHEME {
        return Err(Error::new(
            ErrorKind::Unsupported,
            "keys of an age-format repository cannot be changed: age keeps each backup's \
             wrapped keys in the stored object's header, and dr never rewrites stored objects \
             (see FORMAT.md, \"age format\")",
        ));
    }
    let current: BTreeSet<String> = config.keys.iter().map(|k| k.id.clone()).collect();
    let openers: Vec<Identity> = opener.cloned().into_iter().collect();
    if let Some(o) = opener {
        let id = o.key_id();
        if !current.contains(&id) && !remove.contains(&id) {
            return Err(Error::new(
                ErrorKind::WrongKey,
                format!(
                    "key {id} is not a key of this repository (its keys: {})",
                    describe_keys(&config)
                ),
            ));
        }
    }
    for r in &add {
        if let Recipient::Age(_) = r {
            return Err(Error::invalid(
                "age1… recipients belong to age-format repositories; this repository is \
                 dr-aead-v1: use a dr-x25519-v1-… recipient from `drctl keygen`",
            ));
        }
        if remove.contains(&r.key_id()) {
            return Err(Error::invalid(format!(
                "key {} cannot be added and revoked at once",
                r.key_id()
            )));
        }
    }

    let mut new_config = config.clone();
    for r in &add {
        if !current.contains(&r.key_id()) {
            new_config.keys.push(repo_key(r));
        }
    }
    new_config.keys.retain(|k| !remove.contains(&k.id));
    if new_config.keys.is_empty() {
        return Err(Error::invalid(
            "refusing to revoke the repository's last key: add another key first (or use \
             `drctl key rotate`)",
        ));
    }
    let remaining: BTreeSet<String> = new_config.keys.iter().map(|k| k.id.clone()).collect();
    // Public recipients that remain: a backup left with no current key gets wraps for them.
    // So does the operator's own key, if it stays.
    let mut fallback: Vec<Recipient> = public_recipients(&new_config)?
        .into_iter()
        .chain(add.iter().cloned())
        .collect();
    if let Some(o) = opener {
        if remaining.contains(&o.key_id()) && !fallback.iter().any(|r| r.key_id() == o.key_id()) {
            fallback.push(o.to_recipient());
        }
    }

    // 1. Plan.
    let manifests = read_manifests(repo).await?;
    for id in &remove {
        let listed = current.contains(id);
        let wrapped = manifests
            .iter()
            .any(|m| m.encryption.key_ids().contains(&id.as_str()));
        // A rotation re-run after it completed has nothing left to remove: that is fine.
        if !listed && !wrapped && add.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!(
                    "key {id} is neither a key of this repository nor wrapped in any backup \
                     (already revoked?); its keys: {}",
                    describe_keys(&config)
                ),
            ));
        }
    }
    let wal = crate::wal_keys::read(repo).await?;
    let mut additions = Vec::new();
    let mut wal_additions = Vec::new();
    let mut problems = Vec::new();
    for m in &manifests {
        match plan_addition(m, &openers, &add, &remove, &remaining, &fallback) {
            Ok(Some(updated)) => additions.push(updated),
            Ok(None) => {}
            Err(e) => problems.push(format!("{}: {}", m.id, e.message())),
        }
    }
    // The wrapped keys of deduplicated file backups: pack indexes and the dedup key.
    let mut object_additions = Vec::new();
    for o in dr_files::dedup::wrapped_objects(repo).await? {
        match plan_wraps(
            &o.encryption,
            &openers,
            &add,
            &remove,
            &remaining,
            &fallback,
        ) {
            Ok(Some(encryption)) => object_additions.push(WrappedObject { encryption, ..o }),
            Ok(None) => {}
            Err(e) => problems.push(format!("{}: {}", o.path, e.message())),
        }
    }
    for w in &wal {
        match plan_wraps(
            &w.record.encryption,
            &openers,
            &add,
            &remove,
            &remaining,
            &fallback,
        ) {
            Ok(Some(encryption)) => wal_additions.push(w.with_encryption(encryption)),
            Ok(None) => {}
            Err(e) => problems.push(format!("WAL {}: {}", w.record.name, e.message())),
        }
    }
    if !problems.is_empty() {
        let n = problems.len();
        problems.truncate(3);
        return Err(Error::new(
            ErrorKind::WrongKey,
            format!(
                "{n} backup(s) or WAL file(s) could not be re-wrapped, nothing was changed: {}{}",
                problems.join("; "),
                if n > 3 { "; …" } else { "" }
            ),
        ));
    }

    // 2. Add wraps.
    lease.check()?;
    let wraps_added = additions.len() + object_additions.len();
    write_manifests(repo, additions).await?;
    write_objects(repo, object_additions).await?;
    let wal_wraps_added = wal_additions.len();
    crate::wal_keys::write(repo, wal_additions).await?;

    // 3. The new key list.
    lease.check()?;
    if new_config != config {
        repo.save_config(new_config.clone()).await?;
    }

    // 4. Remove revoked wraps, from every backup committed by now.
    let mut removals = Vec::new();
    if !remove.is_empty() {
        for m in read_manifests(repo).await? {
            if !m
                .encryption
                .key_ids()
                .iter()
                .any(|id| remove.iter().any(|r| r == id))
            {
                continue;
            }
            // A backup committed after step 1 may still need its new wraps.
            let wanted = fallback_for(&m.encryption, &add, &remaining, &fallback);
            let info = dr_crypto::rewrap(&m.encryption, &openers, &wanted, &remove)
                .map_err(|e| e.with_context("backup", &m.id))?;
            removals.push(Manifest {
                encryption: info,
                ..m
            });
        }
    }
    let mut object_removals = Vec::new();
    if !remove.is_empty() {
        for o in dr_files::dedup::wrapped_objects(repo).await? {
            if !o
                .encryption
                .key_ids()
                .iter()
                .any(|id| remove.iter().any(|r| r == id))
            {
                continue;
            }
            let wanted = fallback_for(&o.encryption, &add, &remaining, &fallback);
            let encryption = dr_crypto::rewrap(&o.encryption, &openers, &wanted, &remove)
                .map_err(|e| e.with_context("object", &o.path))?;
            object_removals.push(WrappedObject { encryption, ..o });
        }
    }
    let mut wal_removals = Vec::new();
    if !remove.is_empty() {
        for w in crate::wal_keys::read(repo).await? {
            let enc = &w.record.encryption;
            if !enc
                .key_ids()
                .iter()
                .any(|id| remove.iter().any(|r| r == id))
            {
                continue;
            }
            // A file pushed after step 1 may still need its new wraps.
            let wanted = fallback_for(enc, &add, &remaining, &fallback);
            let info = dr_crypto::rewrap(enc, &openers, &wanted, &remove)
                .map_err(|e| e.with_context("WAL file", &w.record.name))?;
            wal_removals.push(w.with_encryption(info));
        }
    }
    lease.check()?;
    let wraps_removed = removals.len() + object_removals.len();
    write_manifests(repo, removals).await?;
    write_objects(repo, object_removals).await?;
    let wal_wraps_removed = wal_removals.len();
    crate::wal_keys::write(repo, wal_removals).await?;

    Ok(RewrapReport {
        backups: manifests.len(),
        wraps_added,
        wraps_removed,
        wal_files: wal.len(),
        wal_wraps_added,
        wal_wraps_removed,
        added: add.iter().map(Recipient::key_id).collect(),
        removed: remove,
        keys: new_config.keys.iter().map(|k| k.id.clone()).collect(),
        duration_ms: started.elapsed().as_millis() as u64,
    })
}

/// The recipients a backup's (or WAL file's, or pack index's) data key must gain: the added
/// ones, plus, if after removal it would be left with no current key, every remaining public
/// recipient.
fn fallback_for(
    info: &EncryptionInfo,
    add: &[Recipient],
    remaining: &BTreeSet<String>,
    fallback: &[Recipient],
) -> Vec<Recipient> {
    // `remaining` already excludes the revoked keys.
    let keeps_current = info
        .key_ids()
        .into_iter()
        .map(str::to_owned)
        .chain(add.iter().map(Recipient::key_id))
        .any(|id| remaining.contains(&id));
    if keeps_current {
        add.to_vec()
    } else {
        let mut all = add.to_vec();
        all.extend(fallback.iter().cloned());
        all
    }
}

/// The manifest with its new wraps, or `None` if it needs none.
fn plan_addition(
    m: &Manifest,
    openers: &[Identity],
    add: &[Recipient],
    remove: &[String],
    remaining: &BTreeSet<String>,
    fallback: &[Recipient],
) -> Result<Option<Manifest>> {
    let planned = plan_wraps(&m.encryption, openers, add, remove, remaining, fallback)?;
    Ok(planned.map(|info| Manifest {
        encryption: info,
        ..m.clone()
    }))
}

/// The wraps `info` must have after the change, or `None` if it gains none.
fn plan_wraps(
    info: &EncryptionInfo,
    openers: &[Identity],
    add: &[Recipient],
    remove: &[String],
    remaining: &BTreeSet<String>,
    fallback: &[Recipient],
) -> Result<Option<EncryptionInfo>> {
    if info.scheme == "none" {
        return Ok(None);
    }
    if info.scheme != SCHEME {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "its encryption scheme {:?} cannot be re-wrapped",
                info.scheme
            ),
        ));
    }
    let wanted = fallback_for(info, add, remaining, fallback);
    let missing: Vec<Recipient> = wanted
        .into_iter()
        .filter(|r| !info.key_ids().contains(&r.key_id().as_str()))
        .collect();
    if missing.is_empty() {
        let after: Vec<&str> = info
            .key_ids()
            .into_iter()
            .filter(|id| !remove.iter().any(|r| r == id))
            .collect();
        if !after.iter().any(|id| remaining.contains(*id)) {
            return Err(Error::new(
                ErrorKind::WrongKey,
                "it opens only with keys being revoked and the repository has no public \
                 recipient to re-wrap it for",
            ));
        }
        return Ok(None);
    }
    if openers.is_empty() {
        return Err(Error::new(
            ErrorKind::WrongKey,
            format!(
                "adding its wrapped keys needs one of its keys ({}): pass --key-file",
                info.key_ids().join(", ")
            ),
        ));
    }
    dr_crypto::rewrap(info, openers, &missing, &[]).map(Some)
}

/// Every complete backup's manifest, read concurrently.
async fn read_manifests(repo: &Repository) -> Result<Vec<Manifest>> {
    let ids: BTreeSet<String> = repo
        .storage()
        .list(dr_core::repo::BACKUPS_PREFIX)
        .await?
        .into_iter()
        .filter_map(|o| {
            let rest = o.path.strip_prefix(dr_core::repo::BACKUPS_PREFIX)?;
            let (id, name) = rest.split_once('/')?;
            (name == "manifest.json").then(|| id.to_owned())
        })
        .collect();
    futures::stream::iter(ids)
        .map(|id| async move { repo.manifest(&id).await })
        .buffered(CONCURRENCY)
        .try_collect()
        .await
}

/// Write manifests concurrently (each through [`Repository::update_manifest`], which refuses
/// any change to the objects).
async fn write_manifests(repo: &Repository, manifests: Vec<Manifest>) -> Result<()> {
    futures::stream::iter(manifests)
        .map(|m| async move { repo.update_manifest(&m).await })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

/// Rewrite pack indexes and the dedup key object with new wraps, concurrently.
async fn write_objects(repo: &Repository, objects: Vec<WrappedObject>) -> Result<()> {
    futures::stream::iter(objects)
        .map(|o| async move { dr_files::dedup::rewrite_wrapped(repo, &o).await })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}

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
