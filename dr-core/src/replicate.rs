//! Replication: copy complete backups from one repository to another storage target (a
//! second region, another provider), checked end to end.
//!
//! ```no_run
//! # async fn run(src: &dr_core::Repository, dst: std::sync::Arc<dyn dr_core::StorageTarget>)
//! # -> dr_core::Result<()> {
//! use dr_core::replicate::{replicate, ReplicateOptions, Selection};
//!
//! let opts = ReplicateOptions { storage_class: Some("GLACIER".into()), ..Default::default() };
//! let report = replicate(src, dst, Selection::All, &opts).await?;
//! println!("copied {}, already there {}", report.copied.len(), report.skipped.len());
//! # Ok(()) }
//! ```
//!
//! For each selected backup, in order:
//!
//! 1. If the destination already has the backup's manifest, the backup is skipped (after
//!    checking that it lists the same objects): replication is idempotent.
//! 2. Every data object is streamed from the source to the destination (never held in
//!    memory), its SHA-256 and size computed on the way and compared with the manifest
//!    *before* the destination object is committed; a mismatch aborts the upload.
//! 3. Each copied object is checked at the destination: its size by `head`, and with
//!    [`ReplicateOptions::verify`] its SHA-256 by reading it back in full.
//! 4. The manifest is written last, with create-if-absent. Until then the backup is
//!    incomplete at the destination: never listed, and redone from scratch by the next run
//!    (which is how an interrupted replication resumes).
//!
//! The whole run holds the destination's exclusive lease, so two replications into one
//! destination never race each other, and prune or key rotation there wait for it.
//!
//! The destination's `dr-repo.json` is created from the source's when absent (same
//! repository id, so the copy is recognisably a replica); a destination holding another
//! repository is refused.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use ring::digest;
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::lease::{Lease, LeaseOptions, EXCLUSIVE};
use crate::manifest::{Manifest, ObjectEntry};
use crate::repo::{RepoConfig, Repository, CONFIG_PATH};
use crate::series::SeriesSelector;
use crate::storage::{PutOptions, StorageExt, StorageTarget};

/// Which backups to replicate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    /// Every complete backup of the source.
    All,
    /// These backups (ids, or `latest`: the newest backup of every series).
    Ids(Vec<String>),
}

/// How to replicate.
#[derive(Debug, Clone, Default)]
pub struct ReplicateOptions {
    /// Storage class for the data objects at the destination; `None` keeps the store's
    /// default. Manifests and `dr-repo.json` are always written in the default class, so
    /// listing never touches archived objects.
    pub storage_class: Option<String>,
    /// After copying, read every copied object back from the destination and check its
    /// SHA-256 (otherwise only its size is checked there; the hash is always checked on
    /// the way through).
    pub verify: bool,
    /// How long to wait for the destination's exclusive lease if another process holds it;
    /// `None` fails at once with [`ErrorKind::Locked`].
    pub lease_wait: Option<Duration>,
}

/// What a replication did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplicateReport {
    /// Backups copied in this run, oldest first.
    pub copied: Vec<String>,
    /// Backups already complete at the destination.
    pub skipped: Vec<String>,
    /// Data objects copied.
    pub objects_copied: usize,
    /// Stored bytes copied.
    pub bytes_copied: u64,
    /// Whether the destination's `dr-repo.json` was created by this run.
    pub created_repository: bool,
    /// Whether copied objects were read back in full at the destination.
    pub verified: bool,
    /// Audit entries copied (a signed repository's trail travels with its backups).
    pub audit_entries_copied: usize,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// Copy the selected complete backups of `src` to `dst`. See the module documentation for
/// the order of writes and the checks made.
///
/// On error, backups copied before the failing one stay complete at the destination; the
/// failing one is left without a manifest (not listed) and is redone by the next run.
pub async fn replicate(
    src: &Repository,
    dst: Arc<dyn StorageTarget>,
    ids: Selection,
    opts: &ReplicateOptions,
) -> Result<ReplicateReport> {
    let lease = Lease::acquire_on(
        dst.clone(),
        EXCLUSIVE,
        "replicate",
        opts.lease_wait,
        &LeaseOptions::default(),
    )
    .await?;
    lease
        .hold(async |lease| replicate_locked(src, dst, ids, opts, lease).await)
        .await
}

