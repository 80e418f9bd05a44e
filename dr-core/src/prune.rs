//! Prune: apply a [`RetentionPolicy`] to a repository, and clear away failed uploads.
//!
//! Order of work, chosen so that an interrupted prune never loses more than it meant to and
//! never leaves a listed backup with missing data:
//!
//! 1. take the repository's exclusive lease ([`Lease::exclusive`], not in a dry run), and
//!    check it is still held before each destructive step;
//! 2. list the complete backups and [evaluate](SeriesPolicies::evaluate) the policies, each
//!    series on its own;
//! 3. for each doomed backup, oldest first: delete its **manifest first** (from then on it is
//!    no longer listed or restorable), then its data objects, then anything else left under
//!    its folder;
//! 4. remove incomplete uploads (folders under `backups/` without a manifest, such as a
//!    backup killed half-way or a prune interrupted after step 3's first delete) whose newest
//!    object is older than the grace period. A folder whose manifest appears meanwhile is
//!    left alone.
//!
//! A dry run does steps 2 and 4's selection and reports what would happen, deleting nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, ErrorKind, Result, ResultExt};
use crate::lease::Lease;
use crate::repo::{Repository, BACKUPS_PREFIX};
use crate::retention::{BackupInfo, Decision, SeriesPolicies};
use crate::series::SeriesSelector;
use crate::storage::StorageExt;

/// How to prune.
///
/// Build it with `PruneOptions { dry_run: true, ..Default::default() }`: fields may be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneOptions {
    /// Report what would be deleted; delete nothing and take no lease.
    pub dry_run: bool,
    /// Incomplete uploads whose newest object is younger than this are left alone (a backup
    /// may still be writing them). Default 24 hours.
    pub incomplete_grace: Duration,
    /// The evaluation time; `None` is the current time. For previews and tests.
    pub now: Option<DateTime<Utc>>,
    /// How long to wait for the exclusive repository lease if another process holds it;
    /// `None` fails at once with [`ErrorKind::Locked`].
    pub lease_wait: Option<Duration>,
    /// Only backups of these series are pruned; the others are kept ("not selected").
    pub series: SeriesSelector,
    /// How long archived WAL stays recoverable to any point (the PITR window), separate
    /// from backup retention, overriding the policies' `keep_pitr`; `None`: the policy's,
    /// else from every kept physical backup onwards. See [`crate::wal::retention`].
    pub keep_pitr: Option<crate::retention::RetentionDuration>,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            incomplete_grace: Duration::from_secs(24 * 3600),
            now: None,
            lease_wait: None,
            series: SeriesSelector::any(),
            keep_pitr: None,
        }
    }
}

/// An upload without a manifest found by prune.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncompleteUpload {
    /// The id of the backup folder.
    pub id: String,
    /// When its newest object was last written.
    pub last_modified: DateTime<Utc>,
    /// Bytes stored under it.
    pub bytes: u64,
    /// Whether it was removed (or, in a dry run, would be): older than the grace period.
    pub removed: bool,
}

/// What a prune did (or, in a dry run, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PruneReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// The evaluation time.
    pub now: DateTime<Utc>,
    /// One decision per complete backup, newest first.
    pub decisions: Vec<Decision>,
    /// Ids of the backups deleted (in a dry run: that would be), in deletion order.
    pub deleted: Vec<String>,
    /// Stored bytes of the deleted backups, from their manifests.
    pub freed_bytes: u64,
    /// Every incomplete upload found, removed or not.
    pub incomplete: Vec<IncompleteUpload>,
    /// Ids of the incomplete uploads removed (in a dry run: that would be).
    pub incomplete_removed: Vec<String>,
    /// WAL retention per archived cluster.
    pub wal: Vec<crate::wal::prune::WalPrune>,
    /// Backups the store refused to delete (Object Lock, a policy without DeleteObject),
    /// with the store's answer: they stay complete and are tried again by the next prune.
    pub undeletable: Vec<Undeletable>,
}

