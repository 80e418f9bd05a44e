//! Unpacking a base backup's tar stream into a data directory, in-process.
//!
//! `tar -x` behind a pipe cost the restore more than decrypting and decompressing did: every
//! byte crossed the pipe twice, in tar's 10 KiB reads, with a context switch for each. Here
//! the decoded chunks are parsed where they arrive, and their file data is written straight
//! from them (no copy) by [`WRITERS`] threads, each file by one of them in turn: writing
//! into the page cache is the restore's costliest step, so it runs beside the decrypting
//! and decompressing threads, and on more than one core.
//!
//! Nothing is written outside the data directory: a member's name must be relative and
//! free of `..`; a file or directory is never created through a symbolic link (the archive's
//! own links are recorded and any member below one is refused), and files are created
//! exclusively, so nothing in place is overwritten. Only regular files, directories and
//! symbolic links are taken; any other member (hard link, device, FIFO, extension headers)
//! is refused by name. Every header's checksum is checked.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use dr_core::{Error, Result};

/// What an unpack wrote.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Regular files written.
    pub files: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// Threads writing files' data, each file by one of them.
pub const WRITERS: usize = 2;
/// Pieces of data queued for a writer.
const QUEUE: usize = 8;

/// A writer's work, in order: a file opened, its data, its end.
enum Job {
    Start {
        file: File,
        name: PathBuf,
        mtime: u64,
    },
    Data(Bytes),
    End,
}

/// The member whose data is being read: bytes left, which writer has it.
struct Open {
    left: u64,
    writer: usize,
}

/// The writer threads and the first error one of them met.
struct Writers {
    queues: Vec<SyncSender<Job>>,
    threads: Vec<std::thread::JoinHandle<()>>,
    failed: Arc<Mutex<Option<Error>>>,
    next: usize,
}

impl Writers {
    fn start(root: &Path, n: usize) -> Result<Writers> {
        let failed: Arc<Mutex<Option<Error>>> = Arc::default();
        let mut queues = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let (tx, rx) = sync_channel(QUEUE);
            let (root, failed) = (root.to_path_buf(), failed.clone());
            let thread = std::thread::Builder::new()
                .name(format!("dr-unpack-{i}"))
                .spawn(move || {
                    if let Err(e) = write_jobs(&root, rx) {
                        failed.lock().unwrap().get_or_insert(e);
                    }
                })
                .map_err(|e| Error::io("cannot start a thread to write the restore", e))?;
            queues.push(tx);
            threads.push(thread);
        }
        Ok(Writers {
            queues,
            threads,
            failed,
            next: 0,
        })
    }

    /// The writer for the next file.
    fn take_turn(&mut self) -> usize {
        let w = self.next;
        self.next = (self.next + 1) % self.queues.len();
        w
    }

    fn send(&self, writer: usize, job: Job) -> Result<()> {
        if self.queues[writer].send(job).is_err() {
            return Err(self.error());
        }
        Ok(())
    }

    /// The error that stopped a writer.
    fn error(&self) -> Error {
        self.failed
            .lock()
            .unwrap()
            .take()
            .unwrap_or_else(|| Error::new(dr_core::ErrorKind::Other, "a restore writer stopped"))
    }

    /// Wait until every file is written.
    fn finish(mut self) -> Result<()> {
        if !self.stop() {
            return Err(Error::new(
                dr_core::ErrorKind::Other,
                "a restore writer panicked",
            ));
        }
        match self.failed.lock().unwrap().take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// End the queues and wait for the threads; whether all ended without a panic.
    fn stop(&mut self) -> bool {
        self.queues.clear();
        let mut ok = true;
        for t in std::mem::take(&mut self.threads) {
            ok &= t.join().is_ok(); // every thread joined, not only up to a panicked one
        }
        ok
    }
}

impl Drop for Writers {
    /// No writer outlives the unpack: a failed restore removes what was written only once
    /// nothing writes any more.
    fn drop(&mut self) {
        self.stop();
    }
}

