//! Reading a snapshot back: list it, restore (all or part of) it, print one file.
//!
//! A restore never trusts the snapshot: every path is checked ([`check_relative_path`]),
//! every directory on the way to a file must be a real directory inside the target (never a
//! symbolic link), symbolic links are created last, and each file is written to a temporary
//! name and renamed only after its size and BLAKE3 match the snapshot. The whole tree is
//! built in a staging directory beside the target and moved into place at the end.

use std::io::Write;

use futures::StreamExt;
use std::path::Path;
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;

use dr_core::{Decryptor, Error, ErrorKind, Manifest, Repository, Result};

use super::layout::LayoutCheck;
use super::pack::{Catalog, OpenPack};
use super::spool::{SpooledTree, TreeSpool};
use super::tree::{
    tree_read_options, EntryKind, Tree, TreeEntry, TreeHeader, TreeParser, TREE_FORMAT,
};
use super::write_tree::{BatchLimits, TreeWriter};

/// Whether a manifest is a deduplicated file snapshot.
pub fn is_snapshot(manifest: &Manifest) -> bool {
    manifest.source.format == TREE_FORMAT
}

/// Read and parse the tree of snapshot `manifest`.
pub async fn read_tree(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
) -> Result<Tree> {
    read_tree_where(repo, manifest, decryptor, |_| true).await
}

/// Read the tree of snapshot `manifest`, keeping only the entries `keep` takes (all are
/// checked); parsed as it arrives, so neither the serialized tree nor the entries left out
/// are ever held whole.
pub(crate) async fn read_tree_where(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    mut keep: impl FnMut(&TreeEntry) -> bool,
) -> Result<Tree> {
    if !is_snapshot(manifest) {
        return Err(not_a_snapshot(manifest));
    }
    let mut payload =
        dr_core::open_payload(repo, manifest, decryptor, &tree_read_options()).await?;
    let mut parser = TreeParser::default();
    let in_backup = |e: Error| e.with_context("backup", &manifest.id);
    while let Some(bytes) = payload.next().await {
        parser.feed_where(&bytes?, &mut keep).map_err(in_backup)?;
    }
    parser.feed_where(b"\n", &mut keep).map_err(in_backup)?;
    parser.finish().map_err(in_backup)
}

/// The entries at or under `prefix` (all entries for an empty prefix).
pub fn list<'t>(tree: &'t Tree, prefix: &str) -> Vec<&'t TreeEntry> {
    let prefix = prefix.trim_matches('/');
    tree.entries
        .iter()
        .filter(|e| {
            prefix.is_empty()
                || e.path == prefix
                || e.path
                    .strip_prefix(prefix)
                    .is_some_and(|r| r.starts_with('/'))
        })
        .collect()
}

/// Which entries a restore takes: `--include` globs (all when none) minus `--exclude` globs,
/// matched against the whole relative path (`*` also matches `/`).
#[derive(Debug, Clone, Default)]
pub struct Selection {
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
}

