//! The backup walk: the tree's entries in order, files carried over from the parent
//! snapshot or handed to the readers.
//!
//! A file whose path, size and modification time (an object's key, size and ETag) equal the
//! previous snapshot's is not read again: its entry, chunk list included, is carried over,
//! provided every one of its chunks is still in some pack. Every other file goes to the
//! readers (`readers.rs`); their answers come back in any order and wait in a window of at
//! most [`WINDOW`] entries until every entry before them is complete, so the tree is in
//! walk order whatever the readers do.
//!
//! Neither tree is held: the parent's is read from its spool beside the walk (a merge join:
//! both are in walk order) and each completed entry goes straight to the new tree's spool,
//! so memory does not grow with the number of files.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use dr_core::{Error, ErrorKind, Result};

use super::backup::FileCounts;
use super::chunker::CHUNK_SIZES;
use super::key::DedupKey;
use super::pack::Catalog;
use super::readers::{FileToRead, ReadDone, ReadJob};
use super::source::ListedObject;
use super::spool::{ParentCursor, ParentTree, SpooledTree, TreeSpool};
use super::tree::{component_order, EntryKind, TreeEntry, TreeHeader};

/// Entries between the first incomplete one and the newest: bounds the walk's lead over
/// the readers (and the answers waiting for an earlier one), about 1 MiB.
pub(super) const WINDOW: usize = 4096;

/// What the walk takes its entries from.
pub(super) enum WalkInput {
    /// A directory, walked here.
    Dir(PathBuf),
    /// A bucket prefix, listed before the walk.
    Objects(Vec<ListedObject>),
}

/// The walk's state, on its blocking thread.
pub(super) struct Walk<'p> {
    /// The chunks stored before this backup.
    catalog: Arc<Catalog>,
    /// The parent snapshot, read beside the walk.
    parent: Option<&'p ParentTree>,
    cursor: Option<ParentCursor>,
    /// (device, inode) of files with several links → the first path seen.
    links: HashMap<(u64, u64), String>,
    counts: FileCounts,
    /// The finished entries, in walk order.
    tree: TreeSpool,
    /// How many there are.
    finished: usize,
    /// The catalog's packs the finished entries take chunks from.
    packs_used: HashSet<u32>,
    /// Entries after the finished ones, in order; `false` while a reader still has the file.
    window: VecDeque<(TreeEntry, bool)>,
    /// Files handed to readers and not answered yet.
    in_flight: usize,
    jobs: SyncSender<ReadJob>,
    done: Receiver<ReadDone>,
}

/// What a walk made: the new tree, its counters, and the catalog's packs it needs.
pub(super) struct Walked {
    pub tree: SpooledTree,
    pub counts: FileCounts,
    pub packs_used: HashSet<u32>,
}

