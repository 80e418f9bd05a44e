//! The blocking half of a directory restore: lay the tree out in the staging directory.
//!
//! The layout was checked as a whole before anything is written (as the tree streamed by,
//! `layout.rs`, or here, whole, for a tree in no known order). Then the entries are taken
//! from their spool a batch at a time ([`BatchLimits`]): the batch's regular files are written
//! by pack ([`RestorePlan`]): a few workers each stream one pack at a time and write its
//! chunks at their offsets into temporary files beside their final names (named with a
//! random token no name in the tree may start with). The worker that writes a file's last
//! chunk checks the file's size and BLAKE3, sets its mode and time and renames it into the
//! staging tree. Hard links, then symbolic links come after every file, each where nothing
//! exists yet, so nothing is ever written through a link; directory modes and times after
//! them, deepest first.
//!
//! Memory does not grow with the number of files: each worker holds about one blob of
//! plaintext and a read buffer; a batch holds its entries and plan (16 bytes per file and
//! per chunk reference), a file whose chunks arrive out of order a BLAKE3 state until it
//! completes. Links wait in a spool; directories (path, mode, time) are kept to the end.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dr_core::{Decryptor, Error, ErrorKind, Repository, Result};

use super::key::ChunkId;
use super::layout::check_layout;
use super::pack::Catalog;
use super::plan::{PackJob, Piece, PlannedFile, RestorePlan};
use super::restore::{pack_unreadable, safe_mode, set_mtime, FilesRestoreReport, SelectedEntries};
use super::spool::{SpooledEntries, TreeSpool};
use super::tree::{EntryKind, TreeEntry, TreeHeader};
use super::unpack::for_each_blob;

/// Packs read at once. Each costs about one blob of memory; several keep both cores busy
/// (decrypting, decompressing, hashing) and overlap the file system's latency.
const PACKS_IN_FLIGHT: usize = 4;

/// How much of a tree a restore plans and writes at once.
///
/// A batch closes once it holds `files` files with content or `pieces` chunk references,
/// but only where the next file needs a pack the batch does not read (a pack on both sides of
/// a boundary is read twice), and at twice the limits at the latest. About 300 bytes per
/// small file: 16,384 files are about 5 MB.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Files with content.
    pub files: usize,
    /// Chunk references.
    pub pieces: usize,
}

impl Default for BatchLimits {
    fn default() -> BatchLimits {
        BatchLimits {
            files: 16 << 10,
            pieces: 256 << 10,
        }
    }
}

/// Writes the selected entries of a snapshot under `root`.
pub(crate) struct TreeWriter {
    pub repo: Repository,
    pub decryptor: Arc<dyn Decryptor>,
    pub catalog: Catalog,
    /// The staging directory the tree is built in.
    pub root: PathBuf,
    /// Files being written are named `<prefix><number>` in their final directory (a rename
    /// in one directory is the cheapest); the prefix holds a random token, and no name in
    /// the tree may start with it (checked as the tree was read).
    pub temp_prefix: String,
    pub runtime: tokio::runtime::Handle,
    pub batch: BatchLimits,
}

