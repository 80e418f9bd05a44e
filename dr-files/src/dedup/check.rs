//! Verify and prune the packs of deduplicated file snapshots.
//!
//! Verify reads every pack (size, SHA-256, every authentication tag, every chunk's
//! decompression and, with the dedup key, its id) and checks that every chunk of every
//! snapshot is in a readable pack, naming the files a problem affects. Prune deletes packs
//! no snapshot needs and repacks packs that are mostly unneeded, under the repository's
//! exclusive lease; new packs are indexed before old ones are removed, so every chunk a
//! snapshot needs stays readable at every step.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;

use dr_core::lease::Lease;
use dr_core::{Decryptor, Encryptor, Error, Repository, Result};

use super::key::{ChunkId, DedupKey};
use super::pack::{BlobCompressor, Catalog, OpenPack, PackBuilder, PackIndex, PACKS_PREFIX};
use super::restore::{files_in_pack, is_snapshot, read_tree};
use super::tree::{EntryKind, Tree};

/// What [`verify_packs`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PackVerifyReport {
    /// Packs read.
    pub packs: u64,
    /// Chunks checked.
    pub chunks: u64,
    /// Stored bytes read.
    pub bytes: u64,
    /// Snapshots whose trees were checked.
    pub snapshots: u64,
    /// One line per problem, naming the pack, snapshot and files affected.
    pub problems: Vec<String>,
}

/// Check every pack and every snapshot's references; `dedup` (when known) checks chunk ids.
pub async fn verify_packs(
    repo: &Repository,
    decryptor: &dyn Decryptor,
    dedup: Option<&DedupKey>,
) -> Result<PackVerifyReport> {
    let catalog = Catalog::load(repo).await?;
    let mut report = PackVerifyReport::default();
    let mut damaged: HashSet<u32> = HashSet::new();
    for (n, index) in catalog.packs.iter().enumerate() {
        report.packs += 1;
        let checked = async {
            let pack = OpenPack::read(repo, index, decryptor).await?;
            for blob in &index.blobs {
                pack.chunk(blob, dedup.filter(|k| k.key_id() == index.dedup_key))?;
            }
            Ok::<_, Error>(())
        }
        .await;
        match checked {
            Ok(()) => {
                report.chunks += index.blobs.len() as u64;
                report.bytes += index.size;
            }
            Err(e) => {
                damaged.insert(n as u32);
                report
                    .problems
                    .push(format!("pack '{}': {}", index.pack, e.message()));
            }
        }
    }
    for manifest in repo.list_backups().await?.iter().filter(|m| is_snapshot(m)) {
        report.snapshots += 1;
        let tree = match read_tree(repo, manifest, decryptor).await {
            Ok(t) => t,
            Err(e) => {
                report
                    .problems
                    .push(format!("snapshot '{}': {}", manifest.id, e.message()));
                continue;
            }
        };
        let mut missing = Vec::new();
        for e in &tree.entries {
            if let EntryKind::File { chunks, .. } = &e.kind {
                if !catalog.holds_all(chunks)? {
                    missing.push(e.path.clone());
                }
            }
        }
        if !missing.is_empty() {
            report.problems.push(format!(
                "snapshot '{}': {} file(s) need chunks no pack holds: {}",
                manifest.id,
                missing.len(),
                quote_some(&missing)
            ));
        }
        for &n in &damaged {
            let affected = files_in_pack(&tree.entries, &catalog, n);
            if !affected.is_empty() {
                report.problems.push(format!(
                    "snapshot '{}': damaged pack '{}' holds chunks of {}",
                    manifest.id,
                    catalog.packs[n as usize].pack,
                    quote_some(&affected)
                ));
            }
        }
    }
    Ok(report)
}

fn quote_some(names: &[String]) -> String {
    let mut shown: Vec<String> = names.iter().take(10).map(|n| format!("{n:?}")).collect();
    if names.len() > 10 {
        shown.push(format!("and {} more", names.len() - 10));
    }
    shown.join(", ")
}

/// How to prune packs.
#[derive(Debug, Clone)]
pub struct PackPruneOptions {
    /// Packs (and packs without an index) younger than this are left alone: a running
    /// backup may be about to reference them.
    pub grace: Duration,
    /// A pack whose needed bytes are below this fraction of its size is rewritten with only
    /// those chunks.
    pub repack_below: f64,
    /// Only report what would be done.
    pub dry_run: bool,
}

impl Default for PackPruneOptions {
    fn default() -> Self {
        PackPruneOptions {
            grace: Duration::from_secs(3600),
            repack_below: 0.5,
            dry_run: false,
        }
    }
}

/// What [`prune_packs`] did (or would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PackPruneReport {
    /// Packs deleted because no snapshot needs any of their chunks.
    pub packs_deleted: u64,
    /// Packs rewritten with only their needed chunks.
    pub packs_repacked: u64,
    /// Packs written by repacking.
    pub packs_written: u64,
    /// Pack objects without an index (failed backups) deleted.
    pub orphans_deleted: u64,
    /// Chunks no longer stored.
    pub chunks_removed: u64,
    /// Stored bytes freed (net of the repacked packs' new bytes).
    pub bytes_freed: i64,
}

