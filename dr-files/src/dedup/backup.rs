//! The backup walk: read what changed, chunk it, store the chunks nobody stored yet.
//!
//! A file whose path, size and modification time (an object's key, size and ETag) equal the
//! previous snapshot's (of the same series) is not read again: its entry, chunk list
//! included, is carried over, provided every one of its chunks is still in some pack.
//! Everything else is read once, cut into chunks, and each chunk whose id no pack index
//! lists goes into a new pack. The walk (reading, chunking, hashing) and the packer
//! (compressing, encrypting) run on blocking threads; sealed packs go to the upload over a
//! channel of one, so memory stays near two packs.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::TryStreamExt;
use serde::Serialize;
use tokio::sync::mpsc;

use dr_core::{
    BackupOptions, Dump, DumpCompletion, DumpStats, Dumper, Encryptor, Error, ErrorKind, Manifest,
    Repository, Result, SourceInfo, StorageTarget,
};

use dr_core::lease::Lease;

use super::chunker::{chunks, CHUNK_SIZES};
use super::key::{ChunkId, DedupKey};
use super::pack::{Catalog, PackBuilder, SealedPack, INDEX_PREFIX};
use super::source::{list_objects, ListedObject, TreeSource};
use super::tree::{EntryKind, Tree, TreeEntry, TreeHeader, TREE_FORMAT};
use crate::{files_stats, SOURCE_KIND};

/// What a deduplicated backup did (drctl prints it as the backup's JSON report).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilesReport {
    /// The backup (snapshot) id.
    pub id: String,
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
    /// Bytes stored by this backup: new packs, their indexes' data and the snapshot tree.
    pub bytes_stored: u64,
    /// Packs written.
    pub packs_new: u64,
    /// The snapshot this one was compared with, if any.
    pub parent: Option<String>,
}

