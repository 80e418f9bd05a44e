//! The blocking half of a directory restore: lay the tree out in the staging directory.
//!
//! First the layout is checked as a whole (every path safe, none listed twice, nothing
//! beneath something that is not a directory), before anything is written. Then the
//! regular files are written by pack ([`RestorePlan`]): a few workers each stream one pack
//! at a time and write its chunks at their offsets into temporary files beside their final
//! names (named with a random token no name in the tree may start with).
//! The worker that writes a file's last chunk checks the file's size and BLAKE3, sets its
//! mode and time and renames it into the staging tree. Symbolic and hard links come last,
//! each where nothing exists yet, so nothing is ever written through a link; directory modes
//! and times after them, deepest first.
//!
//! Memory does not depend on the data: each worker holds about one blob of plaintext and a
//! read buffer; per file the plan holds 16 bytes and a 4-byte counter, and a file whose
//! chunks arrive out of order holds a BLAKE3 state until it completes.

use std::collections::{HashMap, HashSet};
use std::io;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use dr_core::{Decryptor, Error, ErrorKind, Repository, Result};

use super::pack::Catalog;
use super::plan::{PackJob, Piece, PlannedFile, RestorePlan};
use super::restore::{pack_unreadable, safe_mode, set_mtime, FilesRestoreReport};
use super::tree::{check_relative_path, component_order, EntryKind, TreeEntry};
use super::unpack::for_each_blob;

/// Packs read at once. Each costs about one blob of memory; several keep both cores busy
/// (decrypting, decompressing, hashing) and overlap the file system's latency.
const PACKS_IN_FLIGHT: usize = 4;

/// Writes the selected entries of a snapshot under `root`.
pub(crate) struct TreeWriter {
    pub repo: Repository,
    pub decryptor: Arc<dyn Decryptor>,
    pub catalog: Catalog,
    /// The staging directory the tree is built in.
    pub root: PathBuf,
    /// Files being written are named `<prefix><number>` in their final directory (a rename
    /// in one directory is the cheapest); the prefix holds a random token chosen after the
    /// tree was read, and no name in the tree may start with it.
    pub temp_prefix: String,
    pub runtime: tokio::runtime::Handle,
}

impl TreeWriter {
    pub(crate) fn write(self, entries: Vec<TreeEntry>) -> Result<FilesRestoreReport> {
        check_layout(&entries)?;
        let taken = entries.iter().find(|e| {
            let name = e.path.rsplit('/').next().unwrap_or_default();
            name.starts_with(&self.temp_prefix)
        });
        if let Some(e) = taken {
            return Err(Error::corrupt(format!(
                "the snapshot holds '{}', named like dr's temporary files: refusing it",
                e.path
            )));
        }
        let plan = RestorePlan::new(&entries, &self.catalog)?;
        let mut report = FilesRestoreReport::default();

        for e in &entries {
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
        let (files, bytes) = self.write_files(&entries, &plan)?;
        report.files += files;
        report.bytes += bytes;

        // Directories the tree lists (most already exist, made for their files; a look is
        // far cheaper than a mkdir that fails).
        for e in entries.iter().filter(|e| matches!(e.kind, EntryKind::Dir)) {
            self.dir(&e.path)?;
            report.dirs += 1;
        }
        // Links last: nothing is ever written through a link.
        let mut restored: Option<HashSet<&str>> = None;
        for e in &entries {
            match &e.kind {
                EntryKind::Hardlink { target } => {
                    check_relative_path(target)?;
                    let files = restored.get_or_insert_with(|| {
                        entries
                            .iter()
                            .filter(|f| matches!(f.kind, EntryKind::File { .. }))
                            .map(|f| f.path.as_str())
                            .collect()
                    });
                    if !files.contains(target.as_str()) {
                        tracing::warn!(path = %e.path, target = %target, "not restoring a hard link whose file is not restored");
                        continue;
                    }
                    let at = self.fresh_path(&e.path)?;
                    std::fs::hard_link(self.root.join(target), &at).map_err(|err| {
                        Error::io("cannot create a hard link", err).with_context("path", &e.path)
                    })?;
                    report.hardlinks += 1;
                }
                EntryKind::Symlink { target } => {
                    let at = self.fresh_path(&e.path)?;
                    std::os::unix::fs::symlink(target, &at).map_err(|err| {
                        Error::io("cannot create a symbolic link", err)
                            .with_context("path", &e.path)
                    })?;
                    report.symlinks += 1;
                }
                _ => {}
            }
        }
        // Directory modes and times last, deepest first (a read-only directory would stop
        // the files going into it; writing into one changes its time).
        for e in entries
            .iter()
            .rev()
            .filter(|e| matches!(e.kind, EntryKind::Dir))
        {
            let path = self.dir(&e.path)?;
            set_mtime(&path, e.mtime_ns);
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(safe_mode(e.mode)))
                .map_err(|err| {
                    Error::io("cannot set a directory's mode", err).with_context("path", &e.path)
                })?;
        }
        Ok(report)
    }

