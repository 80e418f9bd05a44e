//! The file readers of a backup: threads that read, chunk, hash and compress the files the
//! walk hands them, so that per-file work uses every core (restic spreads it the same way).
//!
//! The walk stays one thread, in tree order, and puts each reader's result in its place
//! (see `walk.rs`), so the snapshot is the same whatever the number of readers and
//! whichever finishes first. A chunk is stored once even if two readers meet it at the same
//! time: the first to claim its id in the shared set of new chunks compresses and sends it.
//! Each reader holds one read buffer and one zstd context; blobs go to the packer over a
//! bounded channel.

use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use futures::TryStreamExt;

use dr_core::{Error, ErrorKind, Result, StorageTarget};

use super::chunker::{ChunkBuffer, Chunker};
use super::key::{ChunkId, DedupKey};
use super::new_chunks::NewChunks;
use super::pack::{Blob, BlobCompressor, Catalog};
use super::tree::EntryKind;

/// A file for a reader.
#[derive(Debug)]
pub(super) struct ReadJob {
    /// Its place in walk order.
    pub seq: u64,
    /// Where its bytes are.
    pub file: FileToRead,
    /// Its size when listed (a different size read is stored, with a warning).
    pub size: u64,
    /// An object's ETag, recorded in its entry.
    pub etag: Option<String>,
}

/// Where a file's bytes are.
#[derive(Debug)]
pub(super) enum FileToRead {
    /// A file of a directory source.
    Path(PathBuf),
    /// An object of a bucket source, by key.
    Object(String),
}

impl FileToRead {
    /// The file as error messages name it.
    fn context(&self, error: Error) -> Error {
        match self {
            FileToRead::Path(p) => error.with_context("path", p.display()),
            FileToRead::Object(key) => error.with_context("object", key),
        }
    }
}

/// A reader's answer for the job of `seq`.
#[derive(Debug)]
pub(super) struct ReadDone {
    pub seq: u64,
    pub result: Result<FileRead>,
}

/// A file read: its entry's kind and what reading it cost.
#[derive(Debug)]
pub(super) struct FileRead {
    /// An [`EntryKind::File`].
    pub kind: EntryKind,
    pub bytes_read: u64,
    /// Chunks this file was first to store, and their bytes.
    pub chunks_new: u64,
    pub bytes_new: u64,
    /// The catalog's packs holding the file's other chunks (stored before this backup).
    pub packs_reused: Vec<u32>,
}

/// What every reader shares.
pub(super) struct Readers {
    chunker: Chunker,
    dedup: DedupKey,
    /// The chunks stored before this backup.
    catalog: Arc<Catalog>,
    /// The chunks this backup stores (claimed by the reader that sends them), mostly on
    /// disk.
    new: Mutex<NewChunks>,
    blobs: SyncSender<Blob>,
    /// The store and runtime of a bucket source.
    objects: Option<(Arc<dyn StorageTarget>, tokio::runtime::Handle)>,
    /// Set when the backup failed: readers take no further job.
    stop: AtomicBool,
}

impl Readers {
    pub fn new(
        dedup: DedupKey,
        catalog: Arc<Catalog>,
        blobs: SyncSender<Blob>,
        objects: Option<(Arc<dyn StorageTarget>, tokio::runtime::Handle)>,
    ) -> Readers {
        Readers {
            chunker: Chunker::new(&dedup, super::chunker::CHUNK_SIZES),
            dedup,
            catalog,
            new: Mutex::new(NewChunks::default()),
            blobs,
            objects,
            stop: AtomicBool::new(false),
        }
    }

    /// Tell the readers to take no further job (the backup failed).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// One reader's loop: take jobs until the walk closes the queue (or the backup stopped)
    /// and answer each on `done`. Runs on its own thread.
    pub fn run(
        &self,
        jobs: &Mutex<Receiver<ReadJob>>,
        done: SyncSender<ReadDone>,
        mut compressor: BlobCompressor,
    ) {
        let mut buffer = ChunkBuffer::default();
        loop {
            let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
            let Ok(job) = job else { return };
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            // A panic becomes the file's error: the walk waits for an answer to every job.
            let result = catch_unwind(AssertUnwindSafe(|| {
                self.read(&job, &mut buffer, &mut compressor)
            }))
            .unwrap_or_else(|_| {
                Err(Error::new(
                    ErrorKind::Other,
                    "a file reader panicked (a bug in dr)",
                ))
            })
            .map_err(|e| job.file.context(e));
            if done
                .send(ReadDone {
                    seq: job.seq,
                    result,
                })
                .is_err()
            {
                return;
            }
        }
    }

    /// Read one file: chunk it, hash it, and send the chunks no pack holds yet.
    fn read(
        &self,
        job: &ReadJob,
        buffer: &mut ChunkBuffer,
        compressor: &mut BlobCompressor,
    ) -> Result<FileRead> {
        let source: Box<dyn Read> = match &job.file {
            FileToRead::Path(path) => {
                Box::new(std::fs::File::open(path).map_err(|e| Error::io("cannot open a file", e))?)
            }
            FileToRead::Object(key) => {
                let (store, runtime) = self
                    .objects
                    .as_ref()
                    .expect("object jobs come from a bucket source");
                open_object(store, runtime, key)?
            }
        };
        let mut hasher = blake3::Hasher::new();
        let mut ids = Vec::new();
        let (mut chunks_new, mut bytes_new) = (0u64, 0u64);
        let mut packs_reused = Vec::new();
        let read = self.chunker.each_chunk(source, buffer, |chunk| {
            hasher.update(chunk);
            let id = self.dedup.chunk_id(chunk);
            ids.push(id);
            if let Some(at) = self.catalog.locate(&id)? {
                if packs_reused.last() != Some(&at.pack) {
                    packs_reused.push(at.pack);
                }
            } else if self.claim(id)? {
                chunks_new += 1;
                bytes_new += chunk.len() as u64;
                let blob = compressor.blob(&id, chunk)?;
                self.blobs
                    .send(blob)
                    .map_err(|_| Error::new(ErrorKind::Cancelled, "the packer stopped"))?;
            }
            Ok(())
        })?;
        packs_reused.sort_unstable();
        packs_reused.dedup();
        if read != job.size {
            tracing::warn!(file = ?job.file, before = job.size, read, "a file changed size while it was read: storing what was read");
        }
        Ok(FileRead {
            kind: EntryKind::File {
                size: read,
                blake3: *hasher.finalize().as_bytes(),
                chunks: ids,
                etag: job.etag.clone(),
            },
            bytes_read: read,
            chunks_new,
            bytes_new,
            packs_reused,
        })
    }

    /// Whether this caller is the first of the backup to store chunk `id`.
    fn claim(&self, id: ChunkId) -> Result<bool> {
        self.new
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id)
    }
}

/// An object's content as a blocking reader (readers are plain threads).
fn open_object(
    store: &Arc<dyn StorageTarget>,
    runtime: &tokio::runtime::Handle,
    path: &str,
) -> Result<Box<dyn Read>> {
    let stream = runtime.block_on(store.get(path, None))?;
    let reader = tokio_util::io::StreamReader::new(stream.map_err(std::io::Error::other));
    Ok(Box::new(tokio_util::io::SyncIoBridge::new_with_handle(
        reader,
        runtime.clone(),
    )))
}
