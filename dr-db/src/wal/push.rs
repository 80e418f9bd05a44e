//! `archive_command`: pushing the files PostgreSQL hands over, and the ones it will hand
//! over next.
//!
//! PostgreSQL runs `archive_command` for one file at a time, in its data directory, and
//! recycles the file only after the command exits 0. A slow command makes WAL pile up in
//! `pg_wal` (the commonest complaint about archiving), so files are pushed ahead of
//! PostgreSQL's calls and remembered in a [`Spool`] (`<name>.ok`, holding the SHA-256 of what
//! was stored). When PostgreSQL asks for such a file, the push only checks that the file still
//! has that SHA-256 and returns at once. Two ways to push ahead:
//!
//! - with a background pusher ([`WalPusher::background`], what `drctl wal-push` does): the
//!   call makes sure a detached process is pushing the waiting files, oldest first and
//!   several at once, and waits until its own file is marked stored (see `background.rs`);
//! - without one: the call pushes, in parallel with the file asked for, the next files
//!   waiting in `pg_wal/archive_status/*.ready`, and returns when all of them are done.
//!
//! PostgreSQL is never told a file is archived that is not stored (a marker is written only
//! after the file's record is committed), and nothing is dropped to save disk: a file that
//! cannot be pushed fails its call, and PostgreSQL retries.
//!
//! Every segment's long header is checked before anything is stored: it must belong to the
//! cluster whose data directory runs the command (`global/pg_control`), carry the name's
//! timeline and position, and have the archive's segment size.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;
use dr_core::wal::{
    PushFailure, PushOptions, PushOutcome, SegmentSize, TimelineHistory, WalArchive, WalCluster,
    WalContents, WalFile,
};
use dr_core::{Encryptor, Error, ErrorKind, Repository, Result};
use serde::Serialize;

use crate::wal::background::PusherCommand;
use crate::wal::header::{ControlFile, SegmentHeader};
use crate::wal::records::scan_segment;
use crate::wal::spool::Spool;

/// How a file's push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Pushed {
    /// Stored now.
    Stored,
    /// Already archived with the same contents (a retry, or pushed by another process).
    AlreadyArchived,
    /// Pushed ahead by an earlier call; found in the spool, unchanged.
    FromSpool,
}

/// What [`WalPusher::push`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PushReport {
    /// The file PostgreSQL asked for.
    pub name: String,
    /// How its push ended.
    pub outcome: Pushed,
    /// Bytes stored for it (0 unless stored now).
    pub stored_bytes: u64,
    /// Files waiting in `archive_status` that were pushed ahead and spooled.
    pub ahead: Vec<String>,
    /// Files pushed ahead that failed (PostgreSQL will ask for them; they are retried then).
    pub ahead_failed: Vec<String>,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// Pushes WAL files of one data directory into a repository's archive.
#[derive(Clone)]
pub struct WalPusher {
    pub(super) repo: Repository,
    pub(super) encryptor: Arc<dyn Encryptor>,
    pub(super) pgdata: PathBuf,
    pub(super) spool: Spool,
    pub(super) parallel: usize,
    pub(super) opts: PushOptions,
    /// How to start a background pusher; `None`: push ahead within the call.
    pub(super) background: Option<Arc<PusherCommand>>,
    /// How long a background pusher waits for new files before it exits.
    pub(super) pusher_idle: Duration,
}

impl std::fmt::Debug for WalPusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalPusher")
            .field("repository", &self.repo.storage().describe())
            .field("pgdata", &self.pgdata)
            .field("spool", &self.spool.dir())
            .field("parallel", &self.parallel)
            .field("background", &self.background)
            .finish_non_exhaustive()
    }
}

