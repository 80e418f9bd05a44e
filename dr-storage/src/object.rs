//! A [`StorageTarget`] over any [`ObjectStore`].

use std::ops::Range;
use std::path::Path as FsPath;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutMode,
    PutMultipartOptions, PutPayload, WriteMultipart,
};

use dr_core::{
    storage::check_path, ByteStream, Error, ErrorKind, ObjectMeta, ObjectWriter, PutOptions,
    Result, StorageTarget,
};

/// Smallest part a multipart upload uses (S3's minimum is 5 MiB).
const MIN_PART_BYTES: usize = 8 << 20;
/// Parts uploading at once; with [`MIN_PART_BYTES`] this bounds upload memory near 32 MiB.
const PARTS_IN_FLIGHT: usize = 3;
/// The most parts an object may have (S3's limit).
const MAX_PARTS: u64 = 10_000;

/// A storage target backed by an `object_store` implementation.
#[derive(Debug, Clone)]
pub struct ObjectStoreTarget {
    store: Arc<dyn ObjectStore>,
    description: String,
    /// Whether the store accepts storage-class attributes.
    storage_classes: bool,
}

impl ObjectStoreTarget {
    /// An empty in-memory store.
    pub fn memory() -> Self {
        ObjectStoreTarget {
            store: Arc::new(object_store::memory::InMemory::new()),
            description: "memory://".into(),
            storage_classes: false,
        }
    }

    /// A directory on the local file system, which must exist.
    pub fn local(dir: &FsPath) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("repository directory {} does not exist", dir.display()),
            ));
        }
        let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| map_err(e, "opening the repository directory"))?
            .with_automatic_cleanup(true);
        Ok(ObjectStoreTarget {
            store: Arc::new(fs),
            description: format!("file://{}", dir.display()),
            storage_classes: false,
        })
    }

    /// Wrap any object store. `description` must not contain secrets.
    pub fn new(store: Arc<dyn ObjectStore>, description: String, storage_classes: bool) -> Self {
        ObjectStoreTarget {
            store,
            description,
            storage_classes,
        }
    }

    fn attributes(&self, opts: &PutOptions) -> Attributes {
        let mut attrs = Attributes::new();
        if let (true, Some(class)) = (self.storage_classes, &opts.storage_class) {
            attrs.insert(Attribute::StorageClass, class.clone().into());
        }
        attrs
    }
}

fn path(p: &str) -> Result<Path> {
    check_path(p)?;
    Path::parse(p).map_err(|e| Error::invalid(format!("invalid object path '{p}'")).with_source(e))
}

/// Translate an object_store error, keeping what callers match on.
fn map_err(e: object_store::Error, doing: &str) -> Error {
    use object_store::Error as E;
    let kind = match &e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => ErrorKind::AlreadyExists,
        E::NotSupported { .. } | E::NotImplemented { .. } => ErrorKind::Unsupported,
        E::InvalidPath { .. } => ErrorKind::InvalidInput,
        _ => ErrorKind::Storage,
    };
    let msg = match kind {
        ErrorKind::NotFound => format!("{doing}: object not found"),
        ErrorKind::AlreadyExists => format!("{doing}: object already exists"),
        _ => format!("{doing} failed"),
    };
    let err = Error::new(kind, msg).with_source(e);
    match kind {
        ErrorKind::Storage => err.temporary(),
        _ => err,
    }
}

/// Part size for an object of `expected` bytes: large enough to stay under the part limit.
pub(crate) fn part_size(expected: Option<u64>) -> usize {
    let needed = expected.map_or(0, |n| n.div_ceil(MAX_PARTS - 1));
    (needed as usize).max(MIN_PART_BYTES)
}

