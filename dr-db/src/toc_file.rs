//! A directory archive's `toc.dat`, read whole and written back: what lets a dump whose
//! table data dr reads itself (`COPY … TO STDOUT`, see [`crate::own_copy`]) carry the
//! `TABLE DATA` entries pg_dump would have written for those tables.
//!
//! [`crate::archive::ArchiveInspector`] streams and keeps little; this module keeps every
//! field of every entry, so that [`TocFile::to_bytes`] writes back exactly what
//! [`TocFile::parse`] read (the tests check it on pg_dump's own output). The encoding is the
//! one [`crate::archive`] describes: ints are a sign byte and `intSize` magnitude bytes
//! (least significant first), strings an int length (-1: NULL) and their bytes; a
//! `toc.dat` entry ends with its data file's name.

use dr_core::{Error, Result};

/// `SECTION_DATA` of pg_dump's `teSection`.
pub const SECTION_DATA: i64 = 3;
/// `SECTION_POST_DATA`.
pub const SECTION_POST_DATA: i64 = 4;

/// A string field: `None` is pg_dump's NULL (written as length -1), distinct from empty.
pub type Str = Option<Vec<u8>>;

/// One TOC entry, every field as pg_dump wrote it (`WriteToc` in `pg_backup_archiver.c`,
/// `_WriteExtraToc` in `pg_backup_directory.c`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocFileEntry {
    /// The entry's dump id.
    pub dump_id: i64,
    /// 1 when the entry has data (a data file), 0 otherwise.
    pub had_dumper: i64,
    /// The catalog id: `pg_class`'s OID for a table, 0 for table data; decimal strings.
    pub table_oid: Str,
    /// The object's OID (for table data: the table's).
    pub oid: Str,
    /// Its name.
    pub tag: Str,
    /// What it is (`TABLE`, `TABLE DATA`, …).
    pub desc: Str,
    /// `SECTION_*`.
    pub section: i64,
    /// Its `CREATE …` SQL.
    pub defn: Str,
    /// Its `DROP …` SQL.
    pub drop_stmt: Str,
    /// A `TABLE DATA` entry's `COPY … FROM stdin;` statement.
    pub copy_stmt: Str,
    /// Its schema.
    pub namespace: Str,
    /// Its tablespace.
    pub tablespace: Str,
    /// Its table access method (archive 1.14+, else `None` and not written).
    pub table_am: Option<Str>,
    /// Its relkind (archive 1.16+, else `None` and not written).
    pub relkind: Option<i64>,
    /// Its owner.
    pub owner: Str,
    /// The obsolete "with OIDs" flag, `"false"`.
    pub with_oids: Str,
    /// The dump ids it depends on, as decimal strings.
    pub dependencies: Vec<Vec<u8>>,
    /// Its data file (`""` when it has none).
    pub file: Str,
}

impl TocFileEntry {
    /// Its description as text.
    pub fn desc(&self) -> &str {
        text(&self.desc)
    }

    /// Its schema as text (empty when NULL).
    pub fn namespace(&self) -> &str {
        text(&self.namespace)
    }

    /// Its name as text.
    pub fn tag(&self) -> &str {
        text(&self.tag)
    }

    /// The OID it describes, if it names one.
    pub fn oid(&self) -> Option<u32> {
        text(&self.oid).parse().ok()
    }
}

fn text(s: &Str) -> &str {
    s.as_deref()
        .and_then(|b| std::str::from_utf8(b).ok())
        .unwrap_or("")
}

/// A whole `toc.dat`: its header bytes as read, then its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TocFile {
    /// Everything before the entry count (magic, versions, sizes, format, compression,
    /// creation time, database and version strings), kept as read.
    header: Vec<u8>,
    /// Archive version (major, minor, revision).
    version: (u8, u8, u8),
    int_size: usize,
    /// The entries, in TOC order.
    pub entries: Vec<TocFileEntry>,
    /// Whatever follows the last entry (nothing in pg_dump's output), kept as read.
    trailer: Vec<u8>,
}

/// Reads the encoding from a byte slice, with errors that say where.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    int_size: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let Some(end) = end else {
            return Err(Error::corrupt(format!(
                "toc.dat ends inside {what} at byte {}",
                self.at
            )));
        };
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn byte(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn int(&mut self, what: &str) -> Result<i64> {
        let at = self.at;
        let sign = self.byte(what)?;
        let magnitude = self.take(self.int_size, what)?;
        let mut value: i64 = 0;
        for (i, &b) in magnitude.iter().enumerate() {
            value |= i64::from(b) << (8 * i);
        }
        match sign {
            0 => Ok(value),
            1 => Ok(-value),
            s => Err(Error::corrupt(format!(
                "toc.dat has the sign byte {s} in {what} at byte {at}"
            ))),
        }
    }

    fn string(&mut self, what: &str) -> Result<Str> {
        let at = self.at;
        let len = self.int(what)?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| {
            Error::corrupt(format!("toc.dat has a string of {len} bytes at byte {at}"))
        })?;
        Ok(Some(self.take(len, what)?.to_vec()))
    }
}

/// Writes the encoding.
struct Writer {
    out: Vec<u8>,
    int_size: usize,
}

impl Writer {
    fn int(&mut self, value: i64) {
        self.out.push(u8::from(value < 0));
        let mut magnitude = value.unsigned_abs();
        for _ in 0..self.int_size {
            self.out.push(magnitude as u8);
            magnitude >>= 8;
        }
    }

    fn string(&mut self, s: &Str) {
        match s {
            None => self.int(-1),
            Some(b) => {
                self.int(b.len() as i64);
                self.out.extend_from_slice(b);
            }
        }
    }
}