async fn replicate_locked(
    src: &Repository,
    dst: Arc<dyn StorageTarget>,
    ids: Selection,
    opts: &ReplicateOptions,
    lease: &Lease,
) -> Result<ReplicateReport> {
    let started = Instant::now();
    let mut report = ReplicateReport {
        verified: opts.verify,
        ..Default::default()
    };
    report.created_repository = ensure_config(src.config(), dst.as_ref()).await?;

    let mut manifests = match ids {
        Selection::All => src.list_backups().await?,
        Selection::Ids(ids) => {
            let mut out: Vec<Manifest> = Vec::new();
            for id in ids {
                // `latest`: the newest backup of every series (database and uploads alike).
                let found = if id == "latest" {
                    src.newest_per_series(&SeriesSelector::any()).await?
                } else {
                    vec![src.manifest(&id).await?]
                };
                for m in found {
                    if !out.iter().any(|o| o.id == m.id) {
                        out.push(m);
                    }
                }
            }
            out
        }
    };
    // Oldest first: an interrupted run leaves the newest ones to do.
    manifests.sort_by(|a, b| crate::repo::newest_first(b, a));

    for m in &manifests {
        lease.check()?;
        let id = m.id.clone();
        if already_there(m, dst.as_ref())
            .await
            .context("backup", &id)?
        {
            tracing::info!(backup = %id, "already at the destination");
            report.skipped.push(id);
            continue;
        }
        let (objects, bytes) = copy_backup(src, m, dst.as_ref(), opts)
            .await
            .context("backup", &id)?;
        report.objects_copied += objects;
        report.bytes_copied += bytes;
        report.copied.push(id);
    }
    if src.is_signed() {
        if !report.copied.is_empty() {
            record_in_trail(src, dst.as_ref(), &report.copied).await;
        }
        report.audit_entries_copied =
            crate::audit::copy_trail(src.storage().as_ref(), dst.as_ref())
                .await
                .context("destination", dst.describe())?;
    }
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// Append a `replicate` entry to the source's audit trail (copied to the destination next),
/// so both trails say which backups went where. A handle without a signing key cannot sign
/// one: the copy still happens, and the missing entry is logged.
async fn record_in_trail(src: &Repository, dst: &dyn StorageTarget, copied: &[String]) {
    let details = serde_json::json!({ "to": dst.describe(), "backups": copied });
    if let Err(e) = src.audit("replicate", details).await {
        tracing::warn!(
            error = %e.report(),
            "the replication is not recorded in the audit trail: give replicate the signing key"
        );
    }
}

/// Create the destination's `dr-repo.json` from the source's if absent; refuse a
/// destination that holds another repository. Returns whether it was created.
async fn ensure_config(config: &RepoConfig, dst: &dyn StorageTarget) -> Result<bool> {
    let existing = match dst.get_bytes(CONFIG_PATH).await {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => return Err(e.with_context("destination", dst.describe())),
    };
    let created = match existing {
        Some(bytes) => {
            check_same_repository(config, &bytes, dst)?;
            false
        }
        None => {
            let json = serde_json::to_vec_pretty(config).expect("config serializes");
            match dst
                .put_if_absent(CONFIG_PATH, Bytes::from(json), PutOptions::default())
                .await
            {
                Ok(()) => true,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    // Another replication got there first; it must be the same repository.
                    let bytes = dst.get_bytes(CONFIG_PATH).await?;
                    check_same_repository(config, &bytes, dst)?;
                    false
                }
                Err(e) => return Err(e.with_context("destination", dst.describe())),
            }
        }
    };
    Ok(created)
}

fn check_same_repository(config: &RepoConfig, bytes: &[u8], dst: &dyn StorageTarget) -> Result<()> {
    let theirs: RepoConfig = serde_json::from_slice(bytes).map_err(|e| {
        Error::corrupt(format!("{CONFIG_PATH} at the destination is malformed"))
            .with_source(e)
            .with_context("destination", dst.describe())
    })?;
    if theirs.repository_id != config.repository_id {
        return Err(Error::new(
            ErrorKind::AlreadyExists,
            format!(
                "{} holds another dr repository ({}), not a replica of {}: choose an empty destination",
                dst.describe(),
                theirs.repository_id,
                config.repository_id
            ),
        ));
    }
    Ok(())
}

/// Whether the backup is complete at the destination (and the same backup).
async fn already_there(m: &Manifest, dst: &dyn StorageTarget) -> Result<bool> {
    let bytes = match dst.get_bytes(&Repository::manifest_path(&m.id)).await {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let theirs = Manifest::from_json(&bytes)?;
    if !same_objects(&theirs.objects, &m.objects) {
        return Err(Error::corrupt(format!(
            "the destination has a backup '{}' whose objects differ from the source's: remove it there or investigate",
            m.id
        )));
    }
    Ok(true)
}

/// Objects equal in path, size and hash (storage class may differ between regions).
fn same_objects(a: &[ObjectEntry], b: &[ObjectEntry]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.path == y.path && x.size == y.size && x.sha256 == y.sha256)
}

