//! [`DirRestorer`]: unpack beside the target, count again, then move into place.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::StreamExt;

use dr_core::{
    ByteStream, DumpStats, Error, ErrorKind, RestoreReport, Restorer, Result, SourceInfo,
};

use crate::{recorded_files, PAYLOAD_FORMAT};

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
        if source.format != PAYLOAD_FORMAT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "a directory restore reads {PAYLOAD_FORMAT} payloads, not {:?} (restore it with --db)",
                    source.format
                ),
            ));
        }
        let target = self.target.clone();
        let Staging {
            dir: staging,
            parent,
            occupied,
            shown,
        } = Staging::beside(&target, self.replace)?;

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
        let want = recorded_files(expected);
        if let Some((want_files, want_bytes)) = want {
            if (want_files, want_bytes) != (files, bytes) {
                return Err(Error::corrupt(format!(
                    "the backup unpacked to {files} files ({bytes} bytes), the manifest says {want_files} files ({want_bytes} bytes)"
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

/// Where a tree is restored before it is moved into place: a staging directory beside the
/// target (on the same file system, so the swap is a rename), made after refusing a
/// non-empty target unless it is to be replaced.
pub(crate) struct Staging {
    pub dir: tempfile::TempDir,
    /// The target's parent directory (created if missing).
    pub parent: PathBuf,
    /// The target holds something (it is replaced by [`put_in_place`]).
    pub occupied: bool,
    /// The target as messages show it.
    pub shown: String,
}

impl Staging {
    pub(crate) fn beside(target: &Path, replace: bool) -> Result<Staging> {
        let shown = target.display().to_string();
        let occupied = match std::fs::read_dir(target) {
            Ok(mut entries) => entries.next().is_some(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => {
                return Err(Error::io("cannot read the target directory", e)
                    .with_context("directory", &shown))
            }
        };
        if occupied && !replace {
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
        let dir = tempfile::Builder::new()
            .prefix(".dr-restore-")
            .tempdir_in(&parent)
            .map_err(|e| {
                Error::io("cannot create a staging directory", e).with_context("directory", &shown)
            })?;
        Ok(Staging {
            dir,
            parent,
            occupied,
            shown,
        })
    }
}

/// Rename the checked `staged` tree to `target`. An `occupied` target is renamed aside
/// first, put back if the second rename fails, and removed once the new tree is in place.
/// On failure `staged` is removed.
pub(crate) fn put_in_place(
    staged: &Path,
    target: &Path,
    parent: &Path,
    occupied: bool,
) -> io::Result<()> {
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
