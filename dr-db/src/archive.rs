// Long (about 1,050 lines before its tests) on purpose: one resumable state machine over one format, whose steps share the parser state.
//! A streaming inspector of PostgreSQL's custom-format archive (`pg_dump -Fc -Z0`).
//!
//! dr stores the archive exactly as `pg_dump` writes it. While the bytes stream past on their
//! way to compression and encryption, [`ArchiveInspector`] parses them incrementally and
//! derives, per `TABLE DATA` entry, the number of COPY rows and the number of payload bytes.
//! `verify` runs the same inspector over the decrypted payload to re-derive the figures.
//!
//! The inspector never buffers the archive: it keeps one TOC entry's short names (tag,
//! description, schema) at a time and skips everything else by its length, counting `'\n'`
//! in the data chunks as they go by.
//!
//! # The format, as read here
//!
//! From PostgreSQL's `pg_backup_archiver.c` (`WriteHead`, `ReadHead`, `WriteToc`, `ReadToc`)
//! and `pg_backup_custom.c` (`_StartData`, `_CustomWriteFunc`, `_EndData`, `_StartLOs`, …):
//!
//! * An *int* is a sign byte (0 positive, 1 negative) and `intSize` magnitude bytes, least
//!   significant first. A *string* is an int length (negative: NULL) and that many bytes.
//! * Header: `PGDMP`, then bytes vmaj, vmin, vrev, intSize, offSize, format (1 = custom);
//!   since 1.15 (pg_dump 16) a compression-algorithm byte (0 = none), before that an int
//!   compression level (0 = none); the creation time as 7 ints (`struct tm`: sec, min, hour,
//!   mday, mon, year, isdst); the database name, the server version and the pg_dump version
//!   strings.
//! * TOC: an int count, then per entry: dumpId int, hadDumper int, tableoid, oid, tag and desc
//!   strings, section int, defn, dropStmt, copyStmt, namespace, tablespace strings, the table
//!   access method string (1.14+, pg_dump 12), the relkind int (1.16+, pg_dump 17), the owner
//!   string, the "with OIDs" string, dependency strings up to a NULL one, then the data offset:
//!   a flag byte (1 not set, 2 set, 3 no data) and offSize bytes.
//! * Data blocks until the end of the stream: a type byte and the dumpId int. `BLK_DATA` (1)
//!   carries chunks (int length, bytes) up to a zero length. `BLK_BLOBS` (3) carries, per large
//!   object, its OID int and chunks up to a zero length, and ends with an OID of 0. A piped
//!   archive has nothing after the last block.
//! * A table's data is its `COPY … TO stdout` text output, one chunk per row (every row ends
//!   with `'\n'`; newlines inside values are escaped), followed by one more chunk, the
//!   end-of-data marker `\.` and two empty lines (C string `"\\.\n\n\n"`).
//!
//! A table's `rows` is the number of newlines in its data and `bytes` the data's length, both
//! without the end-of-data marker: they equal `SELECT count(*)` and the size of
//! `COPY … TO STDOUT` on the dumped snapshot. (Archives made with `--inserts` hold INSERT
//! statements instead; their `rows` would count lines, not rows. dr does not make them.)
//!
//! Archive versions 1.12 to 1.16 are read (pg_dump 9.0 to 18; dr uses 12 and later). Compressed
//! archives are refused: their chunks would have to be inflated to count rows, and dr always
//! dumps with `-Z0` and compresses the stream itself.

use std::collections::HashMap;
use std::fmt;

use dr_core::{DumpStats, Error, ErrorKind, PayloadCheck, Result, TableStats};

/// The name of the [`TableStats`] entry that [`ArchiveInspector::finish`] appends when the
/// archive holds large objects: its `rows` is the number of large objects, its `bytes` their
/// total size, its `schema` is empty.
pub const LARGE_OBJECTS: &str = "<large objects>";

/// The lowest archive minor version read (1.12: pg_dump 9.0).
const MIN_MINOR: u8 = 12;
/// The highest archive minor version read (1.16: pg_dump 17 and 18).
const MAX_MINOR: u8 = 16;
/// The custom archive format (`archCustom`); 3 is tar, 5 is a directory's `toc.dat`.
const FORMAT_CUSTOM: u8 = 1;
/// The format code in a directory archive's `toc.dat`: pg_dump writes it with the tar
/// format's code (`pg_backup_directory.c`, "The TOC of a directory format dump shares the
/// format code of the tar format").
const FORMAT_DIRECTORY_TOC: u8 = 3;
/// Block type of table data.
const BLK_DATA: u8 = 1;
/// Block type of a group of large objects.
const BLK_BLOBS: u8 = 3;
/// Length of the end-of-COPY marker `\\.\n\n\n` that pg_dump writes after a table's rows.
const END_OF_COPY: u64 = 5;
/// The longest TOC tag, description or schema name (or header string) kept in memory. Real
/// ones are identifiers or short phrases; a longer one means the stream is not what it claims.
const MAX_KEPT_STRING: u64 = 1 << 20;

/// The creation time recorded in an archive header: the dumping machine's local time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CreationTime {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1 to 12.
    pub month: i64,
    /// Day of the month, 1 to 31.
    pub day: i64,
    /// Hour, 0 to 23.
    pub hour: i64,
    /// Minute, 0 to 59.
    pub minute: i64,
    /// Second, 0 to 60.
    pub second: i64,
    /// Daylight saving time flag as `struct tm` has it: positive if in effect, 0 if not,
    /// negative if unknown.
    pub is_dst: i64,
}

/// What the header of a custom-format archive says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ArchiveHeader {
    /// Archive format version (major, minor, revision), e.g. `(1, 14, 0)` from pg_dump 12–15.
    pub version: (u8, u8, u8),
    /// Size in bytes of an integer's magnitude (4 from every real pg_dump).
    pub int_size: u8,
    /// Size in bytes of a file offset (8 from every real pg_dump).
    pub off_size: u8,
    /// When the archive was made.
    pub created: CreationTime,
    /// Name of the dumped database (empty if the archive recorded none).
    pub database: String,
    /// Version of the server the data came from, e.g. `15.18 (Debian 15.18-0+deb12u1)`.
    pub server_version: String,
    /// Version of the pg_dump that wrote the archive.
    pub pg_dump_version: String,
}

/// One entry of an archive's table of contents, as [`ArchiveInspector::toc`] records it: what
/// `pg_restore --list` shows, plus the dump ids the entry depends on (which `--list` does
/// not show, and which decide what a partial restore must bring along).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TocEntry {
    /// The entry's dump id (what a `pg_restore --use-list` file names).
    pub dump_id: i64,
    /// What it is: `TABLE`, `TABLE DATA`, `INDEX`, `SEQUENCE SET`, `FK CONSTRAINT`, …
    pub desc: String,
    /// Its schema (empty for objects outside schemas).
    pub namespace: String,
    /// Its name (for a constraint or a column default, the table's name and the object's).
    pub tag: String,
    /// The dump ids of the entries it depends on.
    pub dependencies: Vec<i64>,
    /// A `TABLE DATA` entry's `COPY … FROM stdin;` statement (empty for other entries).
    pub copy_stmt: String,
    /// The SQL of the session settings every restore session runs first (`ENCODING`,
    /// `STDSTRINGS`, `SEARCHPATH` entries); empty for every other entry, whose definitions
    /// may be large and are not kept.
    pub defn: String,
}

/// The `desc` of the TOC entries that set up a restore session, whose `defn` is kept.
pub const SESSION_ENTRIES: &[&str] = &["ENCODING", "STDSTRINGS", "SEARCHPATH"];

/// What a directory archive's `toc.dat` says ([`ArchiveInspector::finish_directory`]).
#[derive(Debug, Clone, Default)]
pub struct DirectoryToc {
    /// One entry per `TABLE DATA` TOC entry, in TOC order, then a [`LARGE_OBJECTS`] entry if
    /// the archive has large objects; every count zero (the counts are in the data files).
    pub tables: Vec<TableStats>,
    /// The data files the TOC names.
    pub files: Vec<DataFile>,
    /// The whole table of contents.
    pub toc: Vec<TocEntry>,
    /// Where each TOC entry's data-file field lies in `toc.dat`, in TOC order: what turning
    /// the directory archive into a custom one rewrites ([`crate::custom_archive`]).
    pub layout: Vec<EntryLayout>,
}

/// One TOC entry of a directory archive's `toc.dat`, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntryLayout {
    /// The entry's dump id.
    pub dump_id: i64,
    /// Byte range of the entry's last field, its data file's name (a string).
    pub file_field: std::ops::Range<u64>,
    /// Its data file and what that holds, if the entry has data.
    pub file: Option<DataFile>,
}

