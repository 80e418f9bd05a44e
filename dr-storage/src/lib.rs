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
//! First cut: `file://` (or a plain path) and `memory://`. Writes stream as multipart
//! uploads that become visible only on `finish()`.
#![deny(missing_docs)]

#[cfg(feature = "testing")]
pub mod conformance;
mod object;

pub use object::ObjectStoreTarget;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use dr_core::{Error, ErrorKind, Result, StorageTarget};

/// Open the storage target a URL names: `file:///abs/dir`, a plain directory path, or
/// `memory://` (a fresh, empty in-memory store, for tests).
///
/// A `file://` directory must exist; use [`create_local_dir`] first when initialising.
pub fn from_url(url: &str) -> Result<Arc<dyn StorageTarget>> {
    match parse(url)? {
        Location::Memory => Ok(Arc::new(ObjectStoreTarget::memory())),
        Location::File(dir) => Ok(Arc::new(ObjectStoreTarget::local(&dir)?)),
    }
}

/// For a `file://` URL, create its directory if missing (a no-op for other schemes).
pub fn create_local_dir(url: &str) -> Result<()> {
    if let Location::File(dir) = parse(url)? {
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::io(
                format!("creating the repository directory {}", dir.display()),
                e,
            )
        })?;
    }
    Ok(())
}

enum Location {
    Memory,
    File(PathBuf),
}

fn parse(url: &str) -> Result<Location> {
    if url == "memory://" || url == "memory:" {
        return Ok(Location::Memory);
    }
    let path = if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(Error::invalid(format!(
                "repository URL '{url}': file URLs need an absolute path (file:///srv/backups)"
            )));
        }
        PathBuf::from(rest)
    } else if let Some((scheme, _)) = url.split_once("://") {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "repository URL scheme '{scheme}://' is not supported yet (file://, memory://)"
            ),
        ));
    } else if url.is_empty() {
        return Err(Error::invalid("the repository URL is empty"));
    } else {
        let p = Path::new(url);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::io("reading the current directory", e))?
                .join(p)
        }
    };
    Ok(Location::File(path))
}

#[cfg(test)]
mod tests {
    use super::*;

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
