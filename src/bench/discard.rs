//! A storage target that throws payloads away: the backup pipeline's own cost, measured
//! through the real [`dr_core::backup`] code path without a store's speed in the figures.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use dr_core::{ByteStream, ObjectMeta, ObjectWriter, PutOptions, Result, StorageTarget};

/// Streamed objects (payloads) are counted and dropped; small objects written whole (the
/// repository's configuration, manifests) are kept in memory so the repository works.
#[derive(Debug)]
pub struct DiscardTarget {
    small: Arc<dyn StorageTarget>,
}

impl DiscardTarget {
    /// An empty target.
    pub fn new() -> Self {
        DiscardTarget {
            small: Arc::new(dr_storage::ObjectStoreTarget::memory()),
        }
    }
}

impl Default for DiscardTarget {
    fn default() -> Self {
        Self::new()
    }
}

struct Counter(u64);

#[async_trait]
impl ObjectWriter for Counter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        self.0 += chunk.len() as u64;
        Ok(())
    }
    async fn finish(self: Box<Self>) -> Result<u64> {
        Ok(self.0)
    }
    async fn abort(self: Box<Self>) -> Result<()> {
        Ok(())
    }
}

#[async_trait]
impl StorageTarget for DiscardTarget {
    fn describe(&self) -> String {
        "discard://".into()
    }
    async fn put_stream(&self, _path: &str, _opts: PutOptions) -> Result<Box<dyn ObjectWriter>> {
        Ok(Box::new(Counter(0)))
    }
    async fn put_if_absent(&self, path: &str, bytes: Bytes, opts: PutOptions) -> Result<()> {
        self.small.put_if_absent(path, bytes, opts).await
    }
    async fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        self.small.get(path, range).await
    }
    async fn head(&self, path: &str) -> Result<ObjectMeta> {
        self.small.head(path).await
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.small.list(prefix).await
    }
    async fn delete(&self, path: &str) -> Result<()> {
        self.small.delete(path).await
    }
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.small.copy(from, to).await
    }
}
