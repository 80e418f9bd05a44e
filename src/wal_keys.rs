//! Archived WAL under a key change ([`crate::keys::change_keys`]): each WAL file's data key is
//! wrapped in its record (`wal/<system id>/<timeline>/<file>.json`), like a backup's in its
//! manifest, so adding, revoking or rotating a key rewrites those records too — never the
//! stored bytes.

use std::collections::BTreeMap;

use futures::{StreamExt, TryStreamExt};

use dr_core::wal::{WalArchive, WalRecord};
use dr_core::{EncryptionInfo, Repository, Result};

/// Records written at once.
const CONCURRENCY: usize = 16;

/// One archived WAL file's record and the cluster it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct WalEntry {
    pub(crate) system_identifier: u64,
    pub(crate) record: WalRecord,
}

impl WalEntry {
    /// The same record with `encryption` (its new wrapped keys).
    pub(crate) fn with_encryption(&self, encryption: EncryptionInfo) -> WalEntry {
        WalEntry {
            system_identifier: self.system_identifier,
            record: WalRecord {
                encryption,
                ..self.record.clone()
            },
        }
    }
}

/// Every archived WAL file's record, of every cluster.
pub(crate) async fn read(repo: &Repository) -> Result<Vec<WalEntry>> {
    let mut out = Vec::new();
    for cluster in WalArchive::clusters(repo).await? {
        let sysid = cluster.system_identifier;
        let archive = WalArchive::open(repo, sysid).await?;
        out.extend(archive.records().await?.into_iter().map(|record| WalEntry {
            system_identifier: sysid,
            record,
        }));
    }
    Ok(out)
}

/// Rewrite `entries`' records ([`WalArchive::update_record`] refuses any change to what a
/// record points at).
pub(crate) async fn write(repo: &Repository, entries: Vec<WalEntry>) -> Result<()> {
    let mut archives: BTreeMap<u64, WalArchive> = BTreeMap::new();
    let clusters: std::collections::BTreeSet<u64> =
        entries.iter().map(|e| e.system_identifier).collect();
    for sysid in clusters {
        archives.insert(sysid, WalArchive::open(repo, sysid).await?);
    }
    let archives = &archives;
    futures::stream::iter(entries)
        .map(|e| async move {
            archives[&e.system_identifier]
                .update_record(&e.record)
                .await
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await
        .map(|_| ())
}