/// A data file of a directory archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFile {
    /// Its file name, e.g. `3342.dat`, `blobs.toc`.
    pub name: String,
    /// What it holds.
    pub holds: DataHolds,
}

/// What a directory archive's data file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataHolds {
    /// The rows of `DirectoryToc::tables[i]`.
    Table(usize),
    /// The list of large objects (`blobs.toc`: one line `OID FILE` per large object).
    LargeObjects,
    /// The data of some other entry.
    Other,
}

/// An incremental reader of a `pg_dump -Fc -Z0` archive that derives per-table row and byte
/// counts (see the [module documentation](self) for the format).
///
/// Feed it consecutive pieces of the archive, split anywhere, then call
/// [`finish`](Self::finish). Memory use does not grow with the archive's data; it grows with
/// the number of `TABLE DATA` entries only.
///
/// ```
/// use dr_db::archive::ArchiveInspector;
///
/// # fn demo(pieces: Vec<Vec<u8>>) -> dr_core::Result<()> {
/// let mut inspector = ArchiveInspector::new();
/// for piece in &pieces {
///     inspector.feed(piece)?;
/// }
/// for table in inspector.finish()?.tables {
///     println!("{}.{}: {} rows, {} bytes", table.schema, table.name, table.rows, table.bytes);
/// }
/// # Ok(())
/// # }
/// ```
///
/// Errors are [`ErrorKind::Corrupt`] for bytes that are not a well-formed archive (with the
/// byte offset of the offending structure) or a stream that ends inside a structure, and
/// [`ErrorKind::Unsupported`] for archive versions, formats or compression this reader does
/// not handle. After an error every later call returns the same error.
///
/// Cloning takes a snapshot of the parsing state (cheap: no archive data is held).
#[derive(Debug, Clone)]
pub struct ArchiveInspector {
    /// Offset in the archive of the next byte to consume.
    pos: u64,
    /// What the primitive being read means.
    step: Step,
    /// The primitive being read.
    prim: Prim,
    /// Where the primitive being read started.
    item_start: u64,
    /// Bytes of a fixed-size primitive or int gathered so far (they may arrive split).
    scratch: [u8; 17],
    scratch_len: usize,
    /// The body of a string being kept.
    string: Vec<u8>,
    /// The header as read so far; complete once `header_done`.
    header: ArchiveHeader,
    header_done: bool,
    /// Number of TOC entries announced, and the index of the one being read.
    toc_count: u64,
    toc_index: u64,
    /// The TOC entry being read.
    entry: Entry,
    /// One entry per `TABLE DATA` TOC entry, in TOC order.
    tables: Vec<TableStats>,
    /// Data-bearing TOC entries by dump id.
    targets: HashMap<i64, Target>,
    /// Whether the TOC has a `BLOBS` entry, and the large objects counted.
    has_large_objects: bool,
    large_objects: u64,
    large_object_bytes: u64,
    /// The data block being read.
    block: Block,
    /// The first error, repeated by every later call.
    failed: Option<(ErrorKind, String)>,
    /// Every TOC entry, when recording was asked for ([`ArchiveInspector::recording_toc`]).
    toc: Option<Vec<TocEntry>>,
    /// Reading a directory archive's `toc.dat` ([`ArchiveInspector::directory_toc`]): each
    /// entry ends with its data file's name instead of a data offset, and no data follows.
    directory: bool,
    /// The data files a directory archive's TOC names, with what each holds.
    files: Vec<(String, TargetKind)>,
    /// Every entry of a directory archive's TOC, located.
    layout: Vec<EntryLayout>,
}

/// What the primitive being read means, i.e. where in the archive's grammar we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// `PGDMP`.
    Magic,
    /// vmaj, vmin, vrev, intSize, offSize, format.
    Prologue,
    /// Compression algorithm byte (1.15+) or level int.
    Compression,
    /// One of the 7 creation-time ints.
    Created(u8),
    DatabaseName,
    ServerVersion,
    DumpVersion,
    TocCount,
    Entry(Field),
    /// The type byte of the next data block, or the end of the archive.
    BlockType,
    BlockId,
    /// The length of the next chunk (0 ends the block or the large object).
    ChunkLen,
    /// A chunk's payload.
    ChunkData,
    /// The OID of the next large object in a BLOBS block (0 ends the block).
    BlobOid,
}

/// The fields of a TOC entry, in archive order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    DumpId,
    HadDumper,
    TableOid,
    Oid,
    Tag,
    Desc,
    Section,
    Defn,
    DropStmt,
    CopyStmt,
    Namespace,
    Tablespace,
    TableAm,
    RelKind,
    Owner,
    WithOids,
    Dependency,
    Offset,
}

/// The primitives of the encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Prim {
    /// This many raw bytes (gathered in `scratch`).
    Fixed(usize),
    /// A sign byte and `int_size` bytes (gathered in `scratch`).
    Int,
    /// The rest of a string's body; kept in `string` or skipped.
    Str { remaining: u64, keep: bool },
    /// The rest of a data chunk's payload, counted and skipped.
    Data { remaining: u64 },
}

/// The TOC entry being read.
#[derive(Debug, Clone, Default)]
struct Entry {
    start: u64,
    dump_id: i64,
    had_dumper: bool,
    tag: Option<Vec<u8>>,
    desc: Option<Vec<u8>>,
    namespace: Option<Vec<u8>>,
    dependencies: Vec<i64>,
    /// Kept only when the TOC is recorded: a `TABLE DATA` entry's COPY statement, and the
    /// definition of a session entry ([`SESSION_ENTRIES`]).
    copy_stmt: Option<Vec<u8>>,
    defn: Option<Vec<u8>>,
    /// A directory archive's data file for this entry.
    file: Option<Vec<u8>>,
    /// Where its data offset (custom) or data file (directory) field starts.
    extra_at: u64,
}

/// A TOC entry that may own a data block.
#[derive(Debug, Clone, Copy)]
struct Target {
    kind: TargetKind,
    seen: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TargetKind {
    /// A `TABLE DATA` entry: index into `tables`.
    Table(usize),
    /// A `BLOBS` entry.
    LargeObjects,
    /// Some other entry with a data dumper: its data is skipped.
    Other,
}

impl TargetKind {
    fn holds(self) -> DataHolds {
        match self {
            TargetKind::Table(i) => DataHolds::Table(i),
            TargetKind::LargeObjects => DataHolds::LargeObjects,
            TargetKind::Other => DataHolds::Other,
        }
    }
}

/// The data block being read.
#[derive(Debug, Clone, Copy)]
struct Block {
    start: u64,
    block_type: u8,
    dump_id: i64,
    kind: TargetKind,
    /// Inside a large object of a BLOBS block (chunks end it, not the block).
    in_large_object: bool,
    /// The last (up to) 8 bytes of a table's data so far, the last one lowest.
    tail: u64,
}

impl Default for ArchiveInspector {
    fn default() -> Self {
        Self::new()
    }
}

/// What `verify` runs over a stored `pg_dump-custom` payload: the same inspector that counted
/// the rows during the backup, then the counts compared table by table with the manifest's.
impl PayloadCheck for ArchiveInspector {
    fn feed(&mut self, chunk: &[u8]) -> Result<()> {
        ArchiveInspector::feed(self, chunk)
    }

    fn check(self: Box<Self>, expected: &DumpStats) -> Result<DumpStats> {
        let found = self.finish()?;
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
        Ok(found)
    }
}

impl ArchiveInspector {
    /// An inspector expecting the first byte of an archive.
    pub fn new() -> Self {
        ArchiveInspector {
            pos: 0,
            step: Step::Magic,
            prim: Prim::Fixed(5),
            item_start: 0,
            scratch: [0; 17],
            scratch_len: 0,
            string: Vec::new(),
            header: ArchiveHeader::default(),
            header_done: false,
            toc_count: 0,
            toc_index: 0,
            entry: Entry::default(),
            tables: Vec::new(),
            targets: HashMap::new(),
            has_large_objects: false,
            large_objects: 0,
            large_object_bytes: 0,
            block: Block {
                start: 0,
                block_type: 0,
                dump_id: 0,
                kind: TargetKind::Other,
                in_large_object: false,
                tail: 0,
            },
            failed: None,
            toc: None,
            directory: false,
            files: Vec::new(),
            layout: Vec::new(),
        }
    }

    /// An inspector of a directory archive's `toc.dat` (`pg_dump -Fd`): the same header and
    /// TOC as a custom archive (with the format code 3 that pg_dump gives it), each entry
    /// naming its data file, and nothing after the TOC. It records the TOC; read the result
    /// with [`finish_directory`](Self::finish_directory).
    pub fn directory_toc() -> Self {
        ArchiveInspector {
            toc: Some(Vec::new()),
            directory: true,
            ..Self::new()
        }
    }

