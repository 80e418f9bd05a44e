//! Physical base backups by copying the data directory (`drctl backup --physical --pgdata`),
//! on the database host, between a non-exclusive `pg_backup_start()` and `pg_backup_stop()`
//! held on one session.
//!
//! The server keeps writing while the files are read: a file is read up to the size it had
//! when it was listed (it may grow or shrink meanwhile; WAL replay from the backup's start
//! repairs every page), padded with zeros if it shrank, and skipped if it vanished before it
//! was opened. Files are read in pieces by one thread, in archive order, a few pieces ahead
//! of the archive writer ([`PhysicalCopyDumper::read_ahead`]), never more pieces in memory
//! than the memory budget allows, and written as one tar archive (the payload, format
//! [`PHYSICAL_COPY_FORMAT`]) through the pipeline.
//!
//! Memory: a copy-mode backup peaked at 56–70 MiB RSS, 2.4x pgBackRest's 24 MiB or more,
//! while running no faster for its deep queues. One reader thread (not a pool: every thread that
//! allocates gets a glibc arena of its own, which keeps what was freed in it), 512 KiB
//! pieces, two ahead, one output chunk queued, and the shallow pipeline of
//! [`crate::PHYSICAL_STAGES`] took the peak from 68 to 48 MiB at the same speed
//! (BENCHMARKS.md, issue 11).
//!
//! Left out, as `pg_basebackup` leaves them out: `postmaster.pid`, `postmaster.opts`, an old
//! `backup_label`/`tablespace_map`/`backup_manifest`, `pg_internal.init`, temporary files
//! (`pgsql_tmp*`, `*.tmp` of the configuration), and the contents (not the directories) of
//! `pg_wal`, `pg_replslot`, `pg_stat_tmp`, `pg_dynshmem`, `pg_notify`, `pg_serial`,
//! `pg_snapshots` and `pg_subtrans`. WAL comes from the cluster's archive at restore.
//!
//! Tablespaces: each link `pg_tblspc/<oid>` is followed and its target's contents stored
//! under `pg_tblspc/<oid>/` in the archive; the `tablespace_map` from `pg_backup_stop` says
//! where they were. [`PhysicalRestorer`](crate::PhysicalRestorer) puts them back elsewhere.
//!
//! `backup_label` and `tablespace_map` are known only at `pg_backup_stop`, so they are the
//! archive's last members. The manifest records, besides what [`crate::PhysicalDumper`]
//! records, the tablespace map and every file's size and SHA-256 (`files`: one
//! `<sha256> <size> <path>` line each), which `drctl verify` checks against the payload
//! ([`FileChecksums`]).

use std::collections::BTreeMap;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use dr_core::stage::{ByteStream, StageOptions};
use dr_core::wal::base::{
    PHYSICAL_KIND, PHYSICAL_NAME, PROP_BACKUP_LABEL, PROP_FILES, PROP_START_LSN, PROP_START_TIME,
    PROP_STOP_LSN, PROP_STOP_TIME, PROP_SYSTEM_ID, PROP_TABLESPACE_MAP, PROP_TIMELINE,
};
use dr_core::{Dump, DumpCompletion, DumpStats, Dumper, Error, ErrorKind, Result, SourceInfo};
use futures::StreamExt;
use ring::digest;
use tokio::sync::mpsc;
use tokio_postgres::Config;

use crate::conn::{connect, db_error, Conn};
use crate::physical::BackupLabel;

mod checksums;
pub use checksums::FileChecksums;

/// The payload format: one tar archive of the data directory and its tablespaces, written
/// by dr.
pub const PHYSICAL_COPY_FORMAT: &str = "dr-pgdata-tar";

/// Bytes read from a file at once (they were 4 MiB, then 1 MiB, for no gain in speed).
const PIECE_BYTES: u64 = 512 << 10;
/// Output chunks handed to the pipeline: 1 MiB, which zstd compresses as one frame where
/// it lies (a smaller chunk is first copied into the compressor's frame buffer).
const CHUNK_BYTES: usize = 1 << 20;
/// Output chunks queued for the compressor: one keeps it busy while the next is filled.
const OUTPUT_QUEUE: usize = 1;

