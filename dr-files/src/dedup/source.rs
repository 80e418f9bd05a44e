//! Where a deduplicated backup reads its files: a local directory, or every object under a
//! bucket prefix read through a storage target (`s3://`, `gs://`, `az://`, `file://`).
//!
//! Both sources feed the same walk (chunking, packing, the snapshot tree); they differ only
//! in how entries are enumerated, how a file is opened, and how an unchanged file is
//! recognised: a directory's by (path, size, mtime), an object's by (key, size, ETag).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use dr_core::{Error, ObjectMeta, Result, StorageTarget};

/// The tree a deduplicated backup reads.
#[derive(Debug, Clone)]
pub enum TreeSource {
    /// A local directory, walked in name order; symbolic links are stored, never followed.
    Dir(PathBuf),
    /// Every object under a storage target's root (a bucket prefix: the target was opened
    /// on `s3://bucket/prefix/`). Keys become `/`-separated relative paths.
    Bucket {
        /// The store, rooted at the prefix.
        store: Arc<dyn StorageTarget>,
        /// The snapshot's source name (the URL, credentials never in it): the series of its
        /// backups, and how the next backup finds its parent.
        name: String,
    },
}

impl TreeSource {
    /// A local directory.
    pub fn dir(path: impl Into<PathBuf>) -> TreeSource {
        TreeSource::Dir(path.into())
    }

    /// The objects under `store`'s root, named `name` (e.g. `s3://uploads/prod`).
    pub fn bucket(store: Arc<dyn StorageTarget>, name: impl Into<String>) -> TreeSource {
        TreeSource::Bucket {
            store,
            name: name.into(),
        }
    }

    /// The source name snapshots record: the canonical directory path, or the bucket's name.
    pub fn name(&self) -> String {
        match self {
            TreeSource::Dir(root) => std::fs::canonicalize(root)
                .unwrap_or_else(|_| root.clone())
                .display()
                .to_string(),
            TreeSource::Bucket { name, .. } => name.clone(),
        }
    }
}

/// One object of a bucket source, as the walk takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ListedObject {
    /// The object's metadata from the listing.
    pub meta: ObjectMeta,
    /// A 0-byte object whose key is also the parent of other keys: a "folder" marker
    /// (consoles create `folder/`, which stores list as `folder`), stored as a directory.
    pub folder_marker: bool,
}

/// Every object under `store`'s root, in key order, folder markers told apart.
pub(crate) async fn list_objects(store: &dyn StorageTarget) -> Result<Vec<ListedObject>> {
    let mut objects = store
        .list("")
        .await
        .map_err(|e| e.with_context("source", store.describe()))?;
    // Key order, whatever the store's: the next backup reads this tree beside its listing.
    objects.sort_unstable_by(|a, b| a.path.cmp(&b.path));
    let mut parents: HashSet<&str> = HashSet::new();
    for o in &objects {
        crate::dedup::tree::check_relative_path(&o.path).map_err(|_| {
            Error::invalid(format!(
                "object key {:?} cannot be stored as a relative path",
                o.path
            ))
            .with_context("source", store.describe())
        })?;
        parents.extend(o.path.match_indices('/').map(|(i, _)| &o.path[..i]));
    }
    let markers: HashSet<String> = objects
        .iter()
        .filter(|o| o.size == 0 && parents.contains(o.path.as_str()))
        .map(|o| o.path.clone())
        .collect();
    Ok(objects
        .into_iter()
        .map(|meta| ListedObject {
            folder_marker: markers.contains(&meta.path),
            meta,
        })
        .collect())
}
