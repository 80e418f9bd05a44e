//! Snapshot trees on disk instead of in memory: the new tree a backup writes, and the
//! parent tree it compares with, so a backup's memory does not grow with the number of
//! files.
//!
//! A spool is a temporary file (mode 0600, in the system's temporary directory, deleted
//! when dropped) holding a tree's JSON lines exactly as the payload stores them. It holds
//! file names in the clear, like the directory being backed up; chunk ids are MACs.

use std::cmp::Ordering;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use futures::StreamExt;

use dr_core::{Decryptor, Error, Manifest, Repository, Result};

use super::restore::is_snapshot;
use super::tree::{tree_read_options, EntryKind, Tree, TreeEntry, TreeHeader, TreeParser};

/// Bytes buffered per spool reader and writer.
const SPOOL_BUFFER: usize = 256 * 1024;

fn temp_file() -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix("dr-files-tree-")
        .tempfile()
        .map_err(|e| Error::io("cannot create a temporary file for a snapshot tree", e))
}

fn spool_error(e: std::io::Error) -> Error {
    Error::io("cannot write or read a spooled snapshot tree", e)
}

/// Writes a tree's JSON lines to a temporary file, an entry at a time.
pub(crate) struct TreeSpool {
    out: BufWriter<tempfile::NamedTempFile>,
    len: u64,
    files: u64,
    bytes: u64,
    line: Vec<u8>,
}

impl TreeSpool {
    /// A spool that starts with `header`.
    pub fn new(header: &TreeHeader) -> Result<TreeSpool> {
        let mut spool = TreeSpool {
            out: BufWriter::with_capacity(SPOOL_BUFFER, temp_file()?),
            len: 0,
            files: 0,
            bytes: 0,
            line: Vec::new(),
        };
        serde_json::to_writer(&mut spool.line, header).expect("serializes");
        spool.write_line()?;
        Ok(spool)
    }

    /// Append the next entry (entries come in tree order).
    pub fn push(&mut self, entry: &TreeEntry) -> Result<()> {
        if let EntryKind::File { size, .. } = &entry.kind {
            self.files += 1;
            self.bytes += size;
        }
        serde_json::to_writer(&mut self.line, entry).expect("serializes");
        self.write_line()
    }

    fn write_line(&mut self) -> Result<()> {
        self.line.push(b'\n');
        self.out.write_all(&self.line).map_err(spool_error)?;
        self.len += self.line.len() as u64;
        self.line.clear();
        Ok(())
    }

    /// The finished tree.
    pub fn finish(self) -> Result<SpooledTree> {
        let file = self
            .out
            .into_inner()
            .map_err(|e| spool_error(e.into_error()))?;
        // No fsync: the file is read back by this process and deleted. On ext4 an fsync also
        // commits the journal, which waits for every dirty page written before it (a
        // restore's whole tree, when its links' spool was finished).
        Ok(SpooledTree {
            file,
            len: self.len,
            files: self.files,
            bytes: self.bytes,
        })
    }
}

/// A tree's JSON lines in a temporary file.
pub(crate) struct SpooledTree {
    file: tempfile::NamedTempFile,
    /// Bytes of JSON lines.
    pub len: u64,
    /// Regular files, and their bytes.
    pub files: u64,
    pub bytes: u64,
}

impl SpooledTree {
    /// `tree` spooled.
    pub fn of(tree: &Tree) -> Result<SpooledTree> {
        let mut spool = TreeSpool::new(&tree.header)?;
        for e in &tree.entries {
            spool.push(e)?;
        }
        spool.finish()
    }

    /// Where the lines are (opened afresh by each reader).
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Its entries front to back, the header line passed over.
    pub fn entries(&self) -> Result<SpooledEntries> {
        let file = File::open(self.path()).map_err(spool_error)?;
        let mut entries = SpooledEntries {
            lines: BufReader::with_capacity(SPOOL_BUFFER, file),
            line: Vec::new(),
        };
        entries.read_line()?; // the header, written or checked when spooled
        Ok(entries)
    }
}

/// Reads a spooled tree's entries one at a time.
pub(crate) struct SpooledEntries {
    lines: BufReader<File>,
    line: Vec<u8>,
}

impl SpooledEntries {
    fn read_line(&mut self) -> Result<bool> {
        self.line.clear();
        let n = self
            .lines
            .read_until(b'\n', &mut self.line)
            .map_err(spool_error)?;
        Ok(n > 0)
    }

    /// The next entry, if any.
    pub fn next_entry(&mut self) -> Result<Option<TreeEntry>> {
        while self.read_line()? {
            let line = self.line.trim_ascii_end();
            if line.is_empty() {
                continue;
            }
            return serde_json::from_slice(line).map(Some).map_err(|e| {
                Error::corrupt("a spooled snapshot tree line is malformed").with_source(e)
            });
        }
        Ok(None)
    }
}

/// The previous snapshot of a series, spooled for a backup to compare with: the backup
/// reads it front to back beside its own walk (both are in walk order) instead of holding
/// it.
pub struct ParentTree {
    /// The snapshot's id.
    pub id: String,
    /// Its header (the dedup key its chunk ids belong to).
    pub header: TreeHeader,
    spooled: SpooledTree,
}