/// Files left out wherever they are.
const EXCLUDED_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "pg_internal.init",
];
/// Directories stored empty (their contents are rebuilt or not needed).
const EMPTIED_DIRS: &[&str] = &[
    "pg_wal",
    "pg_replslot",
    "pg_stat_tmp",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];

/// Copies a data directory as a physical base backup. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PhysicalCopyDumper {
    config: Config,
    pgdata: PathBuf,
    read_ahead: usize,
    memory_budget: u64,
}

impl PhysicalCopyDumper {
    /// A dumper for the server `config` connects to (a superuser or a user granted
    /// `pg_backup_start`/`pg_backup_stop`), whose data directory is `pgdata` on this host.
    /// Reads 2 pieces ahead within 64 MiB.
    pub fn new(config: Config, pgdata: impl Into<PathBuf>) -> Self {
        PhysicalCopyDumper {
            config,
            pgdata: pgdata.into(),
            read_ahead: 2,
            memory_budget: 64 << 20,
        }
    }

    /// Read up to `n` pieces ahead of the archive writer (more only help a store that is
    /// slower to read from than the pipeline is to compress and encrypt).
    pub fn read_ahead(mut self, n: usize) -> Self {
        self.read_ahead = n.max(1);
        self
    }

    /// Keep at most about `bytes` of file data in memory (at least one piece, 512 KiB).
    pub fn memory_budget(mut self, bytes: u64) -> Self {
        self.memory_budget = bytes;
        self
    }

    /// Pieces read ahead: as many as asked for and fit the budget beside the output chunks
    /// queued for the pipeline.
    fn in_flight(&self) -> usize {
        let room = self.memory_budget.saturating_sub(2 * CHUNK_BYTES as u64) / PIECE_BYTES;
        (room as usize).clamp(1, self.read_ahead)
    }
}

/// One member of the archive.
#[derive(Debug, Clone)]
enum Entry {
    Dir {
        name: String,
        mode: u32,
        mtime: u64,
    },
    File {
        name: String,
        path: PathBuf,
        size: u64,
        mode: u32,
        mtime: u64,
    },
}

/// What the server said when the backup started.
struct Started {
    conn: Conn,
    system_identifier: String,
    version: String,
    version_num: i32,
    started_at: DateTime<Utc>,
}

/// What the copy produced, for the manifest.
struct Copied {
    label: String,
    tablespace_map: String,
    stop_lsn: String,
    files: String,
}

#[async_trait]
impl Dumper for PhysicalCopyDumper {
    fn stage_options(&self, requested: StageOptions) -> StageOptions {
        requested.at_most(crate::PHYSICAL_STAGES)
    }

    async fn start(&self) -> Result<Dump> {
        if !self.pgdata.join("PG_VERSION").is_file() {
            return Err(Error::invalid(format!(
                "{} is not a PostgreSQL data directory (no PG_VERSION)",
                self.pgdata.display()
            )));
        }
        let started = start_backup(&self.config, &self.pgdata).await?;
        let entries = {
            let pgdata = self.pgdata.clone();
            tokio::task::spawn_blocking(move || list_entries(&pgdata))
                .await
                .map_err(|e| Error::new(ErrorKind::Other, "listing failed").with_source(e))??
        };
        let size_hint = entries
            .iter()
            .map(|e| match e {
                Entry::File { size, .. } => size + 1024,
                Entry::Dir { .. } => 512,
            })
            .sum::<u64>()
            + (1 << 20);
        tracing::debug!(entries = entries.len(), "copying the data directory");
        let (tx, rx) = mpsc::channel::<Result<Bytes>>(OUTPUT_QUEUE);
        let system_identifier = started.system_identifier.clone();
        let version = started.version.clone();
        let started_at = started.started_at;
        let in_flight = self.in_flight();
        let task = tokio::spawn(async move {
            let result = copy(entries, in_flight, started, &tx).await;
            if let Err(e) = &result {
                let _ = tx.send(Err(Error::new(e.kind(), e.report()))).await;
            }
            result
        });
        let stream: ByteStream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        let mut properties = BTreeMap::new();
        properties.insert(PROP_SYSTEM_ID.to_string(), system_identifier.clone());
        Ok(Dump {
            source: SourceInfo {
                kind: PHYSICAL_KIND.into(),
                format: PHYSICAL_COPY_FORMAT.into(),
                name: PHYSICAL_NAME.into(),
                origin: Some(system_identifier.clone()),
                server_version: Some(version),
                consistent_point: None,
                properties,
            },
            stream,
            size_hint: Some(size_hint),
            completion: Box::new(Completion {
                task,
                system_identifier,
                started_at,
            }),
        })
    }
}

