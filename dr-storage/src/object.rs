//! A [`StorageTarget`] over any [`ObjectStore`], and how its uploads are cut into parts.

use std::fmt;
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

use crate::local_read::local_file_stream;
use crate::retry::{RetryPolicy, RetryingTarget};
use crate::upload::UploadConfig;

/// A storage target backed by an `object_store` implementation.
///
/// Its `Debug` and [`StorageTarget::describe`] show the scheme, bucket and prefix only, never
/// credentials.
#[derive(Clone)]
pub struct ObjectStoreTarget {
    store: Arc<dyn ObjectStore>,
    description: String,
    /// Whether the store accepts storage-class attributes.
    storage_classes: bool,
    /// How storage-class names are spelled for this store.
    dialect: ClassDialect,
    upload: UploadConfig,
    /// For a local directory: its path, so that committed objects are flushed to disk.
    local_root: Option<std::path::PathBuf>,
}

/// How a store names its storage classes. dr accepts S3's names everywhere (a repository
/// default of `GLACIER` means the coldest readable-after-thaw class on any cloud) and
/// translates them for GCS and Azure; a store's own names pass through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClassDialect {
    /// Names go to the store as given (S3 and S3-compatible stores).
    AsGiven,
    /// GCS: STANDARD, NEARLINE, COLDLINE, ARCHIVE.
    Gcs,
    /// Azure access tiers: Hot, Cool, Cold, Archive.
    Azure,
}

impl ClassDialect {
    /// The store's name for `class`.
    ///
    /// | given | GCS | Azure |
    /// |---|---|---|
    /// | `STANDARD` | `STANDARD` | `Hot` |
    /// | `STANDARD_IA`, `ONEZONE_IA`, `INTELLIGENT_TIERING` | `NEARLINE` | `Cool` |
    /// | `GLACIER_IR` | `COLDLINE` | `Cold` |
    /// | `GLACIER`, `DEEP_ARCHIVE` | `ARCHIVE` | `Archive` |
    pub(crate) fn translate(self, class: &str) -> String {
        let upper = class.trim().to_ascii_uppercase();
        match self {
            ClassDialect::AsGiven => class.trim().to_string(),
            ClassDialect::Gcs => match upper.as_str() {
                "STANDARD_IA" | "ONEZONE_IA" | "INTELLIGENT_TIERING" => "NEARLINE".into(),
                "GLACIER_IR" => "COLDLINE".into(),
                "GLACIER" | "DEEP_ARCHIVE" => "ARCHIVE".into(),
                _ => upper,
            },
            ClassDialect::Azure => match upper.as_str() {
                "STANDARD" | "HOT" => "Hot".into(),
                "STANDARD_IA" | "ONEZONE_IA" | "INTELLIGENT_TIERING" | "COOL" => "Cool".into(),
                "GLACIER_IR" | "COLD" => "Cold".into(),
                "GLACIER" | "DEEP_ARCHIVE" | "ARCHIVE" => "Archive".into(),
                _ => class.trim().to_string(),
            },
        }
    }
}

impl fmt::Debug for ObjectStoreTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreTarget")
            .field("url", &self.description)
            .field("storage_classes", &self.storage_classes)
            .field("upload", &self.upload)
            .finish_non_exhaustive()
    }
}

impl ObjectStoreTarget {
    /// An empty in-memory store.
    pub fn memory() -> Self {
        ObjectStoreTarget {
            store: Arc::new(object_store::memory::InMemory::new()),
            description: "memory://".into(),
            storage_classes: false,
            dialect: ClassDialect::AsGiven,
            upload: UploadConfig::default(),
            local_root: None,
        }
    }

