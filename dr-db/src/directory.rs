//! A `pg_dump -Fd` directory archive stored as pieces (one per file): its payload format,
//! and [`DirectoryCounter`], which derives per-table row counts from the files.
//!
//! The files, as `pg_dump -Fd -Z0` writes them (PostgreSQL's `pg_backup_directory.c`):
//! `toc.dat` (the header and TOC of a custom archive, each entry naming its data file), one
//! `<dump id>.dat` per table holding its `COPY … TO stdout` text and the end-of-data marker
//! `\.` with two empty lines (as in a custom archive's data block), and for large objects a
//! list `blobs.toc` (`blobs_<dump id>.toc` from pg_dump 17) of lines `OID FILE` with one
//! `blob_<OID>.dat` each.

use std::collections::{BTreeMap, BTreeSet};

use dr_core::{DumpStats, Error, ErrorKind, PayloadCheck, Result};

use crate::archive::{count_newlines, ArchiveInspector, DataHolds, LARGE_OBJECTS};

/// `SourceInfo::format` of a PostgreSQL backup stored as pieces: the files of a
/// `pg_dump -Fd -Z0` directory archive, one piece each, named as pg_dump named them, so that
/// writing every piece to a folder gives an archive `pg_restore -Fd` reads.
pub const DIRECTORY_FORMAT: &str = "pg_dump-directory";

/// The piece holding the archive's table of contents.
pub const TOC_PIECE: &str = "toc.dat";

/// Counts rows per table from the pieces of a directory archive, in any order: `verify`'s
/// [`PayloadCheck`] for [`DIRECTORY_FORMAT`] (fed piece by piece through
/// [`PayloadCheck::begin_piece`]), and the backup's own counter as the files are uploaded.
#[derive(Debug, Default)]
pub struct DirectoryCounter {
    toc: Option<ArchiveInspector>,
    /// The piece being fed through [`PayloadCheck`].
    current: Option<PieceCounter>,
    /// Newlines, bytes and the last 8 bytes of every piece but `toc.dat`.
    files: BTreeMap<String, FileCount>,
    /// The text of large-object lists (`*.toc` pieces other than `toc.dat`).
    lists: BTreeMap<String, Vec<u8>>,
}

/// Counts one piece of a directory archive; [`DirectoryCounter::add`] collects them, so
/// that pieces read at the same time are counted each on its own.
#[derive(Debug)]
pub struct PieceCounter {
    name: String,
    kind: PieceKind,
}

#[derive(Debug)]
enum PieceKind {
    Toc(Box<ArchiveInspector>),
    List(Vec<u8>),
    File(FileCount),
}

impl PieceCounter {
    /// A counter for piece `name`, by what its name says it is.
    pub fn new(name: &str) -> Result<Self> {
        dr_core::pieces::check_piece_name(name)?;
        let kind = if name == TOC_PIECE {
            PieceKind::Toc(Box::new(ArchiveInspector::directory_toc()))
        } else if name.ends_with(".toc") {
            PieceKind::List(Vec::new())
        } else {
            PieceKind::File(FileCount::default())
        };
        Ok(PieceCounter {
            name: name.to_owned(),
            kind,
        })
    }

    /// The piece's next bytes.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        match &mut self.kind {
            PieceKind::Toc(inspector) => inspector.feed(bytes),
            PieceKind::List(list) => {
                list.extend_from_slice(bytes);
                Ok(())
            }
            PieceKind::File(c) => {
                c.newlines += count_newlines(bytes);
                c.bytes += bytes.len() as u64;
                c.tail = match bytes.len().checked_sub(8) {
                    Some(last8) => u64::from_be_bytes(bytes[last8..].try_into().expect("8 bytes")),
                    None => bytes.iter().fold(c.tail, |t, &b| (t << 8) | u64::from(b)),
                };
                Ok(())
            }
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct FileCount {
    newlines: u64,
    bytes: u64,
    tail: u64,
}

impl DirectoryCounter {
    /// A counter that has seen no piece.
    pub fn new() -> Self {
        Self::default()
    }

    /// A piece counted to its end.
    pub fn add(&mut self, piece: PieceCounter) -> Result<()> {
        let name = piece.name;
        if self.files.contains_key(&name)
            || self.lists.contains_key(&name)
            || (name == TOC_PIECE && self.toc.is_some())
        {
            return Err(Error::corrupt(format!("piece '{name}' appears twice")));
        }
        match piece.kind {
            PieceKind::Toc(inspector) => self.toc = Some(*inspector),
            PieceKind::List(list) => {
                self.lists.insert(name, list);
            }
            PieceKind::File(c) => {
                self.files.insert(name, c);
            }
        }
        Ok(())
    }

