//! [`DirDumper`]: the tree under a root as a tar archive, written on a blocking thread.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;

use dr_core::{
    ByteStream, Dump, DumpCompletion, DumpStats, Dumper, Error, ErrorKind, Result, SourceInfo,
};

use crate::{files_stats, PAYLOAD_FORMAT, SOURCE_KIND};

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
                kind: SOURCE_KIND.into(),
                format: PAYLOAD_FORMAT.into(),
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
    Ok(files_stats(files, bytes))
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