/// A writer thread: the files handed to it, one after the other.
fn write_jobs(root: &Path, jobs: Receiver<Job>) -> Result<()> {
    let mut current: Option<(File, PathBuf, u64)> = None;
    for job in jobs {
        match job {
            Job::Start { file, name, mtime } => current = Some((file, name, mtime)),
            Job::Data(data) => {
                let (file, name, _) = current.as_mut().expect("data follows a start");
                file.write_all(&data)
                    .map_err(|e| write_error(root, name, e))?;
            }
            Job::End => {
                let (file, name, mtime) = current.take().expect("an end follows a start");
                let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(mtime);
                file.set_modified(mtime)
                    .map_err(|e| write_error(root, &name, e))?;
            }
        }
    }
    Ok(())
}

/// A streaming tar reader that writes its members under one directory.
pub struct Unpacker {
    root: PathBuf,
    /// Bytes of the current header gathered so far.
    header: Vec<u8>,
    open: Option<Open>,
    /// Padding left after the current member's data.
    padding: u64,
    /// A member was named only for its data to be skipped (a symbolic link's, none).
    skip: u64,
    /// The archive's symbolic links, as member paths: nothing is written below them.
    links: HashSet<PathBuf>,
    ended: bool,
    done: Unpacked,
    writers: Writers,
}

impl Unpacker {
    /// Unpack into `root`, an existing (empty) directory.
    pub fn new(root: impl Into<PathBuf>) -> Result<Unpacker> {
        let root = root.into();
        Ok(Unpacker {
            writers: Writers::start(&root, WRITERS)?,
            root,
            header: Vec::with_capacity(512),
            open: None,
            padding: 0,
            skip: 0,
            links: HashSet::new(),
            ended: false,
            done: Unpacked::default(),
        })
    }

    /// Take the next piece of the archive.
    pub fn feed(&mut self, whole: &Bytes) -> Result<()> {
        let mut at = 0;
        while at < whole.len() {
            let chunk = &whole[at..];
            if self.ended {
                if chunk.iter().any(|b| *b != 0) {
                    return Err(Error::corrupt(
                        "data after the end of the base backup's tar archive",
                    ));
                }
                return Ok(());
            }
            if let Some(open) = &mut self.open {
                let n = open.left.min(chunk.len() as u64) as usize;
                let writer = open.writer;
                open.left -= n as u64;
                let last = open.left == 0;
                self.writers
                    .send(writer, Job::Data(whole.slice(at..at + n)))?;
                self.done.bytes += n as u64;
                at += n;
                if last {
                    self.close()?;
                }
                continue;
            }
            if self.skip > 0 || self.padding > 0 {
                let left = if self.skip > 0 {
                    &mut self.skip
                } else {
                    &mut self.padding
                };
                let n = (*left).min(chunk.len() as u64) as usize;
                *left -= n as u64;
                at += n;
                continue;
            }
            let n = (512 - self.header.len()).min(chunk.len());
            self.header.extend_from_slice(&chunk[..n]);
            at += n;
            if self.header.len() == 512 {
                let block = std::mem::replace(&mut self.header, Vec::with_capacity(512));
                self.member(&block)?;
            }
        }
        Ok(())
    }

    /// The archive is complete: check it ended properly; what was written.
    pub fn finish(self) -> Result<Unpacked> {
        let complete = self.ended && self.open.is_none() && self.header.is_empty();
        self.writers.finish()?;
        if !complete {
            return Err(Error::corrupt("the base backup's tar archive is truncated"));
        }
        Ok(self.done)
    }