struct Completion {
    task: tokio::task::JoinHandle<Result<Copied>>,
    system_identifier: String,
    started_at: DateTime<Utc>,
}

#[async_trait]
impl DumpCompletion for Completion {
    async fn finish(self: Box<Self>) -> Result<DumpStats> {
        let copied = self
            .task
            .await
            .map_err(|e| Error::new(ErrorKind::Other, "the copy task failed").with_source(e))??;
        let label = BackupLabel::parse(&copied.label)?;
        let mut p = BTreeMap::new();
        p.insert(PROP_SYSTEM_ID.into(), self.system_identifier);
        p.insert(PROP_TIMELINE.into(), label.timeline.to_string());
        p.insert(PROP_START_LSN.into(), label.start_lsn.to_string());
        p.insert(PROP_STOP_LSN.into(), copied.stop_lsn);
        p.insert(
            PROP_START_TIME.into(),
            label.start_time.unwrap_or(self.started_at).to_rfc3339(),
        );
        p.insert(PROP_STOP_TIME.into(), Utc::now().to_rfc3339());
        p.insert(PROP_BACKUP_LABEL.into(), copied.label);
        if !copied.tablespace_map.is_empty() {
            p.insert(PROP_TABLESPACE_MAP.into(), copied.tablespace_map);
        }
        p.insert(PROP_FILES.into(), copied.files);
        Ok(DumpStats {
            tables: Vec::new(),
            properties: p,
        })
    }
}

/// Connect, check that `pgdata` is this server's, and start a non-exclusive backup.
async fn start_backup(config: &Config, pgdata: &Path) -> Result<Started> {
    let conn = connect(config, "physical backup").await?;
    let row = conn
        .client
        .query_one(
            "SELECT system_identifier::text, current_setting('server_version'), \
             current_setting('server_version_num')::int, current_setting('data_directory') \
             FROM pg_control_system()",
            &[],
        )
        .await
        .map_err(|e| db_error("cannot read the cluster's system identifier", e))?;
    let system_identifier: String = row.get(0);
    let version_num: i32 = row.get(2);
    let server_dir: String = row.get(3);
    let control = crate::wal::ControlFile::read(pgdata)?;
    if control.system_identifier.to_string() != system_identifier {
        return Err(Error::invalid(format!(
            "{} belongs to cluster {}, but the server --db connects to is cluster {} (its data \
             directory is {server_dir})",
            pgdata.display(),
            control.system_identifier,
            system_identifier
        )));
    }
    let sql = if version_num >= 150000 {
        "SELECT pg_backup_start($1, true)::text"
    } else {
        "SELECT pg_start_backup($1, true, false)::text"
    };
    let started_at = Utc::now();
    let label = format!("dr {}", started_at.format("%Y-%m-%dT%H:%M:%SZ"));
    conn.client
        .query_one(sql, &[&label])
        .await
        .map_err(|e| db_error("cannot start the backup (pg_backup_start)", e))?;
    Ok(Started {
        conn,
        system_identifier,
        version: row.get(1),
        version_num,
        started_at,
    })
}

