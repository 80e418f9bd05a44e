//! Files as a backup source: a directory tree (user uploads, exported files) streamed as a
//! POSIX tar archive through the same compress → encrypt → store pipeline as a database, and
//! restored into an empty (or, when asked, replaced) directory.
//!
//! The archive is standard: `drctl cat ID | tar -x` restores without dr. Regular files,
//! directories and symbolic links (as links, never followed) are stored with their modes
//! and times; sockets and devices are skipped with a warning. A directory is not a snapshot:
//! a file written during the backup is stored as it was read, and a file that changes size
//! while it is read fails the backup rather than storing a torn copy.
//!
//! The manifest records the number of regular files and their bytes; a restore counts them
//! again in what it unpacked and refuses a mismatch before the directory is put in place.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;

use dr_core::{
    ByteStream, Dump, DumpCompletion, DumpStats, Dumper, Error, ErrorKind, RestoreReport, Restorer,
    Result, SourceInfo, TableStats,
};

/// `SourceInfo::kind` of a directory backup.
pub const KIND: &str = "files";
/// `SourceInfo::format` of its payload.
pub const FORMAT: &str = "tar";
/// The one entry of `DumpStats::tables`: regular files (`rows`) and their bytes.
const FILES_ENTRY: &str = "<files>";
/// Bytes handed to the pipeline at a time.
const CHUNK: usize = 1 << 20;

/// Backs up the directory tree under a root.
#[derive(Debug, Clone)]
pub struct DirDumper {
    root: PathBuf,
}

impl DirDumper {
    /// Back up everything under `root` (the root itself is not stored: a restore puts its
    /// contents into the target directory).
    pub fn new(root: impl Into<PathBuf>) -> DirDumper {
        DirDumper { root: root.into() }
    }
}

#[async_trait]
impl Dumper for DirDumper {
    async fn start(&self) -> Result<Dump> {
        let root = self.root.clone();
        let meta = tokio::fs::metadata(&root).await.map_err(|e| {
            Error::io("cannot read the directory to back up", e)
                .with_context("directory", root.display())
        })?;
        if !meta.is_dir() {
            return Err(Error::invalid("not a directory").with_context("directory", root.display()));
        }
        let name = std::fs::canonicalize(&root)
            .unwrap_or_else(|_| root.clone())
            .display()
            .to_string();
        // Sizes first (metadata only), so the upload can size its parts.
        let size_hint = tokio::task::spawn_blocking({
            let root = root.clone();
            move || tree_size(&root)
        })
        .await
        .ok();

        let (tx, mut rx) = mpsc::channel::<Result<Bytes>>(4);
        let writer = tokio::task::spawn_blocking(move || {
            let result = write_tar(&root, ChannelWriter::new(tx.clone()));
            if let Err(e) = &result {
                // End the stream with the error so the upload is aborted, not finished.
                let _ = tx.blocking_send(Err(Error::new(e.kind(), e.to_string())));
            }
            result
        });
        let stream: ByteStream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx)).boxed();
        Ok(Dump {
            source: SourceInfo {
                kind: KIND.into(),
                format: FORMAT.into(),
                name,
                origin: Some(dr_core::names::host_name()),
                ..Default::default()
            },
            stream,
            size_hint,
            completion: Box::new(TarCompletion(writer)),
        })
    }
}

struct TarCompletion(tokio::task::JoinHandle<Result<DumpStats>>);

#[async_trait]
impl DumpCompletion for TarCompletion {
    async fn finish(self: Box<Self>) -> Result<DumpStats> {
        self.0
            .await
            .map_err(|e| Error::new(ErrorKind::Other, "the archive writer failed").with_source(e))?
    }
}

/// Bytes of the archive of the tree under `root`, roughly: file sizes plus a header each.
fn tree_size(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .follow_links(false)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.metadata().ok())
        .map(|m| if m.is_file() { m.len() + 1024 } else { 512 })
        .sum::<u64>()
        + 10240
}