/// A backup that prune planned to delete but the store would not let it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Undeletable {
    /// The backup id.
    pub id: String,
    /// The store's refusal, one line.
    pub error: String,
}

/// Apply `policies` to `repo`, each series under its own policy
/// ([`SeriesPolicies::evaluate`]): delete the backups they do not keep, manifest first, and
/// the incomplete uploads older than the grace period. See the [module docs](self).
///
/// An empty policy deletes no backup (incomplete uploads are still cleaned up); refusing an
/// empty policy is the caller's choice, as `drctl prune` does. On an error the prune stops;
/// whatever it had deleted is consistent (a backup whose manifest went but whose data did
/// not is an incomplete upload that the next prune removes).
pub async fn prune(
    repo: &Repository,
    policy: &SeriesPolicies,
    opts: &PruneOptions,
) -> Result<PruneReport> {
    if opts.dry_run {
        return prune_locked(repo, policy, opts, None).await;
    }
    Lease::exclusive(repo, "prune", opts.lease_wait)
        .await?
        .hold(async |lease| prune_locked(repo, policy, opts, Some(lease)).await)
        .await
}

async fn prune_locked(
    repo: &Repository,
    policy: &SeriesPolicies,
    opts: &PruneOptions,
    lease: Option<&Lease>,
) -> Result<PruneReport> {
    let check = || lease.map_or(Ok(()), Lease::check);
    let now = opts.now.unwrap_or_else(Utc::now);
    if !opts.dry_run {
        // Deletions are audited: a signed repository needs a signing key to record them.
        repo.check_can_sign_manifests()?;
    }

    let manifests = repo.list_backups().await?;
    let infos: Vec<BackupInfo> = manifests.iter().map(BackupInfo::from).collect();
    let mut decisions = policy.evaluate(&infos, now);
    for d in decisions
        .iter_mut()
        .filter(|d| !opts.series.matches(&d.series))
    {
        d.keep = true;
        d.reasons = vec!["series not selected".into()];
    }
    // Objects still under the bucket's Object Lock cannot be deleted: never plan it.
    if let Some(days) = repo.config().object_lock_days {
        let locked_until = |t: DateTime<Utc>| t + chrono::Duration::days(days.into());
        for (d, m) in decisions.iter_mut().zip(&manifests) {
            // The manifest is written last, so it is locked longest.
            let until = locked_until(m.finished_at);
            if !d.keep && until > now {
                d.keep = true;
                d.reasons.push(format!(
                    "object lock ({days} day{}): deletable from {}",
                    if days == 1 { "" } else { "s" },
                    until.format("%Y-%m-%d %H:%M UTC")
                ));
            }
        }
    }

    // WAL first: its plan may protect a backup (the anchor of the PITR window).
    let mut wal =
        crate::wal::prune::plan(repo, &manifests, &decisions, policy, opts.keep_pitr, now).await?;
    for (id, why) in wal.iter().flat_map(|w| w.plan.protected.iter()) {
        if let Some(d) = decisions.iter_mut().find(|d| &d.id == id) {
            if !d.keep {
                d.keep = true;
                d.reasons.push(why.clone());
            }
        }
    }

    let mut report = PruneReport {
        dry_run: opts.dry_run,
        now,
        decisions: decisions.clone(),
        deleted: Vec::new(),
        freed_bytes: 0,
        incomplete: Vec::new(),
        incomplete_removed: Vec::new(),
        wal: Vec::new(),
        undeletable: Vec::new(),
    };

    // `list_backups` is newest first; delete oldest first.
    for (pos, m) in manifests.iter().enumerate().rev() {
        if decisions[pos].keep {
            continue;
        }
        if !opts.dry_run {
            check()?;
            // Re-read: someone may have pinned it since we listed.
            let current = repo.manifest(&m.id).await?;
            if current.pinned {
                tracing::warn!(backup = %m.id, "backup was pinned during prune; keeping it");
                let d = &mut report.decisions[pos];
                d.keep = true;
                d.reasons.push("pinned".into());
                continue;
            }
            repo.audit(
                "prune-delete",
                serde_json::json!({
                    "backup": current.id,
                    "series": current.series.to_string(),
                    "finished_at": current.finished_at,
                }),
            )
            .await?;
            match delete_backup(repo, &current).await {
                Ok(()) => {}
                // Refused by the store (not a passing fault: those were retried): keep
                // going, report it, and let the next prune try again.
                Err(e) if e.kind() == ErrorKind::Storage && !e.is_temporary() => {
                    tracing::warn!(backup = %m.id, "the store refused to delete the backup: {}", e.report());
                    repo.audit("prune-refused", serde_json::json!({ "backup": m.id }))
                        .await?;
                    report.undeletable.push(Undeletable {
                        id: m.id.clone(),
                        error: e.report(),
                    });
                    continue;
                }
                Err(e) => return Err(e.with_context("backup", &m.id)),
            }
        }
        tracing::info!(backup = %m.id, dry_run = opts.dry_run, "pruned backup");
        report.deleted.push(m.id.clone());
        report.freed_bytes += m.stored_bytes;
    }

    for id in repo.list_incomplete().await? {
        let prefix = format!("{BACKUPS_PREFIX}{id}/");
        let objects = repo.storage().list(&prefix).await?;
        let Some(last_modified) = objects.iter().map(|o| o.last_modified).max() else {
            continue;
        };
        let age = (now - last_modified).to_std().unwrap_or(Duration::ZERO);
        let removed = age >= opts.incomplete_grace;
        if removed && !opts.dry_run {
            // A backup may have committed since we listed: never remove a complete one.
            check()?;
            if repo
                .storage()
                .exists(&Repository::manifest_path(&id))
                .await?
            {
                continue;
            }
            repo.storage()
                .delete_prefix(&prefix)
                .await
                .map_err(|e| e.with_context("incomplete backup", &id))?;
            tracing::info!(backup = %id, "removed incomplete upload");
        }
        if removed {
            report.incomplete_removed.push(id.clone());
        }
        report.incomplete.push(IncompleteUpload {
            id,
            last_modified,
            bytes: objects.iter().map(|o| o.size).sum(),
            removed,
        });
    }

    // WAL of the clusters whose physical series is selected, after the backups.
    for mut w in wal.drain(..) {
        let series = crate::series::Series {
            kind: crate::wal::base::PHYSICAL_KIND.into(),
            origin: w.system_identifier.clone(),
            name: crate::wal::base::PHYSICAL_NAME.into(),
        };
        if !opts.series.matches(&series) {
            continue;
        }
        check()?;
        crate::wal::prune::apply(repo, &mut w, opts.dry_run).await?;
        report.wal.push(w);
    }
    Ok(report)
}

/// Delete one committed backup: the manifest (the commit) first, then the data.
///
/// Only objects inside the backup's own folder are deleted: a manifest naming another
/// backup's object (corrupt or hostile) cannot make prune delete it.
async fn delete_backup(repo: &Repository, m: &crate::manifest::Manifest) -> Result<()> {
    if m.pinned {
        // evaluate() never dooms a pinned backup; this guards against a future bug.
        return Err(Error::new(
            ErrorKind::Other,
            "refusing to delete a pinned backup",
        ));
    }
    let storage = repo.storage();
    let folder = format!("{BACKUPS_PREFIX}{}/", m.id);
    storage.delete(&Repository::manifest_path(&m.id)).await?;
    for o in m.objects.iter().filter(|o| o.path.starts_with(&folder)) {
        storage.delete(&o.path).await.context("object", &o.path)?;
    }
    storage.delete_prefix(&folder).await?;
    Ok(())
}
