//! Opening the storage a URL (`--repo`, `--to`) and its `--storage-opt KEY=VALUE` settings
//! name: the settings are parsed here and handed to [`dr::storage::open`].

use dr::core::Result;
use dr::storage::ObjectStoreTarget;

/// The storage `url` names, configured by `KEY=VALUE` settings. Values are never echoed in
/// errors: they may be secrets.
pub fn open(url: &str, storage_opts: &[String]) -> Result<ObjectStoreTarget> {
    let options = storage_opts
        .iter()
        .map(|o| dr::storage::parse_storage_option(o))
        .collect::<Result<Vec<_>>>()?;
    dr::storage::open(url, &options)
}