impl Selection {
    /// A selection from glob texts; a malformed glob is an error naming it.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Selection> {
        let build =
            |globs: &[String]| -> Result<Option<GlobSet>> {
                if globs.is_empty() {
                    return Ok(None);
                }
                let mut set = GlobSetBuilder::new();
                for g in globs {
                    set.add(Glob::new(g).map_err(|e| {
                        Error::invalid(format!("malformed glob {g:?}: {}", e.kind()))
                    })?);
                }
                set.build()
                    .map(Some)
                    .map_err(|e| Error::invalid(format!("malformed globs: {e}")))
            };
        Ok(Selection {
            include: build(include)?,
            exclude: build(exclude)?,
        })
    }

    /// Whether `path` is selected: it or one of its parent directories matches an include
    /// (so `--include photos` takes the folder), and neither does an exclude.
    pub fn selects(&self, path: &str) -> bool {
        let ancestors = || {
            std::iter::once(path).chain(
                path.char_indices()
                    .filter(|(_, c)| *c == '/')
                    .map(|(i, _)| &path[..i]),
            )
        };
        let included = self
            .include
            .as_ref()
            .is_none_or(|set| ancestors().any(|p| set.is_match(p)));
        let excluded = self
            .exclude
            .as_ref()
            .is_some_and(|set| ancestors().any(|p| set.is_match(p)));
        included && !excluded
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilesRestoreReport {
    /// The target directory.
    pub target: String,
    /// Regular files written (size and BLAKE3 checked).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Directories created.
    pub dirs: u64,
    /// Symbolic links created.
    pub symlinks: u64,
    /// Hard links created.
    pub hardlinks: u64,
    /// Entries a bucket cannot hold (symbolic links), left out of a restore into a bucket
    /// with a warning.
    pub skipped: u64,
    /// Whether a non-empty target was replaced (a bucket prefix: objects of the same keys
    /// overwritten, others left as they were).
    pub replaced: bool,
}

/// Restore the entries of snapshot `manifest` that `selection` takes into `target` (missing
/// or empty, or replaced when `replace`).
///
/// Before anything is written, every chunk the selected files need must be listed by a pack
/// index; otherwise the error names the affected files. A pack that turns out damaged fails
/// the restore, naming the files that need it, and leaves the target untouched.
///
/// Memory does not grow with the number of files: the selected entries are spooled to a
/// temporary file as the tree is read and checked, then written a batch of files at a time
/// (see `write_tree.rs`).
pub async fn restore_tree(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: Arc<dyn Decryptor>,
    target: &Path,
    selection: &Selection,
    replace: bool,
) -> Result<FilesRestoreReport> {
    restore_tree_in_batches(
        repo,
        manifest,
        decryptor,
        target,
        selection,
        replace,
        BatchLimits::default(),
    )
    .await
}

/// [`restore_tree`] with other batch sizes (tests make them tiny to cross many batch
/// boundaries).
#[doc(hidden)]
pub async fn restore_tree_in_batches(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: Arc<dyn Decryptor>,
    target: &Path,
    selection: &Selection,
    replace: bool,
    batch: BatchLimits,
) -> Result<FilesRestoreReport> {
    let catalog = Catalog::load_locations(repo).await?;
    let mut token = [0u8; 8];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut token)
        .map_err(|_| Error::new(ErrorKind::Other, "the system random generator failed"))?;
    let temp_prefix = format!(".dr-part-{}-", hex::encode(token));
    let selected = spool_selected(
        repo,
        manifest,
        &*decryptor,
        selection,
        &catalog,
        &temp_prefix,
    )
    .await?;

    let crate::restore::Staging {
        dir: staging,
        parent,
        occupied,
        shown,
    } = crate::restore::Staging::beside(target, replace)?;

    let writer = TreeWriter {
        repo: repo.clone(),
        decryptor,
        catalog,
        root: staging.path().to_path_buf(),
        temp_prefix,
        runtime: tokio::runtime::Handle::current(),
        batch,
    };
    let mut report = tokio::task::spawn_blocking(move || writer.write(&selected))
        .await
        .map_err(|e| Error::new(ErrorKind::Other, "the restore writer failed").with_source(e))?
        .map_err(|e| e.with_context("backup", &manifest.id))?;

    let staged = staging.keep();
    let target_owned = target.to_path_buf();
    tokio::task::spawn_blocking(move || {
        crate::restore::put_in_place(&staged, &target_owned, &parent, occupied)
    })
    .await
    .map_err(|e| {
        Error::new(ErrorKind::Other, "moving the restored directory failed").with_source(e)
    })?
    .map_err(|e| {
        Error::io("cannot move the restored directory into place", e)
            .with_context("directory", &shown)
    })?;
    report.target = shown;
    report.replaced = occupied;
    Ok(report)
}

/// The entries a restore takes, in a temporary file, checked as they streamed by.
pub(crate) struct SelectedEntries {
    /// The entries in tree order (after a header line that is not read back).
    pub tree: SpooledTree,
    /// Whether their layout was checked as they streamed (the tree was sorted); otherwise
    /// the writer checks it whole.
    pub layout_checked: bool,
}

