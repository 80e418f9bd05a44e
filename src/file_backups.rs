//! Deduplicated file backups as drctl and dr.toml jobs run them: which source (a directory
//! or a bucket prefix named by a storage URL), which dedup key, which parent snapshot, pack
//! verification and pruning under the exclusive lease. The engine is `dr::files::dedup`;
//! this module joins it to repositories, stores and keys.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dr_core::lease::Lease;
use dr_core::{
    BackupOptions, Decryptor, Encryptor, Error, ErrorKind, Manifest, Repository, Result, Series,
    SourceInfo,
};
use dr_files::dedup::{
    self, DedupKey, FilesReport, PackPruneOptions, PackPruneReport, ParentTree, TreeSource,
};

/// URL schemes that name a bucket prefix (or, `file://`, a directory read as a store)
/// where a directory path is also accepted (`drctl backup --dir`, dr.toml `dir`).
const BUCKET_SCHEMES: [&str; 5] = ["s3://", "gs://", "az://", "azure://", "file://"];

/// Whether `text` (a `--dir` or dr.toml `dir` value) is a storage URL rather than a path.
pub fn is_bucket_url(text: &str) -> bool {
    BUCKET_SCHEMES.iter().any(|s| text.starts_with(s))
}

/// The source `dir_or_url` names: a storage URL (`s3://bucket/prefix/`, `gs://…`,
/// `az://…`, `file://…`) is a bucket prefix, read through dr-storage with the settings of
/// the environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`) and retries; anything else a directory.
pub fn tree_source(dir_or_url: &Path) -> Result<TreeSource> {
    match dir_or_url.to_str() {
        Some(url) if is_bucket_url(url) => {
            let store = dr_storage::open::<&str, &str>(url, &[])
                .map_err(|e| e.with_context("source", url_without_secrets(url)))?;
            let name = dr_core::StorageTarget::describe(&store);
            Ok(TreeSource::bucket(store.retrying(), name))
        }
        _ => Ok(TreeSource::dir(dir_or_url)),
    }
}

/// The store `url` names as a restore target (`restore --to`), configured like a source.
pub fn bucket_target(url: &str) -> Result<Arc<dyn dr_core::StorageTarget>> {
    if !is_bucket_url(url) {
        return Err(Error::invalid(format!(
            "{} is not a bucket URL (s3://, gs://, az://, file://)",
            url_without_secrets(url)
        )));
    }
    Ok(dr_storage::open::<&str, &str>(url, &[])?.retrying())
}

/// The series name snapshots of `dir_or_url` are recorded under (without opening a store).
pub fn source_name(dir_or_url: &Path) -> Result<String> {
    Ok(tree_source(dir_or_url)?.name())
}