#[async_trait]
impl StorageTarget for ObjectStoreTarget {
    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn put_stream(&self, p: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>> {
        let location = path(p)?;
        let upload = self
            .store
            .put_multipart_opts(
                &location,
                PutMultipartOptions {
                    attributes: self.attributes(&opts),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| map_err(e, "starting upload").with_context("object", p))?;
        Ok(Box::new(MultipartWriter {
            inner: Some(WriteMultipart::new_with_chunk_size(
                upload,
                part_size(opts.expected_size),
            )),
            path: p.to_string(),
            written: 0,
        }))
    }

    async fn put_if_absent(&self, p: &str, bytes: Bytes, opts: PutOptions) -> Result<()> {
        let location = path(p)?;
        let put = object_store::PutOptions {
            mode: PutMode::Create,
            attributes: self.attributes(&opts),
            ..Default::default()
        };
        self.store
            .put_opts(&location, PutPayload::from_bytes(bytes), put)
            .await
            .map_err(|e| map_err(e, "creating object").with_context("object", p))?;
        Ok(())
    }

    async fn get(&self, p: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        let location = path(p)?;
        let opts = GetOptions::new().with_range(range.map(GetRange::Bounded));
        let result = self
            .store
            .get_opts(&location, opts)
            .await
            .map_err(|e| map_err(e, "reading object").with_context("object", p))?;
        let owned = p.to_string();
        Ok(result
            .into_stream()
            .map_err(move |e| map_err(e, "reading object").with_context("object", &owned))
            .boxed())
    }

    async fn head(&self, p: &str) -> Result<ObjectMeta> {
        let location = path(p)?;
        let meta = self
            .store
            .head(&location)
            .await
            .map_err(|e| map_err(e, "reading object metadata").with_context("object", p))?;
        Ok(ObjectMeta {
            path: p.to_string(),
            size: meta.size,
            last_modified: meta.last_modified,
        })
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = prefix.trim_end_matches('/');
        let location = if dir.is_empty() {
            None
        } else {
            Some(path(dir)?)
        };
        let mut out: Vec<ObjectMeta> = self
            .store
            .list(location.as_ref())
            .map_ok(|m| ObjectMeta {
                path: m.location.to_string(),
                size: m.size,
                last_modified: m.last_modified,
            })
            .try_collect()
            .await
            .map_err(|e| map_err(e, "listing objects").with_context("prefix", prefix))?;
        out.retain(|m| m.path.starts_with(prefix));
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    async fn delete(&self, p: &str) -> Result<()> {
        let location = path(p)?;
        match self.store.delete(&location).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(map_err(e, "deleting object").with_context("object", p)),
        }
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.store
            .copy(&path(from)?, &path(to)?)
            .await
            .map_err(|e| map_err(e, "copying object").with_context("object", from))
    }
}

/// Streams into a multipart upload; commits on `finish`, aborts on `abort` or drop.
struct MultipartWriter {
    inner: Option<WriteMultipart>,
    path: String,
    written: u64,
}

#[async_trait]
impl ObjectWriter for MultipartWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let w = self.inner.as_mut().expect("writer used after finish");
        w.wait_for_capacity(PARTS_IN_FLIGHT)
            .await
            .map_err(|e| map_err(e, "uploading part").with_context("object", &self.path))?;
        self.written += chunk.len() as u64;
        w.put(chunk);
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<u64> {
        let w = self.inner.take().expect("finished twice");
        w.finish()
            .await
            .map_err(|e| map_err(e, "completing upload").with_context("object", &self.path))?;
        Ok(self.written)
    }

    async fn abort(mut self: Box<Self>) -> Result<()> {
        let w = self.inner.take().expect("aborted twice");
        w.abort()
            .await
            .map_err(|e| map_err(e, "aborting upload").with_context("object", &self.path))
    }
}

impl Drop for MultipartWriter {
    fn drop(&mut self) {
        if let Some(w) = self.inner.take() {
            debug_assert!(
                std::thread::panicking()
                    || cfg!(not(debug_assertions))
                    || {
                        tracing::warn!(object = %self.path, "upload dropped without finish() or abort(): aborting");
                        true
                    }
            );
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = w.abort().await;
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_size_keeps_objects_under_the_part_limit() {
        assert_eq!(part_size(None), MIN_PART_BYTES);
        assert_eq!(part_size(Some(1 << 30)), MIN_PART_BYTES);
        let huge = 5u64 << 40; // 5 TiB, S3's largest object
        let p = part_size(Some(huge)) as u64;
        assert!(huge.div_ceil(p) < MAX_PARTS, "{p}");
    }
}