impl WalPusher {
    /// A pusher for the server whose data directory is `pgdata`; files are encrypted by
    /// `encryptor` (a host with only the repository's public recipients can push). Pushes up
    /// to 4 files at once, within the call (see [`WalPusher::background`]); spools in
    /// `pgdata/pg_wal/dr_spool`.
    pub fn new(
        repo: Repository,
        encryptor: Arc<dyn Encryptor>,
        pgdata: impl Into<PathBuf>,
    ) -> Self {
        let pgdata = pgdata.into();
        WalPusher {
            spool: Spool::new(pgdata.join("pg_wal").join("dr_spool")),
            repo,
            encryptor,
            pgdata,
            parallel: 4,
            opts: PushOptions::default(),
            background: None,
            pusher_idle: Duration::from_secs(5),
        }
    }

    /// Keep the spool in `dir` instead.
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool = Spool::new(dir);
        self
    }

    /// Push up to `n` files at once (1: only the file asked for, no spool and no background
    /// pusher).
    pub fn parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
    }

    /// Push ahead in a background process started with `command` (which must end up calling
    /// [`WalPusher::run_pusher`] on an equal pusher) instead of within each call: a call for a
    /// segment waiting in `pg_wal` makes sure one is running and waits until its segment is
    /// stored. See `background.rs`.
    pub fn background(mut self, command: PusherCommand) -> Self {
        self.background = Some(Arc::new(command));
        self
    }

    /// How long a background pusher waits for new files before it exits (default 5 s).
    pub fn pusher_idle(mut self, idle: Duration) -> Self {
        self.pusher_idle = idle;
        self
    }

    /// The spool of this pusher.
    pub fn spool(&self) -> &Spool {
        &self.spool
    }

    /// Compression and storage class of pushed files.
    pub fn options(mut self, opts: PushOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Archive the file at `path` (`%p`: relative to the working directory, which is the
    /// data directory when PostgreSQL runs the command). See the comments at the top of `wal/push.rs`.
    ///
    /// `Ok` means the file is stored and committed; any error means it is not (and
    /// PostgreSQL will retry). A segment of another cluster, a renamed segment and a
    /// different file under an archived name are refused.
    pub async fn push(&self, path: &Path) -> Result<PushReport> {
        let report = self.push_file(path).await?;
        self.clear_stored_failure(&report.name).await;
        Ok(report)
    }

    async fn push_file(&self, path: &Path) -> Result<PushReport> {
        let started = Instant::now();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| Error::invalid(format!("{} names no WAL file", path.display())))?
            .to_string();
        if self.background.is_some() && self.parallel > 1 && self.is_waiting(path, &name) {
            return self.push_behind(path, &name, started).await;
        }
        let control = ControlFile::read(&self.pgdata)?;
        let data = read_file(path).await?;

        // The fast path: pushed ahead by an earlier call, and unchanged since.
        if self.parallel > 1 && self.take_spooled(&name, &data) {
            return Ok(PushReport {
                name,
                outcome: Pushed::FromSpool,
                stored_bytes: 0,
                ahead: Vec::new(),
                ahead_failed: Vec::new(),
                duration_ms: started.elapsed().as_millis() as u64,
            });
        }

        let archive = self.archive(&control, &name, &data).await?;
        let file = archive
            .parse_name(&name)
            .map_err(|e| e.with_context("file", path.display()))?;
        let this = self.push_one(&archive, &control, file, data);
        let ahead = self.ready_after(&archive, file);
        let others = futures::future::join_all(ahead.iter().map(|f| {
            let archive = &archive;
            let control = &control;
            async move {
                let p = self
                    .pgdata
                    .join("pg_wal")
                    .join(f.name(archive.segment_size()));
                let r = async {
                    let data = read_file(&p).await?;
                    self.push_one(archive, control, *f, data.clone()).await?;
                    self.spool.mark_stored(
                        &f.name(archive.segment_size()),
                        &self.repo.config().repository_id,
                        &data,
                    )
                }
                .await;
                (f.name(archive.segment_size()), r)
            }
        }));
        let (outcome, others) = futures::join!(this, others);
        let mut report = PushReport {
            name,
            outcome: Pushed::Stored,
            stored_bytes: 0,
            ahead: Vec::new(),
            ahead_failed: Vec::new(),
            duration_ms: 0,
        };
        for (n, r) in others {
            match r {
                Ok(()) => report.ahead.push(n),
                Err(e) => {
                    tracing::debug!(file = %n, error = %e.report(), "pushing ahead failed; PostgreSQL will ask again");
                    report.ahead_failed.push(n);
                }
            }
        }
        match outcome? {
            PushOutcome::Stored { stored_bytes } => report.stored_bytes = stored_bytes,
            PushOutcome::AlreadyArchived => report.outcome = Pushed::AlreadyArchived,
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        Ok(report)
    }

    /// The archive of this server's cluster, created by the first push.
    pub(super) async fn archive(
        &self,
        control: &ControlFile,
        name: &str,
        data: &[u8],
    ) -> Result<WalArchive> {
        match WalArchive::open(&self.repo, control.system_identifier).await {
            Ok(a) => return Ok(a),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        // First push: learn the segment size from this file or any segment in pg_wal.
        let header = match SegmentHeader::parse(data) {
            Ok(h) if !name.ends_with(".history") && !name.ends_with(".backup") => h,
            _ => any_segment_header(&self.pgdata.join("pg_wal"))?,
        };
        let pg_version = std::fs::read_to_string(self.pgdata.join("PG_VERSION"))
            .ok()
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(header.pg_version);
        WalArchive::register(
            &self.repo,
            WalCluster {
                format: dr_core::wal::layout::WAL_FORMAT,
                system_identifier: control.system_identifier,
                segment_bytes: header.segment_size,
                pg_version,
                created_at: Utc::now(),
            },
        )
        .await
    }

    /// Check and push one file. A failure is also stored as the cluster's [`PushFailure`].
    pub(super) async fn push_one(
        &self,
        archive: &WalArchive,
        control: &ControlFile,
        file: WalFile,
        data: Bytes,
    ) -> Result<PushOutcome> {
        let name = file.name(archive.segment_size());
        let pushed = async {
            let contents = check_file(
                file,
                &data,
                control.system_identifier,
                archive.segment_size(),
            )
            .map_err(|e| e.with_context("file", &name))?;
            archive
                .push(file, data, contents, self.encryptor.as_ref(), &self.opts)
                .await
        }
        .await;
        if let Err(e) = &pushed {
            self.store_failure(archive, control.system_identifier, &name, e)
                .await;
        }
        pushed
    }

    /// Store a failed push in the repository: PostgreSQL retries the file, so the failure
    /// may last, and `drctl status` shows it wherever the repository is read. Best effort
    /// (the repository may be what failed): the push's own error is what the caller gets.
    async fn store_failure(&self, archive: &WalArchive, sysid: u64, name: &str, e: &Error) {
        let stored = PushFailure::new(sysid, Some(name), e)
            .write(archive.repository())
            .await
            .and_then(|()| self.spool.note_stored_failure(sysid, name));
        if let Err(not_stored) = stored {
            tracing::debug!(error = %not_stored.report(), "could not store the push failure in the repository");
        }
    }

    /// After `name` was pushed: remove the failure this host stored in the repository if it
    /// was about `name` or a file before it. PostgreSQL hands files over in order, so that
    /// file is archived by now, or was never one PostgreSQL waited for (a manual push).
    async fn clear_stored_failure(&self, name: &str) {
        let Some(noted) = self.spool.stored_failure() else {
            return;
        };
        if noted.file.as_str() > name {
            return;
        }
        match PushFailure::remove(&self.repo, noted.system_identifier).await {
            Ok(()) => self.spool.forget_stored_failure(),
            Err(e) => {
                tracing::debug!(error = %e.report(), "could not remove the stored push failure")
            }
        }
    }

    /// Complete segments waiting after `file`, oldest first, that are not spooled yet: as
    /// many as run beside it.
    fn ready_after(&self, archive: &WalArchive, file: WalFile) -> Vec<WalFile> {
        if self.parallel < 2 || !matches!(file, WalFile::Segment(_)) {
            return Vec::new();
        }
        let status = self.pgdata.join("pg_wal").join("archive_status");
        let Ok(entries) = std::fs::read_dir(&status) else {
            return Vec::new();
        };
        let mut ready: Vec<WalFile> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let n = e.file_name().to_str()?.strip_suffix(".ready")?.to_string();
                let f = archive.parse_name(&n).ok()?;
                (matches!(f, WalFile::Segment(_)) && f > file && !self.spool.has_marker(&n))
                    .then_some(f)
            })
            .collect();
        ready.sort();
        ready.truncate(self.parallel - 1);
        ready
    }

    /// Whether `name` was pushed ahead with exactly these bytes; the marker is used up. Also
    /// clears markers of files PostgreSQL no longer waits for.
    pub(super) fn take_spooled(&self, name: &str, data: &[u8]) -> bool {
        let hit = self
            .spool
            .is_stored(name, &self.repo.config().repository_id, data);
        self.spool.forget(name);
        self.spool.clear_stale(&self.archive_status());
        hit
    }

    /// `pg_wal/archive_status` of the data directory.
    pub(super) fn archive_status(&self) -> PathBuf {
        self.pgdata.join("pg_wal").join("archive_status")
    }
}

