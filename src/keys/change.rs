//! Changing a repository's keys (add, revoke, rotate): data keys are re-wrapped in manifests,
//! WAL records, pack indexes and the dedup key, under the exclusive lease; data objects keep
//! their bytes.

use std::collections::BTreeSet;
use std::time::Instant;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use dr_core::lease::Lease;
use dr_core::{EncryptionInfo, Error, ErrorKind, Manifest, Repository, Result};
use dr_crypto::{Identity, Recipient, AGE_SCHEME, SCHEME};
use dr_files::dedup::WrappedObject;

use super::{describe_keys, public_recipients, repo_key};

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
