//! The objects of file backups that hold wrapped data keys, for key rotation and revocation:
//! the dedup key and every pack index. Like manifests, they are rewritten with new wraps
//! while the packs they describe keep their bytes.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use dr_core::{EncryptionInfo, Error, PutOptions, Repository, Result, StorageExt};

use super::key::DEDUP_KEY_PATH;
use super::pack::INDEX_PREFIX;

/// One object and the wrapped data key it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedObject {
    /// Its path in the repository.
    pub path: String,
    /// Its `encryption` member.
    pub encryption: EncryptionInfo,
}

/// Every pack index, and the dedup key object if there is one.
pub async fn wrapped_objects(repo: &Repository) -> Result<Vec<WrappedObject>> {
    let mut paths: Vec<String> = repo
        .storage()
        .list(INDEX_PREFIX)
        .await?
        .into_iter()
        .map(|o| o.path)
        .collect();
    if repo.storage().exists(DEDUP_KEY_PATH).await? {
        paths.push(DEDUP_KEY_PATH.into());
    }
    let storage = repo.storage().clone();
    futures::stream::iter(paths)
        .map(|path| {
            let storage = storage.clone();
            async move {
                let value = read(&*storage, &path).await?;
                let encryption =
                    serde_json::from_value(value["encryption"].clone()).map_err(|e| {
                        Error::corrupt(format!("'{path}' has a malformed encryption member"))
                            .with_source(e)
                    })?;
                Ok(WrappedObject { path, encryption })
            }
        })
        .buffered(16)
        .try_collect()
        .await
}

/// Replace the `encryption` member of `object.path` (a pack index or the dedup key object)
/// with `object.encryption`; everything else stays as stored.
pub async fn rewrite_wrapped(repo: &Repository, object: &WrappedObject) -> Result<()> {
    let path = &object.path;
    if !(path.starts_with(INDEX_PREFIX) || path == DEDUP_KEY_PATH) {
        return Err(Error::invalid(format!(
            "'{path}' holds no wrapped key of file backups"
        )));
    }
    let mut value = read(&**repo.storage(), path).await?;
    value["encryption"] = serde_json::to_value(&object.encryption).expect("serializes");
    let bytes = serde_json::to_vec(&value).expect("serializes");
    repo.storage()
        .put_bytes(path, Bytes::from(bytes), PutOptions::default())
        .await
}

async fn read(storage: &dyn dr_core::StorageTarget, path: &str) -> Result<serde_json::Value> {
    let bytes = storage.get_bytes(path).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Error::corrupt(format!("'{path}' is not JSON")).with_source(e))
}
