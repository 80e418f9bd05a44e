//! `restore_command`: handing archived files back to a recovering server.
//!
//! PostgreSQL asks for files by name and also asks for files that do not exist (the next
//! timeline's history, the segment after the last one); "not there" is an ordinary answer
//! that ends recovery. It must therefore never be the answer to anything else: a file that
//! exists but fails its checks, a key that does not open it, a store that cannot be reached,
//! or a segment missing in the *middle* of the archive (later segments of its timeline are
//! archived) are errors that must stop recovery, not end it early and promote a server that
//! silently lacks data. [`WalFetcher::fetch`] tells these apart ([`Fetched::NotFound`] versus
//! an error); `drctl wal-fetch` turns them into the exit codes PostgreSQL understands.
//!
//! Prefetching: [`WalFetcher::prefetch_after`] reads the next segments into a directory
//! (`pg_wal/dr_prefetch` by default), checked and complete before they appear there under
//! their names, so the next calls only move a file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use dr_core::wal::{SegmentId, WalArchive, WalFile};
use dr_core::{Decryptor, Error, ErrorKind, Repository, Result};
use futures::StreamExt;
use serde::Serialize;

/// What [`WalFetcher::fetch`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Fetched {
    /// The file was written to its destination, read from the archive now.
    Restored,
    /// The file was written to its destination from the prefetch directory.
    Prefetched,
    /// The archive's newest data for this segment is a partial segment; it was written
    /// under the segment's name.
    Partial,
    /// Not in the archive, and nothing after it on its timeline is: the end of the archive.
    NotFound,
}

/// Reads archived files of one cluster back for a recovering server.
#[derive(Clone)]
pub struct WalFetcher {
    archive: Arc<WalArchive>,
    decryptor: Arc<dyn Decryptor>,
    prefetch_dir: Option<PathBuf>,
}

impl std::fmt::Debug for WalFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalFetcher")
            .field("cluster", &self.archive.cluster().system_identifier)
            .field("prefetch_dir", &self.prefetch_dir)
            .finish_non_exhaustive()
    }
}

impl WalFetcher {
    /// A fetcher for the archive of cluster `system_identifier` in `repo`.
    pub async fn new(
        repo: &Repository,
        decryptor: Arc<dyn Decryptor>,
        system_identifier: u64,
    ) -> Result<WalFetcher> {
        Ok(WalFetcher {
            archive: WalArchive::open(repo, system_identifier).await?.shared(),
            decryptor,
            prefetch_dir: None,
        })
    }

