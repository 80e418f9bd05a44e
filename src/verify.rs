//! Verification that reaches past checksums: for PostgreSQL payloads the row counts, for
//! directory payloads the files and bytes, are derived again from the decrypted archive and
//! compared with the manifest.

use futures::StreamExt;
use serde::Serialize;

use dr_core::records::{self, CheckKind, CheckRecord};
use dr_core::{open_payload, Decryptor, Error, Manifest, ReadOptions, Repository, Result};

/// What `verify` checked for one backup.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    /// The backup.
    pub id: String,
    /// Stored bytes read and checked against SHA-256 and authentication tags.
    pub stored_bytes: u64,
    /// Payload bytes after decryption and decompression.
    pub raw_bytes: u64,
    /// Tables whose row counts were re-derived from the payload and matched the manifest.
    pub tables_checked: usize,
    /// Rows counted in those tables.
    pub rows_checked: u64,
}

/// Read every stored byte of a backup, check checksums, authentication tags and
/// decompression, and for `pg_dump-custom` payloads re-count every table's rows. The
/// outcome, passed or failed, is stored as a check record ([`dr_core::records`]).
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
    let mut payload = open_payload(repo, manifest, decryptor, opts).await?;
    let mut recount = Recount::for_format(&manifest.source.format);
    let mut raw_bytes = 0u64;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        raw_bytes += chunk.len() as u64;
        recount
            .feed(&chunk)
            .map_err(|e| e.with_context("backup", &manifest.id))?;
    }
    let (mut tables_checked, mut rows_checked) = (0, 0);
    if let Some(found) = recount
        .finish()
        .map_err(|e| e.with_context("backup", &manifest.id))?
    {
        if found.tables.len() != manifest.stats.tables.len() {
            return Err(Error::corrupt(format!(
                "payload holds {} tables, the manifest lists {}",
                found.tables.len(),
                manifest.stats.tables.len()
            ))
            .with_context("backup", &manifest.id));
        }
        let files = manifest.source.kind == crate::files::KIND;
        for (got, want) in found.tables.iter().zip(&manifest.stats.tables) {
            if files && (got.rows, got.bytes) != (want.rows, want.bytes) {
                return Err(Error::corrupt(format!(
                    "the archive holds {} files ({} bytes), the manifest says {} files ({} bytes)",
                    got.rows, got.bytes, want.rows, want.bytes
                ))
                .with_context("backup", &manifest.id));
            }
            if got.schema != want.schema || got.name != want.name || got.rows != want.rows {
                return Err(Error::corrupt(format!(
                    "table {}.{} has {} rows in the payload, the manifest says {}.{} has {}",
                    got.schema, got.name, got.rows, want.schema, want.name, want.rows
                ))
                .with_context("backup", &manifest.id));
            }
            tables_checked += 1;
            rows_checked += got.rows;
        }
    }
    Ok(VerifyReport {
        id: manifest.id.clone(),
        stored_bytes: manifest.stored_bytes,
        raw_bytes,
        tables_checked,
        rows_checked,
    })
}

/// What can be re-counted in a payload: a PostgreSQL archive's rows per table, a directory
/// archive's files and bytes.
enum Recount {
    Pg(Box<dr_db::archive::ArchiveInspector>),
    Tar(crate::files::TarCounter),
    Nothing,
}

impl Recount {
    fn for_format(format: &str) -> Recount {
        match format {
            "pg_dump-custom" => Recount::Pg(Box::new(dr_db::archive::ArchiveInspector::new())),
            crate::files::FORMAT => Recount::Tar(crate::files::TarCounter::new()),
            _ => Recount::Nothing,
        }
    }

    fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        match self {
            Recount::Pg(i) => i.feed(chunk),
            Recount::Tar(c) => c.feed(chunk),
            Recount::Nothing => Ok(()),
        }
    }

    fn finish(self) -> Result<Option<dr_core::DumpStats>> {
        match self {
            Recount::Pg(i) => i.finish().map(Some),
            Recount::Tar(c) => c.finish().map(Some),
            Recount::Nothing => Ok(None),
        }
    }
}
