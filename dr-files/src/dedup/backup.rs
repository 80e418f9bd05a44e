//! A deduplicated backup: read what changed, chunk it, store the chunks nobody stored yet,
//! then commit the snapshot.
//!
//! Four stages, each bounded: the walk (`walk.rs`, one thread, tree order) decides which
//! files to read; the readers (`readers.rs`, one thread per core by default) read, chunk,
//! hash and compress them; the packer fills packs and encrypts them; this task uploads
//! them. Sealed packs go to the upload over a channel of one, so memory stays near two
//! packs plus a read buffer per reader.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::TryStreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use dr_core::{
    BackupOptions, Dump, DumpCompletion, DumpStats, Dumper, Encryptor, Error, ErrorKind, Manifest,
    Repository, Result, SourceInfo, StorageTarget,
};

use dr_core::lease::Lease;

use super::key::DedupKey;
use super::pack::{Blob, BlobCompressor, Catalog, PackBuilder, SealedPack, INDEX_PREFIX};
use super::readers::{ReadDone, ReadJob, Readers};
use super::source::{list_objects, ListedObject, TreeSource};
use super::spool::{ParentTree, SpooledTree};
use super::tree::{Tree, TREE_FORMAT};
use super::walk::{Walk, WalkInput, Walked, WINDOW};
use crate::{files_stats, SOURCE_KIND};

/// What a deduplicated backup did (drctl prints it as the backup's JSON report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilesReport {
    /// The backup (snapshot) id.
    pub id: String,
    /// What the walk counted (flattened: the JSON report has these fields at its top).
    #[serde(flatten)]
    pub counts: FileCounts,
    /// Bytes stored by this backup: new packs, their indexes' data and the snapshot tree.
    pub bytes_stored: u64,
    /// Packs written.
    pub packs_new: u64,
    /// The snapshot this one was compared with, if any.
    pub parent: Option<String>,
}

/// The files a backup saw, read and stored: counted by the walk, reported as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FileCounts {
    /// Regular files (objects) in the snapshot.
    pub files: u64,
    /// Files read (new or changed since the parent snapshot).
    pub files_read: u64,
    /// Files carried over from the parent snapshot without reading them.
    pub files_unchanged: u64,
    /// Bytes of all regular files in the snapshot.
    pub bytes_total: u64,
    /// Bytes read from files.
    pub bytes_read: u64,
    /// Chunks no pack held before this backup.
    pub chunks_new: u64,
    /// Their bytes before compression.
    pub bytes_new: u64,
}

/// Back up the tree of `source` into `repo` as a deduplicated snapshot.
///
/// `parent` is the previous snapshot of the same series (its tree spooled by
/// [`ParentTree::read`]), whose unchanged files are carried over; `None` reads every file (chunks already stored are still not
/// stored again). The snapshot is committed (its manifest written) only after every pack it
/// needs is stored and indexed. Files are read by [`default_readers`] threads.
pub async fn backup_tree(
    repo: &Repository,
    source: &TreeSource,
    encryptor: Arc<dyn Encryptor>,
    dedup: &DedupKey,
    parent: Option<ParentTree>,
    opts: &BackupOptions,
) -> Result<(Manifest, FilesReport)> {
    let readers = default_readers();
    backup_tree_with_readers(repo, source, encryptor, dedup, parent, opts, readers).await
}

