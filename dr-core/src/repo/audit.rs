//! The audit trail: an append-only, signed, hash-chained record of every administrative
//! change to a signed repository (state changes, pin/unpin, prune deletions, upgrades).
//! After a breach this is what people read first (`drctl log`).
//!
//! ```text
//! audit/<seq, 20 digits>.json   { seq, prev, at, host, key_id, action, details, signature }
//! ```
//!
//! Entry `n` is created with create-if-absent (never overwritten), names the SHA-256 of
//! entry `n-1`'s canonical JSON in `prev`, and is signed by the administrative key or a
//! writer key. An attacker with bucket access can neither forge an entry nor edit or remove
//! one unnoticed: a gap, a broken `prev` chain or a bad signature is reported by
//! [`read_trail`]. Removing the newest entries is caught up to the `audit_head` that the
//! signed `dr-repo.json` records at each state change.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{ErrorKind, Result};
use crate::repo::Repository;
use crate::signing::{self, Signature, SigningKey};
use crate::storage::{PutOptions, StorageExt};

/// Prefix of the audit objects.
pub const AUDIT_PREFIX: &str = "audit/";
const AUDIT_CONTEXT: &[u8] = b"dr-audit-v1\n";

/// One entry of the trail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position, from 1.
    pub seq: u64,
    /// SHA-256 (hex) of the previous entry's canonical JSON; empty for the first.
    pub prev: String,
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// The host that made the change.
    pub host: String,
    /// The signing key that made it.
    pub key_id: String,
    /// What: `state`, `pin`, `unpin`, `prune-delete`, `upgrade`.
    pub action: String,
    /// The change itself (key ids added and removed, the new policy, the backup id, …).
    pub details: Value,
    /// The signature of everything above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
}

/// The newest entry, as the signed state records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditHead {
    /// Its position.
    pub seq: u64,
    /// SHA-256 (hex) of its canonical JSON.
    pub sha256: String,
}

/// What [`read_trail`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Trail {
    /// The entries in order (those that could be read).
    pub entries: Vec<AuditEntry>,
    /// One line per problem: missing, edited, forged or truncated entries.
    pub problems: Vec<String>,
}

fn path(seq: u64) -> String {
    format!("{AUDIT_PREFIX}{seq:020}.json")
}

fn hash(v: &Value) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, &signing::canonical_json(v)).as_ref())
}

fn message(repository_id: &str, entry: &Value) -> Vec<u8> {
    let mut v = entry.clone();
    if let Value::Object(map) = &mut v {
        map.remove("signature");
    }
    [
        AUDIT_CONTEXT,
        repository_id.as_bytes(),
        b"\n",
        &signing::canonical_json(&v),
    ]
    .concat()
}

/// Append an entry signed by `key`; returns the new head. Retries on a concurrent append.
pub async fn append(
    repo: &Repository,
    key: &SigningKey,
    action: &str,
    details: Value,
) -> Result<AuditHead> {
    loop {
        let (last, _) = last_entry(repo).await?;
        let (seq, prev) = match &last {
            Some(v) => (v["seq"].as_u64().unwrap_or(0) + 1, hash(v)),
            None => (1, String::new()),
        };
        let mut entry = AuditEntry {
            seq,
            prev,
            at: chrono::Utc::now(),
            host: crate::names::host_name(),
            key_id: key.key_id(),
            action: action.to_owned(),
            details: details.clone(),
            signature: None,
        };
        let value = serde_json::to_value(&entry).expect("entries serialize");
        entry.signature = Some(signing::sign_detached(
            key,
            &message(&repo.config().repository_id, &value),
        ));
        let value = serde_json::to_value(&entry).expect("entries serialize");
        let bytes = serde_json::to_vec_pretty(&value).expect("entries serialize");
        match repo
            .storage()
            .put_if_absent(&path(seq), bytes.into(), PutOptions::default())
            .await
        {
            Ok(()) => {
                return Ok(AuditHead {
                    seq,
                    sha256: hash(&value),
                })
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.with_context("audit entry", seq)),
        }
    }
}

/// The sequence number of the newest entry (0 for an empty trail).
pub async fn head_seq(repo: &Repository) -> Result<u64> {
    let (last, _) = last_entry(repo).await?;
    Ok(last.and_then(|v| v["seq"].as_u64()).unwrap_or(0))
}

/// The trail's entry objects in order (their names are zero-padded sequence numbers).
async fn entry_paths(repo: &Repository) -> Result<Vec<String>> {
    let mut paths: Vec<String> = repo
        .storage()
        .list(AUDIT_PREFIX)
        .await?
        .into_iter()
        .map(|o| o.path)
        .collect();
    paths.sort();
    Ok(paths)
}

async fn last_entry(repo: &Repository) -> Result<(Option<Value>, usize)> {
    let paths = entry_paths(repo).await?;
    let n = paths.len();
    match paths.last() {
        Some(p) => {
            let bytes = repo.storage().get_bytes(p).await?;
            Ok((serde_json::from_slice(&bytes).ok(), n))
        }
        None => Ok((None, 0)),
    }
}