/// Delete what no snapshot needs, holding `lease` (the exclusive lease; checked before each
/// deletion). Repacking needs `encryptor` (new packs) and `dedup` (their chunk ids are
/// checked as they move).
pub async fn prune_packs(
    repo: &Repository,
    lease: &Lease,
    decryptor: &dyn Decryptor,
    encryptor: &dyn Encryptor,
    dedup: &DedupKey,
    opts: &PackPruneOptions,
) -> Result<PackPruneReport> {
    let (kept, rejected) = repo.list_backups_and_rejected().await?;
    if !rejected.is_empty() {
        return Err(Error::corrupt(format!(
            "refusing to prune packs: backup '{}' is not authenticated, and its chunks must stay \
             until an administrator has looked at it",
            rejected[0].id
        )));
    }
    let mut needed: HashSet<ChunkId> = HashSet::new();
    for manifest in kept.iter().filter(|m| is_snapshot(m)) {
        let tree: Tree = read_tree(repo, manifest, decryptor).await?;
        for e in tree.entries {
            if let EntryKind::File { chunks, .. } = e.kind {
                needed.extend(chunks);
            }
        }
    }
    let catalog = Catalog::load(repo).await?;
    let now = Utc::now();
    let grace = chrono::Duration::from_std(opts.grace).unwrap_or(chrono::Duration::MAX);
    let ages: HashMap<String, chrono::DateTime<Utc>> = repo
        .storage()
        .list(super::pack::INDEX_PREFIX)
        .await?
        .into_iter()
        .map(|o| (o.path, o.last_modified))
        .collect();
    // The pack objects as they are now, before this prune writes any: only these can be
    // orphans of a failed backup. Listed again after repacking, a pack this prune had just
    // written (no index in `ages`, an mtime from the file system's coarse clock that can
    // precede `now`) looked like an orphan past a zero grace and was deleted with its
    // chunks (seen once in CI: `prune_keeps_every_remaining_snapshot_restorable`).
    let pack_objects = repo.storage().list(PACKS_PREFIX).await?;
    let mut report = PackPruneReport::default();
    let mut repack = PackBuilder::default();
    let mut compressor = BlobCompressor::new()?;
    let mut to_remove: Vec<&PackIndex> = Vec::new();
    for index in &catalog.packs {
        let path = PackIndex::index_path(&index.pack);
        if ages.get(&path).is_none_or(|t| now - *t < grace) {
            continue;
        }
        let used: Vec<_> = index
            .blobs
            .iter()
            .filter(|b| needed.contains(&b.id))
            .collect();
        let used_bytes: u64 = used.iter().map(|b| u64::from(b.length)).sum();
        if used.is_empty() {
            report.packs_deleted += 1;
        } else if (used_bytes as f64) < opts.repack_below * index.plain_len() as f64 {
            report.packs_repacked += 1;
            if !opts.dry_run {
                let pack = OpenPack::read(repo, index, decryptor).await?;
                for blob in &used {
                    let id = blob.id;
                    let chunk =
                        pack.chunk(blob, Some(dedup).filter(|k| k.key_id() == index.dedup_key))?;
                    repack.add(&compressor.blob(&id, &chunk)?);
                    // A chunk moves once, even if two packs held it.
                    needed.remove(&id);
                    if repack.is_full() {
                        report.bytes_freed -=
                            write_pack(repo, std::mem::take(&mut repack), encryptor, dedup).await?;
                        report.packs_written += 1;
                    }
                }
            }
        } else {
            continue;
        }
        report.chunks_removed += (index.blobs.len() - used.len()) as u64;
        report.bytes_freed += index.size as i64;
        to_remove.push(index);
    }
    if !opts.dry_run && !repack.is_empty() {
        report.bytes_freed -= write_pack(repo, repack, encryptor, dedup).await?;
        report.packs_written += 1;
    }
    // Indexes first (the chunks are then not found by new backups), then the packs.
    for index in &to_remove {
        if opts.dry_run {
            break;
        }
        lease.check()?;
        repo.storage()
            .delete(&PackIndex::index_path(&index.pack))
            .await?;
        repo.storage().delete(&index.pack_path()).await?;
    }
    // Pack objects that never got an index: failed or killed backups.
    let indexed: HashSet<&str> = catalog.packs.iter().map(|p| p.pack.as_str()).collect();
    for o in pack_objects {
        let name = &o.path[PACKS_PREFIX.len()..];
        if !indexed.contains(name)
            && now - o.last_modified >= grace
            && !ages.contains_key(&PackIndex::index_path(name))
        {
            report.orphans_deleted += 1;
            report.bytes_freed += o.size as i64;
            if !opts.dry_run {
                lease.check()?;
                repo.storage().delete(&o.path).await?;
            }
        }
    }
    Ok(report)
}

async fn write_pack(
    repo: &Repository,
    pack: PackBuilder,
    encryptor: &dyn Encryptor,
    dedup: &DedupKey,
) -> Result<i64> {
    let sealed = pack.seal(encryptor, dedup)?;
    let size = sealed.stored.len() as i64;
    sealed
        .upload(repo, repo.config().defaults.storage_class.clone())
        .await?;
    Ok(size)
}
