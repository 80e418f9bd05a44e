//! Logical PostgreSQL backups in either stored form: one stream (`pg_dump -Fc`, the
//! default) or pieces (`pg_dump -Fd -j N`, one object per file, taken with `jobs > 1`), and
//! their restore, which follows the form the backup has.
//!
//! | backup | restore with `jobs = 1` | restore with `jobs = N > 1` |
//! |---|---|---|
//! | one stream | `pg_restore` in one transaction (or into a scratch database) | the same, with a warning: one stream cannot be read out of order |
//! | pieces | `pg_restore -Fd` in one transaction | `pg_restore -Fd -j N` into a scratch (or new) database |

use std::path::Path;

use dr_core::pieces::{backup_pieces, restore_pieces, write_pieces, RepoPieces};
use dr_core::{
    BackupOptions, Decryptor, Encryptor, Error, ErrorKind, Manifest, ReadOptions, Repository,
    RestoreReport, Result,
};
use dr_db::{PgDumper, PgRestorer};

/// Back up the database `dumper` points at: as one stream with `jobs <= 1`, else as pieces
/// dumped over `jobs` connections sharing one snapshot (`dumper` is given the jobs) and
/// uploaded `jobs` at a time.
pub async fn backup(
    repo: &Repository,
    dumper: &PgDumper,
    encryptor: &dyn Encryptor,
    opts: &BackupOptions,
    jobs: usize,
) -> Result<Manifest> {
    if jobs <= 1 {
        return dr_core::backup(repo, dumper, encryptor, opts).await;
    }
    let dumper = dumper.clone().jobs(jobs);
    backup_pieces(repo, &dumper, encryptor, opts, jobs).await
}

/// Restore a logical backup through `restorer` (whose [`PgRestorer::jobs`] says how many
/// connections), in the form the backup was stored in. Returns the report and, for a
/// one-stream backup restored with `jobs > 1`, the notice that it ran over one connection.
pub async fn restore(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    restorer: &PgRestorer,
    jobs: usize,
    opts: &ReadOptions,
) -> Result<(RestoreReport, Option<String>)> {
    if manifest.is_pieces() {
        let restorer = restorer.clone().jobs(jobs);
        let report = restore_pieces(repo, manifest, decryptor, &restorer, opts).await?;
        return Ok((report, None));
    }
    let notice = (jobs > 1).then(|| {
        format!(
            "backup {} is one stream (taken without --jobs): restoring it over one connection; \
             back up with --jobs N for a parallel restore",
            manifest.id
        )
    });
    if let Some(n) = &notice {
        tracing::warn!("{n}");
    }
    let report = dr_core::restore(repo, manifest, decryptor, restorer, opts).await?;
    Ok((report, notice))
}

/// Write a logical backup to `out` as one `pg_dump` custom-format archive, whichever form
/// it is stored in: a one-stream backup's payload as it is, a backup stored as pieces (a
/// directory archive) turned into the custom format on the way. `pg_restore` reads either
/// from a pipe. Returns the bytes written.
pub async fn write_one_stream(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    opts: &ReadOptions,
) -> Result<u64> {
    if manifest.is_pieces() {
        let pieces = RepoPieces::open(repo, manifest, decryptor, opts).await?;
        return dr_db::custom_archive::write_custom_archive(&pieces, out).await;
    }
    let mut payload = dr_core::open_payload(repo, manifest, decryptor, opts).await?;
    let mut written = 0u64;
    while let Some(chunk) = futures::StreamExt::next(&mut payload).await {
        let chunk = chunk?;
        if let Err(e) = tokio::io::AsyncWriteExt::write_all(out, &chunk).await {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Err(Error::new(
                    ErrorKind::Cancelled,
                    "the reader stopped before the payload ended",
                ));
            }
            return Err(Error::io("writing the payload", e));
        }
        written += chunk.len() as u64;
    }
    tokio::io::AsyncWriteExt::flush(out)
        .await
        .map_err(|e| Error::io("writing the payload", e))?;
    Ok(written)
}

/// Write a backup stored as pieces into folder `dir` (missing or empty), one file per
/// piece: a directory archive that `pg_restore -Fd DIR` reads. Returns the bytes written.
pub async fn write_dir(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    dir: &Path,
    opts: &ReadOptions,
) -> Result<u64> {
    if !manifest.is_pieces() {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!(
                "backup {} is one stream, not a directory archive: write it with `drctl cat {} > FILE`",
                manifest.id, manifest.id
            ),
        ));
    }
    let pieces = RepoPieces::open(repo, manifest, decryptor, opts).await?;
    write_pieces(&pieces, dir).await
}