    /// Every piece has been seen: the per-table statistics, as a custom archive of the same
    /// dump would give them (one entry per `TABLE DATA` in TOC order, then the large objects).
    pub fn stats(mut self) -> Result<DumpStats> {
        if let Some(piece) = self.current.take() {
            self.add(piece)?;
        }
        let toc = self
            .toc
            .ok_or_else(|| Error::corrupt("the directory archive has no toc.dat"))?
            .finish_directory()?;
        let mut tables = toc.tables;
        let mut used = BTreeSet::new();
        let lo_index = tables
            .iter()
            .position(|t| t.schema.is_empty() && t.name == LARGE_OBJECTS);
        for file in &toc.files {
            let count = |name: &str| {
                self.files.get(name).copied().ok_or_else(|| {
                    Error::corrupt(format!(
                        "toc.dat names the data file '{name}', which the backup does not hold"
                    ))
                })
            };
            match file.holds {
                DataHolds::Table(i) => {
                    let c = count(&file.name)?;
                    used.insert(file.name.clone());
                    let (rows, bytes) = without_end_marker(c);
                    tables[i].rows = rows;
                    tables[i].bytes = bytes;
                }
                DataHolds::LargeObjects => {
                    let list = self.lists.get(&file.name).ok_or_else(|| {
                        Error::corrupt(format!(
                            "toc.dat names the large-object list '{}', which the backup does not hold",
                            file.name
                        ))
                    })?;
                    used.insert(file.name.clone());
                    let (mut n, mut bytes) = (0u64, 0u64);
                    for line in list.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                        let line = String::from_utf8_lossy(line);
                        let blob =
                            line.split_once(' ').map(|(_, f)| f.trim()).ok_or_else(|| {
                                Error::corrupt(format!(
                                    "{}: the line {line:?} is not `OID FILE`",
                                    file.name
                                ))
                            })?;
                        bytes += count(blob)?.bytes;
                        used.insert(blob.to_owned());
                        n += 1;
                    }
                    if let Some(i) = lo_index {
                        tables[i].rows += n;
                        tables[i].bytes += bytes;
                    }
                }
                DataHolds::Other => {
                    used.insert(file.name.clone());
                }
            }
        }
        let unknown = self
            .files
            .keys()
            .chain(self.lists.keys())
            .find(|name| !used.contains(*name));
        if let Some(name) = unknown {
            return Err(Error::corrupt(format!(
                "the backup holds the piece '{name}', which toc.dat does not name"
            )));
        }
        Ok(DumpStats {
            tables,
            ..Default::default()
        })
    }
}

/// A table file's rows and bytes without pg_dump's end-of-data marker `\.\n\n\n` (see
/// [`crate::archive`]), when the file ends with it on a line of its own.
fn without_end_marker(c: FileCount) -> (u64, u64) {
    const END_OF_COPY: u64 = 5;
    let marker = c.tail & 0xff_ffff_ffff == u64::from_be_bytes(*b"\0\0\0\\.\n\n\n");
    let own_line = c.bytes == END_OF_COPY
        || (c.bytes > END_OF_COPY && (c.tail >> 40) & 0xff == u64::from(b'\n'));
    if marker && own_line {
        (c.newlines - 3, c.bytes - END_OF_COPY)
    } else {
        (c.newlines, c.bytes)
    }
}

/// What `verify` runs over a stored `pg_dump-directory` payload: the pieces re-counted, then
/// compared table by table with the manifest's statistics.
impl PayloadCheck for DirectoryCounter {
    fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        match self.current.as_mut() {
            Some(piece) => piece.feed(chunk),
            None => Err(Error::new(
                ErrorKind::Other,
                "directory archive bytes before any piece began",
            )),
        }
    }

    fn begin_piece(&mut self, name: &str) -> Result<()> {
        if let Some(piece) = self.current.take() {
            self.add(piece)?;
        }
        self.current = Some(PieceCounter::new(name)?);
        Ok(())
    }

    fn check(self: Box<Self>, expected: &DumpStats) -> Result<DumpStats> {
        let found = self.stats()?;
        compare_stats(&found, expected)?;
        Ok(found)
    }
}

/// The first difference between counted and recorded statistics, as an error.
pub(crate) fn compare_stats(found: &DumpStats, expected: &DumpStats) -> Result<()> {
    if found.tables.len() != expected.tables.len() {
        return Err(Error::corrupt(format!(
            "payload holds {} tables, the manifest lists {}",
            found.tables.len(),
            expected.tables.len()
        )));
    }
    for (got, want) in found.tables.iter().zip(&expected.tables) {
        if got.schema != want.schema || got.name != want.name || got.rows != want.rows {
            return Err(Error::corrupt(format!(
                "table {}.{} has {} rows in the payload, the manifest says {}.{} has {}",
                got.schema, got.name, got.rows, want.schema, want.name, want.rows
            )));
        }
    }
    Ok(())
}