/// The number of file readers a backup uses: one per core.
pub fn default_readers() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// [`backup_tree`] with `readers` threads reading files (at least one). The snapshot is the
/// same for any number: only the order of chunks in packs differs.
pub async fn backup_tree_with_readers(
    repo: &Repository,
    source: &TreeSource,
    encryptor: Arc<dyn Encryptor>,
    dedup: &DedupKey,
    parent: Option<ParentTree>,
    opts: &BackupOptions,
    readers: usize,
) -> Result<(Manifest, FilesReport)> {
    repo.check_can_sign_manifests()?;
    let input = match source {
        TreeSource::Dir(root) => {
            let meta = tokio::fs::metadata(root).await.map_err(|e| {
                Error::io("cannot read the directory to back up", e)
                    .with_context("directory", root.display())
            })?;
            if !meta.is_dir() {
                return Err(
                    Error::invalid("not a directory").with_context("directory", root.display())
                );
            }
            WalkSource::Dir(root.clone())
        }
        TreeSource::Bucket { store, .. } => WalkSource::Objects {
            objects: list_objects(&**store).await?,
            store: store.clone(),
            runtime: tokio::runtime::Handle::current(),
        },
    };
    let name = source.name();
    let storage_class = opts
        .storage_class
        .clone()
        .or_else(|| repo.config().defaults.storage_class.clone());

    // Held until the snapshot is committed: prune (exclusive) cannot delete a pack this
    // backup reuses meanwhile.
    let lease = Lease::shared(repo, &format!("deduplicated backup of {name}"), None).await?;
    lease
        .hold(async |lease| {
            let catalog = Arc::new(Catalog::load_locations(repo).await?);
            let parent = parent.filter(|p| p.header.dedup_key == dedup.key_id());
            let parent_id = parent.as_ref().map(|p| p.id.clone());

            // The walk and its readers, the packer, and the upload (this task).
            let (tx, mut rx) = mpsc::channel::<SealedPack>(1);
            // Stored pack buffers the upload gives back to the packer (see `seal_into`).
            let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Vec<u8>>();
            let (blob_tx, blob_rx) = std::sync::mpsc::sync_channel::<Blob>(BLOBS_IN_FLIGHT);
            let walk = {
                let dedup = dedup.clone();
                let catalog = catalog.clone();
                tokio::task::spawn_blocking(move || {
                    walk_with_readers(input, dedup, catalog, parent.as_ref(), blob_tx, readers)
                })
            };
            let packer = {
                let dedup = dedup.clone();
                let encryptor = encryptor.clone();
                tokio::task::spawn_blocking(move || {
                    pack_blobs(blob_rx, &*encryptor, &dedup, tx, spare_rx)
                })
            };
            let mut report = FilesReport {
                parent: parent_id,
                ..Default::default()
            };
            let mut upload_error = None;
            while let Some(pack) = rx.recv().await {
                if upload_error.is_some() {
                    continue;
                }
                report.bytes_stored += pack.stored.len() as u64;
                report.packs_new += 1;
                match pack.upload_and_reclaim(repo, storage_class.clone()).await {
                    Ok((_, Some(buffer))) => {
                        let _ = spare_tx.send(buffer); // the packer may be done: no matter
                    }
                    Ok((_, None)) => {}
                    Err(e) => {
                        upload_error = Some(e);
                        rx.close();
                    }
                }
            }
            let walked = walk.await.map_err(|e| {
                Error::new(ErrorKind::Other, "the backup walk failed").with_source(e)
            })?;
            let packed = packer
                .await
                .map_err(|e| Error::new(ErrorKind::Other, "the packer failed").with_source(e))?;
            if let Some(e) = upload_error {
                return Err(e);
            }
            // The walk's error explains a stopped packer better than the packer does, and the other
            // way round.
            let Walked {
                tree,
                counts,
                packs_used,
            } = match (walked, packed) {
                (Ok(walked), Ok(())) => walked,
                (Err(e), _) if e.kind() != ErrorKind::Cancelled => return Err(e),
                (_, Err(e)) | (Err(e), Ok(())) => return Err(e),
            };
            report.counts = counts;

            check_reused_packs_remain(repo, &catalog, &packs_used).await?;
            lease.check()?;

            let manifest = commit_tree(repo, tree, name, &*encryptor, opts).await?;
            report.bytes_stored += manifest.stored_bytes;
            report.id = manifest.id.clone();
            Ok((manifest, report))
        })
        .await
}

/// Commit `tree` as a snapshot of the directory `name`: its payload goes through dr-core's
/// pipeline (compressed, encrypted, signed manifest written last). The packs it references
/// must already be indexed. [`backup_tree`] ends with this; tests use it to store crafted
/// trees.
pub async fn commit_snapshot(
    repo: &Repository,
    tree: &Tree,
    name: String,
    encryptor: &dyn Encryptor,
    opts: &BackupOptions,
) -> Result<Manifest> {
    commit_tree(repo, SpooledTree::of(tree)?, name, encryptor, opts).await
}

/// [`commit_snapshot`] of a spooled tree: its JSON lines are read from the spool as the
/// pipeline takes them, never held whole.
async fn commit_tree(
    repo: &Repository,
    tree: SpooledTree,
    name: String,
    encryptor: &dyn Encryptor,
    opts: &BackupOptions,
) -> Result<Manifest> {
    let (files, bytes) = (tree.files, tree.bytes);
    let dumper = TreeDumper {
        tree,
        source: SourceInfo {
            kind: SOURCE_KIND.into(),
            format: TREE_FORMAT.into(),
            name,
            origin: Some(dr_core::names::host_name()),
            ..Default::default()
        },
        stats: files_stats(files, bytes),
    };
    dr_core::backup(repo, &dumper, encryptor, opts).await
}

/// Fail if a pack this snapshot takes chunks from (`packs_used`, numbers in `catalog`) lost
/// its index while the walk ran (a concurrent prune): committing would record a snapshot
/// that cannot be restored.
async fn check_reused_packs_remain(
    repo: &Repository,
    catalog: &Catalog,
    packs_used: &HashSet<u32>,
) -> Result<()> {
    let listed: HashSet<String> = repo
        .storage()
        .list(INDEX_PREFIX)
        .await?
        .into_iter()
        .map(|o| o.path)
        .collect();
    for &n in packs_used {
        let pack = &catalog.packs[n as usize].pack;
        if !listed.contains(&super::pack::PackIndex::index_path(pack)) {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "pack '{pack}' was removed while the backup ran (a prune?): run the backup again"
                ),
            ));
        }
    }
    Ok(())
}

/// Blobs in flight between the readers and the packer (at most a chunk, 8 MiB, each; about
/// 1 MiB for most).
const BLOBS_IN_FLIGHT: usize = 8;