    /// Where planned file `number`, to be `relative`, is written until it is complete.
    fn temp_path(&self, relative: &str, number: u32) -> PathBuf {
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
    fn write_files(&self, entries: &[TreeEntry], plan: &RestorePlan) -> Result<(u64, u64)> {
        let work = Work {
            writer: self,
            entries,
            plan,
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

/// Refuse, before anything is written, a tree whose layout is unsafe or ambiguous: an
/// unsafe path, a path listed twice, or an entry beneath something that is not a
/// directory (a link or a file). Sorting by components puts every path right before its
/// descendants, so comparing neighbours finds both.
fn check_layout(entries: &[TreeEntry]) -> Result<()> {
    for e in entries {
        check_relative_path(&e.path)?;
        if let EntryKind::Hardlink { target } = &e.kind {
            check_relative_path(target)?;
        }
    }
    let mut order: Vec<u32> = (0..entries.len() as u32).collect();
    order.sort_by(|a, b| component_order(&entries[*a as usize].path, &entries[*b as usize].path));
    for pair in order.windows(2) {
        let (a, b) = (&entries[pair[0] as usize], &entries[pair[1] as usize]);
        if a.path == b.path {
            return Err(Error::corrupt(format!(
                "the snapshot lists '{}' twice: refusing it",
                a.path
            )));
        }
        let beneath = b
            .path
            .strip_prefix(a.path.as_str())
            .is_some_and(|rest| rest.starts_with('/'));
        if beneath && !matches!(a.kind, EntryKind::Dir) {
            return Err(Error::corrupt(format!(
                "the snapshot puts '{}' beneath something that is not a directory: refusing it",
                b.path
            )));
        }
    }
    Ok(())
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
        while !self.stop.load(Ordering::Relaxed) {
            let Some(job) = self
                .plan
                .packs
                .get(self.next.fetch_add(1, Ordering::Relaxed))
            else {
                return;
            };
            if let Err(e) = self.pack(job) {
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
    fn pack(&self, job: &PackJob) -> Result<()> {
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
            pieces.iter().map(|p| {
                let (id, at) = w.catalog.at(p.chunk);
                (p.chunk, at.blob(id))
            }),
            |n, chunk| {
                if self.stop.load(Ordering::Relaxed) {
                    return Err(Error::new(ErrorKind::Cancelled, "another pack failed"));
                }
                while at < pieces.len() && pieces[at].chunk == n {
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

    /// Write one chunk into its file; the last piece of a file completes it.
    fn piece(&self, piece: &Piece, chunk: &[u8]) -> Result<()> {
        let planned = self.plan.files[piece.file as usize];
        let entry = &self.entries[planned.entry as usize];
        let temp = self.writer.temp_path(&entry.path, piece.file);
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