/// Stop the backup on the session that started it; waits until its WAL is archived (when
/// archiving is on).
async fn stop_backup(started: &Started) -> Result<(String, String, String)> {
    let sql = if started.version_num >= 150000 {
        "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_backup_stop(true)"
    } else {
        "SELECT lsn::text, labelfile, coalesce(spcmapfile, '') FROM pg_stop_backup(false, true)"
    };
    let row = started
        .conn
        .client
        .query_one(sql, &[])
        .await
        .map_err(|e| db_error("cannot stop the backup (pg_backup_stop)", e))?;
    Ok((row.get(0), row.get(1), row.get(2)))
}

/// Everything to store, in archive order (a directory before its contents); links (the
/// tablespaces in `pg_tblspc`) are followed.
fn list_entries(pgdata: &Path) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    walk(pgdata, "", &mut entries, true)?;
    Ok(entries)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<Entry>, top: bool) -> Result<()> {
    let io = |e| Error::io(format!("cannot read {}", dir.display()), e);
    let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.to_string(), e.path())))
        .collect();
    names.sort();
    for (name, path) in names {
        if EXCLUDED_FILES.contains(&name.as_str()) || name.starts_with("pgsql_tmp") {
            continue;
        }
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(e)),
        };
        let member = format!("{prefix}{name}");
        let meta = if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(io)?;
            let target = if target.is_absolute() {
                target
            } else {
                dir.join(target)
            };
            match std::fs::metadata(&target) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io(e)),
            }
        } else {
            meta
        };
        let mtime = meta.mtime().max(0) as u64;
        let mode = meta.mode() & 0o7777;
        if meta.is_dir() {
            out.push(Entry::Dir {
                name: format!("{member}/"),
                mode,
                mtime,
            });
            if top && EMPTIED_DIRS.contains(&name.as_str()) {
                if name == "pg_wal" {
                    out.push(Entry::Dir {
                        name: "pg_wal/archive_status/".into(),
                        mode,
                        mtime,
                    });
                }
                continue;
            }
            let real = std::fs::canonicalize(&path).map_err(io)?;
            walk(&real, &format!("{member}/"), out, false)?;
        } else if meta.is_file() {
            out.push(Entry::File {
                name: member,
                path,
                size: meta.len(),
                mode,
                mtime,
            });
        }
    }
    Ok(())
}

/// A piece of a file to read, or a directory to write.
#[derive(Clone, Copy)]
enum Item {
    Dir(usize),
    Piece { file: usize, offset: u64, len: u64 },
}

/// A piece as read.
struct Read {
    item: Item,
    data: Vec<u8>,
    vanished: bool,
}

fn items(entries: &[Entry]) -> Vec<Item> {
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        match e {
            Entry::Dir { .. } => out.push(Item::Dir(i)),
            Entry::File { size, .. } => {
                let mut offset = 0;
                loop {
                    let len = (size - offset).min(PIECE_BYTES);
                    out.push(Item::Piece {
                        file: i,
                        offset,
                        len,
                    });
                    offset += len;
                    if offset >= *size {
                        break;
                    }
                }
            }
        }
    }
    out
}

/// The piece buffers, reused. A fresh 4 MiB buffer per piece, allocated on one of Tokio's
/// blocking threads and freed on another, left freed memory resident in several of glibc's
/// per-thread arenas: copy mode peaked at 193 MiB for a declared 16 MiB of pieces. At most
/// one buffer per piece queued, plus the one being read and the one being written out,
/// ever exists.
#[derive(Clone, Default)]
struct Buffers(Arc<std::sync::Mutex<Vec<Vec<u8>>>>);

impl Buffers {
    /// A buffer of `len` bytes, to be overwritten (a reused one holds an earlier piece).
    fn take(&self, len: usize) -> Vec<u8> {
        match self.0.lock().unwrap().pop() {
            Some(mut b) if b.capacity() >= len => {
                b.resize(len, 0);
                b
            }
            _ => vec![0u8; len],
        }
    }

    /// Give `b` back for the next piece.
    fn give(&self, b: Vec<u8>) {
        if b.capacity() > 0 {
            self.0.lock().unwrap().push(b);
        }
    }
}

