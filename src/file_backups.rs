//! Deduplicated directory backups as drctl and dr.toml jobs run them: which dedup key, which
//! parent snapshot, pack verification and pruning under the exclusive lease. The engine is
//! `dr::files::dedup`; this module joins it to repositories and keys.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use dr_core::lease::Lease;
use dr_core::{
    BackupOptions, Decryptor, Encryptor, Error, ErrorKind, Manifest, Repository, Result, Series,
    SourceInfo,
};
use dr_files::dedup::{self, DedupKey, FilesReport, PackPruneOptions, PackPruneReport, Tree};

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

/// The newest snapshot of the directory `dir` taken from this host, and its tree.
pub async fn parent_snapshot(
    repo: &Repository,
    dir: &Path,
    decryptor: &dyn Decryptor,
) -> Result<Option<(String, Tree)>> {
    let name = std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string();
    let series = Series::of(&SourceInfo {
        kind: dr_files::SOURCE_KIND.into(),
        format: dedup::TREE_FORMAT.into(),
        name,
        origin: Some(dr_core::names::host_name()),
        ..Default::default()
    });
    let newest = repo
        .list_backups()
        .await?
        .into_iter()
        .find(|m| m.series == series && dedup::is_snapshot(m));
    match newest {
        Some(m) => Ok(Some((
            m.id.clone(),
            dedup::read_tree(repo, &m, decryptor).await?,
        ))),
        None => Ok(None),
    }
}

/// Back up `dir` as a deduplicated snapshot. With a `decryptor`, files unchanged since this
/// host's previous snapshot of `dir` are not read again; without one (a write-only host)
/// every file is read, and only chunks no pack holds are stored.
pub async fn backup_dir(
    repo: &Repository,
    dir: &Path,
    encryptor: Arc<dyn Encryptor>,
    decryptor: Option<Arc<dyn Decryptor>>,
    dedup_key_file: Option<&Path>,
    opts: &BackupOptions,
) -> Result<(Manifest, FilesReport)> {
    repo.check_can_sign_manifests()?;
    let key = dedup_key(repo, &*encryptor, decryptor.as_deref(), dedup_key_file).await?;
    let parent = match &decryptor {
        Some(d) => parent_snapshot(repo, dir, &**d).await?,
        None => None,
    };
    dedup::backup_tree(repo, dir, encryptor, &key, parent, opts).await
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