/// Run the walk of `input` with `readers` reader threads; new chunks go to `blobs`.
fn walk_with_readers(
    input: WalkSource,
    dedup: DedupKey,
    catalog: Arc<Catalog>,
    parent: Option<&ParentTree>,
    blobs: std::sync::mpsc::SyncSender<Blob>,
    readers: usize,
) -> Result<Walked> {
    let (input, objects) = match input {
        WalkSource::Dir(root) => (WalkInput::Dir(root), None),
        WalkSource::Objects {
            store,
            objects,
            runtime,
        } => (WalkInput::Objects(objects), Some((store, runtime))),
    };
    let compressors = (0..readers.max(1))
        .map(|_| BlobCompressor::new())
        .collect::<Result<Vec<_>>>()?;
    let shared = Readers::new(dedup.clone(), catalog.clone(), blobs, objects);
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<ReadJob>(WINDOW);
    let (done_tx, done_rx) = std::sync::mpsc::sync_channel::<ReadDone>(WINDOW);
    let job_rx = std::sync::Mutex::new(job_rx);
    std::thread::scope(|scope| {
        for compressor in compressors {
            let done = done_tx.clone();
            let (shared, job_rx) = (&shared, &job_rx);
            std::thread::Builder::new()
                .name("dr-files-reader".into())
                .spawn_scoped(scope, move || shared.run(job_rx, done, compressor))
                .map_err(|e| Error::io("cannot start a file reader thread", e))?;
        }
        drop(done_tx);
        // The walk owns the job queue: when it returns, the queue closes and the readers end.
        let walked =
            Walk::new(dedup, catalog, parent, job_tx, done_rx).and_then(|walk| walk.run(input));
        if walked.is_err() {
            shared.stop();
        }
        walked
    })
}

/// The packer: put each blob into the current pack, seal full packs and hand them to the
/// upload. One plaintext buffer serves every pack, and sealed packs go into the buffers the
/// upload gives back on `spare` (at most three exist: sealing, queued, uploading).
fn pack_blobs(
    blobs: std::sync::mpsc::Receiver<Blob>,
    encryptor: &dyn Encryptor,
    dedup: &DedupKey,
    packs: mpsc::Sender<SealedPack>,
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
) -> Result<()> {
    let mut pack = PackBuilder::default();
    let send = |pack: &mut PackBuilder| {
        let sealed = pack.seal_into(encryptor, dedup, spare.try_recv().unwrap_or_default())?;
        packs
            .blocking_send(sealed)
            .map_err(|_| Error::new(ErrorKind::Cancelled, "the pack upload stopped"))
    };
    for blob in blobs {
        pack.add(&blob);
        if pack.is_full() {
            send(&mut pack)?;
        }
    }
    if !pack.is_empty() {
        send(&mut pack)?;
    }
    Ok(())
}

/// What a backup walks.
enum WalkSource {
    /// A directory.
    Dir(PathBuf),
    /// A bucket prefix, listed before the walk; objects are read through `runtime`.
    Objects {
        store: Arc<dyn StorageTarget>,
        objects: Vec<ListedObject>,
        runtime: tokio::runtime::Handle,
    },
}

/// A [`Dumper`] of a finished snapshot tree, so the tree goes through dr-core's pipeline
/// (compression, encryption, signed manifest) like any payload.
struct TreeDumper {
    tree: SpooledTree,
    source: SourceInfo,
    stats: DumpStats,
}

struct TreeDone(DumpStats);

#[async_trait]
impl DumpCompletion for TreeDone {
    async fn finish(self: Box<Self>) -> Result<DumpStats> {
        Ok(self.0)
    }
}

/// Bytes of JSON lines per piece of the payload stream.
const TREE_PIECE_BYTES: usize = 1 << 20;

#[async_trait]
impl Dumper for TreeDumper {
    async fn start(&self) -> Result<Dump> {
        let file = tokio::fs::File::open(self.tree.path())
            .await
            .map_err(|e| Error::io("cannot read the spooled snapshot tree", e))?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, TREE_PIECE_BYTES)
            .map_err(|e| Error::io("cannot read the spooled snapshot tree", e));
        Ok(Dump {
            source: self.source.clone(),
            stream: Box::pin(stream),
            size_hint: Some(self.tree.len),
            completion: Box::new(TreeDone(self.stats.clone())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_json_keeps_the_counts_at_its_top_in_the_same_order() {
        let report = FilesReport {
            id: "b".into(),
            counts: FileCounts {
                files: 1,
                files_read: 2,
                files_unchanged: 3,
                bytes_total: 4,
                bytes_read: 5,
                chunks_new: 6,
                bytes_new: 7,
            },
            bytes_stored: 8,
            packs_new: 9,
            parent: None,
        };
        assert_eq!(
            serde_json::to_string(&report).unwrap(),
            r#"{"id":"b","files":1,"files_read":2,"files_unchanged":3,"bytes_total":4,"bytes_read":5,"chunks_new":6,"bytes_new":7,"bytes_stored":8,"packs_new":9,"parent":null}"#
        );
    }
}