/// Read every piece, in archive order, on one blocking thread, `depth` pieces ahead of the
/// receiver. A read error ends the reading.
fn spawn_reader(
    entries: Arc<Vec<Entry>>,
    buffers: Buffers,
    depth: usize,
) -> mpsc::Receiver<Result<Read>> {
    let (tx, rx) = mpsc::channel(depth.max(1));
    tokio::task::spawn_blocking(move || {
        for item in items(&entries) {
            let read = read_piece(&entries, &buffers, item);
            let failed = read.is_err();
            if tx.blocking_send(read).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Read one piece (a directory has nothing to read).
fn read_piece(entries: &[Entry], buffers: &Buffers, item: Item) -> Result<Read> {
    let Item::Piece { file, offset, len } = item else {
        return Ok(Read {
            item,
            data: Vec::new(),
            vanished: false,
        });
    };
    let Entry::File { path, .. } = &entries[file] else {
        unreachable!("pieces are of files")
    };
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Read {
                item,
                data: Vec::new(),
                vanished: true,
            })
        }
        Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
    };
    let mut data = buffers.take(len as usize);
    let mut got = 0usize;
    while got < data.len() {
        match f.read_at(&mut data[got..], offset + got as u64) {
            Ok(0) => {
                // Shrank: the rest is zeros (WAL replay rewrites it).
                data[got..].fill(0);
                break;
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io(format!("cannot read {}", path.display()), e)),
        }
    }
    Ok(Read {
        item,
        data,
        vanished: false,
    })
}

/// Write the archive into `tx`, stop the backup, append `backup_label` and `tablespace_map`.
async fn copy(
    entries: Vec<Entry>,
    in_flight: usize,
    started: Started,
    tx: &mpsc::Sender<Result<Bytes>>,
) -> Result<Copied> {
    let entries = Arc::new(entries);
    let mut out = TarOut::new(tx);
    let mut files = String::new();
    let mut skipped = vec![false; entries.len()];
    let mut hash: Option<digest::Context> = None;
    let buffers = Buffers::default();
    let mut reads = spawn_reader(entries.clone(), buffers.clone(), in_flight);
    while let Some(read) = reads.recv().await {
        let read = read?;
        match read.item {
            Item::Dir(i) => {
                let Entry::Dir { name, mode, mtime } = &entries[i] else {
                    unreachable!()
                };
                out.header(name, 0, *mode, *mtime, tar::EntryType::Directory)
                    .await?;
            }
            Item::Piece { file, offset, len } => {
                let Entry::File {
                    name,
                    size,
                    mode,
                    mtime,
                    ..
                } = &entries[file]
                else {
                    unreachable!()
                };
                if offset == 0 {
                    if read.vanished {
                        skipped[file] = true;
                        continue;
                    }
                    out.header(name, *size, *mode, *mtime, tar::EntryType::Regular)
                        .await?;
                    hash = Some(digest::Context::new(&digest::SHA256));
                }
                if skipped[file] {
                    continue;
                }
                let mut data = read.data;
                data.resize(len as usize, 0); // vanished mid-way: zeros, replay rewrites it
                hash.as_mut()
                    .expect("a file's first piece came first")
                    .update(&data);
                out.put(&data).await?;
                buffers.give(data);
                if offset + len >= *size {
                    out.pad(*size).await?;
                    let sha = hex::encode(hash.take().expect("hashing").finish());
                    files.push_str(&format!("{sha} {size} {name}\n"));
                }
            }
        }
    }
    let (stop_lsn, label, tablespace_map) = stop_backup(&started).await?;
    let _ = started.conn.close().await;
    let now = Utc::now().timestamp().max(0) as u64;
    for (name, text) in [
        ("backup_label", &label),
        ("tablespace_map", &tablespace_map),
    ] {
        if text.is_empty() {
            continue;
        }
        let bytes = text.as_bytes();
        out.header(
            name,
            bytes.len() as u64,
            0o600,
            now,
            tar::EntryType::Regular,
        )
        .await?;
        out.put(bytes).await?;
        out.pad(bytes.len() as u64).await?;
        let sha = hex::encode(digest::digest(&digest::SHA256, bytes));
        files.push_str(&format!("{sha} {} {name}\n", bytes.len()));
    }
    out.finish().await?;
    Ok(Copied {
        label,
        tablespace_map,
        stop_lsn,
        files,
    })
}

/// Tar output in chunks to the pipeline.
///
/// Every chunk is a buffer of exactly [`CHUNK_BYTES`], filled to its last byte before it is
/// sent (but the archive's last) and never grown. glibc raises its mmap threshold to the
/// size of the largest mapped block freed so far: this writer's one 2 MiB buffer, freed early
/// in the copy, made every later 1 MiB pipeline buffer come from glibc's arenas, which keep
/// what is freed, and copy mode peaked 20 MiB above pg_basebackup mode (BENCHMARKS.md, issue
/// 11). With 1 MiB buffers the stages' larger ones stay mapped and are unmapped when freed.
struct TarOut<'a> {
    tx: &'a mpsc::Sender<Result<Bytes>>,
    buf: Vec<u8>,
}