    /// The end of a `toc.dat` read by [`directory_toc`](Self::directory_toc): the tables
    /// (with zero counts, in TOC order, as [`finish`](Self::finish) lists them) and the data
    /// files the TOC names.
    pub fn finish_directory(self) -> Result<DirectoryToc> {
        if !self.directory {
            return Err(Error::new(
                ErrorKind::Other,
                "finish_directory on an inspector of a custom archive",
            ));
        }
        let files = self
            .files
            .iter()
            .map(|(name, kind)| DataFile {
                name: name.clone(),
                holds: kind.holds(),
            })
            .collect();
        let toc = self.toc.clone().unwrap_or_default();
        let layout = self.layout.clone();
        let stats = self.finish()?;
        Ok(DirectoryToc {
            tables: stats.tables,
            files,
            toc,
            layout,
        })
    }

    /// An inspector that also records the whole table of contents (see
    /// [`toc`](Self::toc)): memory then grows with the number of TOC entries, which partial
    /// restores need and backups do not.
    pub fn recording_toc() -> Self {
        ArchiveInspector {
            toc: Some(Vec::new()),
            ..Self::new()
        }
    }

    /// The table of contents, in archive order, once it has been read completely (before the
    /// first data block); `None` before that, or if this inspector does not record it.
    pub fn toc(&self) -> Option<&[TocEntry]> {
        let complete = self.header_done
            && !matches!(self.step, Step::TocCount | Step::Entry(_))
            && self.failed.is_none();
        self.toc.as_deref().filter(|_| complete)
    }

    /// The archive header, once it has been read completely.
    pub fn header(&self) -> Option<&ArchiveHeader> {
        self.header_done.then_some(&self.header)
    }

    /// Consume the next piece of the archive. Pieces may be split anywhere, down to single
    /// bytes; an empty piece is allowed.
    ///
    /// Fails as soon as the bytes seen are not a valid prefix of a supported archive.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<()> {
        if let Some((kind, message)) = &self.failed {
            return Err(Error::new(*kind, message.clone()));
        }
        let result = self.run(bytes);
        if let Err(e) = &result {
            self.failed = Some((e.kind(), e.message().to_owned()));
        }
        result
    }

    /// End of the archive: the per-table statistics, one entry per `TABLE DATA` TOC entry in
    /// TOC (dump) order, then a [`LARGE_OBJECTS`] entry if the archive has large objects.
    ///
    /// `rows` counts COPY rows and `bytes` their text size, without pg_dump's end-of-data
    /// marker (see the [module documentation](self)). A `TABLE DATA` entry whose data block
    /// never appeared has 0 rows and 0 bytes. Fails if
    /// the archive ended inside its header, its TOC or a data block.
    pub fn finish(self) -> Result<DumpStats> {
        if let Some((kind, message)) = self.failed {
            return Err(Error::new(kind, message));
        }
        if self.step != Step::BlockType || self.scratch_len != 0 {
            return Err(self.truncated());
        }
        let mut tables = self.tables;
        if self.has_large_objects {
            tables.push(TableStats {
                schema: String::new(),
                name: LARGE_OBJECTS.to_owned(),
                rows: self.large_objects,
                bytes: self.large_object_bytes,
            });
        }
        Ok(DumpStats {
            tables,
            ..Default::default()
        })
    }

    /// The error for an archive that ended where it must not.
    fn truncated(&self) -> Error {
        if self.pos == 0 {
            return corrupt("the stream is empty: no archive header".to_owned());
        }
        let inside = match self.step {
            Step::Magic
            | Step::Prologue
            | Step::Compression
            | Step::Created(_)
            | Step::DatabaseName
            | Step::ServerVersion
            | Step::DumpVersion => "the archive header".to_owned(),
            Step::TocCount => "the TOC's entry count".to_owned(),
            Step::Entry(_) => format!(
                "TOC entry {} of {}, which started at byte {}",
                self.toc_index + 1,
                self.toc_count,
                self.entry.start
            ),
            Step::BlockType => "a data block's type".to_owned(),
            Step::BlockId => format!("the data block that started at byte {}", self.block.start),
            Step::ChunkLen | Step::ChunkData | Step::BlobOid => format!(
                "the data block of {}, which started at byte {}",
                self.describe_block(),
                self.block.start
            ),
        };
        corrupt(format!(
            "truncated: the stream ended at byte {} inside {inside}",
            self.pos
        ))
    }

    /// A human name for the current block's TOC entry.
    fn describe_block(&self) -> String {
        match self.block.kind {
            TargetKind::Table(i) => format!(
                "TABLE DATA {}.{} (dump id {})",
                self.tables[i].schema, self.tables[i].name, self.block.dump_id
            ),
            TargetKind::LargeObjects => format!("BLOBS (dump id {})", self.block.dump_id),
            TargetKind::Other => format!("dump id {}", self.block.dump_id),
        }
    }

    /// Bytes of an int in this archive: the sign byte and the magnitude.
    fn int_len(&self) -> usize {
        1 + self.header.int_size as usize
    }

    /// Start reading the primitive that `step` consists of, at the current position.
    fn begin(&mut self, step: Step) {
        self.step = step;
        self.item_start = self.pos;
        if step == Step::Entry(Field::Offset) {
            self.entry.extra_at = self.pos;
        }
        self.scratch_len = 0;
        self.prim = match step {
            Step::Magic => Prim::Fixed(5),
            Step::Prologue => Prim::Fixed(6),
            Step::Compression if self.header.version.1 >= 15 => Prim::Fixed(1),
            Step::Entry(Field::Offset) if self.directory => Prim::Int,
            Step::Entry(Field::Offset) => Prim::Fixed(1 + self.header.off_size as usize),
            Step::BlockType => Prim::Fixed(1),
            // Everything else is an int, or a string's length (an int).
            _ => Prim::Int,
        };
    }

    /// Whether `step` is a string, and if so whether its value is kept.
    fn string_step(&self, step: Step) -> Option<bool> {
        match step {
            Step::Entry(Field::Dependency) => Some(self.toc.is_some()),
            Step::Entry(Field::Offset) if self.directory => Some(true),
            Step::DatabaseName | Step::ServerVersion | Step::DumpVersion => Some(true),
            Step::Entry(Field::Tag | Field::Desc | Field::Namespace) => Some(true),
            Step::Entry(Field::CopyStmt) => {
                Some(self.toc.is_some() && self.entry.desc.as_deref() == Some(b"TABLE DATA"))
            }
            Step::Entry(Field::Defn) => Some(
                self.toc.is_some()
                    && SESSION_ENTRIES
                        .iter()
                        .any(|d| self.entry.desc.as_deref() == Some(d.as_bytes())),
            ),
            Step::Entry(
                Field::TableOid
                | Field::Oid
                | Field::DropStmt
                | Field::Tablespace
                | Field::TableAm
                | Field::Owner
                | Field::WithOids,
            ) => Some(false),
            _ => None,
        }
    }