impl TreeWriter {
    pub(crate) fn write(self, selected: &SelectedEntries) -> Result<FilesRestoreReport> {
        if !selected.layout_checked {
            let mut all = Vec::new();
            let mut entries = selected.tree.entries()?;
            while let Some(e) = entries.next_entry()? {
                let dir = matches!(e.kind, EntryKind::Dir);
                all.push((e.path, dir));
            }
            check_layout(&all)?;
        }
        let mut report = FilesRestoreReport::default();
        let mut links =
            TreeSpool::new(&TreeHeader::new(String::new(), super::chunker::CHUNK_SIZES))?;
        let mut dirs: Vec<(String, u32, i64)> = Vec::new();
        let mut batches = Batches {
            entries: selected.tree.entries()?,
            next: None,
            limits: self.batch,
        };
        let mut numbered = 0u64;
        while let Some(batch) = batches.next_batch(&self.catalog)? {
            let plan = RestorePlan::new(&batch, &self.catalog)?;
            for e in &batch {
                if let EntryKind::File {
                    size,
                    blake3,
                    chunks,
                    ..
                } = &e.kind
                {
                    if chunks.is_empty() {
                        self.empty_file(e, *size, blake3)?;
                        report.files += 1;
                    }
                }
            }
            let (files, bytes) = self.write_files(&batch, &plan, numbered)?;
            numbered += plan.files.len() as u64;
            report.files += files;
            report.bytes += bytes;
            // Directories the tree lists (most already exist, made for their files; a look
            // is far cheaper than a mkdir that fails).
            for e in batch {
                match e.kind {
                    EntryKind::Dir => {
                        self.dir(&e.path)?;
                        report.dirs += 1;
                        dirs.push((e.path, e.mode, e.mtime_ns));
                    }
                    EntryKind::Hardlink { .. } | EntryKind::Symlink { .. } => links.push(&e)?,
                    EntryKind::File { .. } => {}
                }
            }
        }
        // Links last: nothing is ever written through a link. Hard links first, while no
        // symbolic link exists that a target's path could pass through.
        let links = links.finish()?;
        let mut hard = links.entries()?;
        while let Some(e) = hard.next_entry()? {
            if let EntryKind::Hardlink { target } = &e.kind {
                if self.hardlink(&e, target)? {
                    report.hardlinks += 1;
                }
            }
        }
        let mut soft = links.entries()?;
        while let Some(e) = soft.next_entry()? {
            if let EntryKind::Symlink { target } = &e.kind {
                let at = self.fresh_path(&e.path)?;
                std::os::unix::fs::symlink(target, &at).map_err(|err| {
                    Error::io("cannot create a symbolic link", err).with_context("path", &e.path)
                })?;
                report.symlinks += 1;
            }
        }
        // Directory modes and times last, deepest first (a read-only directory would stop
        // the files going into it; writing into one changes its time).
        for (path, mode, mtime_ns) in dirs.iter().rev() {
            let at = self.dir(path)?;
            set_mtime(&at, *mtime_ns);
            std::fs::set_permissions(&at, std::fs::Permissions::from_mode(safe_mode(*mode)))
                .map_err(|err| {
                    Error::io("cannot set a directory's mode", err).with_context("path", path)
                })?;
        }
        Ok(report)
    }

    /// Hard link `e` to `target`, a regular file restored before (a target that is not one,
    /// for instance not selected, is skipped with a warning: returns false). No symbolic
    /// link exists yet, so the target's path passes through real directories only.
    fn hardlink(&self, e: &TreeEntry, target: &str) -> Result<bool> {
        let from = self.root.join(target);
        if !std::fs::symlink_metadata(&from).is_ok_and(|m| m.is_file()) {
            tracing::warn!(path = %e.path, target = %target, "not restoring a hard link whose file is not restored");
            return Ok(false);
        }
        let at = self.fresh_path(&e.path)?;
        std::fs::hard_link(&from, &at).map_err(|err| {
            Error::io("cannot create a hard link", err).with_context("path", &e.path)
        })?;
        Ok(true)
    }

    /// Where planned file `number` (counted across batches), to be `relative`, is written
    /// until it is complete.
    fn temp_path(&self, relative: &str, number: u64) -> PathBuf {
        let name = format!("{}{number}", self.temp_prefix);
        match relative.rsplit_once('/') {
            Some((parent, _)) => self.root.join(parent).join(name),
            None => self.root.join(name),
        }
    }

