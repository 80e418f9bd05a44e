//! Verification that reaches past checksums: the plug-in that wrote a payload re-counts it
//! from the decrypted bytes (a PostgreSQL archive's rows per table, a directory archive's
//! files and bytes), and the counts are compared with the manifest.

use futures::StreamExt;
use serde::Serialize;

use dr_core::records::{self, CheckKind, CheckRecord};
use dr_core::{
    open_payload, Decryptor, Manifest, PayloadCheck, PieceSource, ReadOptions, RepoPieces,
    Repository, Result,
};

/// What `verify` checked for one backup.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The backup.
    pub id: String,
    /// Stored bytes read and checked against SHA-256 and authentication tags.
    pub stored_bytes: u64,
    /// Payload bytes after decryption and decompression.
    pub raw_bytes: u64,
    /// Tables (for a directory backup: its one files entry) whose counts were re-derived from
    /// the payload and matched the manifest.
    pub tables_checked: usize,
    /// Rows (files) counted in those tables.
    pub rows_checked: u64,
}

/// The registry of re-counters: a fresh [`PayloadCheck`] for payloads in `format` (a
/// manifest's `source.format`) from the plug-in that writes that format, or `None` for a
/// format no plug-in of this build re-counts. A new payload format adds its line here.
pub fn payload_check(format: &str) -> Option<Box<dyn PayloadCheck>> {
    match format {
        dr_db::PAYLOAD_FORMAT => Some(Box::new(dr_db::archive::ArchiveInspector::new())),
        dr_db::directory::DIRECTORY_FORMAT => {
            Some(Box::new(dr_db::directory::DirectoryCounter::new()))
        }
        dr_files::PAYLOAD_FORMAT => Some(Box::new(dr_files::TarCounter::new())),
        dr_db::PHYSICAL_COPY_FORMAT => Some(Box::new(dr_db::physical_copy::FileChecksums::new())),
        _ => None,
    }
}

/// Read every stored byte of a backup, check checksums, authentication tags and
/// decompression, and re-count the payload with its plug-in's [`payload_check`] (a format
/// without one is checked up to its length). The outcome, passed or failed, is stored as a
/// check record ([`dr_core::records`]).
pub async fn verify_backup(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    opts: &ReadOptions,
) -> Result<VerifyReport> {
    let started_at = chrono::Utc::now();
    let result = check_backup(repo, manifest, decryptor, opts).await;
    let record = CheckRecord::new(
        CheckKind::Verify,
        &manifest.id,
        manifest.series.clone(),
        started_at,
    );
    let record = match &result {
        Ok(report) => CheckRecord {
            details: serde_json::to_value(report).unwrap_or_default(),
            ..record
        },
        Err(e) => record.failed(e.report()),
    };
    records::write_or_warn(repo, &record).await;
    result
}

async fn check_backup(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    opts: &ReadOptions,
) -> Result<VerifyReport> {
    let mut check = payload_check(&manifest.source.format);
    let mut raw_bytes = 0u64;
    let mut feed = |check: &mut Option<Box<dyn PayloadCheck>>, chunk: &[u8]| -> Result<()> {
        raw_bytes += chunk.len() as u64;
        if let Some(check) = check.as_mut() {
            check
                .feed(chunk)
                .map_err(|e| e.with_context("backup", &manifest.id))?;
        }
        Ok(())
    };
    if manifest.is_pieces() {
        // Each piece on its own, checked to its end, in manifest order.
        let pieces = RepoPieces::open(repo, manifest, decryptor, opts).await?;
        for name in pieces.names() {
            if let Some(check) = check.as_mut() {
                check
                    .begin_piece(&name)
                    .map_err(|e| e.with_context("backup", &manifest.id))?;
            }
            let mut piece = pieces.open(&name).await?;
            while let Some(chunk) = piece.next().await {
                feed(&mut check, &chunk?)?;
            }
        }
    } else {
        let mut payload = open_payload(repo, manifest, decryptor, opts).await?;
        while let Some(chunk) = payload.next().await {
            feed(&mut check, &chunk?)?;
        }
    }
    if raw_bytes != manifest.raw_bytes {
        return Err(dr_core::Error::corrupt(format!(
            "payload is {raw_bytes} bytes after decompression, the manifest says {}",
            manifest.raw_bytes
        ))
        .with_context("backup", &manifest.id));
    }
    let found = match check {
        Some(check) => {
            check
                .check(&manifest.stats)
                .map_err(|e| e.with_context("backup", &manifest.id))?
                .tables
        }
        None => Vec::new(),
    };
    Ok(VerifyReport {
        id: manifest.id.clone(),
        stored_bytes: manifest.stored_bytes,
        raw_bytes,
        tables_checked: found.len(),
        rows_checked: found.iter().map(|t| t.rows).sum(),
    })
}

/// One cluster's archived WAL as `verify --all` checks it: every base backup has its own WAL
/// (start → stop), and no segment is missing between archived ones (a gap ends every
/// recovery that crosses it).
#[derive(Debug, Clone, Serialize)]
pub struct WalContinuity {
    /// The cluster (decimal text).
    pub system_identifier: String,
    /// Each of the cluster's base backups: whether its own WAL is there, how far it recovers.
    pub backups: Vec<dr_core::wal::BackupReach>,
    /// Segments missing between archived ones.
    pub gaps: Vec<dr_core::wal::Gap>,
    /// What is wrong, one line each, naming the backups and segments (empty: continuous).
    pub problems: Vec<String>,
}

/// The WAL continuity of every archived cluster from every kept base backup (the
/// repository's complete physical backups).
pub async fn wal_continuity(repo: &Repository) -> Result<Vec<WalContinuity>> {
    use dr_core::wal::{base, WalArchive};
    let physical = repo
        .list_series(&dr_core::SeriesSelector::kind(base::PHYSICAL_KIND))
        .await?;
    let mut out = Vec::new();
    for cluster in WalArchive::clusters(repo).await? {
        let sysid = cluster.system_identifier;
        let index = WalArchive::open(repo, sysid).await?.index(true).await?;
        let size = index.segment_size();
        let bases: Vec<_> = physical
            .iter()
            .filter(|m| base::system_identifier(m).ok() == Some(sysid))
            .map(base::base_backup)
            .collect::<Result<_>>()?;
        let backups: Vec<_> = bases.iter().map(|b| index.reach(b)).collect();
        let gaps = index.gaps();
        let mut problems = Vec::new();
        for r in backups.iter().filter(|r| !r.consistent) {
            problems.push(match &r.missing {
                Some(g) => format!(
                    "base backup {} lacks part of its own WAL: {}..{} ({} segments) are not archived",
                    r.id, g.first, g.last, g.segments
                ),
                None => format!("base backup {} lacks part of its own WAL", r.id),
            });
        }
        for g in &gaps {
            let before: Vec<&str> = bases
                .iter()
                .filter(|b| b.stop_lsn.segment(size) < g.first_number)
                .map(|b| b.id.as_str())
                .collect();
            problems.push(format!(
                "timeline {} misses {} segment(s) {}..{} (the changes of {} .. {}){}",
                g.timeline,
                g.segments,
                g.first,
                g.last,
                g.lost_from.format("%Y-%m-%d %H:%M:%S UTC"),
                g.lost_to.format("%Y-%m-%d %H:%M:%S UTC"),
                if before.is_empty() {
                    String::new()
                } else {
                    format!(": recovery from {} stops before it", before.join(", "))
                }
            ));
        }
        out.push(WalContinuity {
            system_identifier: sysid.to_string(),
            backups,
            gaps,
            problems,
        });
    }
    Ok(out)
}