    /// Use (and fill, with [`WalFetcher::prefetch_after`]) the prefetch directory `dir`.
    pub fn prefetch_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.prefetch_dir = Some(dir.into());
        self
    }

    /// The archive read from.
    pub fn archive(&self) -> &WalArchive {
        &self.archive
    }

    /// Write the archived file `name` to `dest` (atomically: a temporary file renamed).
    /// See the comments at the top of `wal/fetch.rs` for what is "not found" and what is an error.
    pub async fn fetch(&self, name: &str, dest: &Path) -> Result<Fetched> {
        let file = self.archive.parse_name(name)?;
        if let Some(dir) = &self.prefetch_dir {
            self.clear_prefetched_before(dir, file);
            let ready = dir.join(name);
            if ready.is_file() {
                if std::fs::rename(&ready, dest).is_err() {
                    // Another file system: copy, then remove.
                    std::fs::copy(&ready, dest)
                        .map_err(|e| Error::io(format!("cannot write {}", dest.display()), e))?;
                    let _ = std::fs::remove_file(&ready);
                }
                return Ok(Fetched::Prefetched);
            }
        }
        match self.archive.record(file).await? {
            Some(record) => {
                let bytes = self.archive.read(&record, self.decryptor.as_ref()).await?;
                write_atomically(dest, bytes).await?;
                Ok(Fetched::Restored)
            }
            None => self.missing(file, dest).await,
        }
    }

    /// A file that is not archived: the end of the archive, the newest data in a partial
    /// segment, or a gap.
    async fn missing(&self, file: WalFile, dest: &Path) -> Result<Fetched> {
        let WalFile::Segment(id) = file else {
            return Ok(Fetched::NotFound);
        };
        let size = self.archive.segment_size();
        let listing = self.archive.list().await?;
        let archived_later = listing.files.iter().filter_map(|f| match f.file {
            WalFile::Segment(s) | WalFile::Partial(s) => Some(s),
            _ => None,
        });
        let later = archived_later
            .chain(listing.streamed.keys().copied())
            .filter(|s| s.timeline == id.timeline && s.number > id.number)
            .min();
        if let Some(later) = later {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "segment {} is missing from the archive, but later WAL of timeline {} is \
                     archived (from {}): the archive has a gap, and recovery cannot go on \
                     without the missing segments. Recovery was stopped rather than ended \
                     early",
                    id.name(size),
                    id.timeline,
                    later.name(size)
                ),
            ));
        }
        // The newest data: the newest copy of the segment a WAL receiver was writing, else a
        // partial segment a promoted server archived.
        if let Some(record) = self.archive.newest_streamed(id, &listing).await? {
            let bytes = self
                .archive
                .read_streamed(&record, self.decryptor.as_ref())
                .await?;
            write_atomically(dest, bytes).await?;
            return Ok(Fetched::Partial);
        }
        if let Some(record) = self.archive.record(WalFile::Partial(id)).await? {
            let bytes = self.archive.read(&record, self.decryptor.as_ref()).await?;
            write_atomically(dest, bytes).await?;
            return Ok(Fetched::Partial);
        }
        Ok(Fetched::NotFound)
    }

    /// Read the `count` segments after `name` (same timeline) that are archived and not yet
    /// prefetched into the prefetch directory. Returns how many were read. Stops at the
    /// first segment that is not archived.
    pub async fn prefetch_after(&self, name: &str, count: usize) -> Result<usize> {
        let Some(dir) = self.prefetch_dir.clone() else {
            return Ok(0);
        };
        let WalFile::Segment(id) = self.archive.parse_name(name)? else {
            return Ok(0);
        };
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
        let size = self.archive.segment_size();
        let wanted: Vec<SegmentId> = (1..=count as u64)
            .map(|i| SegmentId::new(id.timeline, id.number + i))
            .filter(|s| !dir.join(s.name(size)).exists())
            .collect();
        let results: Vec<Result<bool>> = futures::stream::iter(wanted)
            .map(|s| {
                let dir = dir.clone();
                async move {
                    let Some(record) = self.archive.record(WalFile::Segment(s)).await? else {
                        return Ok(false);
                    };
                    let bytes = self.archive.read(&record, self.decryptor.as_ref()).await?;
                    write_atomically(&dir.join(s.name(size)), bytes).await?;
                    Ok(true)
                }
            })
            .buffered(4)
            .collect()
            .await;
        let mut n = 0;
        for r in results {
            if r? {
                n += 1;
            } else {
                break;
            }
        }
        Ok(n)
    }

    /// Remove prefetched segments older than `file`: recovery has passed them.
    fn clear_prefetched_before(&self, dir: &Path, file: WalFile) {
        let Some(id) = file.segment() else { return };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.filter_map(|e| e.ok()) {
            let name = e.file_name();
            let Some(n) = name.to_str() else { continue };
            if let Ok(WalFile::Segment(s)) = self.archive.parse_name(n) {
                if s.number < id.number {
                    let _ = std::fs::remove_file(e.path());
                }
            } else if n.ends_with(".tmp-dr") {
                // Left by a prefetch that was killed; harmless to remove.
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
}

/// Write `bytes` to `dest` through a temporary file in the same directory, renamed into
/// place: the server never sees a half-written file.
async fn write_atomically(dest: &Path, bytes: Bytes) -> Result<()> {
    let mut tmp = dest.as_os_str().to_owned();
    tmp.push(".tmp-dr");
    let tmp = PathBuf::from(tmp);
    let io = |e| Error::io(format!("cannot write {}", dest.display()), e);
    tokio::fs::write(&tmp, &bytes).await.map_err(io)?;
    tokio::fs::rename(&tmp, dest).await.map_err(io)
}