/// Copy the trail of `src` to `dst` (a replica of the same repository): every entry `dst`
/// lacks is created there byte for byte, so the replica's trail reaches the head its copied
/// `dr-repo.json` records and `verify` there checks the same chain. An entry `dst` holds with
/// other bytes is refused: the two trails diverged, someone wrote to the replica. Returns
/// the number of entries copied.
pub async fn copy_trail(
    src: &dyn crate::storage::StorageTarget,
    dst: &dyn crate::storage::StorageTarget,
) -> Result<usize> {
    let theirs: std::collections::HashSet<String> = dst
        .list(AUDIT_PREFIX)
        .await?
        .into_iter()
        .map(|o| o.path)
        .collect();
    let mut ours: Vec<String> = src
        .list(AUDIT_PREFIX)
        .await?
        .into_iter()
        .map(|o| o.path)
        .collect();
    ours.sort();
    let mut copied = 0;
    for p in ours {
        let bytes = src.get_bytes(&p).await?;
        if theirs.contains(&p) {
            if dst.get_bytes(&p).await? != bytes {
                return Err(crate::error::Error::corrupt(format!(
                    "the destination's audit entry {p} differs from the source's: its trail \
                     was written to outside replication; investigate before replicating"
                )));
            }
            continue;
        }
        match dst.put_if_absent(&p, bytes, PutOptions::default()).await {
            Ok(()) => copied += 1,
            // A concurrent replication copied it: checked by the next run like any other.
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.with_context("audit entry", &p)),
        }
    }
    Ok(copied)
}

/// Read and check the whole trail: every entry present from 1 on, each chained to the one
/// before, each signed by the administrative key or a writer key, and reaching at least the
/// head the signed state records.
pub async fn read_trail(repo: &Repository) -> Result<Trail> {
    let config = repo.config();
    let paths = entry_paths(repo).await?;
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let mut prev_hash = String::new();
    let mut expected = 1u64;
    for p in &paths {
        let bytes = repo.storage().get_bytes(p).await?;
        let Ok(value) = serde_json::from_slice::<Value>(&bytes) else {
            problems.push(format!("audit entry {p} is not valid JSON"));
            continue;
        };
        let Ok(entry) = serde_json::from_value::<AuditEntry>(value.clone()) else {
            problems.push(format!("audit entry {p} is malformed"));
            continue;
        };
        if p != &path(entry.seq) {
            problems.push(format!("audit entry {p} claims to be entry {}", entry.seq));
        }
        if entry.seq != expected {
            problems.push(format!(
                "audit entries {expected} to {} are missing (removed)",
                entry.seq.saturating_sub(1)
            ));
        } else if entry.prev != prev_hash {
            problems.push(format!(
                "audit entry {} does not follow entry {} (an entry was edited or replaced)",
                entry.seq,
                entry.seq - 1
            ));
        }
        let signed = entry.signature.as_ref().is_some_and(|sig| {
            crate::handover::audit_signers(config, entry.seq)
                .iter()
                .any(|k| k.verifies_detached(&message(&config.repository_id, &value), sig))
        });
        if !signed {
            problems.push(format!(
                "audit entry {} is not signed by the administrative key or a writer key of its time (edited or forged)",
                entry.seq
            ));
        }
        prev_hash = hash(&value);
        expected = entry.seq + 1;
        entries.push(entry);
    }
    if let Some(head) = &config.audit_head {
        match entries.iter().find(|e| e.seq == head.seq) {
            None => problems.push(format!(
                "the audit trail ends before entry {}, which dr-repo.json records (entries were removed)",
                head.seq
            )),
            Some(e) => {
                let v = serde_json::to_value(e).expect("entries serialize");
                if hash(&v) != head.sha256 {
                    problems.push(format!(
                        "audit entry {} differs from the one dr-repo.json records",
                        head.seq
                    ));
                }
            }
        }
    }
    Ok(Trail { entries, problems })
}

/// The audit details of a state change: what differs between `old` and `new`.
pub(crate) fn state_change(
    old: &crate::repo::RepoConfig,
    new: &crate::repo::RepoConfig,
) -> serde_json::Value {
    use std::collections::BTreeSet;
    let ids =
        |c: &crate::repo::RepoConfig| c.keys.iter().map(|k| k.id.clone()).collect::<BTreeSet<_>>();
    let writers = |c: &crate::repo::RepoConfig| {
        c.writers
            .iter()
            .map(|w| w.id.clone())
            .collect::<BTreeSet<_>>()
    };
    let mut d = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        d.insert(k.into(), v);
    };
    let (old_keys, new_keys) = (ids(old), ids(new));
    let (old_w, new_w) = (writers(old), writers(new));
    if old.signature.is_none() {
        put("signed", serde_json::json!(true));
    }
    if new_keys != old_keys {
        put(
            "keys_added",
            serde_json::json!(new_keys.difference(&old_keys).collect::<Vec<_>>()),
        );
        put(
            "keys_removed",
            serde_json::json!(old_keys.difference(&new_keys).collect::<Vec<_>>()),
        );
    }
    if new_w != old_w {
        put(
            "writers_added",
            serde_json::json!(new_w.difference(&old_w).collect::<Vec<_>>()),
        );
        put(
            "writers_removed",
            serde_json::json!(old_w.difference(&new_w).collect::<Vec<_>>()),
        );
    }
    if new.defaults != old.defaults {
        put(
            "defaults",
            serde_json::to_value(&new.defaults).expect("serializes"),
        );
    }
    if new.retention != old.retention || new.retention_series != old.retention_series {
        put(
            "retention",
            serde_json::to_value(&new.retention).expect("serializes"),
        );
        put(
            "retention_series",
            serde_json::to_value(&new.retention_series).expect("serializes"),
        );
    }
    serde_json::Value::Object(d)
}
