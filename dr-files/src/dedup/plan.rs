//! A restore planned by pack, as restic and rustic do it: every pack the selected files
//! need is read once, front to back, and each of its chunks is written to every place, in
//! every file, that holds it. Packs are taken in the order the files first need them, so a
//! snapshot restores in roughly the order it was backed up and files complete steadily.
//!
//! The plan is what a restore must hold for every file of a batch: 16 bytes per file and 32
//! bytes per chunk reference (plus the entries themselves), nothing per byte.

use std::collections::HashMap;

use dr_core::{Error, Result};

use super::pack::{Catalog, Location};
use super::tree::{EntryKind, TreeEntry};

/// A regular file to write.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PlannedFile {
    /// Its entry, an index into the selected entries.
    pub entry: u32,
    /// Chunk references to write before it is complete.
    pub pieces: u32,
    /// Its length: the sum of its chunks' lengths (equal to the snapshot's size, checked).
    pub len: u64,
}

/// One chunk reference: chunk `nth` of file `file`, at `at` in its pack, goes to `offset`
/// in the file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Piece {
    /// Where the chunk lies (looked up once, when planning: the catalog is on disk).
    pub at: Location,
    /// File number in [`RestorePlan::files`].
    pub file: u32,
    /// The chunk's place in the file's chunk list (its id is there).
    pub nth: u32,
    /// Where the chunk starts in the file.
    pub offset: u64,
}

impl Piece {
    /// The blob's key within its pack (its offset, below 4 GiB: checked when the index was
    /// read): pieces with the same key take the same chunk.
    pub(crate) fn blob_key(&self) -> u32 {
        u32::try_from(self.at.offset()).expect("pack offsets are below 4 GiB")
    }
}

/// One pack to read and the pieces it fills, by blob.
#[derive(Debug, Clone)]
pub(crate) struct PackJob {
    /// The pack, an index into [`Catalog::packs`].
    pub pack: u32,
    /// Its pieces: a range of [`RestorePlan::pieces`], ordered by place in the pack.
    pub pieces: std::ops::Range<usize>,
}

/// What a restore reads and writes.
#[derive(Debug, Default)]
pub(crate) struct RestorePlan {
    /// Regular files with content (empty files need no pack).
    pub files: Vec<PlannedFile>,
    /// Packs in the order they are first needed.
    pub packs: Vec<PackJob>,
    /// Every piece, grouped by pack job.
    pub pieces: Vec<Piece>,
}

impl RestorePlan {
    /// Plan the regular files among `entries` (every chunk must be in `catalog`: checked
    /// before). A file whose chunks do not add up to its size fails here, before anything
    /// is written.
    pub(crate) fn new(entries: &[TreeEntry], catalog: &Catalog) -> Result<RestorePlan> {
        let mut plan = RestorePlan::default();
        // Pack number → its rank in the order of first need.
        let mut rank: HashMap<u32, u32> = HashMap::new();
        let mut ranked: Vec<(u32, Piece)> = Vec::new();
        for (n, e) in entries.iter().enumerate() {
            let EntryKind::File { size, chunks, .. } = &e.kind else {
                continue;
            };
            if chunks.is_empty() {
                continue;
            }
            let file = plan.files.len() as u32;
            let mut offset = 0u64;
            for (nth, id) in chunks.iter().enumerate() {
                let at = catalog.locate(id)?.ok_or_else(|| {
                    Error::corrupt(format!(
                        "file '{}' needs chunk {}, which no pack holds",
                        e.path,
                        hex::encode(id)
                    ))
                })?;
                let next = rank.len() as u32;
                let r = *rank.entry(at.pack).or_insert(next);
                ranked.push((
                    r,
                    Piece {
                        at,
                        file,
                        nth: nth as u32,
                        offset,
                    },
                ));
                offset += u64::from(at.raw);
            }
            if offset != *size {
                return Err(Error::corrupt(format!(
                    "file '{}' restores to {offset} bytes that do not match the snapshot's size and BLAKE3",
                    e.path
                )));
            }
            plan.files.push(PlannedFile {
                entry: n as u32,
                pieces: chunks.len() as u32,
                len: offset,
            });
        }
        // Stable: the pieces of one blob stay in file order.
        ranked.sort_by_key(|(r, p)| (*r, p.at.offset()));
        let mut packs: Vec<u32> = vec![0; rank.len()];
        for (pack, r) in rank {
            packs[r as usize] = pack;
        }
        let mut at = 0;
        for (r, pack) in packs.into_iter().enumerate() {
            let end = at + ranked[at..].partition_point(|(k, _)| *k == r as u32);
            plan.packs.push(PackJob {
                pack,
                pieces: at..end,
            });
            at = end;
        }
        plan.pieces = ranked.into_iter().map(|(_, p)| p).collect();
        Ok(plan)
    }
}