    /// A directory on the local file system, which must exist.
    ///
    /// Every object is flushed to disk (the file, then the directories up to the root)
    /// before a write reports success: an archived WAL segment must survive a power cut once
    /// PostgreSQL has been told it is stored, and so must a committed backup.
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
            dialect: ClassDialect::AsGiven,
            upload: UploadConfig::local(),
            local_root: Some(dir.to_path_buf()),
        })
    }

    /// Wrap any object store. `description` must not contain secrets; `storage_classes` says
    /// whether the store takes [`Attribute::StorageClass`] (S3, GCS, Azure do; the local file
    /// system rejects any attribute, so it must be `false` there).
    pub fn new(store: Arc<dyn ObjectStore>, description: String, storage_classes: bool) -> Self {
        ObjectStoreTarget {
            store,
            description,
            storage_classes,
            dialect: ClassDialect::AsGiven,
            upload: UploadConfig::default(),
            local_root: None,
        }
    }

    pub(crate) fn with_class_dialect(mut self, dialect: ClassDialect) -> Self {
        self.dialect = dialect;
        self
    }

    /// The same target with different upload part sizes and parallelism.
    pub fn with_upload_config(mut self, upload: UploadConfig) -> Self {
        self.upload = upload;
        self
    }

    /// How this target cuts uploads into parts.
    pub fn upload_config(&self) -> UploadConfig {
        self.upload
    }

    /// The most memory one streaming upload of unknown size holds:
    /// part size × (parts in flight + 1). See [`UploadConfig`].
    pub fn upload_memory_budget(&self) -> u64 {
        self.upload.memory_budget(None)
    }

    /// This target behind a [`RetryingTarget`] with the default policy: transient errors
    /// are retried and interrupted reads resumed.
    pub fn retrying(self) -> Arc<dyn StorageTarget> {
        Arc::new(RetryingTarget::new(Arc::new(self), RetryPolicy::default()))
    }

    /// Whether storage classes given in [`PutOptions`] reach the store (`false` for
    /// `file://` and `memory://`, which ignore them).
    pub fn supports_storage_classes(&self) -> bool {
        self.storage_classes
    }

    /// The underlying object store, for callers that need what the trait does not offer.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn attributes(&self, opts: &PutOptions) -> Attributes {
        let mut attrs = Attributes::new();
        if let (true, Some(class)) = (self.storage_classes, &opts.storage_class) {
            attrs.insert(
                Attribute::StorageClass,
                self.dialect.translate(class).into(),
            );
        }
        attrs
    }
}

/// Flush object `p` under the local directory `root` to disk: the file, then each directory
/// from its own up to `root` (so that new directories' entries survive too).
async fn sync_local(root: &FsPath, p: &str) -> Result<()> {
    let root = root.to_path_buf();
    let file = root.join(p);
    let owned = p.to_string();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        std::fs::File::open(&file)?.sync_all()?;
        let mut dir = file.parent();
        while let Some(d) = dir {
            std::fs::File::open(d)?.sync_all()?;
            if d == root {
                break;
            }
            dir = d.parent();
        }
        Ok(())
    })
    .await
    .map_err(|e| Error::new(ErrorKind::Other, "flushing to disk failed").with_source(e))?
    .map_err(|e| Error::io("flushing a written object to disk", e).with_context("object", owned))
}

fn path(p: &str) -> Result<Path> {
    check_path(p)?;
    Path::parse(p).map_err(|e| Error::invalid(format!("invalid object path '{p}'")).with_source(e))
}