/// A URL for messages: anything between `://` and `@` (user info) left out.
fn url_without_secrets(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(s), Some(at)) if at > s => format!("{}{}", &url[..s + 3], &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// The dedup key a backup uses: from `file` if given (a write-only host's copy), else the
/// repository's (read with `decryptor`, or created on the first deduplicated backup).
pub async fn dedup_key(
    repo: &Repository,
    encryptor: &dyn Encryptor,
    decryptor: Option<&dyn Decryptor>,
    file: Option<&Path>,
) -> Result<DedupKey> {
    match file {
        Some(path) => {
            let key = DedupKey::read_file(path)?;
            // A key file for another repository would silently deduplicate nothing.
            if let Ok(Some(stored)) = dedup::load_dedup_key(repo, decryptor).await {
                if stored.key_id() != key.key_id() {
                    return Err(Error::new(
                        ErrorKind::WrongKey,
                        format!(
                            "dedup key file holds key {}, this repository's is {}",
                            key.key_id(),
                            stored.key_id()
                        ),
                    ));
                }
            }
            Ok(key)
        }
        None => dedup::load_or_create_dedup_key(repo, encryptor, decryptor).await,
    }
}

/// The newest snapshot of `source` taken from this host, its tree spooled for the backup to
/// compare with.
pub async fn parent_snapshot(
    repo: &Repository,
    source: &TreeSource,
    decryptor: &dyn Decryptor,
) -> Result<Option<ParentTree>> {
    let series = Series::of(&SourceInfo {
        kind: dr_files::SOURCE_KIND.into(),
        format: dedup::TREE_FORMAT.into(),
        name: source.name(),
        origin: Some(dr_core::names::host_name()),
        ..Default::default()
    });
    let newest = repo
        .list_backups()
        .await?
        .into_iter()
        .find(|m| m.series == series && dedup::is_snapshot(m));
    match newest {
        Some(m) => Ok(Some(ParentTree::read(repo, &m, decryptor).await?)),
        None => Ok(None),
    }
}

/// Back up `source` (a directory or a bucket prefix) as a deduplicated snapshot. With a
/// `decryptor`, files unchanged since this host's previous snapshot of the source are not
/// read again; without one (a write-only host) every file is read, and only chunks no pack
/// holds are stored.
pub async fn backup_source(
    repo: &Repository,
    source: &TreeSource,
    encryptor: Arc<dyn Encryptor>,
    decryptor: Option<Arc<dyn Decryptor>>,
    dedup_key_file: Option<&Path>,
    opts: &BackupOptions,
) -> Result<(Manifest, FilesReport)> {
    repo.check_can_sign_manifests()?;
    let key = dedup_key(repo, &*encryptor, decryptor.as_deref(), dedup_key_file).await?;
    let parent = match &decryptor {
        Some(d) => parent_snapshot(repo, source, &**d).await?,
        None => None,
    };
    dedup::backup_tree(repo, source, encryptor, &key, parent, opts).await
}

/// Whether the repository holds deduplicated file backups' packs.
pub async fn has_packs(repo: &Repository) -> Result<bool> {
    Ok(!repo.storage().list(dedup::INDEX_PREFIX).await?.is_empty())
}

/// Verify every pack and every snapshot's references (see `dedup::verify_packs`); the chunk
/// ids are checked too when the dedup key can be read.
pub async fn verify_packs(
    repo: &Repository,
    decryptor: &dyn Decryptor,
) -> Result<dedup::PackVerifyReport> {
    let key = dedup::load_dedup_key(repo, Some(decryptor))
        .await
        .ok()
        .flatten();
    dedup::verify_packs(repo, decryptor, key.as_ref()).await
}

/// Prune packs no snapshot needs, holding the exclusive lease (waiting up to `wait`).
pub async fn prune_packs(
    repo: &Repository,
    encryptor: &dyn Encryptor,
    decryptor: &dyn Decryptor,
    grace: Duration,
    dry_run: bool,
    wait: Option<Duration>,
) -> Result<PackPruneReport> {
    let key = dedup::load_dedup_key(repo, Some(decryptor))
        .await?
        .ok_or_else(|| Error::new(ErrorKind::NotFound, "the repository has no dedup key"))?;
    let opts = PackPruneOptions {
        grace,
        dry_run,
        ..Default::default()
    };
    Lease::exclusive(repo, "prune packs", wait)
        .await?
        .hold(async |lease| {
            dedup::prune_packs(repo, lease, decryptor, encryptor, &key, &opts).await
        })
        .await
}

/// Write the repository's dedup key to `path` (created, mode 0600) for a write-only host.
pub async fn export_dedup_key(
    repo: &Repository,
    encryptor: &dyn Encryptor,
    decryptor: &dyn Decryptor,
    path: &Path,
) -> Result<String> {
    let key = dedup::load_or_create_dedup_key(repo, encryptor, Some(decryptor)).await?;
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            Error::io("cannot create the dedup key file", e).with_context("file", path.display())
        })?;
    file.write_all(key.to_file_text().as_bytes())
        .map_err(|e| Error::io("cannot write the dedup key file", e))?;
    Ok(key.key_id())
}