/// Write the archive of `root` into `out`; the files and bytes stored.
fn write_tar(root: &Path, out: ChannelWriter) -> Result<DumpStats> {
    let at = |path: &Path| path.display().to_string();
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder.mode(tar::HeaderMode::Complete);
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in walkdir::WalkDir::new(root)
        .follow_links(false)
        .sort_by_file_name()
        .min_depth(1)
    {
        let entry = entry.map_err(|e| {
            let path = e.path().map(at).unwrap_or_default();
            Error::io("cannot read the directory", io::Error::other(e)).with_context("path", path)
        })?;
        let path = entry.path();
        let relative = path
            .strip_prefix(root)
            .expect("walkdir yields paths under the root");
        let kind = entry.file_type();
        if kind.is_file() {
            files += 1;
            bytes += entry
                .metadata()
                .map_err(|e| Error::io("cannot read a file's size", io::Error::other(e)))?
                .len();
        } else if !kind.is_dir() && !kind.is_symlink() {
            tracing::warn!(path = %path.display(), "skipping a special file (socket, device, fifo)");
            continue;
        }
        builder.append_path_with_name(path, relative).map_err(|e| {
            stream_error(e, "cannot add a file to the archive").with_context("path", at(path))
        })?;
    }
    builder
        .into_inner()
        .and_then(|mut out| out.flush())
        .map_err(|e| stream_error(e, "cannot finish the archive"))?;
    Ok(DumpStats {
        tables: vec![TableStats {
            schema: String::new(),
            name: FILES_ENTRY.into(),
            rows: files,
            bytes,
        }],
    })
}

/// An I/O error of the archive writer; a closed channel means the backup stopped reading.
fn stream_error(e: io::Error, what: &'static str) -> Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Error::new(
            ErrorKind::Cancelled,
            "the backup stopped reading the archive",
        )
    } else {
        Error::io(what, e)
    }
}

/// A `Write` that hands the pipeline 1 MiB chunks.
struct ChannelWriter {
    tx: mpsc::Sender<Result<Bytes>>,
    buf: BytesMut,
}

impl ChannelWriter {
    fn new(tx: mpsc::Sender<Result<Bytes>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: BytesMut::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = self.buf.split().freeze();
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the reader is gone"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Restores a directory backup into a target directory.
#[derive(Debug, Clone)]
pub struct DirRestorer {
    target: PathBuf,
    replace: bool,
}

impl DirRestorer {
    /// Restore into `target`, which must be missing or empty.
    pub fn new(target: impl Into<PathBuf>) -> DirRestorer {
        DirRestorer {
            target: target.into(),
            replace: false,
        }
    }

    /// Replace a non-empty target: the backup is unpacked and checked beside it, and only
    /// then swapped in; the old contents are removed after the swap.
    pub fn replace(mut self, replace: bool) -> DirRestorer {
        self.replace = replace;
        self
    }
}

#[async_trait]
impl Restorer for DirRestorer {
    async fn restore(
        &self,
        source: &SourceInfo,
        expected: &DumpStats,
        payload: ByteStream,
    ) -> Result<RestoreReport> {
        if source.format != FORMAT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "a directory restore reads {FORMAT} payloads, not {:?} (restore it with --db)",
                    source.format
                ),
            ));
        }
        let target = self.target.clone();
        let shown = target.display().to_string();
        let occupied = match std::fs::read_dir(&target) {
            Ok(mut entries) => entries.next().is_some(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(Error::io("cannot read the target directory", e)
                    .with_context("directory", &shown))
            }
        };
        if occupied && !self.replace {
            return Err(Error::new(
                ErrorKind::NotEmpty,
                format!("directory {shown} is not empty; pass --replace to replace it"),
            ));
        }
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| {
            Error::io("cannot create the target's parent directory", e)
                .with_context("directory", &shown)
        })?;
        // Unpacked beside the target, on the same file system, so the swap is a rename.
        let staging = tempfile::Builder::new()
            .prefix(".dr-restore-")
            .tempdir_in(&parent)
            .map_err(|e| {
                Error::io("cannot create a staging directory", e).with_context("directory", &shown)
            })?;

        let payload_error: Arc<Mutex<Option<Error>>> = Arc::default();
        let reader = {
            let slot = payload_error.clone();
            tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(payload.map(
                move |chunk| {
                    chunk.map_err(|e| {
                        let message = e.to_string();
                        slot.lock().unwrap().get_or_insert(e);
                        io::Error::other(message)
                    })
                },
            )))
        };
        let into = staging.path().to_path_buf();
        let unpacked = tokio::task::spawn_blocking(move || unpack(reader, &into))
            .await
            .map_err(|e| {
                Error::new(ErrorKind::Other, "the archive reader failed").with_source(e)
            })?;
        if let Some(e) = payload_error.lock().unwrap().take() {
            return Err(e);
        }
        let (files, bytes) = unpacked?;
        let want = expected.tables.iter().find(|t| t.name == FILES_ENTRY);
        if let Some(want) = want {
            if (want.rows, want.bytes) != (files, bytes) {
                return Err(Error::corrupt(format!(
                    "the backup unpacked to {files} files ({bytes} bytes), the manifest says {} files ({} bytes)",
                    want.rows, want.bytes
                )));
            }
        }

        // Renames, and removing a replaced tree, are blocking file-system work: off the
        // runtime's threads.
        let staged = staging.keep();
        let moved =
            tokio::task::spawn_blocking(move || put_in_place(&staged, &target, &parent, occupied))
                .await
                .map_err(|e| {
                    Error::new(ErrorKind::Other, "moving the restored directory failed")
                        .with_source(e)
                })?;
        if let Err(e) = moved {
            return Err(
                Error::io("cannot move the restored directory into place", e)
                    .with_context("directory", &shown),
            );
        }
        Ok(RestoreReport {
            target: shown,
            tables_checked: usize::from(want.is_some()),
            rows_checked: files,
            replaced: occupied,
        })
    }
}