/// Read the tree of snapshot `manifest`, spooling the entries `selection` takes, and check
/// them as they pass: paths safe, no name like the restore's temporary files (names that
/// start with `temp_prefix`), the layout (when the tree is sorted), every chunk in
/// `catalog` (otherwise the error names the affected files, and nothing has been written).
async fn spool_selected(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    selection: &Selection,
    catalog: &Catalog,
    temp_prefix: &str,
) -> Result<SelectedEntries> {
    if !is_snapshot(manifest) {
        return Err(not_a_snapshot(manifest));
    }
    let mut payload =
        dr_core::open_payload(repo, manifest, decryptor, &tree_read_options()).await?;
    let mut parser = TreeParser::default();
    let in_backup = |e: Error| e.with_context("backup", &manifest.id);
    let mut taker = Taker {
        selection,
        catalog,
        temp_prefix,
        layout: LayoutCheck::default(),
        // The header line is never read back: the snapshot's is checked by the parser.
        spool: TreeSpool::new(&TreeHeader::new(String::new(), super::chunker::CHUNK_SIZES))?,
        missing: Vec::new(),
        missing_count: 0,
        failure: None,
    };
    while let Some(bytes) = payload.next().await {
        parser
            .feed_where(&bytes?, &mut |e| taker.take(e))
            .map_err(in_backup)?;
        if let Some(e) = taker.failure.take() {
            return Err(in_backup(e));
        }
    }
    parser
        .feed_where(b"\n", &mut |e| taker.take(e))
        .map_err(in_backup)?;
    if let Some(e) = taker.failure.take() {
        return Err(in_backup(e));
    }
    parser.finish().map_err(in_backup)?;
    if taker.missing_count > 0 {
        let names: Vec<&str> = taker.missing.iter().map(String::as_str).collect();
        let more = taker.missing_count - names.len() as u64;
        let mut shown = name_some(&names);
        if more > 0 {
            shown.push_str(&format!(", and {more} more"));
        }
        return Err(Error::corrupt(format!(
            "{} file(s) of the snapshot need chunks that no pack holds (missing packs): {shown}",
            taker.missing_count
        ))
        .with_context("backup", &manifest.id));
    }
    Ok(SelectedEntries {
        layout_checked: taker.layout.sorted(),
        tree: taker.spool.finish()?,
    })
}

/// What [`spool_selected`] does with each entry of the tree.
struct Taker<'a> {
    selection: &'a Selection,
    catalog: &'a Catalog,
    temp_prefix: &'a str,
    layout: LayoutCheck,
    spool: TreeSpool,
    /// The first files whose chunks no pack holds, and how many there are.
    missing: Vec<String>,
    missing_count: u64,
    /// The first error: the parser's callback cannot return one.
    failure: Option<Error>,
}

impl Taker<'_> {
    /// Check and spool `e` if selected; never keeps it in memory (returns false).
    fn take(&mut self, e: &TreeEntry) -> bool {
        if self.failure.is_none() && self.selection.selects(&e.path) {
            if let Err(err) = self.check_and_spool(e) {
                self.failure = Some(err);
            }
        }
        false
    }

    fn check_and_spool(&mut self, e: &TreeEntry) -> Result<()> {
        self.layout.push(e)?;
        let name = e.path.rsplit('/').next().unwrap_or_default();
        if name.starts_with(self.temp_prefix) {
            return Err(Error::corrupt(format!(
                "the snapshot holds '{}', named like dr's temporary files: refusing it",
                e.path
            )));
        }
        if let EntryKind::File { chunks, .. } = &e.kind {
            if !self.catalog.holds_all(chunks)? {
                self.missing_count += 1;
                if self.missing.len() < 10 {
                    self.missing.push(e.path.clone());
                }
            }
        }
        self.spool.push(e)
    }
}

fn not_a_snapshot(manifest: &Manifest) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!(
            "backup '{}' is a {:?} backup, not a deduplicated file snapshot",
            manifest.id, manifest.source.format
        ),
    )
}

/// The entries of snapshot `manifest` that `selection` takes, and the catalog of packs,
/// after checking that every chunk they need is listed by a pack index (otherwise the error
/// names the affected files, and nothing has been written).
pub(crate) async fn selected_entries(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    selection: &Selection,
) -> Result<(Vec<TreeEntry>, Catalog)> {
    let entries = read_tree_where(repo, manifest, decryptor, |e| selection.selects(&e.path))
        .await?
        .entries;
    let catalog = Catalog::load_locations(repo).await?;
    let mut missing: Vec<&str> = Vec::new();
    for e in &entries {
        if let EntryKind::File { chunks, .. } = &e.kind {
            if !catalog.holds_all(chunks)? {
                missing.push(e.path.as_str());
            }
        }
    }
    if !missing.is_empty() {
        return Err(Error::corrupt(format!(
            "{} file(s) of the snapshot need chunks that no pack holds (missing packs): {}",
            missing.len(),
            name_some(&missing)
        ))
        .with_context("backup", &manifest.id));
    }
    Ok((entries, catalog))
}

