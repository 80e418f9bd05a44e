//! Shared leases: many holders at once, none while the exclusive lease is held.
//!
//! Operations that only add to a repository but rely on what is already stored (a
//! deduplicated file backup reuses packs that a prune could delete) hold a **shared** lease;
//! the exclusive lease (prune, key rotation) excludes them and they exclude it.
//!
//! Each shared holder takes an ordinary lease of its own under a fresh name
//! `shared-<16 hex>` (so holders never contend with each other), then reads the exclusive
//! lease: if that is live, it gives its lease back and waits or fails. The exclusive
//! holder, once it has the exclusive lease, lists the shared leases: while one is live, it
//! waits (holding the exclusive lease, so no new shared holder starts) or gives up. Both
//! sides write before they read, so with strongly consistent listings at least one of two
//! racing parties sees the other: they can both back off, never both proceed. A shared
//! lease's objects are deleted when it is released; those of a crashed holder expire after
//! the time to live and are deleted by the next exclusive holder.

use std::sync::Arc;
use std::time::Duration;

use super::{
    delete_quietly, generations, highest, lease_names, locked_error, Highest, Lease, LeaseInfo,
    LeaseOptions, EXCLUSIVE,
};
use crate::error::{Error, ErrorKind, Result};
use crate::names::random_hex;
use crate::repo::Repository;
use crate::storage::StorageTarget;

/// Prefix of shared lease names.
pub const SHARED_PREFIX: &str = "shared-";

impl Lease {
    /// A shared lease for `purpose` (e.g. a deduplicated backup), held alongside other
    /// shared leases but never alongside the exclusive one. With `wait`, waits up to that
    /// long for an exclusive holder to finish; otherwise fails with [`ErrorKind::Locked`]
    /// naming it.
    pub async fn shared(repo: &Repository, purpose: &str, wait: Option<Duration>) -> Result<Lease> {
        let opts = LeaseOptions::default();
        let storage = repo.storage().clone();
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let name = format!("{SHARED_PREFIX}{}", random_hex(8)?);
            let lease = Lease::acquire_on(storage.clone(), &name, purpose, None, &opts).await?;
            let Some(holder) = live_exclusive(storage.as_ref(), &opts).await? else {
                return Ok(lease);
            };
            lease.release().await?;
            let now = tokio::time::Instant::now();
            match deadline {
                Some(d) if now < d => tokio::time::sleep(opts.poll.min(d - now)).await,
                _ => return Err(locked_error(&holder, storage.as_ref(), wait)),
            }
        }
    }

    /// Called with the exclusive lease just taken: wait (up to `wait`) until no shared lease
    /// is live, or release the exclusive lease and fail naming a shared holder.
    pub(super) async fn exclude_shared(
        self,
        wait: Option<Duration>,
        opts: &LeaseOptions,
    ) -> Result<Lease> {
        let storage = self.shared.storage.clone();
        let deadline = wait.map(|w| tokio::time::Instant::now() + w);
        loop {
            let holders = live_shared(&storage, opts).await?;
            let Some(holder) = holders.first() else {
                return Ok(self);
            };
            let now = tokio::time::Instant::now();
            match deadline {
                Some(d) if now < d => tokio::time::sleep(opts.poll.min(d - now)).await,
                _ => {
                    let error = Error::new(
                        ErrorKind::Locked,
                        format!(
                            "{} shared lease(s) are held ({} holds '{}' for '{}' until {}); the exclusive lease waits for them: try again when they are done",
                            holders.len(),
                            holder.owner,
                            holder.name,
                            holder.purpose,
                            holder.expires_at.format("%Y-%m-%dT%H:%M:%SZ"),
                        ),
                    )
                    .with_context("repository", storage.describe());
                    self.release().await?;
                    return Err(error);
                }
            }
        }
    }
}

/// The exclusive lease's holder, if it is live.
async fn live_exclusive(
    storage: &dyn StorageTarget,
    opts: &LeaseOptions,
) -> Result<Option<LeaseInfo>> {
    loop {
        match highest(storage, EXCLUSIVE).await? {
            Highest::Vanished => {}
            Highest::None => return Ok(None),
            Highest::Some(info) => return Ok(Some(info).filter(|i| i.is_live(opts.clock.now()))),
        }
    }
}

/// The live shared leases; the objects of expired or released ones are deleted on the way
/// (only the exclusive holder calls this, so no shared holder can be starting under them).
async fn live_shared(
    storage: &Arc<dyn StorageTarget>,
    opts: &LeaseOptions,
) -> Result<Vec<LeaseInfo>> {
    let mut names = lease_names(storage.as_ref()).await?;
    names.retain(|n| n.starts_with(SHARED_PREFIX));
    let mut live = Vec::new();
    for name in names {
        match highest(storage.as_ref(), &name).await? {
            Highest::Some(info) if info.is_live(opts.clock.now()) => live.push(info),
            Highest::Some(_) => {
                for g in generations(storage.as_ref(), &name).await? {
                    delete_quietly(storage.as_ref(), &name, g).await;
                }
            }
            // Released and cleaned up between the listing and the read.
            Highest::None | Highest::Vanished => {}
        }
    }
    Ok(live)
}
