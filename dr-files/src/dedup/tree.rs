//! The snapshot tree: what a deduplicated file backup's payload holds.
//!
//! The payload (compressed and encrypted like any backup payload, so only key holders can
//! read names) is JSON lines: a header line, then one line per entry in path order. Paths
//! are relative, `/`-separated UTF-8; every reader re-checks them with
//! [`check_relative_path`], because a snapshot is data, not a plan to follow.

use serde::{Deserialize, Serialize};

use dr_core::{Error, ErrorKind, Result};

use super::chunker::ChunkSizes;
use super::key::ChunkId;

/// `SourceInfo::format` of a deduplicated file backup's payload.
pub const TREE_FORMAT: &str = "dr-files-v1";

/// The first line of a tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeHeader {
    /// `dr-files-v1`.
    pub format: String,
    /// The id of the dedup key its chunk ids were computed with.
    pub dedup_key: String,
    /// Chunk sizes: min, average, max.
    pub chunking: [usize; 3],
}

impl TreeHeader {
    /// The header of a tree chunked with `sizes` under dedup key `key_id`.
    pub fn new(key_id: String, sizes: ChunkSizes) -> TreeHeader {
        TreeHeader {
            format: TREE_FORMAT.into(),
            dedup_key: key_id,
            chunking: [sizes.min, sizes.avg, sizes.max],
        }
    }
}

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file: its size, BLAKE3 of its content (hex) and its chunks (hex ids).
    File {
        /// Bytes.
        size: u64,
        /// BLAKE3 of the whole content (hex in JSON): checked before a restored file is put
        /// in place.
        #[serde(with = "super::hex32")]
        blake3: [u8; 32],
        /// Chunk ids in order (hex in JSON); concatenated, the chunks are the content.
        #[serde(with = "super::hex32::list")]
        chunks: Vec<ChunkId>,
        /// The object's ETag when the source is a bucket prefix (absent for directories):
        /// with the size, what tells the next backup the object is unchanged.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        etag: Option<String>,
    },
    /// A symbolic link (restored as a link, never followed).
    Symlink {
        /// The link's target, as stored.
        target: String,
    },
    /// A hard link to an earlier regular file of the tree.
    Hardlink {
        /// The path of that file.
        target: String,
    },
}

/// One line of a tree after the header.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeEntry {
    /// Relative path, `/`-separated.
    pub path: String,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// The entry's kind and kind-specific fields.
    #[serde(flatten)]
    pub kind: EntryKind,
}

impl TreeEntry {
    /// The size of a regular file's content (0 for anything else).
    pub fn size(&self) -> u64 {
        match &self.kind {
            EntryKind::File { size, .. } => *size,
            _ => 0,
        }
    }
}

/// A parsed tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tree {
    /// Its header.
    pub header: TreeHeader,
    /// Its entries, in path order.
    pub entries: Vec<TreeEntry>,
}

impl Tree {
    /// Serialize as JSON lines.
    pub fn to_json_lines(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for line in 0..=self.entries.len() {
            self.write_line(line, &mut out);
        }
        out
    }

    /// Append line `line` of the JSON lines (0 the header, `n` entry `n - 1`) to `out`.
    pub(crate) fn write_line(&self, line: usize, out: &mut Vec<u8>) {
        match line {
            0 => serde_json::to_writer(&mut *out, &self.header),
            n => serde_json::to_writer(&mut *out, &self.entries[n - 1]),
        }
        .expect("serializes");
        out.push(b'\n');
    }

    /// Parse a tree (untrusted bytes): every line, every path, every chunk id is checked.
    pub fn from_json_lines(bytes: &[u8]) -> Result<Tree> {
        let mut parser = TreeParser::default();
        parser.feed(bytes)?;
        parser.finish()
    }
}

/// Parses a tree as its bytes arrive (untrusted: every line, path and chunk id is checked),
/// so the serialized tree is never held whole beside the parsed one.
#[derive(Debug, Default)]
pub struct TreeParser {
    /// The start of a line whose end has not arrived.
    pending: Vec<u8>,
    header: Option<TreeHeader>,
    entries: Vec<TreeEntry>,
    /// Non-empty lines parsed.
    lines: usize,
}