    /// An empty file: no pack needed, but its size and BLAKE3 are checked all the same.
    fn empty_file(&self, e: &TreeEntry, size: u64, want: &[u8; 32]) -> Result<()> {
        if size != 0 || blake3::hash(b"").as_bytes() != want {
            return Err(Error::corrupt(format!(
                "file '{}' restores to 0 bytes that do not match the snapshot's size and BLAKE3",
                e.path
            )));
        }
        let at = self.root.join(&e.path);
        if let Some(parent) = at.parent() {
            std::fs::create_dir_all(parent).map_err(|err| {
                Error::io("cannot create a directory", err).with_context("path", &e.path)
            })?;
        }
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&at)
            .map_err(|err| Error::io("cannot create a file", err).with_context("path", &e.path))?;
        finish_metadata(&file, e)
    }

    /// Write every planned file, pack by pack, on [`PACKS_IN_FLIGHT`] workers; the first
    /// error stops them all. Returns the files and bytes written.
    fn write_files(
        &self,
        entries: &[TreeEntry],
        plan: &RestorePlan,
        numbered: u64,
    ) -> Result<(u64, u64)> {
        let work = Work {
            writer: self,
            entries,
            plan,
            numbered,
            left: plan
                .files
                .iter()
                .map(|f| AtomicU32::new(f.pieces))
                .collect(),
            partial: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            files: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        };
        std::thread::scope(|s| {
            for _ in 0..PACKS_IN_FLIGHT.min(plan.packs.len()) {
                s.spawn(|| work.run());
            }
        });
        if let Some(e) = work
            .failure
            .into_inner()
            .expect("no worker panics holding it")
        {
            return Err(e);
        }
        Ok((work.files.into_inner(), work.bytes.into_inner()))
    }

    /// The directory `relative` under the root, created if missing; every component must be
    /// a real directory (a symbolic link there is refused: it could lead outside).
    fn dir(&self, relative: &str) -> Result<PathBuf> {
        let mut at = self.root.clone();
        for part in relative.split('/') {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(Error::corrupt(format!(
                        "the snapshot puts '{relative}' beneath something that is not a directory: refusing it"
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::fs::create_dir(&at).map_err(|err| {
                        Error::io("cannot create a directory", err).with_context("path", relative)
                    })?;
                }
                Err(e) => return Err(Error::io("cannot read a directory", e).with_context("path", relative)),
            }
        }
        Ok(at)
    }

    /// Where to create link `relative`: its parent directory made safe, and nothing there yet.
    fn fresh_path(&self, relative: &str) -> Result<PathBuf> {
        let at = match relative.rsplit_once('/') {
            Some((parent, name)) => self.dir(parent)?.join(name),
            None => self.root.join(relative),
        };
        if std::fs::symlink_metadata(&at).is_ok() {
            return Err(Error::corrupt(format!(
                "the snapshot lists '{relative}' twice: refusing it"
            )));
        }
        Ok(at)
    }
}

/// A file's mode and time, set through its open handle.
fn finish_metadata(file: &std::fs::File, e: &TreeEntry) -> Result<()> {
    let time = if e.mtime_ns >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(e.mtime_ns as u64)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_nanos(e.mtime_ns.unsigned_abs())
    };
    if let Err(err) = file.set_modified(time) {
        tracing::debug!(path = %e.path, error = %err, "cannot set a modification time");
    }
    file.set_permissions(std::fs::Permissions::from_mode(safe_mode(e.mode)))
        .map_err(|err| Error::io("cannot set a file's mode", err).with_context("path", &e.path))
}

/// A file whose chunks arrive from several places: its hash so far, over `[0, hashed)`.
#[derive(Default)]
struct Partial {
    hasher: blake3::Hasher,
    hashed: u64,
}

/// What the workers share.
struct Work<'a> {
    writer: &'a TreeWriter,
    entries: &'a [TreeEntry],
    plan: &'a RestorePlan,
    /// Files planned in earlier batches (their numbers come first).
    numbered: u64,
    /// Per planned file, pieces not yet written.
    left: Vec<AtomicU32>,
    /// Files of several pieces with some written, by file number.
    partial: Mutex<HashMap<u32, Partial>>,
    /// The next pack job to take.
    next: AtomicUsize,
    stop: AtomicBool,
    failure: Mutex<Option<Error>>,
    files: AtomicU64,
    bytes: AtomicU64,
}