/// Back up the tree of `source` into `repo` as a deduplicated snapshot.
///
/// `parent` is the previous snapshot of the same series (its id and tree), whose unchanged
/// files are carried over; `None` reads every file (chunks already stored are still not
/// stored again). The snapshot is committed (its manifest written) only after every pack it
/// needs is stored and indexed.
pub async fn backup_tree(
    repo: &Repository,
    source: &TreeSource,
    encryptor: Arc<dyn Encryptor>,
    dedup: &DedupKey,
    parent: Option<(String, Tree)>,
    opts: &BackupOptions,
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
            WalkInput::Dir(root.clone())
        }
        TreeSource::Bucket { store, .. } => WalkInput::Objects {
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
            let catalog = Arc::new(Catalog::load(repo).await?);
            let (parent_id, parent_tree) = match parent {
                Some((id, tree)) if tree.header.dedup_key == dedup.key_id() => {
                    (Some(id), Some(tree))
                }
                _ => (None, None),
            };

            // Three stages on their own threads: the walk (read, chunk, hash), the packer
            // (compress, seal) and the upload (this task).
            let (tx, mut rx) = mpsc::channel::<SealedPack>(1);
            let (chunk_tx, chunk_rx) =
                std::sync::mpsc::sync_channel::<(ChunkId, Vec<u8>)>(CHUNKS_IN_FLIGHT);
            let walk = {
                let dedup = dedup.clone();
                let catalog = catalog.clone();
                tokio::task::spawn_blocking(move || {
                    Walk::new(dedup, catalog, parent_tree, chunk_tx).run(input)
                })
            };
            let packer = {
                let dedup = dedup.clone();
                let encryptor = encryptor.clone();
                tokio::task::spawn_blocking(move || pack_chunks(chunk_rx, &*encryptor, &dedup, tx))
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
                if let Err(e) = pack.upload(repo, storage_class.clone()).await {
                    upload_error = Some(e);
                    rx.close();
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
            let (tree, counts) = match (walked, packed) {
                (Ok(walked), Ok(())) => walked,
                (Err(e), _) if e.kind() != ErrorKind::Cancelled => return Err(e),
                (_, Err(e)) | (Err(e), Ok(())) => return Err(e),
            };
            report.files = counts.files;
            report.files_read = counts.files_read;
            report.files_unchanged = counts.files_unchanged;
            report.bytes_total = counts.bytes_total;
            report.bytes_read = counts.bytes_read;
            report.chunks_new = counts.chunks_new;
            report.bytes_new = counts.bytes_new;

            check_reused_packs_remain(repo, &catalog, &tree).await?;
            lease.check()?;

            let manifest = commit_tree(repo, Arc::new(tree), name, &*encryptor, opts).await?;
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
    commit_tree(repo, Arc::new(tree.clone()), name, encryptor, opts).await
}

/// [`commit_snapshot`] of a tree that is not copied: its JSON lines are made a piece at a
/// time as the pipeline reads them, never held whole.
async fn commit_tree(
    repo: &Repository,
    tree: Arc<Tree>,
    name: String,
    encryptor: &dyn Encryptor,
    opts: &BackupOptions,
) -> Result<Manifest> {
    let (files, bytes) = tree
        .entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .fold((0, 0), |(n, b), e| (n + 1, b + e.size()));
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

/// Fail if a pack this snapshot takes chunks from lost its index while the walk ran (a
/// concurrent prune): committing would record a snapshot that cannot be restored.
async fn check_reused_packs_remain(
    repo: &Repository,
    catalog: &Catalog,
    tree: &Tree,
) -> Result<()> {
    let listed: HashSet<String> = repo
        .storage()
        .list(INDEX_PREFIX)
        .await?
        .into_iter()
        .map(|o| o.path)
        .collect();
    for entry in &tree.entries {
        if let EntryKind::File { chunks, .. } = &entry.kind {
            for id in chunks {
                if let Some((pack, _)) = catalog.find(id) {
                    if !listed.contains(&super::pack::PackIndex::index_path(&pack.pack)) {
                        return Err(Error::new(
                            ErrorKind::Corrupt,
                            format!(
                                "pack '{}' was removed while the backup ran (a prune?): run the backup again",
                                pack.pack
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// Counters of the walk.
#[derive(Debug, Default)]
struct Counts {
    files: u64,
    files_read: u64,
    files_unchanged: u64,
    bytes_total: u64,
    bytes_read: u64,
    chunks_new: u64,
    bytes_new: u64,
}

/// The walk's state, on its blocking thread.
struct Walk {
    dedup: DedupKey,
    /// The chunks stored before this backup.
    catalog: Arc<Catalog>,
    /// The chunks this backup stores.
    new: HashSet<ChunkId>,
    /// The parent snapshot's entries, sorted by path (looked up by bisection: no second
    /// copy of every path, no hash table).
    parent: Vec<TreeEntry>,
    chunks: std::sync::mpsc::SyncSender<(ChunkId, Vec<u8>)>,
    /// (device, inode) of files with several links → the first path seen.
    links: HashMap<(u64, u64), String>,
    counts: Counts,
    entries: Vec<TreeEntry>,
}

impl Walk {
    fn new(
        dedup: DedupKey,
        catalog: Arc<Catalog>,
        parent: Option<Tree>,
        chunks: std::sync::mpsc::SyncSender<(ChunkId, Vec<u8>)>,
    ) -> Walk {
        let mut parent = parent.map(|t| t.entries).unwrap_or_default();
        parent.sort_unstable_by(|a, b| a.path.cmp(&b.path));
        Walk {
            dedup,
            catalog,
            new: HashSet::new(),
            parent,
            chunks,
            links: HashMap::new(),
            counts: Counts::default(),
            entries: Vec::new(),
        }
    }

    fn run(mut self, input: WalkInput) -> Result<(Tree, Counts)> {
        match input {
            WalkInput::Dir(root) => {
                for entry in walkdir::WalkDir::new(&root)
                    .follow_links(false)
                    .sort_by_file_name()
                    .min_depth(1)
                {
                    let entry = entry.map_err(|e| {
                        let path = e
                            .path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default();
                        Error::io("cannot read the directory", io::Error::other(e))
                            .with_context("path", path)
                    })?;
                    self.add(&root, entry.path())?;
                }
            }
            WalkInput::Objects {
                store,
                objects,
                runtime,
            } => {
                for object in objects {
                    self.add_object(&store, &runtime, object)?;
                }
            }
        }
        let tree = Tree {
            header: TreeHeader::new(self.dedup.key_id(), CHUNK_SIZES),
            entries: self.entries,
        };
        Ok((tree, self.counts))
    }

    fn add(&mut self, root: &Path, path: &Path) -> Result<()> {
        let shown = || path.display().to_string();
        let relative = path
            .strip_prefix(root)
            .expect("walkdir yields paths under the root")
            .to_str()
            .ok_or_else(|| {
                Error::invalid("a file name is not valid UTF-8, which dr-files-v1 cannot store")
                    .with_context("path", shown())
            })?
            .to_string();
        let meta = std::fs::symlink_metadata(path).map_err(|e| {
            Error::io("cannot read a file's metadata", e).with_context("path", shown())
        })?;
        let mode = meta.permissions().mode() & 0o7777;
        let mtime_ns = meta.mtime() * 1_000_000_000 + meta.mtime_nsec();
        let kind = meta.file_type();
        let kind = if kind.is_dir() {
            EntryKind::Dir
        } else if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| {
                Error::io("cannot read a symbolic link", e).with_context("path", shown())
            })?;
            let target = target.to_str().ok_or_else(|| {
                Error::invalid("a link target is not valid UTF-8").with_context("path", shown())
            })?;
            EntryKind::Symlink {
                target: target.to_string(),
            }
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                    self.entries.push(TreeEntry {
                        path: relative,
                        mode,
                        mtime_ns,
                        kind: EntryKind::Hardlink {
                            target: first.clone(),
                        },
                    });
                    return Ok(());
                }
                self.links
                    .insert((meta.dev(), meta.ino()), relative.clone());
            }
            self.counts.files += 1;
            let seen = Seen {
                size: meta.len(),
                mtime_ns,
                etag: None,
            };
            self.file(&relative, seen, || {
                std::fs::File::open(path)
                    .map(|f| Box::new(f) as Box<dyn Read>)
                    .map_err(|e| Error::io("cannot open a file", e))
            })
            .map_err(|e| e.with_context("path", shown()))?
        } else {
            tracing::warn!(path = %shown(), "skipping a special file (socket, device, fifo)");
            return Ok(());
        };
        self.entries.push(TreeEntry {
            path: relative,
            mode,
            mtime_ns,
            kind,
        });
        Ok(())
    }

    /// An object of a bucket source: a file, or a directory for a folder marker.
    fn add_object(
        &mut self,
        store: &Arc<dyn StorageTarget>,
        runtime: &tokio::runtime::Handle,
        object: ListedObject,
    ) -> Result<()> {
        let meta = object.meta;
        let mtime_ns = meta.last_modified.timestamp_nanos_opt().unwrap_or(0);
        let (mode, kind) = if object.folder_marker {
            (0o755, EntryKind::Dir)
        } else {
            self.counts.files += 1;
            let seen = Seen {
                size: meta.size,
                mtime_ns,
                etag: meta.etag,
            };
            let kind = self
                .file(&meta.path, seen, || open_object(store, runtime, &meta.path))
                .map_err(|e| e.with_context("object", &meta.path))?;
            (0o644, kind)
        };
        self.entries.push(TreeEntry {
            path: meta.path,
            mode,
            mtime_ns,
            kind,
        });
        Ok(())
    }

    /// A regular file's entry: carried over from the parent if unchanged, else read.
    fn file(
        &mut self,
        relative: &str,
        seen: Seen,
        open: impl FnOnce() -> Result<Box<dyn Read>>,
    ) -> Result<EntryKind> {
        let before = self
            .parent
            .binary_search_by(|e| e.path.as_str().cmp(relative))
            .ok()
            .map(|n| {
                let e = &mut self.parent[n];
                TreeEntry {
                    path: String::new(),
                    mode: e.mode,
                    mtime_ns: e.mtime_ns,
                    kind: std::mem::replace(&mut e.kind, EntryKind::Dir),
                }
            });
        if let Some(before) = before {
            if let EntryKind::File {
                size: was,
                chunks,
                etag,
                ..
            } = &before.kind
            {
                let all_stored = chunks.iter().all(|id| self.catalog.contains(id));
                // An object is unchanged when its ETag is; a file when its mtime is.
                let same_version = match (&seen.etag, etag) {
                    (Some(now), Some(then)) => now == then,
                    (None, None) => before.mtime_ns == seen.mtime_ns,
                    _ => false,
                };
                if *was == seen.size && same_version && all_stored {
                    self.counts.files_unchanged += 1;
                    self.counts.bytes_total += seen.size;
                    return Ok(before.kind);
                }
            }
        }
        let file = open()?;
        let mut hasher = blake3::Hasher::new();
        let mut ids = Vec::new();
        let mut read = 0u64;
        for chunk in chunks(file, &self.dedup, CHUNK_SIZES) {
            let chunk = chunk.map_err(|e| Error::io("cannot read a file", e))?;
            hasher.update(&chunk);
            read += chunk.len() as u64;
            let id = self.dedup.chunk_id(&chunk);
            ids.push(id);
            if !self.catalog.contains(&id) && self.new.insert(id) {
                self.counts.chunks_new += 1;
                self.counts.bytes_new += chunk.len() as u64;
                self.chunks
                    .send((id, chunk))
                    .map_err(|_| Error::new(ErrorKind::Cancelled, "the packer stopped"))?;
            }
        }
        if read != seen.size {
            tracing::warn!(path = %relative, before = seen.size, read, "a file changed size while it was read: storing what was read");
        }
        self.counts.files_read += 1;
        self.counts.bytes_read += read;
        self.counts.bytes_total += read;
        Ok(EntryKind::File {
            size: read,
            blake3: *hasher.finalize().as_bytes(),
            chunks: ids,
            etag: seen.etag,
        })
    }
}

/// What the walk takes its entries from.
enum WalkInput {
    /// A directory, walked here.
    Dir(PathBuf),
    /// A bucket prefix, listed before the walk; objects are read through `runtime`.
    Objects {
        store: Arc<dyn StorageTarget>,
        objects: Vec<ListedObject>,
        runtime: tokio::runtime::Handle,
    },
}

/// What the source says about a file now: compared with the parent's entry.
struct Seen {
    size: u64,
    mtime_ns: i64,
    /// An object's ETag (bucket sources only).
    etag: Option<String>,
}

/// An object's content as a blocking reader (the walk runs on a blocking thread).
fn open_object(
    store: &Arc<dyn StorageTarget>,
    runtime: &tokio::runtime::Handle,
    path: &str,
) -> Result<Box<dyn Read>> {
    let stream = runtime.block_on(store.get(path, None))?;
    let reader = tokio_util::io::StreamReader::new(stream.map_err(io::Error::other));
    Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
        reader,
        runtime.clone(),
    )))
}

/// New chunks in flight between the walk and the packer (about 1 MiB each).
const CHUNKS_IN_FLIGHT: usize = 8;

/// The packer: compress each new chunk into the current pack, seal full packs and hand them
/// to the upload.
fn pack_chunks(
    chunks: std::sync::mpsc::Receiver<(ChunkId, Vec<u8>)>,
    encryptor: &dyn Encryptor,
    dedup: &DedupKey,
    packs: mpsc::Sender<SealedPack>,
) -> Result<()> {
    let mut pack = PackBuilder::default();
    let send = |pack: PackBuilder| {
        let sealed = pack.seal(encryptor, dedup)?;
        packs
            .blocking_send(sealed)
            .map_err(|_| Error::new(ErrorKind::Cancelled, "the pack upload stopped"))
    };
    for (id, chunk) in chunks {
        pack.add(&id, &chunk)?;
        if pack.is_full() {
            send(std::mem::take(&mut pack))?;
        }
    }
    if !pack.is_empty() {
        send(pack)?;
    }
    Ok(())
}

/// A [`Dumper`] of a finished snapshot tree, so the tree goes through dr-core's pipeline
/// (compression, encryption, signed manifest) like any payload.
struct TreeDumper {
    tree: Arc<Tree>,
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
        let size = self.tree.json_lines_len();
        // Line 0 is the header, line n the entry n - 1.
        let stream =
            futures::stream::unfold((self.tree.clone(), 0usize), |(tree, mut line)| async move {
                if line > tree.entries.len() {
                    return None;
                }
                let mut out = Vec::with_capacity(TREE_PIECE_BYTES + 4096);
                while line <= tree.entries.len() && out.len() < TREE_PIECE_BYTES {
                    tree.write_line(line, &mut out);
                    line += 1;
                }
                Some((Ok(Bytes::from(out)), (tree, line)))
            });
        Ok(Dump {
            source: self.source.clone(),
            stream: Box::pin(stream),
            size_hint: Some(size),
            completion: Box::new(TreeDone(self.stats.clone())),
        })
    }
}
