//! The storage plug-in point: named objects in a bucket, a directory, or memory.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};

use crate::error::{Error, ErrorKind, Result};
use crate::stage::{collect, once_bytes, ByteStream};

/// Options for writing one object.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// Storage class (`STANDARD_IA`, `GLACIER`, an Azure tier…); `None` is the store's default.
    /// Targets that have no storage classes ignore it.
    pub storage_class: Option<String>,
    /// The expected size of the object, if known, so parts can be sized to stay under the
    /// store's part-count limit.
    pub expected_size: Option<u64>,
}

/// What a store knows about one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Path relative to the target's root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// When it was last written.
    pub last_modified: DateTime<Utc>,
    /// The store's entity tag (S3/GCS/Azure ETag; a local directory's inode, time and size),
    /// if it gives one: it changes whenever the content does, so deduplicated backups of a
    /// bucket prefix skip objects whose size and ETag are unchanged.
    pub etag: Option<String>,
}

/// A streaming write of one object.
///
/// Contract: nothing is visible under the object's name until [`ObjectWriter::finish`]
/// returns `Ok`. [`ObjectWriter::abort`] discards what was written (no orphaned multipart
/// parts). Dropping a writer without either also never commits; implementations clean up
/// what they can and warn in debug builds.
#[async_trait]
pub trait ObjectWriter: Send {
    /// Append `chunk`. May wait while earlier parts upload (backpressure).
    async fn write(&mut self, chunk: Bytes) -> Result<()>;
    /// Commit the object; returns its size.
    async fn finish(self: Box<Self>) -> Result<u64>;
    /// Discard everything written.
    async fn abort(self: Box<Self>) -> Result<()>;
}

/// A place that stores named objects.
///
/// Paths are relative, `/`-separated, without a leading slash. Errors use
/// [`ErrorKind::NotFound`] for a missing object and [`ErrorKind::AlreadyExists`] for a failed
/// create-if-absent; transient failures are marked [`Error::is_temporary`].
#[async_trait]
pub trait StorageTarget: Send + Sync + fmt::Debug {
    /// A short, secret-free description for messages: `file:///srv/backups`, `s3://bucket/prefix`.
    fn describe(&self) -> String;

    /// Start a streaming write of `path`, replacing any existing object when finished.
    async fn put_stream(&self, path: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>>;

    /// Write `bytes` to `path` only if no object is there: the building block of commit
    /// markers and locks. Fails with [`ErrorKind::AlreadyExists`] otherwise, and with
    /// [`ErrorKind::Unsupported`] on stores that cannot do it atomically.
    async fn put_if_absent(&self, path: &str, bytes: Bytes, opts: PutOptions) -> Result<()>;

    /// Read `path`, or a byte range of it, as a stream.
    async fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream>;

    /// Size and time of `path`.
    async fn head(&self, path: &str) -> Result<ObjectMeta>;

    /// Every object whose path starts with `prefix` (a folder-like prefix ending in `/`, or "").
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>>;

    /// Delete `path`. Deleting a missing object succeeds.
    async fn delete(&self, path: &str) -> Result<()>;

    /// Copy `from` to `to` inside the store, replacing `to`.
    async fn copy(&self, from: &str, to: &str) -> Result<()>;
}

/// Conveniences for every [`StorageTarget`], written once on top of the required methods.
#[async_trait]
pub trait StorageExt: StorageTarget {
    /// Read a whole (small) object into memory.
    async fn get_bytes(&self, path: &str) -> Result<Bytes> {
        Ok(Bytes::from(collect(self.get(path, None).await?).await?))
    }

    /// Write a whole (small) object, replacing any existing one.
    async fn put_bytes(&self, path: &str, bytes: Bytes, opts: PutOptions) -> Result<()> {
        let mut writer = self.put_stream(path, opts).await?;
        let mut stream = once_bytes(bytes, 8 << 20);
        use futures::StreamExt;
        while let Some(chunk) = stream.next().await {
            if let Err(e) = writer.write(chunk?).await {
                let _ = writer.abort().await;
                return Err(e);
            }
        }
        writer.finish().await.map(|_| ())
    }

    /// Whether `path` exists.
    async fn exists(&self, path: &str) -> Result<bool> {
        match self.head(path).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Delete every object under `prefix`.
    async fn delete_prefix(&self, prefix: &str) -> Result<usize> {
        let objects = self.list(prefix).await?;
        for o in &objects {
            self.delete(&o.path).await?;
        }
        Ok(objects.len())
    }
}

impl<T: StorageTarget + ?Sized> StorageExt for T {}

#[async_trait]
impl<T: StorageTarget + ?Sized> StorageTarget for Arc<T> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    async fn put_stream(&self, path: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>> {
        (**self).put_stream(path, opts).await
    }
    async fn put_if_absent(&self, path: &str, bytes: Bytes, opts: PutOptions) -> Result<()> {
        (**self).put_if_absent(path, bytes, opts).await
    }
    async fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        (**self).get(path, range).await
    }
    async fn head(&self, path: &str) -> Result<ObjectMeta> {
        (**self).head(path).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        (**self).list(prefix).await
    }
    async fn delete(&self, path: &str) -> Result<()> {
        (**self).delete(path).await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        (**self).copy(from, to).await
    }
}

/// Rejects paths that could escape the target's root or confuse a store.
pub fn check_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        || path.chars().any(|c| c.is_control() || c == '\\');
    if bad {
        return Err(Error::invalid(format!("invalid object path '{path}'")));
    }
    Ok(())
}