impl Work<'_> {
    fn run(&self) {
        let mut plain = Vec::new(); // one plaintext buffer for every pack this worker reads
        while !self.stop.load(Ordering::Relaxed) {
            let Some(job) = self
                .plan
                .packs
                .get(self.next.fetch_add(1, Ordering::Relaxed))
            else {
                return;
            };
            if let Err(e) = self.pack(job, &mut plain) {
                self.stop.store(true, Ordering::Relaxed);
                let mut failure = self.failure.lock().expect("not poisoned");
                if failure.is_none() || e.kind() != ErrorKind::Cancelled {
                    failure.get_or_insert(e);
                }
                return;
            }
        }
    }

    /// Read one pack and write its pieces. A pack that cannot be read names the files that
    /// need it; a file that fails its check names itself.
    fn pack(&self, job: &PackJob, plain: &mut Vec<u8>) -> Result<()> {
        let w = self.writer;
        let index = &w.catalog.packs[job.pack as usize];
        let pieces = &self.plan.pieces[job.pieces.clone()];
        let mut at = 0;
        let mut file_error = None;
        let read = for_each_blob(
            &w.repo,
            &w.runtime,
            index,
            w.catalog.plain_len(job.pack),
            &*w.decryptor,
            plain,
            pieces
                .iter()
                .map(|p| (p.blob_key(), p.at.blob(self.chunk_id(p)))),
            |n, chunk| {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(Error::new(ErrorKind::Cancelled, "another pack failed"));
                }
                while at < pieces.len() && pieces[at].blob_key() == n {
                    if let Err(e) = self.piece(&pieces[at], chunk) {
                        file_error = Some(e);
                        return Err(Error::new(ErrorKind::Cancelled, "a file failed"));
                    }
                    at += 1;
                }
                Ok(())
            },
        );
        if let Some(e) = file_error {
            return Err(e);
        }
        read.map_err(|e| {
            if e.kind() == ErrorKind::Cancelled {
                return e;
            }
            pack_unreadable(&e, self.entries, &w.catalog, job.pack)
        })
    }

    /// The id of the chunk `piece` writes.
    fn chunk_id(&self, piece: &Piece) -> &ChunkId {
        let entry = &self.entries[self.plan.files[piece.file as usize].entry as usize];
        match &entry.kind {
            EntryKind::File { chunks, .. } => &chunks[piece.nth as usize],
            _ => unreachable!("only regular files are planned"),
        }
    }

    /// Write one chunk into its file; the last piece of a file completes it.
    fn piece(&self, piece: &Piece, chunk: &[u8]) -> Result<()> {
        let planned = self.plan.files[piece.file as usize];
        let entry = &self.entries[planned.entry as usize];
        let temp = self
            .writer
            .temp_path(&entry.path, self.numbered + u64::from(piece.file));
        let open = || {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&temp)
        };
        let file = open()
            .or_else(|e| {
                // The layout check leaves nothing but real directories on the way (no link
                // exists yet), so missing ones can simply be made.
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(e);
                }
                std::fs::create_dir_all(temp.parent().expect("beneath the root"))?;
                open()
            })
            .and_then(|f| f.write_all_at(chunk, piece.offset).map(|()| f))
            .map_err(|e| Error::io("cannot write a file", e).with_context("file", &entry.path))?;
        let whole = if planned.pieces == 1 {
            Some(blake3::hash(chunk))
        } else {
            let mut partial = self.partial.lock().expect("not poisoned");
            let p = partial.entry(piece.file).or_default();
            if piece.offset == p.hashed {
                p.hasher.update(chunk);
                p.hashed += chunk.len() as u64;
            }
            None
        };
        if self.left[piece.file as usize].fetch_sub(1, Ordering::AcqRel) == 1 {
            self.complete(piece.file, planned, entry, file, &temp, whole)
                .map_err(|e| e.with_context("file", &entry.path))?;
        }
        Ok(())
    }

    /// Every piece of a file is written: check its BLAKE3 (hashing what arrived out of
    /// order from the file), set its metadata and rename it into the tree.
    fn complete(
        &self,
        number: u32,
        planned: PlannedFile,
        entry: &TreeEntry,
        file: std::fs::File,
        temp: &Path,
        whole: Option<blake3::Hash>,
    ) -> Result<()> {
        let EntryKind::File { blake3: want, .. } = &entry.kind else {
            unreachable!("only regular files are planned")
        };
        let hash = match whole {
            Some(hash) => hash,
            None => {
                let Partial {
                    mut hasher,
                    mut hashed,
                } = self
                    .partial
                    .lock()
                    .expect("not poisoned")
                    .remove(&number)
                    .unwrap_or_default();
                let mut buf = vec![0u8; (1 << 20).min((planned.len - hashed) as usize)];
                while hashed < planned.len {
                    let n = file
                        .read_at(&mut buf, hashed)
                        .map_err(|e| Error::io("cannot read a restored file back", e))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                    hashed += n as u64;
                }
                hasher.finalize()
            }
        };
        if hash.as_bytes() != want {
            return Err(Error::corrupt(format!(
                "file '{}' restores to {} bytes that do not match the snapshot's size and BLAKE3",
                entry.path, planned.len
            )));
        }
        finish_metadata(&file, entry)?;
        drop(file);
        // No fsync per file (neither tar nor restic does one; on 20,000 files it would
        // dominate): the tree becomes visible only when the staging directory is renamed.
        let at = self.writer.root.join(&entry.path);
        std::fs::rename(temp, &at)
            .map_err(|e| Error::io("cannot put a restored file in place", e))?;
        self.files.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(planned.len, Ordering::Relaxed);
        Ok(())
    }
}