    /// The state machine: consume `input` entirely.
    fn run(&mut self, mut input: &[u8]) -> Result<()> {
        while !input.is_empty() {
            match self.prim {
                Prim::Data { remaining } => {
                    let n = clamp(remaining, input.len());
                    let (chunk, rest) = input.split_at(n);
                    self.count_data(chunk);
                    self.pos += n as u64;
                    input = rest;
                    if n as u64 == remaining {
                        self.begin(Step::ChunkLen);
                    } else {
                        self.prim = Prim::Data {
                            remaining: remaining - n as u64,
                        };
                    }
                }
                Prim::Str { remaining, keep } => {
                    let n = clamp(remaining, input.len());
                    let (part, rest) = input.split_at(n);
                    if keep {
                        self.string.extend_from_slice(part);
                    }
                    self.pos += n as u64;
                    input = rest;
                    if n as u64 == remaining {
                        let value = std::mem::take(&mut self.string);
                        self.on_string(Some(value))?;
                    } else {
                        self.prim = Prim::Str {
                            remaining: remaining - n as u64,
                            keep,
                        };
                    }
                }
                Prim::Fixed(_) | Prim::Int => {
                    let (is_int, len) = match self.prim {
                        Prim::Fixed(len) => (false, len),
                        _ => (true, self.int_len()),
                    };
                    if self.scratch_len == 0 && input.len() >= len {
                        if self.step == Step::ChunkLen {
                            // The hot path: pg_dump writes one chunk per COPY row.
                            input = self.chunks(input)?;
                            continue;
                        }
                        let (item, rest) = input.split_at(len);
                        self.pos += len as u64;
                        input = rest;
                        self.on_item(is_int, item)?;
                    } else {
                        let n = (len - self.scratch_len).min(input.len());
                        self.scratch[self.scratch_len..self.scratch_len + n]
                            .copy_from_slice(&input[..n]);
                        self.scratch_len += n;
                        self.pos += n as u64;
                        input = &input[n..];
                        if self.scratch_len == len {
                            let item = self.scratch;
                            self.on_item(is_int, &item[..len])?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Consume as many whole chunks (length and payload) as `input` holds, starting at a chunk
    /// length; return the rest. Stops after a chunk that is not whole (its payload is then
    /// being read), after the zero length that ends the chunks, or before an incomplete length.
    fn chunks<'a>(&mut self, mut input: &'a [u8]) -> Result<&'a [u8]> {
        let int_len = self.int_len();
        while input.len() >= int_len {
            self.item_start = self.pos;
            let len = self.int(&input[..int_len])?;
            self.pos += int_len as u64;
            input = &input[int_len..];
            if len <= 0 {
                self.on_int(len)?;
                return Ok(input);
            }
            let len = len as u64;
            if (input.len() as u64) < len {
                self.step = Step::ChunkData;
                self.prim = Prim::Data { remaining: len };
                return Ok(input);
            }
            let (chunk, rest) = input.split_at(len as usize);
            self.count_data(chunk);
            self.pos += len;
            input = rest;
        }
        self.begin(Step::ChunkLen);
        Ok(input)
    }

    /// Account a piece of a data chunk's payload to the current block's entry.
    fn count_data(&mut self, data: &[u8]) {
        match self.block.kind {
            TargetKind::Table(i) => {
                let t = &mut self.tables[i];
                t.rows += count_newlines(data);
                t.bytes += data.len() as u64;
                self.block.tail = match data.len().checked_sub(8) {
                    Some(last8) => u64::from_be_bytes(data[last8..].try_into().expect("8 bytes")),
                    None => data
                        .iter()
                        .fold(self.block.tail, |tail, &b| (tail << 8) | u64::from(b)),
                };
            }
            TargetKind::LargeObjects => self.large_object_bytes += data.len() as u64,
            TargetKind::Other => {}
        }
    }

    /// A fixed-size item or an int is complete.
    fn on_item(&mut self, is_int: bool, item: &[u8]) -> Result<()> {
        if is_int {
            let value = self.int(item)?;
            self.on_int(value)
        } else {
            self.on_fixed(item)
        }
    }

    /// Decode an int (sign byte and magnitude) that started at `item_start`.
    fn int(&self, item: &[u8]) -> Result<i64> {
        let (sign, magnitude) = (item[0], &item[1..]);
        if sign > 1 {
            return Err(corrupt(format!(
                "invalid integer at byte {}: sign byte {sign}",
                self.item_start
            )));
        }
        let value = magnitude
            .iter()
            .rev()
            .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
        if value > u64::from(u32::MAX) {
            return Err(corrupt(format!(
                "integer out of range at byte {}: {value}",
                self.item_start
            )));
        }
        let value = value as i64;
        Ok(if sign == 1 { -value } else { value })
    }

    /// A fixed-size item is complete.
    fn on_fixed(&mut self, item: &[u8]) -> Result<()> {
        match self.step {
            Step::Magic => {
                if item != b"PGDMP" {
                    return Err(corrupt(format!(
                        "not a pg_dump custom-format archive: no PGDMP signature at byte 0 (found {:?})",
                        String::from_utf8_lossy(item)
                    )));
                }
                self.begin(Step::Prologue);
            }
            Step::Prologue => {
                let (vmaj, vmin, vrev) = (item[0], item[1], item[2]);
                let (int_size, off_size, format) = (item[3], item[4], item[5]);
                if vmaj != 1 || !(MIN_MINOR..=MAX_MINOR).contains(&vmin) {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "pg_dump archive version {vmaj}.{vmin}.{vrev} is not supported \
                             (supported: 1.{MIN_MINOR} to 1.{MAX_MINOR}, written by pg_dump 9.0 to 18)"
                        ),
                    ));
                }
                if self.directory && format != FORMAT_DIRECTORY_TOC {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "pg_dump archive: format {format} is not a directory archive's toc.dat \
                             (format {FORMAT_DIRECTORY_TOC})"
                        ),
                    ));
                }
                if !self.directory && format != FORMAT_CUSTOM {
                    let what = match format {
                        3 => "tar",
                        5 => "directory (a toc.dat file)",
                        _ => "unknown",
                    };
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "pg_dump archive: format {format} ({what}) is not supported: \
                             only the custom format (pg_dump -Fc) is read"
                        ),
                    ));
                }
                if !(1..=8).contains(&int_size) || !(1..=16).contains(&off_size) {
                    return Err(Error::new(
                        ErrorKind::Unsupported,
                        format!(
                            "pg_dump archive: integer size {int_size} and offset size {off_size} \
                             are not supported"
                        ),
                    ));
                }
                self.header.version = (vmaj, vmin, vrev);
                self.header.int_size = int_size;
                self.header.off_size = off_size;
                self.begin(Step::Compression);
            }
            Step::Compression => {
                // 1.15+: pg_compress_algorithm (0 none, 1 gzip, 2 lz4, 3 zstd).
                if item[0] != 0 {
                    let name = match item[0] {
                        1 => "gzip",
                        2 => "lz4",
                        3 => "zstd",
                        _ => "an unknown algorithm",
                    };
                    return Err(compressed(format!("this archive uses {name}")));
                }
                self.begin(Step::Created(0));
            }
            Step::Entry(Field::Offset) => {
                let flag = item[0];
                // K_OFFSET_POS_NOT_SET, K_OFFSET_POS_SET, K_OFFSET_NO_DATA.
                if !(1..=3).contains(&flag) {
                    return Err(corrupt(format!(
                        "invalid data offset flag {flag} at byte {} in TOC entry {} (dump id {})",
                        self.item_start,
                        self.toc_index + 1,
                        self.entry.dump_id
                    )));
                }
                self.end_entry()?;
            }
            Step::BlockType if self.directory => {
                return Err(corrupt(format!(
                    "toc.dat goes on after its table of contents, at byte {}",
                    self.item_start
                )));
            }
            Step::BlockType => {
                let block_type = item[0];
                if block_type != BLK_DATA && block_type != BLK_BLOBS {
                    return Err(corrupt(format!(
                        "expected a data block at byte {}, found type {block_type}",
                        self.item_start
                    )));
                }
                self.block = Block {
                    start: self.item_start,
                    block_type,
                    dump_id: 0,
                    kind: TargetKind::Other,
                    in_large_object: false,
                    tail: 0,
                };
                self.begin(Step::BlockId);
            }
            _ => unreachable!("{:?} is not a fixed-size item", self.step),
        }
        Ok(())
    }

    /// An int is complete.
    fn on_int(&mut self, value: i64) -> Result<()> {
        if let Some(keep) = self.string_step(self.step) {
            return self.on_string_length(value, keep);
        }
        match self.step {
            Step::Compression => {
                // Before 1.15: the zlib level; 0 means uncompressed, -1 the default level.
                if value != 0 {
                    return Err(compressed(format!(
                        "this archive uses zlib compression level {value}"
                    )));
                }
                self.begin(Step::Created(0));
            }
            Step::Created(i) => {
                let c = &mut self.header.created;
                match i {
                    0 => c.second = value,
                    1 => c.minute = value,
                    2 => c.hour = value,
                    3 => c.day = value,
                    4 => c.month = value + 1,
                    5 => c.year = value + 1900,
                    _ => c.is_dst = value,
                }
                self.begin(if i < 6 {
                    Step::Created(i + 1)
                } else {
                    Step::DatabaseName
                });
            }
            Step::TocCount => {
                if value < 0 {
                    return Err(corrupt(format!(
                        "negative TOC entry count {value} at byte {}",
                        self.item_start
                    )));
                }
                self.toc_count = value as u64;
                self.toc_index = 0;
                self.tables.reserve(self.toc_count.min(1024) as usize);
                self.begin_entry();
            }
            Step::Entry(Field::DumpId) => {
                if value <= 0 {
                    return Err(corrupt(format!(
                        "TOC entry {} at byte {} has dump id {value}, which is out of range",
                        self.toc_index + 1,
                        self.item_start
                    )));
                }
                self.entry.dump_id = value;
                self.begin(Step::Entry(Field::HadDumper));
            }
            Step::Entry(Field::HadDumper) => {
                self.entry.had_dumper = value != 0;
                self.begin(Step::Entry(Field::TableOid));
            }
            Step::Entry(Field::Section) => self.begin(Step::Entry(Field::Defn)),
            Step::Entry(Field::RelKind) => self.begin(Step::Entry(Field::Owner)),
            Step::BlockId => self.start_block(value)?,
            Step::ChunkLen => {
                if value < 0 {
                    return Err(corrupt(format!(
                        "negative chunk length {value} at byte {} in the data block of {}, \
                         which started at byte {}",
                        self.item_start,
                        self.describe_block(),
                        self.block.start
                    )));
                }
                if value > 0 {
                    self.step = Step::ChunkData;
                    self.prim = Prim::Data {
                        remaining: value as u64,
                    };
                } else if self.block.in_large_object {
                    self.block.in_large_object = false;
                    self.begin(Step::BlobOid);
                } else {
                    self.end_table_data();
                    self.begin(Step::BlockType);
                }
            }
            Step::BlobOid => {
                // OIDs above 2^31 are written as negative ints; only 0 ends the block.
                if value == 0 {
                    self.begin(Step::BlockType);
                } else {
                    self.large_objects += 1;
                    self.block.in_large_object = true;
                    self.begin(Step::ChunkLen);
                }
            }
            _ => unreachable!("{:?} is not an int", self.step),
        }
        Ok(())
    }

    /// A string's length is read: NULL, empty, or a body to keep or skip.
    fn on_string_length(&mut self, len: i64, keep: bool) -> Result<()> {
        if len < 0 {
            return self.on_string(None);
        }
        if len == 0 {
            return self.on_string(Some(Vec::new()));
        }
        if keep && len as u64 > MAX_KEPT_STRING {
            return Err(corrupt(format!(
                "implausible {len}-byte name at byte {}{}",
                self.item_start,
                self.entry_context()
            )));
        }
        self.string.clear();
        self.prim = Prim::Str {
            remaining: len as u64,
            keep,
        };
        Ok(())
    }

    /// " in TOC entry N (dump id D)" while reading the TOC, else "".
    fn entry_context(&self) -> String {
        match self.step {
            Step::Entry(_) => format!(
                " in TOC entry {} (dump id {})",
                self.toc_index + 1,
                self.entry.dump_id
            ),
            _ => String::new(),
        }
    }

    /// A string is complete (`None`: NULL).
    fn on_string(&mut self, value: Option<Vec<u8>>) -> Result<()> {
        let text = |v: Option<Vec<u8>>| v.map(lossy).unwrap_or_default();
        if self.step == Step::Entry(Field::Offset) {
            // A directory archive: the entry's data file, or empty (or NULL) for none.
            self.entry.file = value.filter(|v| !v.is_empty());
            return self.end_entry();
        }
        match self.step {
            Step::DatabaseName => {
                self.header.database = text(value);
                self.begin(Step::ServerVersion);
            }
            Step::ServerVersion => {
                self.header.server_version = text(value);
                self.begin(Step::DumpVersion);
            }
            Step::DumpVersion => {
                self.header.pg_dump_version = text(value);
                self.header_done = true;
                self.begin(Step::TocCount);
            }
            Step::Entry(field) => {
                let minor = self.header.version.1;
                let next = match field {
                    Field::TableOid => Field::Oid,
                    Field::Oid => Field::Tag,
                    Field::Tag => {
                        self.entry.tag = value;
                        Field::Desc
                    }
                    Field::Desc => {
                        self.entry.desc = value;
                        Field::Section
                    }
                    Field::Defn => {
                        self.entry.defn = value;
                        Field::DropStmt
                    }
                    Field::DropStmt => Field::CopyStmt,
                    Field::CopyStmt => {
                        self.entry.copy_stmt = value;
                        Field::Namespace
                    }
                    Field::Namespace => {
                        self.entry.namespace = value;
                        Field::Tablespace
                    }
                    Field::Tablespace if minor >= 14 => Field::TableAm,
                    Field::Tablespace | Field::TableAm if minor >= 16 => Field::RelKind,
                    Field::Tablespace | Field::TableAm => Field::Owner,
                    Field::Owner => Field::WithOids,
                    Field::WithOids => Field::Dependency,
                    Field::Dependency if value.is_none() => Field::Offset,
                    Field::Dependency => {
                        if self.toc.is_some() {
                            let id = value.clone().map(lossy).unwrap_or_default();
                            let id = id.trim().parse::<i64>().map_err(|_| {
                                corrupt(format!(
                                    "invalid dependency {id:?}{}",
                                    self.entry_context()
                                ))
                            })?;
                            self.entry.dependencies.push(id);
                        }
                        Field::Dependency
                    }
                    _ => unreachable!("{field:?} is not a string"),
                };
                self.begin(Step::Entry(next));
            }
            _ => unreachable!("{:?} is not a string", self.step),
        }
        Ok(())
    }

    /// Start the next TOC entry, or the data blocks after the last one.
    fn begin_entry(&mut self) {
        if self.toc_index < self.toc_count {
            self.entry = Entry {
                start: self.pos,
                ..Entry::default()
            };
            self.begin(Step::Entry(Field::DumpId));
        } else {
            self.entry = Entry::default();
            self.begin(Step::BlockType);
        }
    }

    /// The current TOC entry is complete: register it if it can own a data block.
    fn end_entry(&mut self) -> Result<()> {
        let entry = std::mem::take(&mut self.entry);
        if let Some(toc) = &mut self.toc {
            let text = |v: &Option<Vec<u8>>| v.clone().map(lossy).unwrap_or_default();
            toc.push(TocEntry {
                dump_id: entry.dump_id,
                desc: text(&entry.desc),
                namespace: text(&entry.namespace),
                tag: text(&entry.tag),
                dependencies: entry.dependencies.clone(),
                copy_stmt: text(&entry.copy_stmt),
                defn: text(&entry.defn),
            });
        }
        let kind = match entry.desc.as_deref() {
            Some(b"TABLE DATA") => {
                self.tables.push(TableStats {
                    schema: entry.namespace.map(lossy).unwrap_or_default(),
                    name: entry.tag.map(lossy).unwrap_or_default(),
                    rows: 0,
                    bytes: 0,
                });
                Some(TargetKind::Table(self.tables.len() - 1))
            }
            Some(b"BLOBS") => {
                self.has_large_objects = true;
                Some(TargetKind::LargeObjects)
            }
            _ if entry.had_dumper => Some(TargetKind::Other),
            _ => None,
        };
        let mut file = None;
        if let (Some(kind), Some(name)) = (kind, &entry.file) {
            let name = lossy(name.clone());
            if dr_core::pieces::check_piece_name(&name).is_err() {
                return Err(corrupt(format!(
                    "TOC entry {} (dump id {}) names the data file {name:?}, which is not a plain \
                     file name",
                    self.toc_index + 1,
                    entry.dump_id
                )));
            }
            file = Some(DataFile {
                name: name.clone(),
                holds: kind.holds(),
            });
            self.files.push((name, kind));
        }
        if self.directory {
            self.layout.push(EntryLayout {
                dump_id: entry.dump_id,
                file_field: entry.extra_at..self.pos,
                file,
            });
        }
        if let Some(kind) = kind {
            let target = Target { kind, seen: false };
            if self.targets.insert(entry.dump_id, target).is_some() {
                return Err(corrupt(format!(
                    "TOC entry {} at byte {} repeats dump id {}",
                    self.toc_index + 1,
                    entry.start,
                    entry.dump_id
                )));
            }
        }
        self.toc_index += 1;
        self.begin_entry();
        Ok(())
    }

    /// A BLK_DATA block ended: leave pg_dump's end-of-COPY marker out of the table's figures.
    ///
    /// `dumpTableData_copy` follows the rows with `archprintf(fout, "\\.\n\n\n")` (pg_dump
    /// 9.x to 18 alike), so that the data restores as is from a plain script. The marker is a
    /// line `\.` of its own, which COPY's text output never produces otherwise (it doubles
    /// every backslash); a block that does not end with it (`--inserts`) is counted as is.
    fn end_table_data(&mut self) {
        let TargetKind::Table(i) = self.block.kind else {
            return;
        };
        let t = &mut self.tables[i];
        let tail = self.block.tail;
        let marker = tail & 0xff_ffff_ffff == u64::from_be_bytes(*b"\0\0\0\\.\n\n\n");
        let own_line = t.bytes == END_OF_COPY
            || (t.bytes > END_OF_COPY && (tail >> 40) & 0xff == u64::from(b'\n'));
        if marker && own_line {
            t.rows -= 3;
            t.bytes -= END_OF_COPY;
        }
    }

    /// A data block's dump id is read: find its TOC entry and start reading its contents.
    fn start_block(&mut self, dump_id: i64) -> Result<()> {
        let start = self.block.start;
        let block_type = self.block.block_type;
        let Some(target) = self.targets.get_mut(&dump_id) else {
            return Err(corrupt(format!(
                "the data block at byte {start} belongs to dump id {dump_id}, \
                 which has no data-bearing TOC entry"
            )));
        };
        if target.seen {
            return Err(corrupt(format!(
                "a second data block for dump id {dump_id} at byte {start}"
            )));
        }
        target.seen = true;
        let kind = target.kind;
        let expected = match kind {
            TargetKind::Table(_) => Some(BLK_DATA),
            TargetKind::LargeObjects => Some(BLK_BLOBS),
            TargetKind::Other => None,
        };
        self.block.dump_id = dump_id;
        self.block.kind = kind;
        if expected.is_some_and(|t| t != block_type) {
            return Err(corrupt(format!(
                "the data block at byte {start} for {} has type {block_type}",
                self.describe_block()
            )));
        }
        self.begin(if block_type == BLK_BLOBS {
            Step::BlobOid
        } else {
            Step::ChunkLen
        });
        Ok(())
    }
}