impl TocFile {
    /// Read a whole `toc.dat` (archive versions 1.12 to 1.16, as [`crate::archive`]).
    pub fn parse(bytes: &[u8]) -> Result<TocFile> {
        if bytes.len() < 11 || &bytes[..5] != b"PGDMP" {
            return Err(Error::corrupt("toc.dat does not start with PGDMP"));
        }
        let version = (bytes[5], bytes[6], bytes[7]);
        if version.0 != 1 || !(12..=16).contains(&version.1) {
            return Err(Error::corrupt(format!(
                "toc.dat has archive version {}.{}.{}, which dr does not read",
                version.0, version.1, version.2
            )));
        }
        let int_size = usize::from(bytes[8]);
        if !(1..=8).contains(&int_size) {
            return Err(Error::corrupt(format!(
                "toc.dat has an integer size of {int_size}"
            )));
        }
        let mut r = Reader {
            bytes,
            at: 11,
            int_size,
        };
        if version.1 >= 15 {
            r.byte("the compression algorithm")?;
        } else {
            r.int("the compression level")?;
        }
        for _ in 0..7 {
            r.int("the creation time")?;
        }
        for what in [
            "the database name",
            "the server version",
            "the pg_dump version",
        ] {
            r.string(what)?;
        }
        let header = bytes[..r.at].to_vec();
        let count = r.int("the entry count")?;
        let count = usize::try_from(count)
            .map_err(|_| Error::corrupt(format!("toc.dat has {count} entries")))?;
        let mut entries = Vec::with_capacity(count.min(1 << 16));
        for _ in 0..count {
            entries.push(read_entry(&mut r, version.1)?);
        }
        Ok(TocFile {
            header,
            version,
            int_size,
            entries,
            trailer: bytes[r.at..].to_vec(),
        })
    }

    /// The archive's minor version (14 from pg_dump 12–15, 15 from 16, 16 from 17 and 18).
    pub fn minor_version(&self) -> u8 {
        self.version.1
    }

    /// The bytes of this `toc.dat`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer {
            out: self.header.clone(),
            int_size: self.int_size,
        };
        w.int(self.entries.len() as i64);
        for e in &self.entries {
            w.int(e.dump_id);
            w.int(e.had_dumper);
            for s in [&e.table_oid, &e.oid, &e.tag, &e.desc] {
                w.string(s);
            }
            w.int(e.section);
            for s in [
                &e.defn,
                &e.drop_stmt,
                &e.copy_stmt,
                &e.namespace,
                &e.tablespace,
            ] {
                w.string(s);
            }
            if let Some(am) = &e.table_am {
                w.string(am);
            }
            if let Some(relkind) = e.relkind {
                w.int(relkind);
            }
            w.string(&e.owner);
            w.string(&e.with_oids);
            for d in &e.dependencies {
                w.string(&Some(d.clone()));
            }
            w.string(&None);
            w.string(&e.file);
        }
        w.out.extend_from_slice(&self.trailer);
        w.out
    }

    /// The largest dump id in use.
    pub fn max_dump_id(&self) -> i64 {
        self.entries.iter().map(|e| e.dump_id).max().unwrap_or(0)
    }

    /// Insert a `TABLE DATA` entry where pg_dump's sort puts it: among the other `TABLE
    /// DATA` entries by schema, then name (byte order, then OID: `DOTypeNameCompare`), and
    /// when there is none, before the first entry of the data or post-data section.
    pub fn insert_table_data(&mut self, entry: TocFileEntry) {
        let key = |e: &TocFileEntry| {
            (
                e.namespace.clone().unwrap_or_default(),
                e.tag.clone().unwrap_or_default(),
                e.oid().unwrap_or(0),
            )
        };
        let new_key = key(&entry);
        let is_data = |e: &TocFileEntry| e.desc() == "TABLE DATA";
        let at = match self.entries.iter().rposition(is_data) {
            Some(last) => self
                .entries
                .iter()
                .position(|e| is_data(e) && key(e) > new_key)
                .unwrap_or(last + 1),
            None => self
                .entries
                .iter()
                .position(|e| e.section == SECTION_DATA || e.section == SECTION_POST_DATA)
                .unwrap_or(self.entries.len()),
        };
        self.entries.insert(at, entry);
    }
}

fn read_entry(r: &mut Reader<'_>, minor: u8) -> Result<TocFileEntry> {
    let dump_id = r.int("a dump id")?;
    let had_dumper = r.int("a data flag")?;
    let table_oid = r.string("a catalog id")?;
    let oid = r.string("an OID")?;
    let tag = r.string("a tag")?;
    let desc = r.string("a description")?;
    let section = r.int("a section")?;
    let defn = r.string("a definition")?;
    let drop_stmt = r.string("a drop statement")?;
    let copy_stmt = r.string("a copy statement")?;
    let namespace = r.string("a schema name")?;
    let tablespace = r.string("a tablespace")?;
    let table_am = if minor >= 14 {
        Some(r.string("a table access method")?)
    } else {
        None
    };
    let relkind = if minor >= 16 {
        Some(r.int("a relkind")?)
    } else {
        None
    };
    let owner = r.string("an owner")?;
    let with_oids = r.string("the OIDs flag")?;
    let mut dependencies = Vec::new();
    while let Some(d) = r.string("a dependency")? {
        dependencies.push(d);
    }
    let file = r.string("a data file name")?;
    Ok(TocFileEntry {
        dump_id,
        had_dumper,
        table_oid,
        oid,
        tag,
        desc,
        section,
        defn,
        drop_stmt,
        copy_stmt,
        namespace,
        tablespace,
        table_am,
        relkind,
        owner,
        with_oids,
        dependencies,
        file,
    })
}
