//! dr-storage: storage targets for dr repositories, on top of [`object_store`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() -> dr_core::Result<()> {
//! use dr_core::{PutOptions, StorageExt, StorageTarget};
//! let target = dr_storage::from_url("memory://")?;
//! target.put_bytes("hello.txt", "hi".into(), PutOptions::default()).await?;
//! assert_eq!(&target.get_bytes("hello.txt").await?[..], b"hi");
//! # Ok(()) }
//! ```
//!
//! Targets: `s3://bucket/prefix` (and S3-compatible stores through an endpoint override),
//! `gs://bucket/prefix`, `az://container/prefix`, `file://` (or a plain path) and `memory://`;
//! [`open`] opens any of them with the settings each takes from the environment and from
//! `key=value` options. Writes stream as multipart uploads that become visible only on
//! `finish()`. TLS runs on rustls with ring as its crypto provider, installed once when the
//! first cloud target is opened (no aws-lc-rs).
//!
//! # Memory
//!
//! An upload holds at most `part size × (parts in flight + 1)` bytes (32 MiB with the
//! defaults: 8 MiB parts, 3 in flight), whatever the object's size; the part size grows with
//! the expected size so no object needs more than the store's part-count limit (10,000 on
//! S3, `max_parts` for stores with fewer). See [`UploadConfig`] and
//! [`ObjectStoreTarget::upload_memory_budget`].
//!
//! # Storage classes
//!
//! [`dr_core::PutOptions::storage_class`] goes to S3 as `x-amz-storage-class` (`STANDARD_IA`,
//! `GLACIER`, `DEEP_ARCHIVE`, …), to GCS as the object's storage class (`NEARLINE`,
//! `COLDLINE`, `ARCHIVE`) and to Azure as the access tier (`Hot`, `Cool`, `Cold`,
//! `Archive`); `file://` and `memory://` ignore it. S3's names are translated for GCS and
//! Azure (`STANDARD_IA` → `NEARLINE` / `Cool`, `GLACIER_IR` → `COLDLINE` / `Cold`, `GLACIER`
//! and `DEEP_ARCHIVE` → `ARCHIVE` / `Archive`), so one repository default works on every
//! cloud; each store's own names pass through. Reading an object that must be thawed
//! first (S3 GLACIER / DEEP_ARCHIVE, Azure Archive) fails with
//! [`dr_core::ErrorKind::Archived`], never as "permission denied".
#![deny(missing_docs)]

#[cfg(feature = "testing")]
pub mod conformance;
pub mod faults;
mod local_read;
mod object;
pub mod retry;
#[cfg(feature = "testing")]
pub mod testing;
mod upload;
mod url;
pub mod write_once;

pub use object::ObjectStoreTarget;
pub use upload::UploadConfig;

use std::sync::Arc;

use dr_core::{Error, Result, StorageTarget};

/// Open the storage target a URL names, with `key=value` options over the cloud's standard
/// environment variables: the one way to open storage. URLs: `s3://bucket/prefix`,
/// `gs://bucket/prefix`, `az://container/prefix`, `file:///abs/dir` or a plain directory
/// path, or `memory://` (a fresh, empty in-memory store, for tests).
///
/// | URL | environment |
/// |---|---|
/// | `s3://bucket/prefix` | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, … |
/// | `gs://bucket/prefix` | `GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_SERVICE_ACCOUNT_KEY`, `GOOGLE_APPLICATION_CREDENTIALS`, … |
/// | `az://container/prefix` | `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY`, `AZURE_STORAGE_SAS_TOKEN`, `AZURE_STORAGE_USE_EMULATOR`, … |
///
/// Option keys are object_store's configuration keys for the store (`endpoint`, `region`,
/// `allow_http`, `access_key_id`, `account_name`, …, with or without the `aws_` / `google_`
/// / `azure_` prefix), plus `part_size`, `max_parts` and `parts_in_flight` for every scheme
/// (see [`UploadConfig`]). An unknown key is an error; [`parse_storage_option`] reads the
/// `key=value` form. For an S3-compatible store:
///
/// ```
/// use dr_core::StorageTarget;
/// let target = dr_storage::open(
///     "s3://backups/prod",
///     &[("endpoint", "http://127.0.0.1:9000"), ("allow_http", "true"),
///       ("access_key_id", "minio"), ("secret_access_key", "minio-secret"),
///       ("region", "us-east-1")],
/// )?;
/// assert_eq!(target.describe(), "s3://backups/prod");
/// assert!(!format!("{target:?}").contains("minio-secret"));
/// # Ok::<(), dr_core::Error>(())
/// ```
///
/// The result is the concrete [`ObjectStoreTarget`] (its [`UploadConfig`] and memory budget
/// stay visible); share it as an `Arc<dyn StorageTarget>`, or call
/// [`ObjectStoreTarget::retrying`] for the target that long-running processes, command-line
/// tools and copies to a second region want. Opening does not contact the store; the first
/// request does. A `file://` directory must exist; use [`create_local_dir`] first when
/// initialising.
pub fn open<K: AsRef<str>, V: AsRef<str>>(
    url: &str,
    options: &[(K, V)],
) -> Result<ObjectStoreTarget> {
    let options: Vec<(String, String)> = options
        .iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
        .collect();
    url::open(url, &options)
}

/// [`open`] without options, shared and without retries: the shorthand of tests and
/// examples.
pub fn from_url(url: &str) -> Result<Arc<dyn StorageTarget>> {
    Ok(Arc::new(open::<&str, &str>(url, &[])?))
}

/// Parse `key=value` (as given to `drctl --storage-opt`) into a pair.
pub fn parse_storage_option(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        // Show only the key part: the value may be a secret.
        _ => Err(Error::invalid(
            "a storage option must have the form key=value (e.g. region=eu-west-1)",
        )),
    }
}

/// For a `file://` URL, create its directory if missing (a no-op for other schemes).
pub fn create_local_dir(url: &str) -> Result<()> {
    if let url::Location::File(dir) = url::parse(url)? {
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::io(
                format!("creating the repository directory {}", dir.display()),
                e,
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use dr_core::ErrorKind;

    #[test]
    fn rejects_unknown_schemes_and_relative_file_urls() {
        assert_eq!(
            from_url("ftp://x").unwrap_err().kind(),
            ErrorKind::Unsupported
        );
        assert_eq!(
            from_url("file://relative").unwrap_err().kind(),
            ErrorKind::InvalidInput
        );
        assert_eq!(from_url("").unwrap_err().kind(), ErrorKind::InvalidInput);
    }

    #[test]
    fn missing_directory_is_not_found() {
        let e = from_url("/nonexistent/dr/repo").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotFound, "{e}");
    }
}