/// Translate an object_store error, keeping what callers match on.
///
/// - An archived object (S3 `InvalidObjectState` for GLACIER / DEEP_ARCHIVE, which
///   object_store reports as "permission denied"; Azure `BlobArchived`, reported as a
///   conflict) is [`ErrorKind::Archived`] with a message that says to restore it first.
/// - Permission and authentication failures, and other 4xx answers, are not temporary:
///   retrying them cannot help.
/// - Other failures (connection errors, timeouts, 5xx, throttling after object_store's own
///   retries) are [`ErrorKind::Storage`] and temporary.
pub(crate) fn map_err(e: object_store::Error, doing: &str) -> Error {
    use object_store::Error as E;
    let text = chain_text(&e);
    if text.contains("InvalidObjectState") || text.contains("BlobArchived") {
        let class = between(&text, "<StorageClass>", "</StorageClass>")
            .or_else(|| text.contains("BlobArchived").then(|| "Archive".to_string()));
        let class = class.map_or_else(
            || "an archive storage class".to_string(),
            |c| format!("storage class {c}"),
        );
        let code = if text.contains("BlobArchived") {
            "BlobArchived"
        } else {
            "InvalidObjectState"
        };
        // The store's own error says "permission denied" (S3) or "conflict" (Azure), which
        // would only mislead: keep just its code as the cause.
        return Error::new(
            ErrorKind::Archived,
            format!(
                "{doing}: the object is archived ({class}) and must be restored (thawed) in the store before it can be read: start a restore (S3 RestoreObject, or an Azure tier change to Hot or Cool), wait for it to finish, then retry"
            ),
        )
        .with_source(StoreError(format!("the store answered {code}")));
    }
    let kind = match &e {
        E::NotFound { .. } => ErrorKind::NotFound,
        E::AlreadyExists { .. } | E::Precondition { .. } => ErrorKind::AlreadyExists,
        E::NotSupported { .. } | E::NotImplemented { .. } => ErrorKind::Unsupported,
        E::InvalidPath { .. } | E::UnknownConfigurationKey { .. } => ErrorKind::InvalidInput,
        // A blocking task cancelled: the runtime is shutting down. Never worth a retry
        // (and a retry's timer would panic on a runtime that is going away).
        E::JoinError { .. } => ErrorKind::Cancelled,
        _ => ErrorKind::Storage,
    };
    let denied = matches!(e, E::PermissionDenied { .. } | E::Unauthenticated { .. });
    let msg = match kind {
        ErrorKind::NotFound => format!("{doing}: object not found"),
        ErrorKind::AlreadyExists => format!("{doing}: object already exists"),
        _ if denied => format!(
            "{doing}: access denied by the store (check the credentials and the bucket's permissions)"
        ),
        _ => format!("{doing} failed"),
    };
    /// A local I/O cause that retrying cannot fix (permissions, a full or read-only disk, a
    /// missing directory); timeouts, resets and interruptions stay transient.
    fn permanent_io(e: &(dyn std::error::Error + 'static)) -> bool {
        use std::io::ErrorKind as Io;
        let mut cause = Some(e);
        while let Some(c) = cause {
            if let Some(io) = c.downcast_ref::<std::io::Error>() {
                return !matches!(
                    io.kind(),
                    Io::TimedOut
                        | Io::ConnectionReset
                        | Io::ConnectionAborted
                        | Io::ConnectionRefused
                        | Io::NotConnected
                        | Io::BrokenPipe
                        | Io::Interrupted
                        | Io::UnexpectedEof
                        | Io::WouldBlock
                        | Io::Other
                );
            }
            cause = c.source();
        }
        false
    }
    let permanent = permanent_io(&e);
    let err = Error::new(kind, msg).with_source(StoreError(flatten(&text)));
    if kind == ErrorKind::Storage && !denied && !permanent && !client_error(&text) {
        err.temporary()
    } else {
        err
    }
}

/// The cause of a storage error: object_store's whole error chain as one line.
///
/// object_store's messages carry the store's response body (often multi-line XML); a cause
/// printed by a command-line tool must stay on one line, so the chain is flattened here. What
/// callers match on is the [`ErrorKind`] and [`Error::is_temporary`], decided above from the
/// typed error; request URLs in the text carry no credentials (object_store redacts
/// signed query strings).
#[derive(Debug)]
struct StoreError(String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for StoreError {}

/// Collapse whitespace (newlines in XML bodies) and cap the length.
fn flatten(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(1024));
    for word in text.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
        if out.len() > 1000 {
            out.push_str(" …");
            break;
        }
    }
    out
}

/// Every message of an error chain, joined.
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(" | ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn between(text: &str, open: &str, close: &str) -> Option<String> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    let value = text[start..start + len].trim();
    (!value.is_empty() && value.len() < 64).then(|| value.to_string())
}