/// Copy one backup: data objects, checks, manifest last. Returns (objects, bytes).
async fn copy_backup(
    src: &Repository,
    m: &Manifest,
    dst: &dyn StorageTarget,
    opts: &ReplicateOptions,
) -> Result<(usize, u64)> {
    let mut bytes = 0;
    for o in &m.objects {
        bytes += copy_object(src.storage().as_ref(), dst, o, opts).await?;
    }
    for o in &m.objects {
        check_at_destination(dst, o, opts.verify).await?;
    }
    let manifest_bytes = match &opts.storage_class {
        None => {
            src.storage()
                .get_bytes(&Repository::manifest_path(&m.id))
                .await?
        }
        Some(class) => {
            let mut copy = m.clone();
            for o in &mut copy.objects {
                o.storage_class = Some(class.clone());
            }
            Bytes::from(copy.to_json())
        }
    };
    // The source manifest's bytes are copied verbatim (unless the storage class changed);
    // make sure they still describe what was copied.
    let parsed = Manifest::from_json(&manifest_bytes)?;
    if parsed.id != m.id || !same_objects(&parsed.objects, &m.objects) {
        return Err(Error::corrupt(
            "the source manifest changed while the backup was being replicated",
        ));
    }
    match dst
        .put_if_absent(
            &Repository::manifest_path(&m.id),
            manifest_bytes,
            PutOptions::default(),
        )
        .await
    {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            // A concurrent replication committed it; fine if it is the same backup.
            if !already_there(m, dst).await? {
                return Err(e);
            }
        }
        Err(e) => return Err(e),
    }
    tracing::info!(backup = %m.id, bytes, "replicated");
    Ok((m.objects.len(), bytes))
}

/// Stream one object from `src` to `dst`, hashing on the way; commit only if size and
/// SHA-256 match the manifest.
async fn copy_object(
    src: &dyn StorageTarget,
    dst: &dyn StorageTarget,
    o: &ObjectEntry,
    opts: &ReplicateOptions,
) -> Result<u64> {
    let put = PutOptions {
        storage_class: opts.storage_class.clone(),
        expected_size: Some(o.size),
    };
    let mut reader = src.get(&o.path, None).await.context("object", &o.path)?;
    let mut writer = dst
        .put_stream(&o.path, put)
        .await
        .context("object", &o.path)?;
    let mut ctx = digest::Context::new(&digest::SHA256);
    let mut size = 0u64;
    let streamed: Result<()> = async {
        while let Some(chunk) = reader.next().await {
            let chunk = chunk?;
            ctx.update(&chunk);
            size += chunk.len() as u64;
            if size > o.size {
                break;
            }
            writer.write(chunk).await?;
        }
        Ok(())
    }
    .await;
    drop(reader);
    let checked = streamed.and_then(|()| {
        if size != o.size {
            return Err(Error::corrupt(format!(
                "source object '{}' is {}{size} bytes, the manifest says {}",
                o.path,
                if size > o.size { "over " } else { "" },
                o.size
            )));
        }
        if hex::encode(ctx.finish().as_ref()) != o.sha256 {
            return Err(Error::corrupt(format!(
                "source object '{}' fails its SHA-256 check: not replicated",
                o.path
            )));
        }
        Ok(())
    });
    if let Err(e) = checked {
        let _ = writer.abort().await;
        return Err(e.with_context("object", &o.path));
    }
    let written = writer.finish().await.context("object", &o.path)?;
    if written != o.size {
        return Err(Error::new(
            ErrorKind::Storage,
            format!(
                "the destination stored {written} bytes of '{}', expected {}",
                o.path, o.size
            ),
        ));
    }
    Ok(size)
}

/// Check a copied object at the destination: its size, and with `full` its SHA-256.
async fn check_at_destination(dst: &dyn StorageTarget, o: &ObjectEntry, full: bool) -> Result<()> {
    let meta = dst.head(&o.path).await.context("object", &o.path)?;
    if meta.size != o.size {
        return Err(Error::corrupt(format!(
            "object '{}' is {} bytes at the destination, the manifest says {}",
            o.path, meta.size, o.size
        )));
    }
    if full {
        let mut reader = dst.get(&o.path, None).await.context("object", &o.path)?;
        let mut ctx = digest::Context::new(&digest::SHA256);
        let mut size = 0u64;
        while let Some(chunk) = reader.next().await {
            let chunk = chunk.map_err(|e| e.with_context("object", &o.path))?;
            size += chunk.len() as u64;
            ctx.update(&chunk);
        }
        if size != o.size || hex::encode(ctx.finish().as_ref()) != o.sha256 {
            return Err(Error::corrupt(format!(
                "object '{}' read back from the destination fails its SHA-256 check",
                o.path
            )));
        }
    }
    Ok(())
}
