//! [`WriteOnceTarget`]: a **test tool** that behaves like storage whose credentials can
//! create objects but neither delete nor replace them (an S3 bucket with Object Lock, or a
//! bucket policy without `s3:DeleteObject` that denies overwrites), to prove that code meant
//! for write-only, delete-proof hosts never needs either.
//!
//! Deletes, writes onto an existing path and copies onto an existing path fail with a
//! permanent [`ErrorKind::Storage`] error (retrying does not help, as with a real `403`);
//! everything else passes through. [`WriteOnceTarget::refused`] counts the refusals, so a
//! test can assert that nothing even tried.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dr_core::Result<()> {
//! use dr_core::{PutOptions, StorageExt, StorageTarget};
//! use dr_storage::write_once::WriteOnceTarget;
//!
//! let store = WriteOnceTarget::new(dr_storage::from_url("memory://")?);
//! store.put_bytes("a", "1".into(), PutOptions::default()).await?;
//! assert!(store.put_bytes("a", "2".into(), PutOptions::default()).await.is_err());
//! assert!(store.delete("a").await.is_err());
//! assert_eq!(store.get_bytes("a").await?, "1");
//! assert_eq!(store.refused(), 2);
//! # Ok(()) }
//! ```

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use dr_core::{
    ByteStream, Error, ErrorKind, ObjectMeta, ObjectWriter, PutOptions, Result, StorageExt,
    StorageTarget,
};

/// A [`StorageTarget`] decorator that refuses deletes and overwrites. See the module docs.
/// Clones share the refusal counter.
pub struct WriteOnceTarget<T: ?Sized> {
    inner: Arc<T>,
    refused: Arc<AtomicU64>,
}

impl<T: ?Sized> Clone for WriteOnceTarget<T> {
    fn clone(&self) -> Self {
        WriteOnceTarget {
            inner: self.inner.clone(),
            refused: self.refused.clone(),
        }
    }
}

impl<T: StorageTarget + ?Sized> std::fmt::Debug for WriteOnceTarget<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteOnceTarget")
            .field("inner", &self.inner.describe())
            .field("refused", &self.refused())
            .finish()
    }
}

impl<T: StorageTarget + ?Sized> WriteOnceTarget<T> {
    /// Wrap `inner`.
    pub fn new(inner: Arc<T>) -> Self {
        WriteOnceTarget {
            inner,
            refused: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Deletes and overwrites refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    fn refuse(&self, what: &str, path: &str) -> Error {
        self.refused.fetch_add(1, Ordering::SeqCst);
        Error::new(
            ErrorKind::Storage,
            format!("access denied: this store's credentials cannot {what}"),
        )
        .with_context("object", path)
    }

    async fn refuse_existing(&self, path: &str) -> Result<()> {
        if self.inner.exists(path).await? {
            return Err(self.refuse("replace an object", path));
        }
        Ok(())
    }
}

#[async_trait]
impl<T: StorageTarget + ?Sized + 'static> StorageTarget for WriteOnceTarget<T> {
    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn put_stream(&self, path: &str, opts: PutOptions) -> Result<Box<dyn ObjectWriter>> {
        self.refuse_existing(path).await?;
        self.inner.put_stream(path, opts).await
    }

    async fn put_if_absent(&self, path: &str, bytes: Bytes, opts: PutOptions) -> Result<()> {
        self.inner.put_if_absent(path, bytes, opts).await
    }

    async fn get(&self, path: &str, range: Option<Range<u64>>) -> Result<ByteStream> {
        self.inner.get(path, range).await
    }

    async fn head(&self, path: &str) -> Result<ObjectMeta> {
        self.inner.head(path).await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        self.inner.list(prefix).await
    }

    async fn delete(&self, path: &str) -> Result<()> {
        Err(self.refuse("delete", path))
    }

    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.refuse_existing(to).await?;
        self.inner.copy(from, to).await
    }
}