/// Rename the checked `staged` tree to `target`. An `occupied` target is renamed aside
/// first, put back if the second rename fails, and removed once the new tree is in place.
/// On failure `staged` is removed.
fn put_in_place(staged: &Path, target: &Path, parent: &Path, occupied: bool) -> io::Result<()> {
    let moved = if occupied {
        let old = parent.join(format!(
            ".dr-replaced-{}",
            staged.file_name().unwrap_or_default().to_string_lossy()
        ));
        std::fs::rename(target, &old)
            .and_then(|()| {
                std::fs::rename(staged, target).inspect_err(|_| {
                    let _ = std::fs::rename(&old, target);
                })
            })
            .map(|()| {
                if let Err(e) = std::fs::remove_dir_all(&old) {
                    tracing::warn!(path = %old.display(), error = %e, "cannot remove the replaced directory");
                }
            })
    } else {
        std::fs::rename(staged, target)
    };
    if moved.is_err() {
        let _ = std::fs::remove_dir_all(staged);
    }
    moved
}

/// Unpack the archive from `reader` into `into`, read the stream to its end (so its final
/// authentication tag is checked), and count the regular files and bytes unpacked.
fn unpack(reader: impl io::Read, into: &Path) -> Result<(u64, u64)> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive
        .unpack(into)
        .map_err(|e| Error::corrupt(format!("cannot unpack the archive: {e}")))?;
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|e| Error::corrupt(format!("cannot read the archive's end: {e}")))?;
    let (mut files, mut bytes) = (0u64, 0u64);
    for entry in walkdir::WalkDir::new(into).follow_links(false) {
        let entry =
            entry.map_err(|e| Error::io("cannot read the unpacked files", io::Error::other(e)))?;
        if entry.file_type().is_file() {
            files += 1;
            bytes += entry
                .metadata()
                .map_err(|e| Error::io("cannot read the unpacked files", io::Error::other(e)))?
                .len();
        }
    }
    Ok((files, bytes))
}

/// Re-counts the regular files and bytes of a tar stream fed in pieces, without unpacking:
/// what `verify` compares with the manifest for a directory backup. Checks every header's
/// checksum and that the archive ends with its end-of-archive blocks.
#[derive(Debug, Default)]
pub struct TarCounter {
    header: Vec<u8>,
    /// Bytes of entry data (and padding) still to skip.
    skip: u64,
    zero_blocks: u8,
    ended: bool,
    offset: u64,
    files: u64,
    bytes: u64,
}

const BLOCK: usize = 512;

impl TarCounter {
    /// A counter at the start of an archive.
    pub fn new() -> TarCounter {
        TarCounter::default()
    }

