//! Applying WAL-aware retention ([`retention`](super::retention)) to a repository's WAL
//! archives, as part of [`prune`](crate::prune()).
//!
//! The WAL plan is made from the backup decisions *before* any backup is deleted, because it
//! may protect a backup the backup policy would delete: the anchor of the PITR window (the
//! newest backup consistent before the window starts). Files are deleted after the backups,
//! record first (from then on the file is not archived), then its stored bytes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::manifest::Manifest;
use crate::repo::Repository;
use crate::retention::{Decision, RetentionDuration, SeriesPolicies};
use crate::series::Series;
use crate::wal::archive::WalArchive;
use crate::wal::base;
use crate::wal::retention::{evaluate, RetainedBackup, WalPlan};

/// The WAL retention of one cluster's archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WalPrune {
    /// The cluster (decimal text).
    pub system_identifier: String,
    /// The verdicts, with reasons.
    pub plan: WalPlan,
    /// Files deleted (in a dry run: that would be).
    pub deleted: Vec<String>,
}

/// The WAL plans of every archive in `repo`, given the backup `decisions` (all complete
/// backups, as [`Manifest`]s in `manifests`, in the same order). Each cluster's PITR window
/// is `keep_pitr` when given, else the `keep_pitr` of the policy its physical series
/// follows in `policies`.
pub async fn plan(
    repo: &Repository,
    manifests: &[Manifest],
    decisions: &[Decision],
    policies: &SeriesPolicies,
    keep_pitr: Option<RetentionDuration>,
    now: DateTime<Utc>,
) -> Result<Vec<WalPrune>> {
    let mut by_cluster: BTreeMap<u64, Vec<RetainedBackup>> = BTreeMap::new();
    let mut series_of: BTreeMap<u64, &Series> = BTreeMap::new();
    for (m, d) in manifests.iter().zip(decisions) {
        if !base::is_physical(m) {
            continue;
        }
        let (Ok(sysid), Ok(backup)) = (base::system_identifier(m), base::base_backup(m)) else {
            tracing::warn!(backup = %m.id, "physical backup without its WAL positions; ignored by WAL retention");
            continue;
        };
        series_of.insert(sysid, &m.series);
        by_cluster.entry(sysid).or_default().push(RetainedBackup {
            backup,
            kept: d.keep,
        });
    }
    let mut out = Vec::new();
    for cluster in WalArchive::clusters(repo).await? {
        let archive = WalArchive::open(repo, cluster.system_identifier).await?;
        let index = archive.index(true).await?;
        let backups = by_cluster
            .remove(&cluster.system_identifier)
            .unwrap_or_default();
        let window = keep_pitr.or_else(|| match series_of.get(&cluster.system_identifier) {
            Some(series) => policies.policy_for(series).keep_pitr,
            None => policies.default.keep_pitr,
        });
        out.push(WalPrune {
            system_identifier: cluster.system_identifier.to_string(),
            plan: evaluate(&index, &backups, window, now),
            deleted: Vec::new(),
        });
    }
    Ok(out)
}

/// Delete what `prune.plan` does not keep (nothing in a dry run), filling `prune.deleted`.
pub async fn apply(repo: &Repository, prune: &mut WalPrune, dry_run: bool) -> Result<()> {
    let sysid: u64 = prune
        .system_identifier
        .parse()
        .expect("written from a u64 by plan()");
    let archive = WalArchive::open(repo, sysid).await?;
    let listing = archive.list().await?;
    for d in prune.plan.deletions() {
        if !dry_run {
            archive.delete(d.file, &listing).await?;
        }
        prune.deleted.push(d.name.clone());
    }
    if !dry_run {
        // Streamed copies of segments archived since are never read again.
        archive.drop_superseded_streamed(&listing).await?;
    }
    Ok(())
}