    /// One header block.
    fn member(&mut self, block: &[u8]) -> Result<()> {
        if block.iter().all(|b| *b == 0) {
            self.ended = true;
            return Ok(());
        }
        let mut raw = [0u8; 512];
        raw.copy_from_slice(block);
        let h = tar::Header::from_byte_slice(&raw);
        let bad =
            |what: String| Error::corrupt(format!("the base backup's tar archive has {what}"));
        if h.cksum().ok() != Some(header_sum(&raw)) {
            return Err(bad("a header that fails its checksum".into()));
        }
        let size = h
            .entry_size()
            .map_err(|_| bad("a member with a malformed size".into()))?;
        let raw_name = h
            .path()
            .map_err(|_| bad("a member with a malformed name".into()))?
            .into_owned();
        let name = member_path(&raw_name)?;
        if let Some(link) = name.ancestors().skip(1).find(|a| self.links.contains(*a)) {
            return Err(Error::corrupt(format!(
                "archive member '{}' lies below the symbolic link '{}': not written through it",
                raw_name.display(),
                link.display()
            )));
        }
        let mode = h.mode().unwrap_or(0o600) & 0o7777;
        let mtime = h.mtime().unwrap_or(0);
        self.padding = (512 - size % 512) % 512;
        let path = self.root.join(&name);
        let kind = h.entry_type();
        if kind.is_file() || kind.is_contiguous() {
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode | 0o600)
                .open(&path)
                .map_err(|e| write_error(&self.root, &name, e))?;
            let writer = self.writers.take_turn();
            self.writers
                .send(writer, Job::Start { file, name, mtime })?;
            self.open = Some(Open { left: size, writer });
            if size == 0 {
                self.close()?;
            }
        } else if kind.is_dir() {
            self.skip = size;
            if name.as_os_str().is_empty() {
                return Ok(()); // "./": the root itself
            }
            match std::fs::DirBuilder::new().mode(mode | 0o700).create(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let real_dir = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir());
                    if !real_dir {
                        return Err(write_error(&self.root, &name, e));
                    }
                }
                Err(e) => return Err(write_error(&self.root, &name, e)),
            }
        } else if kind.is_symlink() {
            self.skip = size;
            let target = h
                .link_name()
                .map_err(|_| bad("a symbolic link with a malformed target".into()))?
                .ok_or_else(|| {
                    bad(format!(
                        "a symbolic link '{}' without a target",
                        raw_name.display()
                    ))
                })?;
            std::os::unix::fs::symlink(&target, &path)
                .map_err(|e| write_error(&self.root, &name, e))?;
            self.links.insert(name);
        } else {
            return Err(Error::corrupt(format!(
                "archive member '{}' is of a kind a base backup does not hold (tar type '{}'): \
                 not restored",
                raw_name.display(),
                kind.as_byte().escape_ascii()
            )));
        }
        Ok(())
    }

    /// The open file is complete: its writer sets its time; count it.
    fn close(&mut self) -> Result<()> {
        let open = self.open.take().expect("a file is open");
        self.writers.send(open.writer, Job::End)?;
        self.done.files += 1;
        Ok(())
    }
}

/// A member's name as a path below the root: relative, no `..`; `.` parts dropped.
fn member_path(raw: &Path) -> Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => {
                return Err(Error::corrupt(format!(
                    "archive member '{}' would be written outside the data directory: not restored",
                    raw.display()
                )))
            }
        }
    }
    Ok(out)
}

/// A tar header's checksum: the sum of its bytes, the checksum field taken as spaces.
fn header_sum(raw: &[u8; 512]) -> u32 {
    raw.iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum()
}