    /// Feed the next bytes of the archive.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<()> {
        while !data.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64) as usize;
                self.skip -= n as u64;
                self.offset += n as u64;
                data = &data[n..];
                continue;
            }
            if self.ended {
                if data.iter().any(|&b| b != 0) {
                    return Err(Error::corrupt(format!(
                        "data after the end of the tar archive (byte {})",
                        self.offset
                    )));
                }
                self.offset += data.len() as u64;
                return Ok(());
            }
            let take = (BLOCK - self.header.len()).min(data.len());
            self.header.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.header.len() == BLOCK {
                let header = std::mem::take(&mut self.header);
                self.entry(&header)?;
                self.offset += BLOCK as u64;
            }
        }
        Ok(())
    }

    fn entry(&mut self, h: &[u8]) -> Result<()> {
        if h.iter().all(|&b| b == 0) {
            self.zero_blocks += 1;
            self.ended = self.zero_blocks == 2;
            return Ok(());
        }
        self.zero_blocks = 0;
        let bad = |what: &str| Error::corrupt(format!("tar header at byte {} {what}", self.offset));
        let stored = octal(&h[148..156]).ok_or_else(|| bad("has an unreadable checksum"))?;
        let sum: u64 = h
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    u64::from(b' ')
                } else {
                    u64::from(b)
                }
            })
            .sum();
        if sum != stored {
            return Err(bad("fails its checksum"));
        }
        let size = if h[124] & 0x80 != 0 {
            // GNU base-256 for sizes of 8 GiB and more.
            h[125..136]
                .iter()
                .fold(0u64, |n, &b| (n << 8) | u64::from(b))
        } else {
            octal(&h[124..136]).ok_or_else(|| bad("has an unreadable size"))?
        };
        if matches!(h[156], b'0' | 0 | b'7') {
            self.files += 1;
            self.bytes += size;
        }
        self.skip = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        Ok(())
    }

    /// The files and bytes counted, in the shape [`DirDumper`] records them.
    pub fn finish(self) -> Result<DumpStats> {
        if !self.ended {
            return Err(Error::corrupt(format!(
                "the tar archive is truncated: it ends at byte {} without its end-of-archive blocks",
                self.offset
            )));
        }
        Ok(DumpStats {
            tables: vec![TableStats {
                schema: String::new(),
                name: FILES_ENTRY.into(),
                rows: self.files,
                bytes: self.bytes,
            }],
        })
    }
}

/// An octal tar number field: digits, ended by NUL or space.
fn octal(field: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field).ok()?;
    let digits = text.trim_matches(|c: char| c == '\0' || c == ' ');
    if digits.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(digits, 8).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar archive made by the tar crate: a file of `n` bytes, a directory, a link.
    fn archive(n: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(n as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(
            &mut h,
            "a/very/long/".repeat(12) + "file.bin",
            &vec![7u8; n][..],
        )
        .unwrap();
        let mut d = tar::Header::new_gnu();
        d.set_entry_type(tar::EntryType::Directory);
        d.set_size(0);
        d.set_cksum();
        b.append_data(&mut d, "dir/", io::empty()).unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        b.append_link(&mut l, "link", "dir").unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn counts_files_and_bytes_in_any_piece_sizes() {
        let tar = archive(1000);
        for piece in [1, 7, 512, 513, 4096, tar.len()] {
            let mut c = TarCounter::new();
            for chunk in tar.chunks(piece) {
                c.feed(chunk).unwrap();
            }
            let stats = c.finish().unwrap();
            assert_eq!(
                (stats.tables[0].rows, stats.tables[0].bytes),
                (1, 1000),
                "{piece}"
            );
        }
    }

    #[test]
    fn truncation_and_damage_are_corrupt() {
        let tar = archive(1000);
        let mut c = TarCounter::new();
        c.feed(&tar[..tar.len() - 600]).unwrap();
        assert_eq!(c.finish().unwrap_err().kind(), ErrorKind::Corrupt);

        let mut damaged = tar.clone();
        damaged[100] ^= 1;
        let mut c = TarCounter::new();
        let e = c.feed(&damaged).unwrap_err();
        assert!(e.to_string().contains("checksum"), "{e}");

        let mut extra = tar.clone();
        extra.extend_from_slice(b"junk");
        let e = TarCounter::new().feed(&extra).unwrap_err();
        assert!(e.to_string().contains("after the end"), "{e}");
    }
}
