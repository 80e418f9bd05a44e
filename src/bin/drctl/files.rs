//! Deduplicated file snapshots: backup --dedup (of a directory or a bucket prefix), restore
//! of a snapshot (into a directory or a bucket prefix), ls, cat --file, dedup-key. Parsing
//! and printing only; the work is in `dr::file_backups` and `dr::files::dedup`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use dr::core::{BackupOptions, Decryptor, Encryptor, Manifest, Result, SeriesSelector};
use dr::files::dedup::{self, EntryKind, Selection};
use serde_json::json;

use crate::args::RepoArgs;
use crate::output::manifest_summary;
use crate::output::{human_bytes, print_json, Output};

/// Options of `backup --dir D --dedup`.
pub struct BackupArgs {
    pub labels: Vec<String>,
    pub compression: Option<String>,
    pub storage_class: Option<String>,
    pub dedup_key_file: Option<PathBuf>,
}

/// The host's decryptor, if it holds a repository key (then unchanged files are skipped).
fn decryptor(args: &RepoArgs, repo: &dr::core::Repository) -> Option<Arc<dyn Decryptor>> {
    crate::key::unlock(args, repo)
        .ok()
        .map(|k| Arc::new(dr::keys::decryptor(k)) as Arc<dyn Decryptor>)
}

pub async fn backup(out: Output, args: &RepoArgs, dir: &Path, opts: BackupArgs) -> Result<()> {
    let repo = args.open_for_writing().await?;
    repo.check_can_sign_manifests()?;
    let encryptor: Arc<dyn Encryptor> = Arc::new(crate::key::backup_encryptor(args, &repo)?);
    let backup_opts = BackupOptions {
        codec: opts.compression.map(|c| c.parse()).transpose()?,
        labels: opts.labels,
        storage_class: opts.storage_class,
        ..Default::default()
    };
    let source = dr::file_backups::tree_source(dir)?;
    let (m, report) = dr::file_backups::backup_source(
        &repo,
        &source,
        encryptor,
        decryptor(args, &repo),
        opts.dedup_key_file.as_deref(),
        &backup_opts,
    )
    .await?;
    if out.is_json() {
        let mut json = manifest_summary(&m);
        json["files"] = serde_json::to_value(&report).expect("serializes");
        print_json(&json);
    } else {
        println!(
            "snapshot {} complete: {} files ({} read, {} unchanged), {} in files, {} new, {} stored, {:.1} s",
            m.id,
            report.counts.files,
            report.counts.files_read,
            report.counts.files_unchanged,
            human_bytes(report.counts.bytes_total),
            human_bytes(report.counts.bytes_new),
            human_bytes(report.bytes_stored),
            m.duration_ms() as f64 / 1000.0
        );
    }
    Ok(())
}

pub async fn restore(
    out: Output,
    args: &RepoArgs,
    manifest: &Manifest,
    dir: &Path,
    selection: &Selection,
    replace: bool,
) -> Result<()> {
    let repo = args.open().await?;
    let decryptor: Arc<dyn Decryptor> =
        Arc::new(dr::keys::decryptor(crate::key::unlock(args, &repo)?));
    let started = Instant::now();
    let report = dedup::restore_tree(&repo, manifest, decryptor, dir, selection, replace).await?;
    let ms = started.elapsed().as_millis() as u64;
    if out.is_json() {
        print_restore_json(&report, &manifest.id, ms);
    } else {
        println!(
            "restored snapshot {} into {}: {} files ({}) checked against their BLAKE3, {} links, {:.1} s",
            manifest.id,
            report.target,
            report.files,
            human_bytes(report.bytes),
            report.symlinks + report.hardlinks,
            ms as f64 / 1000.0
        );
    }
    Ok(())
}

/// Where `restore --to` writes.
pub struct BucketTarget<'a> {
    pub url: &'a str,
    pub storage_class: Option<String>,
    pub replace: bool,
}

