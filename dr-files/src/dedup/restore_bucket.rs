//! Restoring a snapshot into a bucket prefix: one object per file, each written through a
//! streaming upload that becomes visible only when it is finished, and finished only after
//! the file's size and BLAKE3 matched the snapshot (otherwise the upload is aborted and no
//! object appears).
//!
//! Every key is checked before the first upload: a snapshot whose paths a store cannot hold
//! (control characters, from a directory backup) fails whole rather than half restored.
//! Directories are implied by keys; symbolic links cannot be objects and are skipped with a
//! warning; a hard link becomes a second object with the same content.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use dr_core::{
    Decryptor, Error, ErrorKind, Manifest, PutOptions, Repository, Result, StorageTarget,
};

use super::reader::PackReader;
use super::restore::{selected_entries, FilesRestoreReport, Selection};
use super::tree::{EntryKind, TreeEntry};

/// Restore the entries of snapshot `manifest` that `selection` takes as objects under
/// `target`'s root (a bucket prefix), with `storage_class` if given.
///
/// The prefix must hold no object unless `replace` (then objects with the snapshot's keys
/// are overwritten and other objects are left alone).
pub async fn restore_to_bucket(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: Arc<dyn Decryptor>,
    target: &Arc<dyn StorageTarget>,
    selection: &Selection,
    replace: bool,
    storage_class: Option<String>,
) -> Result<FilesRestoreReport> {
    let shown = target.describe();
    let (entries, catalog) = selected_entries(repo, manifest, &*decryptor, selection).await?;
    for e in &entries {
        if matches!(e.kind, EntryKind::File { .. } | EntryKind::Hardlink { .. }) {
            dr_core::storage::check_path(&e.path).map_err(|_| {
                Error::invalid(format!(
                    "file {:?} of the snapshot has a name an object store cannot hold: restore it into a directory",
                    e.path
                ))
                .with_context("target", &shown)
            })?;
        }
    }
    let occupied = !target.list("").await?.is_empty();
    if occupied && !replace {
        return Err(Error::new(
            ErrorKind::NotEmpty,
            format!(
                "{shown} holds objects; pass --replace to overwrite those with the snapshot's keys"
            ),
        ));
    }

    let files: HashMap<&str, &TreeEntry> = entries
        .iter()
        .filter(|e| matches!(e.kind, EntryKind::File { .. }))
        .map(|e| (e.path.as_str(), e))
        .collect();
    let mut reader = PackReader::new(repo.clone(), decryptor, catalog);
    let mut report = FilesRestoreReport::default();
    for e in &entries {
        let content = match &e.kind {
            EntryKind::File { .. } => e,
            EntryKind::Hardlink { target: to } => match files.get(to.as_str()) {
                Some(file) => file,
                None => {
                    tracing::warn!(path = %e.path, target = %to, "not restoring a hard link whose file is not restored");
                    continue;
                }
            },
            EntryKind::Symlink { .. } => {
                tracing::warn!(path = %e.path, "a bucket cannot hold a symbolic link: skipped");
                report.skipped += 1;
                continue;
            }
            EntryKind::Dir => continue,
        };
        let bytes = put_checked(
            &mut reader,
            &**target,
            &e.path,
            content,
            &entries,
            storage_class.clone(),
        )
        .await
        .map_err(|err| {
            err.with_context("file", &e.path)
                .with_context("backup", &manifest.id)
        })?;
        if matches!(e.kind, EntryKind::Hardlink { .. }) {
            report.hardlinks += 1;
        } else {
            report.files += 1;
        }
        report.bytes += bytes;
    }
    report.target = shown;
    report.replaced = occupied;
    Ok(report)
}

/// Upload the content of `file` as object `key`; finished only if its size and BLAKE3
/// match, aborted otherwise.
async fn put_checked(
    reader: &mut PackReader,
    target: &dyn StorageTarget,
    key: &str,
    file: &TreeEntry,
    all: &[TreeEntry],
    storage_class: Option<String>,
) -> Result<u64> {
    let EntryKind::File {
        size,
        blake3: want,
        chunks,
        ..
    } = &file.kind
    else {
        unreachable!("called for files")
    };
    let opts = PutOptions {
        storage_class,
        expected_size: Some(*size),
    };
    let mut writer = target.put_stream(key, opts).await?;
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    let mut failure = None;
    for id in chunks {
        let data = match reader.chunk(id, all).await {
            Ok(data) => data,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        hasher.update(&data);
        written += data.len() as u64;
        if let Err(e) = writer.write(Bytes::from(data)).await {
            failure = Some(e);
            break;
        }
    }
    if failure.is_none() && (written != *size || hasher.finalize().as_bytes() != want) {
        failure = Some(Error::corrupt(format!(
            "'{}' restores to {written} bytes that do not match the snapshot's size and BLAKE3",
            file.path
        )));
    }
    if let Some(e) = failure {
        if let Err(abort) = writer.abort().await {
            tracing::warn!(key, error = %abort.report(), "aborting an unfinished upload failed");
        }
        return Err(e);
    }
    writer.finish().await?;
    Ok(written)
}