/// Whether object_store reported an HTTP 4xx answer other than 408 (timeout) and 429
/// (throttling). object_store does not expose the status as a type, only in its message
/// ("Server returned non-2xx status code: 400 Bad Request: …").
fn client_error(text: &str) -> bool {
    let marker = "status code: ";
    text.match_indices(marker).any(|(i, _)| {
        let code = &text[i + marker.len()..];
        code.starts_with('4') && !code.starts_with("408") && !code.starts_with("429")
    })
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
        let part_size = self.upload.part_size_for(opts.expected_size);
        Ok(Box::new(MultipartWriter {
            inner: Some(WriteMultipart::new_with_chunk_size(upload, part_size)),
            path: p.to_string(),
            written: 0,
            limit: self.upload.max_object_size(part_size),
            part_size,
            parts_in_flight: self.upload.parts_in_flight,
            local_root: self.local_root.clone(),
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
        if let Some(root) = &self.local_root {
            sync_local(root, p).await?;
        }
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
        if let object_store::GetResultPayload::File(file, _) = result.payload {
            return Ok(local_file_stream(file, result.range, owned));
        }
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
            etag: meta.e_tag,
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
                etag: m.e_tag,
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

    /// A server-side copy. On S3 the copy gets the bucket's default storage class (object_store
    /// sends no `x-amz-storage-class` with CopyObject), a single CopyObject is limited to
    /// 5 GiB, and copying an archived object fails with [`ErrorKind::Archived`]. To copy with
    /// a storage class, read the object and write it with [`PutOptions::storage_class`].
    async fn copy(&self, from: &str, to: &str) -> Result<()> {
        self.store
            .copy(&path(from)?, &path(to)?)
            .await
            .map_err(|e| map_err(e, "copying object").with_context("object", from))
    }
}

/// Streams into a multipart upload; commits on `finish`, aborts on `abort` or drop.
///
/// Memory: the part being filled plus at most `parts_in_flight` parts uploading (see
/// [`UploadConfig`]).
struct MultipartWriter {
    inner: Option<WriteMultipart>,
    path: String,
    written: u64,
    /// The largest object `part_size` × the part-count limit allows.
    limit: u64,
    part_size: usize,
    parts_in_flight: usize,
    local_root: Option<std::path::PathBuf>,
}

#[async_trait]
impl ObjectWriter for MultipartWriter {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.written + chunk.len() as u64 > self.limit {
            return Err(Error::invalid(format!(
                "the object is larger than {} parts of {} MiB can hold: set a larger part size (storage option part_size, e.g. part_size={}MiB) or pass the expected size",
                self.limit / self.part_size as u64,
                self.part_size >> 20,
                (self.part_size >> 20) * 4
            ))
            .with_context("object", &self.path));
        }
        let w = self.inner.as_mut().expect("writer used after finish");
        w.wait_for_capacity(self.parts_in_flight)
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
        if let Some(root) = &self.local_root {
            sync_local(root, &self.path).await?;
        }
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
    fn memory_budget_is_part_size_times_parts_in_flight_plus_one() {
        let cfg = UploadConfig::default();
        assert_eq!(cfg.memory_budget(None), 32 << 20);
        let t = ObjectStoreTarget::memory().with_upload_config(UploadConfig {
            part_size: 16 << 20,
            parts_in_flight: 2,
            ..cfg
        });
        assert_eq!(t.upload_memory_budget(), 48 << 20);
    }

    #[test]
    fn archived_objects_map_to_archived_not_permission_denied() {
        let body = "Server returned non-2xx status code: 403 Forbidden: <Error><Code>InvalidObjectState</Code><StorageClass>DEEP_ARCHIVE</StorageClass></Error>";
        let e = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: body.into(),
        };
        let e = map_err(e, "reading object");
        assert_eq!(e.kind(), ErrorKind::Archived);
        assert!(e.message().contains("DEEP_ARCHIVE"), "{e}");
        assert!(e.message().contains("restored (thawed)"), "{e}");
        assert!(!e.is_temporary());
        assert!(!e.report().contains("Forbidden"), "{}", e.report());

        let azure = object_store::Error::AlreadyExists {
            path: "x".into(),
            source: "409 Conflict: <Code>BlobArchived</Code>".into(),
        };
        let e = map_err(azure, "reading object");
        assert_eq!(e.kind(), ErrorKind::Archived);
        assert!(e.message().contains("Archive"), "{e}");
    }

    #[test]
    fn permission_and_client_errors_are_not_temporary_but_server_errors_are() {
        let denied = object_store::Error::PermissionDenied {
            path: "x".into(),
            source: "403 Forbidden: AccessDenied".into(),
        };
        let e = map_err(denied, "reading object");
        assert_eq!(e.kind(), ErrorKind::Storage);
        assert!(!e.is_temporary());
        assert!(e.message().contains("access denied"), "{e}");
        let bad = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 400 Bad Request: InvalidStorageClass"
                .into(),
        };
        assert!(!map_err(bad, "x").is_temporary());
        let busy = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 503 Service Unavailable: SlowDown".into(),
        };
        assert!(map_err(busy, "x").is_temporary());
        let throttled = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 429 Too Many Requests".into(),
        };
        assert!(map_err(throttled, "x").is_temporary());
    }

    #[test]
    fn store_errors_report_on_one_line() {
        let e = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 404 Not Found: <?xml?>\n<Error>\n  <Code>NoSuchBucket</Code>\n</Error>".into(),
        };
        let report = map_err(e, "starting upload").report();
        assert_eq!(report.lines().count(), 1, "{report}");
        assert!(report.contains("<Code>NoSuchBucket</Code>"), "{report}");
    }

    #[tokio::test]
    async fn writes_beyond_the_part_limit_fail_early_and_clearly() {
        use dr_core::StorageExt;
        let t = ObjectStoreTarget::memory().with_upload_config(UploadConfig {
            part_size: 5 << 20,
            max_parts: 2,
            parts_in_flight: 1,
        });
        let mut w = t.put_stream("big", PutOptions::default()).await.unwrap();
        w.write(Bytes::from(vec![1u8; 6 << 20])).await.unwrap();
        let e = w.write(Bytes::from(vec![2u8; 5 << 20])).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("part_size"), "{e}");
        w.abort().await.unwrap();
        assert!(!t.exists("big").await.unwrap());
        // With the expected size the part size grows and the object fits.
        let opts = PutOptions {
            expected_size: Some(11 << 20),
            ..Default::default()
        };
        let mut w = t.put_stream("big", opts).await.unwrap();
        w.write(Bytes::from(vec![1u8; 6 << 20])).await.unwrap();
        w.write(Bytes::from(vec![2u8; 5 << 20])).await.unwrap();
        assert_eq!(w.finish().await.unwrap(), 11 << 20);
    }

    #[test]
    fn s3_class_names_translate_for_gcs_and_azure() {
        assert_eq!(ClassDialect::AsGiven.translate("GLACIER"), "GLACIER");
        assert_eq!(ClassDialect::Gcs.translate("STANDARD_IA"), "NEARLINE");
        assert_eq!(ClassDialect::Gcs.translate("deep_archive"), "ARCHIVE");
        assert_eq!(ClassDialect::Gcs.translate("coldline"), "COLDLINE");
        assert_eq!(ClassDialect::Azure.translate("STANDARD_IA"), "Cool");
        assert_eq!(ClassDialect::Azure.translate("GLACIER"), "Archive");
        assert_eq!(ClassDialect::Azure.translate("cold"), "Cold");
        assert_eq!(ClassDialect::Azure.translate("Premium"), "Premium");
    }

    #[test]
    fn debug_shows_no_store_internals() {
        let t = ObjectStoreTarget::memory();
        let d = format!("{t:?}");
        assert!(d.contains("memory://"), "{d}");
        assert!(!d.contains("InMemory"), "{d}");
    }
}