/// Takes a spooled tree's entries a batch at a time.
struct Batches {
    entries: SpooledEntries,
    /// The entry that closed the previous batch, first of the next.
    next: Option<TreeEntry>,
    limits: BatchLimits,
}

impl Batches {
    /// The next batch of entries, in tree order (`None` at the end).
    fn next_batch(&mut self, catalog: &Catalog) -> Result<Option<Vec<TreeEntry>>> {
        let mut batch = Vec::new();
        let (mut files, mut pieces) = (0usize, 0usize);
        let mut packs: HashSet<u32> = HashSet::new();
        loop {
            let e = match self.next.take() {
                Some(e) => e,
                None => match self.entries.next_entry()? {
                    Some(e) => e,
                    None => break,
                },
            };
            let chunks = match &e.kind {
                EntryKind::File { chunks, .. } => chunks.as_slice(),
                _ => &[],
            };
            // Each chunk looked up once (the catalog is on disk): its pack, if any holds it.
            let entry_packs = chunks
                .iter()
                .map(|id| Ok(catalog.locate(id)?.map(|at| at.pack)))
                .collect::<Result<Vec<Option<u32>>>>()?;
            let (limits, over) = (self.limits, |n: usize, limit: usize| n >= limit.max(1));
            if over(files, limits.files) || over(pieces, limits.pieces) {
                let same_packs = entry_packs
                    .iter()
                    .all(|pack| pack.is_some_and(|p| packs.contains(&p)));
                let hard_limit = over(files, 2 * limits.files) || over(pieces, 2 * limits.pieces);
                if !same_packs || hard_limit {
                    self.next = Some(e);
                    break;
                }
            }
            if !chunks.is_empty() {
                files += 1;
                pieces += chunks.len();
                packs.extend(entry_packs.into_iter().flatten());
            }
            batch.push(e);
        }
        Ok((!batch.is_empty()).then_some(batch))
    }
}