impl std::fmt::Debug for ParentTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentTree").field("id", &self.id).finish()
    }
}

impl ParentTree {
    /// Read snapshot `manifest`'s tree into a spool, checking every line as a restore does.
    pub async fn read(
        repo: &Repository,
        manifest: &Manifest,
        decryptor: &dyn Decryptor,
    ) -> Result<ParentTree> {
        if !is_snapshot(manifest) {
            return Err(Error::invalid(format!(
                "backup '{}' is not a deduplicated file snapshot",
                manifest.id
            )));
        }
        let in_backup = |e: Error| e.with_context("backup", &manifest.id);
        let mut payload =
            dr_core::open_payload(repo, manifest, decryptor, &tree_read_options()).await?;
        let mut parser = TreeParser::default();
        let mut out = BufWriter::with_capacity(SPOOL_BUFFER, temp_file()?);
        let mut len = 0u64;
        while let Some(bytes) = payload.next().await {
            let bytes = bytes?;
            parser
                .feed_where(&bytes, &mut |_| false)
                .map_err(in_backup)?;
            out.write_all(&bytes).map_err(spool_error)?;
            len += bytes.len() as u64;
        }
        parser
            .feed_where(b"\n", &mut |_| false)
            .map_err(in_backup)?;
        out.write_all(b"\n").map_err(spool_error)?;
        let header = parser.finish().map_err(in_backup)?.header;
        let file = out.into_inner().map_err(|e| spool_error(e.into_error()))?;
        Ok(ParentTree {
            id: manifest.id.clone(),
            header,
            spooled: SpooledTree {
                file,
                len: len + 1,
                files: 0,
                bytes: 0,
            },
        })
    }

    /// A tree in memory as a parent (tests, and callers that built one).
    pub fn of(id: impl Into<String>, tree: &Tree) -> Result<ParentTree> {
        Ok(ParentTree {
            id: id.into(),
            header: tree.header.clone(),
            spooled: SpooledTree::of(tree)?,
        })
    }

    /// A cursor over its entries, ordered by `order` (the walk's order).
    pub(crate) fn cursor(&self, order: fn(&str, &str) -> Ordering) -> Result<ParentCursor> {
        let mut cursor = ParentCursor {
            entries: self.spooled.entries()?,
            head: None,
            order,
        };
        cursor.advance()?;
        Ok(cursor)
    }
}

/// Walks a parent tree beside the backup's walk: a merge join on paths. Lookups come in
/// walk order; a parent entry before the path looked up is passed over for good. A parent
/// in another order (an older writer's) only costs files read again, never a wrong match:
/// an entry is taken only when its path is equal.
pub(crate) struct ParentCursor {
    entries: SpooledEntries,
    head: Option<TreeEntry>,
    order: fn(&str, &str) -> Ordering,
}

impl ParentCursor {
    fn advance(&mut self) -> Result<()> {
        self.head = self.entries.next_entry()?;
        Ok(())
    }

    /// The parent's entry at `path`, if it has one; entries before it are passed over.
    pub fn take(&mut self, path: &str) -> Result<Option<TreeEntry>> {
        loop {
            let Some(head) = &self.head else {
                return Ok(None);
            };
            match (self.order)(&head.path, path) {
                Ordering::Less => self.advance()?,
                Ordering::Equal => {
                    let entry = self.head.take();
                    self.advance()?;
                    return Ok(entry);
                }
                Ordering::Greater => return Ok(None),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::chunker::CHUNK_SIZES;
    use crate::dedup::tree::component_order;

    fn file(path: &str, size: u64) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            mode: 0o644,
            mtime_ns: 1,
            kind: EntryKind::File {
                size,
                blake3: [0; 32],
                chunks: vec![],
                etag: None,
            },
        }
    }

    #[test]
    fn the_cursor_finds_every_parent_file_in_walk_order_and_skips_the_rest() {
        // Walk order: a directory's contents right after it, before `a b` and `a.txt`.
        let walked = ["a", "a/b", "a/c", "a b", "a.txt", "b\nnew line", "é"];
        let tree = Tree {
            header: TreeHeader::new("00".repeat(8), CHUNK_SIZES),
            entries: walked
                .iter()
                .enumerate()
                .filter(|(n, _)| n % 2 == 0 || *n == 3)
                .map(|(n, p)| file(p, n as u64))
                .collect(),
        };
        let spooled = SpooledTree::of(&tree).unwrap();
        assert_eq!(spooled.files, 5);
        assert_eq!(
            std::fs::read(spooled.path()).unwrap(),
            tree.to_json_lines(),
            "a spool holds the payload's bytes"
        );
        let parent = ParentTree::of("p", &tree).unwrap();
        let mut cursor = parent.cursor(component_order).unwrap();
        let mut found = Vec::new();
        for path in [
            "a",
            "a/a",
            "a/b",
            "a/c",
            "a b",
            "a.txt",
            "b\nnew line",
            "c",
            "é",
        ] {
            if let Some(e) = cursor.take(path).unwrap() {
                assert_eq!(e.path, path);
                found.push(e.size());
            }
        }
        assert_eq!(found, vec![0, 2, 3, 4, 6]);
    }
}
