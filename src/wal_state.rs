//! The WAL archive as `drctl status` and `/metrics` judge it: per cluster, when its newest
//! segment was archived (what a disaster now would lose: the RPO with archiving), the
//! PITR window its base backups and WAL give, and a failed push archiving has not got past.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Utc};
use serde::Serialize;

use dr_core::wal::{base, PushFailure, WalArchive};
use dr_core::{Manifest, Repository, Result};

/// One cluster's archive, as read by [`gather`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalFacts {
    /// The newest archived file (segment or partial) and when it was archived.
    pub newest: Option<(String, DateTime<Utc>)>,
    /// The times the archive can recover to with the cluster's base backups, oldest first.
    pub window: Vec<dr_core::wal::Recoverable>,
    /// Segments missing between archived ones.
    pub gaps: usize,
    /// The newest failed push, unless archiving got past it ([`PushFailure::is_resolved`]).
    pub push_failure: Option<PushFailure>,
}

/// The archive state of every cluster with archived WAL, by system identifier; `backups` are
/// the repository's complete backups (the physical ones anchor the window).
pub async fn gather(repo: &Repository, backups: &[Manifest]) -> Result<BTreeMap<u64, WalFacts>> {
    let mut out = BTreeMap::new();
    for cluster in WalArchive::clusters(repo).await? {
        let sysid = cluster.system_identifier;
        let index = WalArchive::open(repo, sysid).await?.index(true).await?;
        let bases: Vec<_> = backups
            .iter()
            .filter(|m| base::is_physical(m) && base::system_identifier(m).ok() == Some(sysid))
            .filter_map(|m| base::base_backup(m).ok())
            .collect();
        let newest = index
            .newest()
            .map(|(f, i)| (f.name(index.segment_size()), i.archived_at));
        let archived: HashSet<String> = index
            .files()
            .into_iter()
            .map(|(f, _)| f.name(index.segment_size()))
            .collect();
        let push_failure = PushFailure::read(repo, sysid).await?.filter(|f| {
            !f.is_resolved(|name| archived.contains(name), newest.as_ref().map(|n| n.1))
        });
        out.insert(
            sysid,
            WalFacts {
                newest,
                window: index.window(&bases),
                gaps: index.gaps().len(),
                push_failure,
            },
        );
    }
    Ok(out)
}

/// A physical series' WAL in a status.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WalStatus {
    /// The newest archived file.
    pub newest_file: Option<String>,
    /// When it was archived.
    pub newest_archived_at: Option<DateTime<Utc>>,
    /// Seconds since then: the data a disaster now would lose.
    pub newest_age_secs: Option<i64>,
    /// The earliest time the archive can recover to.
    pub window_from: Option<DateTime<Utc>>,
    /// The latest.
    pub window_to: Option<DateTime<Utc>>,
    /// The PITR window's length in seconds (its last continuous stretch).
    pub window_secs: Option<i64>,
    /// Segments missing between archived ones.
    pub gaps: usize,
    /// The newest failed push archiving has not got past: PostgreSQL is retrying it, and
    /// WAL piles up on the database host until it succeeds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub push_failure: Option<PushFailure>,
}

impl WalStatus {
    /// The status of `facts` at `now`.
    pub fn of(facts: &WalFacts, now: DateTime<Utc>) -> WalStatus {
        let last = facts.window.last();
        WalStatus {
            newest_file: facts.newest.as_ref().map(|(n, _)| n.clone()),
            newest_archived_at: facts.newest.as_ref().map(|(_, t)| *t),
            newest_age_secs: facts.newest.as_ref().map(|(_, t)| (now - *t).num_seconds()),
            window_from: facts.window.first().map(|w| w.from),
            window_to: last.map(|w| w.to),
            window_secs: last.map(|w| (w.to - w.from).num_seconds()),
            gaps: facts.gaps,
            push_failure: facts.push_failure.clone(),
        }
    }
}