pub(super) async fn read_file(path: &Path) -> Result<Bytes> {
    tokio::fs::read(path).await.map(Bytes::from).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        Error::new(kind, format!("cannot read WAL file {}", path.display())).with_source(e)
    })
}

/// Check a file of the cluster `system_identifier` before it is archived; for segments,
/// read what its records say.
pub(crate) fn check_file(
    file: WalFile,
    data: &[u8],
    system_identifier: u64,
    size: SegmentSize,
) -> Result<Option<WalContents>> {
    match file {
        WalFile::Segment(id) | WalFile::Partial(id) => {
            let header = SegmentHeader::parse(data)?;
            if header.system_identifier != system_identifier {
                return Err(Error::invalid(format!(
                    "refusing a WAL segment from another cluster: it was written by system {}, \
                     this server is system {}",
                    header.system_identifier, system_identifier
                )));
            }
            if header.segment_size != size {
                return Err(Error::invalid(format!(
                    "the segment is of {} segments, the archive of {size} segments",
                    header.segment_size
                )));
            }
            header.check_segment(id)?;
            if matches!(file, WalFile::Segment(_)) && data.len() as u64 != size.bytes() {
                return Err(Error::corrupt(format!(
                    "a complete segment must be {} bytes, this one is {}",
                    size.bytes(),
                    data.len()
                )));
            }
            Ok(Some(scan_segment(data, &header)))
        }
        WalFile::History(tl) => {
            let text = std::str::from_utf8(data)
                .map_err(|_| Error::corrupt("a timeline history must be text"))?;
            TimelineHistory::parse(tl, text)?;
            Ok(None)
        }
        WalFile::Backup { .. } => Ok(None),
    }
}

/// The header of any segment in `pg_wal`, for the segment size of a first push that is not
/// a segment.
fn any_segment_header(pg_wal: &Path) -> Result<SegmentHeader> {
    let entries = std::fs::read_dir(pg_wal)
        .map_err(|e| Error::io(format!("cannot list {}", pg_wal.display()), e))?;
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name();
        let Some(n) = name.to_str() else { continue };
        if n.len() == 24 && n.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut head = [0u8; 64];
            if let Ok(mut f) = std::fs::File::open(e.path()) {
                use std::io::Read;
                if f.read_exact(&mut head).is_ok() {
                    if let Ok(h) = SegmentHeader::parse(&head) {
                        return Ok(h);
                    }
                }
            }
        }
    }
    Err(Error::new(
        ErrorKind::NotFound,
        format!(
            "no WAL segment in {} to learn the segment size from",
            pg_wal.display()
        ),
    ))
}