pub async fn restore_to_bucket(
    out: Output,
    args: &RepoArgs,
    manifest: &Manifest,
    selection: &Selection,
    to: BucketTarget<'_>,
) -> Result<()> {
    let repo = args.open().await?;
    let decryptor: Arc<dyn Decryptor> =
        Arc::new(dr::keys::decryptor(crate::key::unlock(args, &repo)?));
    let target = dr::file_backups::bucket_target(to.url)?;
    let started = Instant::now();
    let report = dedup::restore_to_bucket(
        &repo,
        manifest,
        decryptor,
        &target,
        selection,
        to.replace,
        to.storage_class,
    )
    .await?;
    let ms = started.elapsed().as_millis() as u64;
    if out.is_json() {
        print_restore_json(&report, &manifest.id, ms);
    } else {
        println!(
            "restored snapshot {} into {}: {} objects ({}) checked against their BLAKE3, {} skipped, {:.1} s",
            manifest.id,
            report.target,
            report.files + report.hardlinks,
            human_bytes(report.bytes),
            report.skipped,
            ms as f64 / 1000.0
        );
    }
    Ok(())
}

pub async fn ls(
    out: Output,
    args: &RepoArgs,
    id: &str,
    series: &SeriesSelector,
    path: Option<&str>,
) -> Result<()> {
    let repo = args.open().await?;
    let manifest = repo.resolve(id, series).await?;
    let decryptor = dr::keys::decryptor(crate::key::unlock(args, &repo)?);
    let tree = dedup::read_tree(&repo, &manifest, &decryptor).await?;
    let entries = dedup::list(&tree, path.unwrap_or(""));
    if out.is_json() {
        print_json(&entries);
        return Ok(());
    }
    for e in entries {
        let (kind, extra) = match &e.kind {
            EntryKind::Dir => ('d', String::new()),
            EntryKind::File { .. } => ('-', String::new()),
            EntryKind::Symlink { target } => ('l', format!(" -> {target}")),
            EntryKind::Hardlink { target } => ('h', format!(" => {target}")),
        };
        let time = chrono::DateTime::from_timestamp_nanos(e.mtime_ns);
        println!(
            "{kind}{:04o} {:>12} {} {:?}{extra}",
            e.mode,
            e.size(),
            time.format("%Y-%m-%d %H:%M:%S"),
            e.path
        );
    }
    Ok(())
}

pub async fn cat(args: &RepoArgs, id: &str, series: &SeriesSelector, file: &str) -> Result<()> {
    let repo = args.open().await?;
    let manifest = repo.resolve(id, series).await?;
    let decryptor = dr::keys::decryptor(crate::key::unlock(args, &repo)?);
    let mut stdout = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    dedup::cat_file(&repo, &manifest, &decryptor, file, &mut stdout).await?;
    use std::io::Write;
    stdout
        .flush()
        .map_err(|e| dr::core::Error::io("writing to stdout", e))
}

pub async fn export_key(out: Output, args: &RepoArgs, output: &Path) -> Result<()> {
    let repo = args.open_for_writing().await?;
    let identity = crate::key::unlock(args, &repo)?;
    let encryptor = dr::keys::encryptor(&repo, identity.clone())?;
    let decryptor = dr::keys::decryptor(identity);
    let key_id = dr::file_backups::export_dedup_key(&repo, &encryptor, &decryptor, output).await?;
    if out.is_json() {
        print_json(&json!({ "key_id": key_id, "path": output }));
    } else {
        println!(
            "wrote dedup key {key_id} to {}: give it to write-only hosts (--dedup-key-file); it decrypts nothing",
            output.display()
        );
    }
    Ok(())
}

/// A snapshot restore's report as JSON, with the snapshot's id and the wall time.
fn print_restore_json(report: &impl serde::Serialize, id: &str, ms: u64) {
    let mut json = serde_json::to_value(report).expect("serializes");
    json["id"] = json!(id);
    json["duration_ms"] = json!(ms);
    print_json(&json);
}