impl fmt::Display for ArchiveHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (maj, min, rev) = self.version;
        write!(
            f,
            "pg_dump custom archive {maj}.{min}-{rev} of database {:?} \
             (server {}, pg_dump {})",
            self.database, self.server_version, self.pg_dump_version
        )
    }
}

/// The error for a compressed archive.
fn compressed(detail: String) -> Error {
    Error::new(
        ErrorKind::Unsupported,
        format!("compressed pg_dump archives are not supported: dump with -Z0 ({detail})"),
    )
}

/// A [`ErrorKind::Corrupt`] error about the archive.
fn corrupt(message: String) -> Error {
    Error::corrupt(format!("pg_dump archive: {message}"))
}

/// Bytes as text, replacing what is not UTF-8 (names in other server encodings).
fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// `remaining` capped at `available`, as a slice length.
fn clamp(remaining: u64, available: usize) -> usize {
    if remaining < available as u64 {
        remaining as usize
    } else {
        available
    }
}

/// The number of `'\n'` bytes in `data`. Counts in 64-byte blocks with byte-wide counters,
/// which the compiler vectorises.
pub(crate) fn count_newlines(data: &[u8]) -> u64 {
    let mut blocks = data.chunks_exact(64);
    let mut total = 0u64;
    for block in &mut blocks {
        let mut n = 0u8;
        for &b in block {
            n += u8::from(b == b'\n');
        }
        total += u64::from(n);
    }
    total + blocks.remainder().iter().filter(|&&b| b == b'\n').count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pg_dump -Fc -Z0` (15.18) of the database built by tests/fixtures/regen.sh, piped.
    const PG15: &[u8] = include_bytes!("../tests/fixtures/custom_pg15.dump");
    /// The same, written with `-f` (the TOC rewritten with data offsets).
    const PG15_SEEKABLE: &[u8] = include_bytes!("../tests/fixtures/custom_pg15_seekable.dump");
    /// `-t public.texts` only: no large objects.
    const PG15_ONE_TABLE: &[u8] = include_bytes!("../tests/fixtures/custom_pg15_one_table.dump");
    /// `-t public.texts` with pg_dump's default compression.
    const PG15_COMPRESSED: &[u8] = include_bytes!("../tests/fixtures/custom_pg15_compressed.dump");

    fn stats(schema: &str, name: &str, rows: u64, bytes: u64) -> TableStats {
        TableStats {
            schema: schema.to_owned(),
            name: name.to_owned(),
            rows,
            bytes,
        }
    }

    /// The truth, from SQL (`count(*)` and `COPY … TO STDOUT | wc -c`, printed by regen.sh),
    /// in the archive's TOC order.
    fn pg15_expected() -> Vec<TableStats> {
        vec![
            stats("public", "blobs_inline", 40, 5391),
            stats("public", "empty_table", 0, 0),
            stats("public", "measurements_2024", 366, 5380),
            stats("public", "measurements_2025", 134, 2010),
            stats("public", "no_columns", 3, 3),
            stats("public", "numbers", 2500, 112_436),
            stats("public", "texts", 8, 1778),
            stats("Ünïcode schema", "Tabelle \"quoted\" ✓", 3, 13),
            stats("", LARGE_OBJECTS, 3, 24_018),
        ]
    }

    fn inspect_in_pieces(archive: &[u8], piece: usize) -> Result<DumpStats> {
        let mut inspector = ArchiveInspector::new();
        for chunk in archive.chunks(piece.max(1)) {
            inspector.feed(chunk)?;
        }
        inspector.finish()
    }

    fn inspect(archive: &[u8]) -> Result<DumpStats> {
        inspect_in_pieces(archive, archive.len())
    }

    /// A small deterministic generator (xorshift64*), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn pg15_fixture_counts_match_sql() {
        assert_eq!(inspect(PG15).unwrap().tables, pg15_expected());
    }

    #[test]
    fn pg15_seekable_fixture_counts_match_sql() {
        assert_eq!(inspect(PG15_SEEKABLE).unwrap().tables, pg15_expected());
    }

    #[test]
    fn pg15_one_table_fixture_has_no_large_objects_entry() {
        assert_eq!(
            inspect(PG15_ONE_TABLE).unwrap().tables,
            vec![stats("public", "texts", 8, 1778)]
        );
    }

    #[test]
    fn pg15_header_is_parsed() {
        let mut inspector = ArchiveInspector::new();
        inspector.feed(&PG15[..20]).unwrap();
        assert!(inspector.header().is_none());
        inspector.feed(&PG15[20..]).unwrap();
        let header = inspector.header().unwrap().clone();
        assert_eq!(header.version, (1, 14, 0));
        assert_eq!((header.int_size, header.off_size), (4, 8));
        assert_eq!(header.database, "archive_fixture_main");
        assert_eq!(header.server_version, "15.18 (Debian 15.18-0+deb12u1)");
        assert_eq!(header.pg_dump_version, "15.18 (Debian 15.18-0+deb12u1)");
        assert!((2025..2100).contains(&header.created.year), "{header:?}");
        assert!((1..=12).contains(&header.created.month), "{header:?}");
        assert!(header.to_string().contains("archive_fixture_main"));
        inspector.finish().unwrap();
    }

    #[test]
    fn recorded_toc_lists_entries_and_their_dependencies() {
        let mut inspector = ArchiveInspector::recording_toc();
        inspector.feed(&PG15[..200]).unwrap();
        assert!(inspector.toc().is_none(), "not before the TOC is complete");
        inspector.feed(&PG15[200..]).unwrap();
        let toc = inspector.toc().unwrap().to_vec();
        for e in &toc {
            eprintln!(
                "{} {:?} {:?} {:?} {:?}",
                e.dump_id, e.desc, e.namespace, e.tag, e.dependencies
            );
        }
        let find = |desc: &str, tag: &str| {
            toc.iter()
                .find(|e| e.desc == desc && e.tag == tag)
                .unwrap_or_else(|| panic!("no {desc} {tag} in {toc:?}"))
        };
        let table = find("TABLE", "texts");
        assert_eq!(table.namespace, "public");
        assert!(find("TABLE DATA", "texts")
            .dependencies
            .contains(&table.dump_id));
        assert!(find("COMMENT", "TABLE texts")
            .dependencies
            .contains(&table.dump_id));
        // Counting is unchanged by recording, and a plain inspector records nothing.
        assert_eq!(inspector.finish().unwrap().tables, pg15_expected());
        let mut plain = ArchiveInspector::new();
        plain.feed(PG15).unwrap();
        assert!(plain.toc().is_none());
    }

    #[test]
    fn compressed_archive_is_unsupported() {
        let err = inspect(PG15_COMPRESSED).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
        assert!(
            err.message()
                .starts_with("compressed pg_dump archives are not supported: dump with -Z0"),
            "{err}"
        );
    }

    #[test]
    fn counts_do_not_depend_on_how_the_stream_is_split() {
        for piece in [1, 2, 3, 5, 7, 64, 4096, 65_536, PG15.len()] {
            assert_eq!(
                inspect_in_pieces(PG15, piece).unwrap().tables,
                pg15_expected(),
                "pieces of {piece} bytes"
            );
        }
        // Irregular pieces, including empty ones.
        let mut rng = Rng(0x5eed);
        for _ in 0..20 {
            let mut inspector = ArchiveInspector::new();
            let mut rest = PG15;
            while !rest.is_empty() {
                let n = rng.below(300).min(rest.len());
                inspector.feed(&rest[..n]).unwrap();
                rest = &rest[n..];
            }
            assert_eq!(inspector.finish().unwrap().tables, pg15_expected());
        }
    }

    /// Every proper prefix of an archive is a valid prefix (feeding it succeeds) but an
    /// incomplete archive (finishing fails with Corrupt), except where a data block ends.
    fn check_every_cut(archive: &[u8]) -> usize {
        let mut inspector = ArchiveInspector::new();
        let mut complete_cuts = 0;
        for (i, byte) in archive.iter().enumerate() {
            match inspector.clone().finish() {
                Ok(_) => complete_cuts += 1,
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Corrupt, "cut at {i}: {e}");
                    assert!(e.message().starts_with("pg_dump archive: "), "{e}");
                }
            }
            inspector.feed(std::slice::from_ref(byte)).unwrap();
        }
        inspector.finish().unwrap();
        complete_cuts
    }

    #[test]
    fn truncated_archives_fail_with_corrupt() {
        // A cut is undetectable only at the end of a data block: the archive has no trailer
        // when piped. Those cuts lose whole tables, which the manifest's table list shows.
        // Here: right after the TOC, and after each data block but the last.
        assert_eq!(check_every_cut(PG15_ONE_TABLE), 1);
        assert_eq!(check_every_cut(PG15), 9);

        let err = inspect(&PG15[..PG15.len() - 1]).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert!(
            err.message().contains("inside the data block of BLOBS"),
            "{err}"
        );
        let err = inspect(&PG15[..100]).unwrap_err();
        assert!(err.message().contains("inside the archive header"), "{err}");
        let err = inspect(&PG15[..1000]).unwrap_err();
        assert!(err.message().contains("inside TOC entry"), "{err}");
        let err = inspect(b"").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0xdecafbad);
        let prefixes: [&[u8]; 4] = [
            b"",
            b"PGDMP",
            b"PGDMP\x01\x0e\x00\x04\x08\x01",
            &PG15[..PG15.len().min(2000)],
        ];
        for round in 0..2000 {
            let mut bytes = prefixes[round % prefixes.len()].to_vec();
            let len = rng.below(3000);
            // Small values make plausible lengths, signs and block types more likely.
            let small = rng.below(2) == 0;
            bytes.extend((0..len).map(|_| {
                let v = rng.next() as u8;
                if small {
                    v % 4
                } else {
                    v
                }
            }));
            run_in_random_pieces(&bytes, &mut rng);
        }
    }

    #[test]
    fn mutated_archives_never_panic() {
        let mut rng = Rng(0xfeed);
        for round in 0..600 {
            let source = if round % 3 == 0 { PG15 } else { PG15_ONE_TABLE };
            let mut bytes = source.to_vec();
            for _ in 0..1 + rng.below(4) {
                // Mostly in the header and TOC, where the structure is denser.
                let limit = if rng.below(2) == 0 {
                    12_000
                } else {
                    bytes.len()
                };
                let at = rng.below(limit.min(bytes.len()));
                bytes[at] = match rng.below(3) {
                    0 => bytes[at] ^ (1 << rng.below(8)),
                    1 => rng.next() as u8,
                    _ => 0xff,
                };
            }
            if rng.below(4) == 0 {
                bytes.truncate(rng.below(bytes.len()));
            }
            run_in_random_pieces(&bytes, &mut rng);
        }
    }

    fn run_in_random_pieces(bytes: &[u8], rng: &mut Rng) {
        let mut inspector = ArchiveInspector::new();
        let mut rest = bytes;
        let mut result = Ok(());
        while !rest.is_empty() && result.is_ok() {
            let n = (1 + rng.below(700)).min(rest.len());
            result = inspector.feed(&rest[..n]);
            rest = &rest[n..];
        }
        let result = result.and_then(|()| inspector.finish().map(|_| ()));
        if let Err(e) = result {
            assert!(
                matches!(e.kind(), ErrorKind::Corrupt | ErrorKind::Unsupported),
                "{e}"
            );
        }
    }

    /// Writes archives by the rules of pg_dump's WriteHead/WriteToc/_CustomWriteFunc, for the
    /// versions no local pg_dump produces.
    struct Builder {
        minor: u8,
        out: Vec<u8>,
    }

    impl Builder {
        fn new(minor: u8) -> Self {
            Self::with(1, minor, 1, 0)
        }

        fn with(major: u8, minor: u8, format: u8, compression: i64) -> Self {
            let mut b = Builder {
                minor,
                out: b"PGDMP".to_vec(),
            };
            b.out.extend([major, minor, 0, 4, 8, format]);
            if minor >= 15 {
                b.out.push(compression as u8);
            } else {
                b.int(compression);
            }
            for v in [58, 59, 23, 31, 11, 125, 0] {
                b.int(v);
            }
            b.str(Some("synthetic"));
            b.str(Some("17.2"));
            b.str(Some("17.2"));
            b
        }

        fn int(&mut self, v: i64) {
            self.out.push(u8::from(v < 0));
            self.out
                .extend_from_slice(&(v.unsigned_abs() as u32).to_le_bytes());
        }

        fn str(&mut self, s: Option<&str>) {
            match s {
                Some(s) => {
                    self.int(s.len() as i64);
                    self.out.extend_from_slice(s.as_bytes());
                }
                None => self.int(-1),
            }
        }

        fn entry(&mut self, dump_id: i64, had_dumper: bool, desc: &str, schema: &str, tag: &str) {
            self.int(dump_id);
            self.int(i64::from(had_dumper));
            self.str(Some("0"));
            self.str(Some("16384"));
            self.str(Some(tag));
            self.str(Some(desc));
            self.int(2);
            self.str(Some(""));
            self.str(Some(""));
            self.str(Some("COPY x (a) FROM stdin;\n"));
            self.str(Some(schema));
            self.str(Some(""));
            if self.minor >= 14 {
                self.str(Some("heap"));
            }
            if self.minor >= 16 {
                self.int(i64::from(b'r'));
            }
            self.str(Some("postgres"));
            self.str(Some("false"));
            self.str(Some("1"));
            self.str(Some("2"));
            self.str(None);
            self.out.push(if had_dumper { 1 } else { 3 });
            self.out.extend([0; 8]);
        }

        fn data(&mut self, dump_id: i64, chunks: &[&[u8]]) {
            self.out.push(BLK_DATA);
            self.int(dump_id);
            self.chunks(chunks);
        }

        fn chunks(&mut self, chunks: &[&[u8]]) {
            for c in chunks {
                self.int(c.len() as i64);
                self.out.extend_from_slice(c);
            }
            self.int(0);
        }

        fn blobs(&mut self, dump_id: i64, blobs: &[(i64, &[&[u8]])]) {
            self.out.push(BLK_BLOBS);
            self.int(dump_id);
            for (oid, chunks) in blobs {
                self.int(*oid);
                self.chunks(chunks);
            }
            self.int(0);
        }
    }

    const END: &[u8] = b"\\.\n\n\n";

    /// A small archive of the given version with every kind of entry.
    fn synthetic(minor: u8) -> Vec<u8> {
        let mut b = Builder::new(minor);
        b.int(8);
        b.entry(1, false, "TABLE", "s", "t1");
        b.entry(2, true, "TABLE DATA", "s", "t1");
        b.entry(3, true, "TABLE DATA", "s", "excluded");
        b.entry(4, false, "SEQUENCE SET", "s", "seq");
        b.entry(5, true, "BLOBS", "", "BLOBS");
        b.entry(6, true, "TABLE DATA", "", "t2");
        b.entry(7, true, "TABLE DATA", "", "t3");
        b.entry(8, true, "TABLE DATA", "", "t4");
        b.data(
            2,
            &[&b"1\tone\n"[..], &b"2\ttwo\\nlines\n"[..], &b"3\n"[..], END],
        );
        // OID 3000000000 does not fit an int: pg_dump writes it as -1294967296.
        b.blobs(
            5,
            &[
                (16385, &[b"abc", b"de\n"]),
                (-1_294_967_296, &[]),
                (16390, &[b"x"]),
            ],
        );
        b.data(6, &[END]);
        // The value `x\.` then two empty strings: the data ends like the marker, but the
        // marker is not a line of its own. t3 has no marker (as if a pg_dump stopped writing
        // it), t4 has one.
        let tricky: [&[u8]; 3] = [b"x\\\\.\n", b"\n", b"\n"];
        b.data(7, &tricky);
        b.data(8, &[tricky[0], tricky[1], tricky[2], END]);
        b.out
    }

    fn synthetic_expected() -> Vec<TableStats> {
        vec![
            stats("s", "t1", 3, 21),
            stats("s", "excluded", 0, 0),
            stats("", "t2", 0, 0),
            stats("", "t3", 3, 7),
            stats("", "t4", 3, 7),
            stats("", LARGE_OBJECTS, 3, 7),
        ]
    }

    #[test]
    fn synthetic_archives_of_every_supported_version() {
        for minor in MIN_MINOR..=MAX_MINOR {
            let archive = synthetic(minor);
            for piece in [1, 3, archive.len()] {
                assert_eq!(
                    inspect_in_pieces(&archive, piece).unwrap().tables,
                    synthetic_expected(),
                    "version 1.{minor}, pieces of {piece}"
                );
            }
            let mut inspector = ArchiveInspector::new();
            inspector.feed(&archive).unwrap();
            let header = inspector.header().unwrap();
            assert_eq!(header.version, (1, minor, 0));
            assert_eq!(header.database, "synthetic");
            assert_eq!(
                header.created,
                CreationTime {
                    year: 2025,
                    month: 12,
                    day: 31,
                    hour: 23,
                    minute: 59,
                    second: 58,
                    is_dst: 0
                }
            );
            // Right after the TOC, and after each of the 5 blocks but the last.
            assert_eq!(check_every_cut(&archive), 5, "version 1.{minor}");
        }
    }

    #[test]
    fn an_archive_without_entries_or_data_is_complete() {
        let mut b = Builder::new(14);
        b.int(0);
        assert_eq!(inspect(&b.out).unwrap().tables, vec![]);
    }

    #[test]
    fn unknown_block_type_is_reported_with_its_offset() {
        let mut archive = synthetic(14);
        let at = archive.len();
        archive.push(7);
        let err = inspect(&archive).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Corrupt);
        assert_eq!(
            err.message(),
            format!("pg_dump archive: expected a data block at byte {at}, found type 7")
        );
    }

    #[test]
    fn unsupported_versions_formats_and_compression() {
        let cases = [
            (
                Builder::with(1, 11, 1, 0).out,
                "version 1.11.0 is not supported",
            ),
            (
                Builder::with(1, 17, 1, 0).out,
                "version 1.17.0 is not supported",
            ),
            (
                Builder::with(2, 14, 1, 0).out,
                "version 2.14.0 is not supported",
            ),
            (Builder::with(1, 14, 5, 0).out, "format 5 (directory"),
            (Builder::with(1, 14, 3, 0).out, "format 3 (tar)"),
            (
                Builder::with(1, 14, 1, -1).out,
                "dump with -Z0 (this archive uses zlib",
            ),
            (
                Builder::with(1, 16, 1, 1).out,
                "dump with -Z0 (this archive uses gzip)",
            ),
            (
                Builder::with(1, 15, 1, 3).out,
                "dump with -Z0 (this archive uses zstd)",
            ),
        ];
        for (archive, expected) in cases {
            let mut inspector = ArchiveInspector::new();
            let err = inspector.feed(&archive).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
            assert!(err.message().contains(expected), "{err} / {expected}");
        }
    }

    #[test]
    fn structural_errors_are_corrupt_and_located() {
        let base = {
            let mut b = Builder::new(16);
            b.int(2);
            b.entry(1, true, "TABLE DATA", "s", "t");
            b.entry(2, false, "TABLE", "s", "t");
            b
        };
        let toc_end = base.out.len();
        let cases: Vec<(Vec<u8>, String)> = vec![
            (
                b"PGDMQ\x01\x0e".to_vec(),
                "no PGDMP signature at byte 0".into(),
            ),
            (
                {
                    let mut b = Builder {
                        minor: 16,
                        out: base.out.clone(),
                    };
                    b.data(9, &[]);
                    b.out
                },
                format!("data block at byte {toc_end} belongs to dump id 9"),
            ),
            (
                {
                    let mut b = Builder {
                        minor: 16,
                        out: base.out.clone(),
                    };
                    b.data(2, &[]);
                    b.out
                },
                format!("data block at byte {toc_end} belongs to dump id 2"),
            ),
            (
                {
                    let mut b = Builder {
                        minor: 16,
                        out: base.out.clone(),
                    };
                    b.data(1, &[&b"a\n"[..]]);
                    b.data(1, &[&b"b\n"[..]]);
                    b.out
                },
                "a second data block for dump id 1".into(),
            ),
            (
                {
                    let mut b = Builder {
                        minor: 16,
                        out: base.out.clone(),
                    };
                    b.blobs(1, &[]);
                    b.out
                },
                format!("data block at byte {toc_end} for TABLE DATA s.t (dump id 1) has type 3"),
            ),
            (
                {
                    let mut b = Builder {
                        minor: 16,
                        out: base.out.clone(),
                    };
                    b.out.push(BLK_DATA);
                    b.int(1);
                    b.int(-5);
                    b.out
                },
                format!("negative chunk length -5 at byte {}", toc_end + 6),
            ),
            (
                {
                    let mut b = Builder {
                        minor: 16,
                        out: base.out.clone(),
                    };
                    b.out.push(BLK_DATA);
                    b.out.extend([2, 1, 0, 0, 0]);
                    b.out
                },
                format!("invalid integer at byte {}: sign byte 2", toc_end + 1),
            ),
            (
                {
                    let mut b = Builder::new(16);
                    b.int(1);
                    b.entry(1, true, "TABLE DATA", "s", "t");
                    let flag_at = b.out.len() - 9;
                    b.out[flag_at] = 9;
                    b.out
                },
                "invalid data offset flag 9".into(),
            ),
            (
                {
                    let mut b = Builder::new(16);
                    b.int(2);
                    b.entry(1, true, "TABLE DATA", "s", "t");
                    b.entry(1, true, "TABLE DATA", "s", "u");
                    b.out
                },
                "repeats dump id 1".into(),
            ),
            (
                {
                    let mut b = Builder::new(16);
                    b.int(1);
                    b.int(0);
                    b.out
                },
                "has dump id 0, which is out of range".into(),
            ),
            (
                {
                    let mut b = Builder::new(16);
                    b.int(1);
                    b.int(1);
                    b.int(1);
                    b.str(Some("0"));
                    b.str(Some("0"));
                    b.int(2_000_000_000);
                    b.out
                },
                "implausible 2000000000-byte name".into(),
            ),
        ];
        for (archive, expected) in cases {
            let err = inspect(&archive).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Corrupt, "{err}");
            assert!(err.message().starts_with("pg_dump archive: "), "{err}");
            assert!(err.message().contains(&expected), "{err} / {expected}");
        }
    }

    #[test]
    fn errors_are_sticky() {
        let mut inspector = ArchiveInspector::new();
        let first = inspector.feed(b"NOTPGDMP").unwrap_err();
        let again = inspector.feed(PG15).unwrap_err();
        assert_eq!(first.message(), again.message());
        let last = inspector.finish().unwrap_err();
        assert_eq!(first.message(), last.message());
        assert_eq!(last.kind(), ErrorKind::Corrupt);
    }

    #[test]
    fn count_newlines_matches_a_naive_count() {
        let mut rng = Rng(42);
        for len in (0..300).chain([1000, 4096, 65_537]) {
            let data: Vec<u8> = (0..len)
                .map(|_| if rng.below(3) == 0 { b'\n' } else { b'a' })
                .collect();
            let naive = data.iter().filter(|&&b| b == b'\n').count() as u64;
            assert_eq!(count_newlines(&data), naive, "len {len}");
        }
        assert_eq!(count_newlines(&[b'\n'; 1000]), 1000);
    }

    #[test]
    fn the_payload_check_compares_every_table_with_the_manifest() {
        let recount = |expected: Vec<TableStats>| {
            let mut check: Box<dyn PayloadCheck> = Box::new(ArchiveInspector::new());
            for chunk in PG15.chunks(4096) {
                check.feed(chunk)?;
            }
            check.check(&DumpStats {
                tables: expected,
                ..Default::default()
            })
        };
        assert_eq!(recount(pg15_expected()).unwrap().tables, pg15_expected());

        let mut fewer = pg15_expected();
        fewer.pop();
        let e = recount(fewer).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(e.message(), "payload holds 9 tables, the manifest lists 8");

        let mut more_rows = pg15_expected();
        more_rows[5].rows += 1;
        let e = recount(more_rows).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Corrupt);
        assert_eq!(
            e.message(),
            "table public.numbers has 2500 rows in the payload, the manifest says public.numbers has 2501"
        );

        // A truncated archive fails as the inspector says, whatever the manifest.
        let mut check: Box<dyn PayloadCheck> = Box::new(ArchiveInspector::new());
        check.feed(&PG15[..PG15.len() - 10]).unwrap();
        assert_eq!(
            check
                .check(&DumpStats {
                    tables: pg15_expected(),
                    ..Default::default()
                })
                .unwrap_err()
                .kind(),
            ErrorKind::Corrupt
        );
    }
}