impl<'a> TarOut<'a> {
    fn new(tx: &'a mpsc::Sender<Result<Bytes>>) -> Self {
        TarOut {
            tx,
            buf: Vec::with_capacity(CHUNK_BYTES),
        }
    }

    async fn header(
        &mut self,
        name: &str,
        size: u64,
        mode: u32,
        mtime: u64,
        kind: tar::EntryType,
    ) -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_path(name)
            .map_err(|e| Error::invalid(format!("cannot store '{name}' in a tar archive: {e}")))?;
        h.set_size(size);
        h.set_mode(mode);
        h.set_mtime(mtime);
        h.set_entry_type(kind);
        h.set_cksum();
        self.put(h.as_bytes()).await
    }

    async fn pad(&mut self, size: u64) -> Result<()> {
        let rem = (size % 512) as usize;
        if rem == 0 {
            return Ok(());
        }
        self.put(&[0u8; 512][..512 - rem]).await
    }

    /// Append `bytes`, sending each buffer on as soon as it is full.
    async fn put(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let room = CHUNK_BYTES - self.buf.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.buf.extend_from_slice(now);
            bytes = rest;
            if self.buf.len() == CHUNK_BYTES {
                let full = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES));
                self.send(full).await?;
            }
        }
        Ok(())
    }

    async fn send(&self, chunk: Vec<u8>) -> Result<()> {
        self.tx.send(Ok(Bytes::from(chunk))).await.map_err(|_| {
            Error::new(
                ErrorKind::Other,
                "the backup's upload stopped reading the copy",
            )
        })
    }

    async fn finish(mut self) -> Result<()> {
        self.put(&[0u8; 1024]).await?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let last = std::mem::take(&mut self.buf);
        self.send(last).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_each_file_once_and_empty_files_get_one() {
        let entries = vec![
            Entry::Dir {
                name: "base/".into(),
                mode: 0o700,
                mtime: 0,
            },
            Entry::File {
                name: "empty".into(),
                path: "/x".into(),
                size: 0,
                mode: 0o600,
                mtime: 0,
            },
            Entry::File {
                name: "big".into(),
                path: "/y".into(),
                size: 2 * PIECE_BYTES + 5,
                mode: 0o600,
                mtime: 0,
            },
        ];
        let lens: Vec<(usize, u64, u64)> = items(&entries)
            .into_iter()
            .filter_map(|i| match i {
                Item::Piece { file, offset, len } => Some((file, offset, len)),
                Item::Dir(_) => None,
            })
            .collect();
        assert_eq!(
            lens,
            vec![
                (1, 0, 0),
                (2, 0, PIECE_BYTES),
                (2, PIECE_BYTES, PIECE_BYTES),
                (2, 2 * PIECE_BYTES, 5)
            ]
        );
    }
}