/// Write the content of file `path` of snapshot `manifest` to `out`; its size and BLAKE3
/// are checked at the end (the error then says the output is not to be trusted).
pub async fn cat_file(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    path: &str,
    out: &mut (dyn Write + Send),
) -> Result<u64> {
    let path = path.trim_matches('/');
    // Only the entry asked for is kept (and, for a hard link, its file): memory does not
    // grow with the snapshot.
    let mut entry = read_tree_where(repo, manifest, decryptor, |e| e.path == path)
        .await?
        .entries
        .into_iter()
        .next()
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no file '{path}' in backup '{}'", manifest.id),
            )
        })?;
    if let EntryKind::Hardlink { target } = &entry.kind {
        let target = target.clone();
        entry = read_tree_where(repo, manifest, decryptor, |e| e.path == target)
            .await?
            .entries
            .into_iter()
            .next()
            .ok_or_else(|| {
                Error::corrupt(format!("hard link '{path}' points to a missing file"))
            })?;
    }
    let EntryKind::File {
        size,
        blake3: want,
        chunks,
        ..
    } = &entry.kind
    else {
        return Err(Error::invalid(format!("'{path}' is not a regular file")));
    };
    let catalog = Catalog::load_holding(repo, chunks).await?;
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    let mut open: Option<(String, OpenPack)> = None;
    for id in chunks {
        let at = catalog.locate(id)?.ok_or_else(|| {
            Error::corrupt(format!(
                "file '{path}' needs chunk {}, which no pack holds",
                hex::encode(id)
            ))
        })?;
        let index = &catalog.packs[at.pack as usize];
        if open.as_ref().is_none_or(|(name, _)| *name != index.pack) {
            let pack = async {
                let stored = OpenPack::download(repo, index).await?;
                OpenPack::from_stored(index, &stored, decryptor, catalog.plain_len(at.pack))
            }
            .await
            .map_err(|e| e.with_context("file", path))?;
            open = Some((index.pack.clone(), pack));
        }
        let data = open
            .as_ref()
            .expect("just opened")
            .1
            .chunk(&at.blob(id), None)?;
        hasher.update(&data);
        written += data.len() as u64;
        out.write_all(&data)
            .map_err(|e| Error::io("cannot write the file out", e))?;
    }
    if written != *size || hasher.finalize().as_bytes() != want {
        return Err(Error::corrupt(format!(
            "file '{path}' does not match its size and BLAKE3 in the snapshot: do not trust the output"
        )));
    }
    Ok(written)
}

/// Up to ten names, then how many more.
pub(crate) fn name_some(names: &[&str]) -> String {
    let mut shown: Vec<String> = names.iter().take(10).map(|n| format!("{n:?}")).collect();
    if names.len() > 10 {
        shown.push(format!("and {} more", names.len() - 10));
    }
    shown.join(", ")
}

/// Pack `n` could not be read (`e`): the error a restore reports, naming the files of
/// `entries` that need it.
pub(crate) fn pack_unreadable(
    e: &Error,
    entries: &[TreeEntry],
    catalog: &Catalog,
    n: u32,
) -> Error {
    let affected = files_in_pack(entries, catalog, n);
    let names: Vec<&str> = affected.iter().map(String::as_str).collect();
    Error::new(
        e.kind(),
        format!(
            "pack '{}' cannot be read ({}); files affected: {}",
            catalog.packs[n as usize].pack,
            e.message(),
            name_some(&names)
        ),
    )
}

/// The files among `entries` with a chunk in pack `n`.
pub(crate) fn files_in_pack(entries: &[TreeEntry], catalog: &Catalog, n: u32) -> Vec<String> {
    let mut names: Vec<String> = entries
        .iter()
        .filter(|e| match &e.kind {
            EntryKind::File { chunks, .. } => chunks
                .iter()
                .any(|id| matches!(catalog.locate(id), Ok(Some(at)) if at.pack == n)),
            _ => false,
        })
        .map(|e| e.path.clone())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Permission bits to restore: setuid and setgid are dropped (a restore must not hand out
/// privileges a snapshot asks for).
pub(crate) fn safe_mode(mode: u32) -> u32 {
    mode & 0o1777
}

/// Set a path's modification time (best effort: a time is not worth failing a restore).
pub(crate) fn set_mtime(path: &Path, mtime_ns: i64) {
    let time = if mtime_ns >= 0 {
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(mtime_ns as u64)
    } else {
        std::time::UNIX_EPOCH - std::time::Duration::from_nanos(mtime_ns.unsigned_abs())
    };
    let result = std::fs::File::open(path).and_then(|f| f.set_modified(time));
    if let Err(e) = result {
        tracing::debug!(path = %path.display(), error = %e, "cannot set a modification time");
    }
}