impl TreeParser {
    /// Parse the complete lines of `bytes` (with what came before).
    pub fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        self.feed_where(bytes, &mut |_| true)
    }

    /// [`TreeParser::feed`], keeping only the entries `keep` takes (every entry is still
    /// checked): a lookup in a large tree holds only what it looks for.
    pub fn feed_where(
        &mut self,
        mut bytes: &[u8],
        keep: &mut dyn FnMut(&TreeEntry) -> bool,
    ) -> Result<()> {
        while let Some(end) = bytes.iter().position(|b| *b == b'\n') {
            if self.pending.is_empty() {
                self.line(&bytes[..end], keep)?;
            } else {
                self.pending.extend_from_slice(&bytes[..end]);
                let line = std::mem::take(&mut self.pending);
                self.line(&line, keep)?;
            }
            bytes = &bytes[end + 1..];
        }
        self.pending.extend_from_slice(bytes);
        Ok(())
    }

    /// The tree, once every byte was fed.
    pub fn finish(mut self) -> Result<Tree> {
        let last = std::mem::take(&mut self.pending);
        self.line(&last, &mut |_| true)?;
        let header = self
            .header
            .ok_or_else(|| Error::corrupt("the snapshot tree is empty"))?;
        Ok(Tree {
            header,
            entries: self.entries,
        })
    }

    fn line(&mut self, line: &[u8], keep: &mut dyn FnMut(&TreeEntry) -> bool) -> Result<()> {
        if line.is_empty() {
            return Ok(());
        }
        self.lines += 1;
        if self.header.is_none() {
            let header: TreeHeader = serde_json::from_slice(line).map_err(|e| {
                Error::corrupt("the snapshot tree's header is malformed").with_source(e)
            })?;
            if header.format != TREE_FORMAT {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "snapshot tree format {:?} is not {TREE_FORMAT}",
                        header.format
                    ),
                ));
            }
            self.header = Some(header);
            return Ok(());
        }
        let entry: TreeEntry = serde_json::from_slice(line).map_err(|e| {
            Error::corrupt(format!(
                "line {} of the snapshot tree is malformed",
                self.lines
            ))
            .with_source(e)
        })?;
        check_relative_path(&entry.path)?;
        if let EntryKind::Hardlink { target } = &entry.kind {
            check_relative_path(target)?;
        }
        if keep(&entry) {
            self.entries.push(entry);
        }
        Ok(())
    }
}

/// How a snapshot's tree payload is read: 256 KiB chunks, one queued per stage (the
/// pipeline's defaults, 1 MiB and 4, held about 18 MB of a 200,000-file tree at once; the
/// tree's reader spools or parses it far faster than it arrives, so depth buys nothing).
pub(crate) fn tree_read_options() -> dr_core::ReadOptions {
    dr_core::ReadOptions {
        stages: dr_core::StageOptions {
            chunk_bytes: 256 << 10,
            depth: 1,
        },
        progress: None,
    }
}

/// Paths ordered component by component (`a` < `a/b` < `a.txt`), the order of a directory
/// walk: a directory's contents come right after it. Paths hold no NUL, so `/` can sort as
/// one.
pub(crate) fn component_order(a: &str, b: &str) -> std::cmp::Ordering {
    let key = |c: u8| if c == b'/' { 0 } else { c };
    a.bytes().map(key).cmp(b.bytes().map(key))
}

/// Refuse a path that could leave the restore target: empty, absolute, with an empty, `.`
/// or `..` component, a backslash or a control character other than newline and tab
/// (which file names may hold), or a NUL.
pub fn check_relative_path(path: &str) -> Result<()> {
    let bad = path.is_empty()
        || path.starts_with('/')
        || path.contains('\0')
        || path.contains('\\')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..");
    if bad {
        return Err(Error::corrupt(format!(
            "the snapshot holds an unsafe path {path:?}: refusing it"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_are_refused() {
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "./a",
            "a/.",
            "a\\..\\b",
            "a\0b",
        ] {
            assert!(check_relative_path(bad).is_err(), "{bad:?}");
        }
        for good in ["a", "a/b.png", "é/日本/new\nline", "..a", "a.."] {
            check_relative_path(good).unwrap();
        }
    }

    #[test]
    fn trees_round_trip_and_hostile_lines_fail() {
        let tree = Tree {
            header: TreeHeader::new("00".repeat(8), super::super::chunker::CHUNK_SIZES),
            entries: vec![
                TreeEntry {
                    path: "d".into(),
                    mode: 0o755,
                    mtime_ns: 1,
                    kind: EntryKind::Dir,
                },
                TreeEntry {
                    path: "d/f\nname".into(),
                    mode: 0o644,
                    mtime_ns: 2,
                    kind: EntryKind::File {
                        size: 3,
                        blake3: [0xab; 32],
                        chunks: vec![[0xcd; 32]],
                        etag: Some("\"0a1b\"".into()),
                    },
                },
                TreeEntry {
                    path: "l".into(),
                    mode: 0o777,
                    mtime_ns: 3,
                    kind: EntryKind::Symlink {
                        target: "/anywhere".into(),
                    },
                },
            ],
        };
        let bytes = tree.to_json_lines();
        assert_eq!(Tree::from_json_lines(&bytes).unwrap(), tree);
        let hostile = String::from_utf8(bytes)
            .unwrap()
            .replace("\"d/f\\nname\"", "\"../f\"");
        assert!(Tree::from_json_lines(hostile.as_bytes()).is_err());
    }
}