impl<'p> Walk<'p> {
    pub fn new(
        dedup: DedupKey,
        catalog: Arc<Catalog>,
        parent: Option<&'p ParentTree>,
        jobs: SyncSender<ReadJob>,
        done: Receiver<ReadDone>,
    ) -> Result<Walk<'p>> {
        let tree = TreeSpool::new(&TreeHeader::new(dedup.key_id(), CHUNK_SIZES))?;
        Ok(Walk {
            catalog,
            parent,
            cursor: None,
            links: HashMap::new(),
            counts: FileCounts::default(),
            tree,
            finished: 0,
            packs_used: HashSet::new(),
            window: VecDeque::new(),
            in_flight: 0,
            jobs,
            done,
        })
    }

    pub fn run(mut self, input: WalkInput) -> Result<Walked> {
        // A directory is walked in component order (`a`, `a/b`, `a.txt`), a bucket listed
        // in key order: the parent, made by the same walk, is in the same one.
        let order: fn(&str, &str) -> Ordering = match input {
            WalkInput::Dir(_) => component_order,
            WalkInput::Objects(_) => |a, b| a.cmp(b),
        };
        if let Some(parent) = self.parent {
            self.cursor = Some(parent.cursor(order)?);
        }
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
            WalkInput::Objects(objects) => {
                for object in objects {
                    self.add_object(object)?;
                }
            }
        }
        while self.in_flight > 0 {
            self.take_answer()?;
        }
        debug_assert!(self.window.is_empty());
        Ok(Walked {
            tree: self.tree.finish()?,
            counts: self.counts,
            packs_used: self.packs_used,
        })
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
        let mut entry = TreeEntry {
            path: relative,
            mode,
            mtime_ns,
            kind: EntryKind::Dir,
        };
        if kind.is_dir() {
        } else if kind.is_symlink() {
            let target = std::fs::read_link(path).map_err(|e| {
                Error::io("cannot read a symbolic link", e).with_context("path", shown())
            })?;
            let target = target.to_str().ok_or_else(|| {
                Error::invalid("a link target is not valid UTF-8").with_context("path", shown())
            })?;
            entry.kind = EntryKind::Symlink {
                target: target.to_string(),
            };
        } else if kind.is_file() {
            if meta.nlink() > 1 {
                if let Some(first) = self.links.get(&(meta.dev(), meta.ino())) {
                    entry.kind = EntryKind::Hardlink {
                        target: first.clone(),
                    };
                    return self.push(entry, None);
                }
                self.links
                    .insert((meta.dev(), meta.ino()), entry.path.clone());
            }
            let file = FileToRead::Path(path.to_path_buf());
            return self.file(entry, meta.len(), None, file);
        } else {
            tracing::warn!(path = %shown(), "skipping a special file (socket, device, fifo)");
            return Ok(());
        }
        self.push(entry, None)
    }

    /// An object of a bucket source: a file, or a directory for a folder marker.
    fn add_object(&mut self, object: ListedObject) -> Result<()> {
        let meta = object.meta;
        let mtime_ns = meta.last_modified.timestamp_nanos_opt().unwrap_or(0);
        let file = FileToRead::Object(meta.path.clone());
        let (mode, dir) = if object.folder_marker {
            (0o755, true)
        } else {
            (0o644, false)
        };
        let entry = TreeEntry {
            path: meta.path,
            mode,
            mtime_ns,
            kind: EntryKind::Dir,
        };
        if dir {
            self.push(entry, None)
        } else {
            self.file(entry, meta.size, meta.etag, file)
        }
    }

    /// A regular file: carried over from the parent if unchanged, else handed to a reader.
    /// `entry` has the file's path, mode and time; its kind is filled in here.
    fn file(
        &mut self,
        mut entry: TreeEntry,
        size: u64,
        etag: Option<String>,
        file: FileToRead,
    ) -> Result<()> {
        self.counts.files += 1;
        if let Some(kind) = self.unchanged(&entry, size, &etag)? {
            self.counts.files_unchanged += 1;
            self.counts.bytes_total += size;
            entry.kind = kind;
            return self.push(entry, None);
        }
        let job = ReadJob {
            seq: 0,
            file,
            size,
            etag,
        };
        self.push(entry, Some(job))
    }

    /// The parent's entry of this file if the file did not change since (same size, and
    /// same mtime or ETag) and every chunk of it is still stored.
    fn unchanged(
        &mut self,
        now: &TreeEntry,
        size: u64,
        etag: &Option<String>,
    ) -> Result<Option<EntryKind>> {
        let Some(cursor) = &mut self.cursor else {
            return Ok(None);
        };
        let Some(before) = cursor.take(&now.path)? else {
            return Ok(None);
        };
        let EntryKind::File {
            size: was,
            chunks,
            etag: etag_then,
            ..
        } = &before.kind
        else {
            return Ok(None);
        };
        // An object is unchanged when its ETag is; a file when its mtime is.
        let same_version = match (etag, etag_then) {
            (Some(now), Some(then)) => now == then,
            (None, None) => before.mtime_ns == now.mtime_ns,
            _ => false,
        };
        if *was != size || !same_version {
            return Ok(None);
        }
        // One lookup per chunk (the catalog is on disk): the packs are noted here, and the
        // entry is not looked up again when it is finished.
        let mut packs = Vec::with_capacity(chunks.len());
        for id in chunks {
            match self.catalog.locate(id)? {
                Some(at) => packs.push(at.pack),
                None => return Ok(None),
            }
        }
        self.packs_used.extend(packs);
        Ok(Some(before.kind))
    }

    /// `entry` is complete and every entry before it is in the tree: append it. (The
    /// packs its chunks come from were noted when it was found unchanged or read.)
    fn finish_entry(&mut self, entry: TreeEntry) -> Result<()> {
        self.tree.push(&entry)?;
        self.finished += 1;
        Ok(())
    }

    /// Append `entry`: complete, or waiting for the reader of `job`. Waits for answers
    /// while the window is full.
    fn push(&mut self, entry: TreeEntry, job: Option<ReadJob>) -> Result<()> {
        match job {
            None if self.window.is_empty() => self.finish_entry(entry)?,
            None => self.window.push_back((entry, true)),
            Some(mut job) => {
                job.seq = (self.finished + self.window.len()) as u64;
                self.window.push_back((entry, false));
                self.jobs
                    .send(job)
                    .map_err(|_| Error::new(ErrorKind::Cancelled, "the file readers stopped"))?;
                self.in_flight += 1;
            }
        }
        while self.window.len() >= WINDOW {
            self.take_answer()?;
        }
        Ok(())
    }

    /// Wait for one reader's answer, put it in place, and move the complete entries at the
    /// front of the window to the tree. A reader's error is the walk's.
    fn take_answer(&mut self) -> Result<()> {
        let done = self
            .done
            .recv()
            .map_err(|_| Error::new(ErrorKind::Cancelled, "the file readers stopped"))?;
        self.in_flight -= 1;
        let read = done.result?;
        let at = usize::try_from(done.seq).expect("a position in memory") - self.finished;
        let (entry, complete) = &mut self.window[at];
        entry.kind = read.kind;
        *complete = true;
        self.counts.files_read += 1;
        self.counts.bytes_read += read.bytes_read;
        self.counts.bytes_total += read.bytes_read;
        self.counts.chunks_new += read.chunks_new;
        self.counts.bytes_new += read.bytes_new;
        self.packs_used.extend(read.packs_reused);
        while self.window.front().is_some_and(|(_, complete)| *complete) {
            let (entry, _) = self.window.pop_front().expect("a front");
            self.finish_entry(entry)?;
        }
        Ok(())
    }
}