fn write_error(root: &Path, name: &Path, e: std::io::Error) -> Error {
    Error::io(format!("cannot write {}", root.join(name).display()), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar archive of `members` (name, type, data or link target), as `tar::Builder`
    /// writes it, fed in `chunk`-byte pieces.
    fn unpack(into: &Path, archive: &[u8], chunk: usize) -> Result<Unpacked> {
        let mut u = Unpacker::new(into)?;
        for piece in archive.chunks(chunk) {
            u.feed(&Bytes::copy_from_slice(piece))?;
        }
        u.finish()
    }

    fn header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        // set_path refuses `..`; a hostile archive is written byte by byte instead.
        let field = &mut h.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        h.set_size(size);
        h.set_mode(if kind.is_dir() { 0o700 } else { 0o600 });
        h.set_mtime(1_700_000_000);
        h.set_entry_type(kind);
        h
    }

    fn archive(members: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, kind, data) in members {
            let mut h = header(name, *kind, 0);
            if kind.is_symlink() {
                h.set_link_name(std::str::from_utf8(data).unwrap()).unwrap();
                h.set_cksum();
                b.append(&h, std::io::empty()).unwrap();
            } else {
                h.set_size(data.len() as u64);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    use tar::EntryType as T;

    #[test]
    fn files_and_directories_come_back_whatever_the_chunking() {
        let big: Vec<u8> = (0..3000u32).flat_map(|i| i.to_le_bytes()).collect();
        let a = archive(&[
            ("PG_VERSION", T::Regular, b"15\n"),
            ("base/", T::Directory, b""),
            ("base/1/", T::Directory, b""),
            ("base/1/1259", T::Regular, &big),
            ("empty", T::Regular, b""),
            ("./global/", T::Directory, b""),
        ]);
        for chunk in [1, 7, 512, 513, 100_000] {
            let dir = tempfile::tempdir().unwrap();
            let done = unpack(dir.path(), &a, chunk).unwrap();
            assert_eq!(
                done,
                Unpacked {
                    files: 3,
                    bytes: 3 + big.len() as u64
                },
                "{chunk}"
            );
            assert_eq!(std::fs::read(dir.path().join("base/1/1259")).unwrap(), big);
            assert_eq!(
                std::fs::read(dir.path().join("PG_VERSION")).unwrap(),
                b"15\n"
            );
            assert!(dir.path().join("global").is_dir());
            let m = std::fs::metadata(dir.path().join("PG_VERSION")).unwrap();
            assert_eq!(
                m.modified().unwrap(),
                SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
            );
        }
    }

    #[test]
    fn parent_directory_names_are_refused() {
        let outside = tempfile::tempdir().unwrap();
        let dir = outside.path().join("pgdata");
        std::fs::create_dir(&dir).unwrap();
        for name in ["../escaped", "base/../../escaped", "/tmp/escaped-absolute"] {
            let a = archive(&[(name, T::Regular, b"x")]);
            let err = unpack(&dir, &a, 512).unwrap_err();
            assert!(
                err.to_string().contains("outside the data directory"),
                "{name}: {err}"
            );
        }
        assert!(!outside.path().join("escaped").exists());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn nothing_is_written_through_a_symbolic_link() {
        let outside = tempfile::tempdir().unwrap();
        let dir = outside.path().join("pgdata");
        std::fs::create_dir(&dir).unwrap();
        let target = outside.path().display().to_string();
        let a = archive(&[
            ("pg_tblspc/", T::Directory, b""),
            ("pg_tblspc/16384", T::Symlink, target.as_bytes()),
            ("pg_tblspc/16384/PG_15/evil", T::Regular, b"x"),
        ]);
        let err = unpack(&dir, &a, 512).unwrap_err();
        assert!(err.to_string().contains("below the symbolic link"), "{err}");
        assert!(!outside.path().join("PG_15").exists());
        // The link itself is restored as a link, as tar would.
        let link = dir.join("pg_tblspc/16384");
        assert_eq!(std::fs::read_link(link).unwrap(), outside.path());
        // A link, then a directory of the same name: not followed either.
        let dir2 = outside.path().join("pgdata2");
        std::fs::create_dir(&dir2).unwrap();
        let a = archive(&[
            ("l", T::Symlink, target.as_bytes()),
            ("l/", T::Directory, b""),
        ]);
        assert!(unpack(&dir2, &a, 512).is_err());
    }

    #[test]
    fn existing_files_are_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), b"mine").unwrap();
        let a = archive(&[("PG_VERSION", T::Regular, b"15\n")]);
        assert!(unpack(dir.path(), &a, 512).is_err());
        assert_eq!(
            std::fs::read(dir.path().join("PG_VERSION")).unwrap(),
            b"mine"
        );
    }

    #[test]
    fn other_kinds_truncation_and_bad_headers_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = archive(&[("hard", T::Link, b"")]);
        let err = unpack(dir.path(), &a, 512).unwrap_err();
        assert!(err.to_string().contains("'hard' is of a kind"), "{err}");

        let a = archive(&[("f", T::Regular, &[7u8; 2000])]);
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(dir.path(), &a[..1024], 512).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");

        let mut flipped = a.clone();
        flipped[10] ^= 1; // in the first header's name
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(dir.path(), &flipped, 512).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");

        let mut trailing = a;
        trailing.extend_from_slice(b"junk");
        let dir = tempfile::tempdir().unwrap();
        let err = unpack(dir.path(), &trailing, 512).unwrap_err();
        assert!(err.to_string().contains("after the end"), "{err}");
    }
}
