//! Reading a snapshot back: list it, restore (all or part of) it, print one file.
//!
//! A restore never trusts the snapshot: every path is checked ([`check_relative_path`]),
//! every directory on the way to a file must be a real directory inside the target (never a
//! symbolic link), symbolic links are created last, and each file is written to a temporary
//! name and renamed only after its size and BLAKE3 match the snapshot. The whole tree is
//! built in a staging directory beside the target and moved into place at the end.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Serialize;

use dr_core::{Decryptor, Error, ErrorKind, Manifest, ReadOptions, Repository, Result};

use super::pack::{parse_chunk_id, Catalog, OpenPack};
use super::reader::PackReader;
use super::tree::{check_relative_path, EntryKind, Tree, TreeEntry, TREE_FORMAT};

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
    if !is_snapshot(manifest) {
        return Err(Error::new(
            ErrorKind::Unsupported,
            format!(
                "backup '{}' is a {:?} backup, not a deduplicated file snapshot",
                manifest.id, manifest.source.format
            ),
        ));
    }
    let payload = dr_core::open_payload(repo, manifest, decryptor, &ReadOptions::default()).await?;
    let bytes = dr_core::stage::collect(payload).await?;
    Tree::from_json_lines(&bytes).map_err(|e| e.with_context("backup", &manifest.id))
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
pub async fn restore_tree(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: Arc<dyn Decryptor>,
    target: &Path,
    selection: &Selection,
    replace: bool,
) -> Result<FilesRestoreReport> {
    let (entries, catalog) = selected_entries(repo, manifest, &*decryptor, selection).await?;

    let crate::restore::Staging {
        dir: staging,
        parent,
        occupied,
        shown,
    } = crate::restore::Staging::beside(target, replace)?;

    let writer = TreeWriter {
        reader: PackReader::new(repo.clone(), decryptor, catalog),
        root: staging.path().to_path_buf(),
        runtime: tokio::runtime::Handle::current(),
        report: FilesRestoreReport::default(),
    };
    let mut report = tokio::task::spawn_blocking(move || writer.write(entries))
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

/// The entries of snapshot `manifest` that `selection` takes, and the catalog of packs,
/// after checking that every chunk they need is listed by a pack index (otherwise the error
/// names the affected files, and nothing has been written).
pub(crate) async fn selected_entries(
    repo: &Repository,
    manifest: &Manifest,
    decryptor: &dyn Decryptor,
    selection: &Selection,
) -> Result<(Vec<TreeEntry>, Catalog)> {
    let tree = read_tree(repo, manifest, decryptor).await?;
    let catalog = Catalog::load(repo).await?;
    let entries: Vec<TreeEntry> = tree
        .entries
        .into_iter()
        .filter(|e| selection.selects(&e.path))
        .collect();
    let missing: Vec<&str> = entries
        .iter()
        .filter(|e| match &e.kind {
            EntryKind::File { chunks, .. } => chunks
                .iter()
                .any(|c| parse_chunk_id(c).is_none_or(|id| catalog.find(&id).is_none())),
            _ => false,
        })
        .map(|e| e.path.as_str())
        .collect();
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
    let tree = read_tree(repo, manifest, decryptor).await?;
    let path = path.trim_matches('/');
    let mut entry = tree
        .entries
        .iter()
        .find(|e| e.path == path)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::NotFound,
                format!("no file '{path}' in backup '{}'", manifest.id),
            )
        })?;
    if let EntryKind::Hardlink { target } = &entry.kind {
        entry = tree
            .entries
            .iter()
            .find(|e| &e.path == target)
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
    let catalog = Catalog::load(repo).await?;
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    let mut open: Option<(String, OpenPack)> = None;
    for c in chunks {
        let id = parse_chunk_id(c).expect("checked when the tree was parsed");
        let (index, blob) = catalog.find(&id).ok_or_else(|| {
            Error::corrupt(format!(
                "file '{path}' needs chunk {c}, which no pack holds"
            ))
        })?;
        if open.as_ref().is_none_or(|(name, _)| *name != index.pack) {
            let pack = OpenPack::read(repo, index, decryptor)
                .await
                .map_err(|e| e.with_context("file", path))?;
            open = Some((index.pack.clone(), pack));
        }
        let data = open.as_ref().expect("just opened").1.chunk(blob, None)?;
        hasher.update(&data);
        written += data.len() as u64;
        out.write_all(&data)
            .map_err(|e| Error::io("cannot write the file out", e))?;
    }
    if written != *size || hasher.finalize().to_hex().as_str() != want {
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

/// The blocking half of a restore: writes the entries under `root` (the staging directory).
struct TreeWriter {
    reader: PackReader,
    root: PathBuf,
    runtime: tokio::runtime::Handle,
    report: FilesRestoreReport,
}

impl TreeWriter {
    fn write(mut self, entries: Vec<TreeEntry>) -> Result<FilesRestoreReport> {
        let mut dirs = Vec::new();
        let mut files: HashSet<&str> = HashSet::new();
        // Directories and files first, links last: nothing is ever written through a link.
        for e in &entries {
            check_relative_path(&e.path)?;
            match &e.kind {
                EntryKind::Dir => {
                    let path = self.dir(&e.path)?;
                    dirs.push((path, e));
                }
                EntryKind::File { .. } => {
                    self.file(e, &entries)?;
                    files.insert(&e.path);
                }
                _ => {}
            }
        }
        for e in &entries {
            match &e.kind {
                EntryKind::Hardlink { target } => {
                    check_relative_path(target)?;
                    if !files.contains(target.as_str()) {
                        tracing::warn!(path = %e.path, target = %target, "not restoring a hard link whose file is not restored");
                        continue;
                    }
                    let at = self.fresh_path(&e.path)?;
                    std::fs::hard_link(self.root.join(target), &at).map_err(|err| {
                        Error::io("cannot create a hard link", err).with_context("path", &e.path)
                    })?;
                    self.report.hardlinks += 1;
                }
                EntryKind::Symlink { target } => {
                    let at = self.fresh_path(&e.path)?;
                    std::os::unix::fs::symlink(target, &at).map_err(|err| {
                        Error::io("cannot create a symbolic link", err)
                            .with_context("path", &e.path)
                    })?;
                    self.report.symlinks += 1;
                }
                _ => {}
            }
        }
        // Directory modes and times last, deepest first (a read-only directory would stop
        // the files going into it; writing into one changes its time).
        for (path, e) in dirs.iter().rev() {
            set_mtime(path, e.mtime_ns);
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(safe_mode(e.mode)))
                .map_err(|err| {
                    Error::io("cannot set a directory's mode", err).with_context("path", &e.path)
                })?;
        }
        Ok(self.report)
    }

    /// The directory `relative` under the root, created if missing; every component must be
    /// a real directory (a symbolic link there is refused: it could lead outside).
    fn dir(&mut self, relative: &str) -> Result<PathBuf> {
        let mut at = self.root.clone();
        for part in relative.split('/') {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_dir() => {}
                Ok(_) => {
                    return Err(Error::corrupt(format!(
                        "the snapshot puts '{relative}' beneath something that is not a directory: refusing it"
                    )))
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    std::fs::create_dir(&at).map_err(|err| {
                        Error::io("cannot create a directory", err).with_context("path", relative)
                    })?;
                    self.report.dirs += 1;
                }
                Err(e) => return Err(Error::io("cannot read a directory", e).with_context("path", relative)),
            }
        }
        Ok(at)
    }

    /// Where to create entry `relative`: its parent directory made safe, and nothing there yet.
    fn fresh_path(&mut self, relative: &str) -> Result<PathBuf> {
        let at = match relative.rsplit_once('/') {
            Some((parent, name)) => self.dir(parent)?.join(name),
            None => self.root.join(relative),
        };
        if std::fs::symlink_metadata(&at).is_ok() {
            return Err(Error::corrupt(format!(
                "the snapshot lists '{relative}' twice: refusing it"
            )));
        }
        Ok(at)
    }

    fn file(&mut self, e: &TreeEntry, all: &[TreeEntry]) -> Result<()> {
        let EntryKind::File {
            size,
            blake3: want,
            chunks,
            ..
        } = &e.kind
        else {
            unreachable!("called for files")
        };
        let at = self.fresh_path(&e.path)?;
        let temp = at.with_file_name(format!(".dr-part-{}", self.report.files));
        let result = self.write_checked(&temp, chunks, *size, want, &e.path, all);
        if let Err(err) = result {
            let _ = std::fs::remove_file(&temp);
            return Err(err.with_context("file", &e.path));
        }
        set_mtime(&temp, e.mtime_ns);
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(safe_mode(e.mode)))
            .map_err(|err| {
                Error::io("cannot set a file's mode", err).with_context("path", &e.path)
            })?;
        std::fs::rename(&temp, &at).map_err(|err| {
            Error::io("cannot put a restored file in place", err).with_context("path", &e.path)
        })?;
        self.report.files += 1;
        self.report.bytes += size;
        Ok(())
    }

    fn write_checked(
        &mut self,
        temp: &Path,
        chunks: &[String],
        size: u64,
        want: &str,
        path: &str,
        all: &[TreeEntry],
    ) -> Result<()> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temp)
            .map_err(|e| Error::io("cannot create a file", e))?;
        let mut out = io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = blake3::Hasher::new();
        let mut written = 0u64;
        for c in chunks {
            let id = parse_chunk_id(c).expect("checked when the tree was parsed");
            let data = self.runtime.block_on(self.reader.chunk(&id, all))?;
            hasher.update(&data);
            written += data.len() as u64;
            out.write_all(&data)
                .map_err(|e| Error::io("cannot write a file", e))?;
        }
        // No fsync per file (neither tar nor restic does one; on 20,000 files it would
        // dominate): the tree becomes visible only when the staging directory is renamed.
        out.into_inner()
            .map_err(|e| Error::io("cannot write a file", e.into_error()))?;
        if written != size || hasher.finalize().to_hex().as_str() != want {
            return Err(Error::corrupt(format!(
                "file '{path}' restores to {written} bytes that do not match the snapshot's size and BLAKE3"
            )));
        }
        Ok(())
    }
}

/// The files among `entries` with a chunk in pack `n`.
pub(crate) fn files_in_pack(entries: &[TreeEntry], catalog: &Catalog, n: u32) -> Vec<String> {
    let mut map: HashMap<&str, ()> = HashMap::new();
    for e in entries {
        if let EntryKind::File { chunks, .. } = &e.kind {
            let hit = chunks.iter().any(|c| {
                parse_chunk_id(c)
                    .and_then(|id| catalog.chunks.get(&id))
                    .is_some_and(|at| at.pack == n)
            });
            if hit {
                map.insert(&e.path, ());
            }
        }
    }
    let mut names: Vec<String> = map.into_keys().map(str::to_owned).collect();
    names.sort();
    names
}

/// Permission bits to restore: setuid and setgid are dropped (a restore must not hand out
/// privileges a snapshot asks for).
fn safe_mode(mode: u32) -> u32 {
    mode & 0o1777
}

/// Set a path's modification time (best effort: a time is not worth failing a restore).
fn set_mtime(path: &Path, mtime_ns: i64) {
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
