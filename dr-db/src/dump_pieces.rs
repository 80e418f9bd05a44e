//! [`PgDumper`] as a [`PieceDumper`]: `pg_dump -Fd -j N -Z0` over N connections sharing the
//! exported snapshot, each file handed over as a piece as soon as pg_dump has closed it.
//!
//! pg_dump writes into a private spool folder (under [`PgDumper::spool_dir`], the system's
//! temporary folder by default). inotify reports every file pg_dump creates (`IN_CREATE`)
//! and closes after writing (`IN_CLOSE_WRITE`: pg_dump writes each file once, from start to
//! end, `toc.dat` first). A file is handed over as a piece as soon as it is created and read
//! while pg_dump writes it, so compression and upload of a table overlap its dump instead
//! of starting after it; its end is the end of the file once pg_dump has closed it. Each
//! file is counted, uploaded and deleted. The spool holds what pg_dump wrote but dr has not
//! read yet: little while the uploads keep up, at most (when they are slower than the dump)
//! the whole uncompressed dump.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use dr_core::pieces::{Piece, PieceDumper, PiecesDump};
use dr_core::{ByteStream, DumpCompletion, DumpStats, Error, ErrorKind, Result};
use futures::StreamExt;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
use tokio::sync::mpsc;

use crate::conn::Conn;
use crate::directory::{DirectoryCounter, PieceCounter, DIRECTORY_FORMAT, TOC_PIECE};
use crate::dump::{Outcome, PgDumper, Prepared};
use crate::fifo::ProcessGroup;
use crate::own_copy::{self, CopyPool, OwnTable};
use crate::spool::Spool;
use crate::tools;

/// Size of the chunks a piece's stream yields.
const CHUNK_BYTES: usize = 1 << 20;
/// How often the spool is looked at for new and closed files and pg_dump for its exit.
const POLL: Duration = Duration::from_millis(20);
/// How long a piece's reader waits at the end of a file pg_dump is still writing.
const GROW_WAIT: Duration = Duration::from_millis(10);

impl PgDumper {
    /// Dump over `jobs` connections when dumping as pieces ([`PieceDumper`]): `pg_dump -Fd
    /// -j jobs`. Has no effect on the one-stream [`dr_core::Dumper`], which is one `pg_dump
    /// -Fc` process.
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Whether a dump as pieces reads the data of the database's plain tables itself
    /// (`COPY … TO STDOUT` on `jobs` connections of its own in the snapshot, streamed into
    /// the pieces) rather than through pg_dump's spool files; on by default. The archive is
    /// the same either way.
    pub fn read_table_data(mut self, on: bool) -> Self {
        self.read_table_data = on;
        self
    }

    /// Spool the pieces of a dump in `dir` (see the module documentation for the room it
    /// needs) instead of the system's temporary folder.
    pub fn spool_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.spool_dir = Some(dir.into());
        self
    }
}

/// `pg_dump`'s arguments for a directory archive in `dir`: no connection parameter.
/// Every table in `own` is left out of pg_dump's table data (dr reads it itself).
fn pg_dump_dir_args(snapshot_id: &str, jobs: usize, dir: &Path, own: &[OwnTable]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--format=directory".into(),
        "--compress=0".into(),
        format!("--jobs={jobs}"),
        // The files are deleted as soon as they are uploaded; pg_dump's final fsync pass
        // would find them gone.
        "--no-sync".into(),
        format!("--snapshot={snapshot_id}"),
        "--no-password".into(),
        format!("--file={}", dir.display()),
    ];
    args.extend(
        own.iter()
            .map(|t| format!("--exclude-table-data={}", t.pattern())),
    );
    args
}

#[async_trait]
impl PieceDumper for PgDumper {
    async fn start_pieces(&self) -> Result<PiecesDump> {
        let Prepared {
            conn,
            snapshot_id,
            program,
            mut source,
            server_version_num,
            pg_dump_major,
            ..
        } = self.prepare().await?;
        source.format = DIRECTORY_FORMAT.into();
        let started = async {
            let own =
                if self.read_table_data && own_copy::supported(server_version_num, pg_dump_major) {
                    let tables = own_copy::choose_tables(&conn.client).await?;
                    if own_copy::try_lock_tables(&conn.client, &tables).await? {
                        tables
                    } else {
                        Vec::new()
                    }
                } else {
                    Vec::new()
                };
            // With every table it may read taken by dr, pg_dump is left the schema,
            // sequences and the odd table: one connection does.
            let pg_dump_jobs = if !own.is_empty() && (own.len() as i64) < own_copy::MAX_OWN_TABLES {
                1
            } else {
                self.jobs
            };
            let spool_root = self.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
            let spool = Spool::create(&spool_root)?;
            let dump_dir = spool.dump_dir();
            let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
                .map_err(|e| Error::io("cannot watch the spool folder", e.into()))?;
            inotify
                .add_watch(
                    &dump_dir,
                    AddWatchFlags::IN_CREATE | AddWatchFlags::IN_CLOSE_WRITE,
                )
                .map_err(|e| Error::io("cannot watch the spool folder", e.into()))?;
            let (launcher, args) = tools::dying_with_parent(
                &program,
                pg_dump_dir_args(&snapshot_id, pg_dump_jobs, &dump_dir, &own),
            );
            let mut cmd = tokio::process::Command::from(self.command_with_args(&launcher, args)?);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true);
            let mut child = cmd
                .spawn()
                .map_err(|e| tools::spawn_failed("pg_dump", &program, e))?;
            let group = ProcessGroup::of(&child);
            let stderr =
                tools::spawn_stderr_tail(child.stderr.take().expect("stderr is piped"), "pg_dump");
            // Connected while pg_dump reads the catalog: the tables' pieces start once its
            // toc.dat is written.
            let pool = if own.is_empty() {
                None
            } else {
                match CopyPool::open(&self.config, &snapshot_id, self.jobs).await {
                    Ok(pool) => Some(Arc::new(pool)),
                    Err(e) => {
                        group.kill();
                        return Err(e);
                    }
                }
            };
            let own = pool.map(|pool| Own {
                tables: own,
                pool,
                toc_added: false,
            });
            Ok::<_, Error>((spool, inotify, child, group, stderr, own))
        }
        .await;
        let (spool, inotify, child, group, stderr, own) = match started {
            Ok(s) => s,
            Err(e) => {
                let _ = conn.close().await;
                return Err(e);
            }
        };
        let pool = own.as_ref().map(|o| o.pool.clone());

        let shared = Arc::new(Mutex::new(Shared {
            counter: DirectoryCounter::new(),
            outcome: Outcome::Running,
            closed: HashSet::new(),
            exited: None,
        }));
        let (tx, rx) = mpsc::channel(1);
        tokio::spawn(watch(Watch {
            dump_dir: spool.dump_dir(),
            _spool: spool,
            inotify,
            child,
            group,
            stderr: Some(stderr),
            tx,
            shared: shared.clone(),
            emitted: BTreeSet::new(),
            queue: VecDeque::new(),
            own,
        }));
        let pieces = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
        .boxed();
        Ok(PiecesDump {
            source,
            pieces,
            completion: Box::new(PiecesCompletion { conn, shared, pool }),
        })
    }
}

struct Shared {
    counter: DirectoryCounter,
    outcome: Outcome,
    /// Files pg_dump has closed: complete once read to their end.
    closed: HashSet<String>,
    /// pg_dump's exit: `Some(true)` once it succeeded (every file is complete),
    /// `Some(false)` once it failed (a file still open will never be).
    exited: Option<bool>,
}

impl Shared {
    /// Whether spool file `name` is complete; an error once pg_dump failed before closing it.
    fn complete(&self, name: &str) -> Result<bool> {
        match self.exited {
            _ if self.closed.contains(name) => Ok(true),
            Some(true) => Ok(true),
            Some(false) => Err(Error::new(
                ErrorKind::Cancelled,
                format!("pg_dump stopped before it finished writing {name}"),
            )),
            None => Ok(false),
        }
    }
}

/// The watcher: hands over new files, marks closed ones complete, then reports pg_dump's
/// exit. It never waits for the consumer while pg_dump runs (new files queue in `queue`):
/// a piece being read waits for its file's close event, which only the watcher reports.
/// A file is opened only when the consumer has room for it, so a dump of thousands of
/// tables holds a handful of open files, not thousands.
struct Watch {
    _spool: Spool,
    dump_dir: PathBuf,
    inotify: Inotify,
    child: tokio::process::Child,
    group: ProcessGroup,
    stderr: Option<tokio::task::JoinHandle<String>>,
    tx: mpsc::Sender<Result<Piece>>,
    shared: Arc<Mutex<Shared>>,
    emitted: BTreeSet<String>,
    /// Pieces not yet handed over, oldest first.
    queue: VecDeque<Queued>,
    /// The tables whose data dr reads itself, if any.
    own: Option<Own>,
}

/// A piece waiting to be handed over.
enum Queued {
    /// A spool file pg_dump created.
    File(String),
    /// A piece made here: `toc.dat` with dr's entries, a table dr reads itself.
    Ready(Piece),
}

/// The tables whose data dr reads itself, and the connections it reads them on.
struct Own {
    tables: Vec<OwnTable>,
    pool: Arc<CopyPool>,
    /// Whether pg_dump's `toc.dat` has been read and given their entries.
    toc_added: bool,
}

impl Watch {
    /// Queue every file inotify says was created, mark the closed ones complete.
    async fn spool_events(&mut self) -> Result<()> {
        loop {
            let events = match self.inotify.read_events() {
                Ok(events) => events,
                Err(nix::errno::Errno::EAGAIN) => return Ok(()),
                Err(e) => return Err(Error::io("cannot watch the spool folder", e.into())),
            };
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    continue; // the final scan picks up what was missed
                }
                let Some(name) = event.name.and_then(|n| n.into_string().ok()) else {
                    continue;
                };
                if event.mask.contains(AddWatchFlags::IN_CLOSE_WRITE) {
                    self.shared
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .closed
                        .insert(name.clone());
                    if name == TOC_PIECE && self.own.is_some() {
                        self.add_own_tables().await?;
                    }
                }
                self.enqueue(name);
            }
        }
    }

    /// Queue spool file `name` for handing over, once. pg_dump's `toc.dat` waits for the
    /// entries of the tables dr reads itself ([`Self::add_own_tables`]).
    fn enqueue(&mut self, name: String) {
        if name == TOC_PIECE && self.own.is_some() {
            return;
        }
        if self.emitted.insert(name.clone()) {
            self.queue.push_back(Queued::File(name));
        }
    }

    /// pg_dump has closed `toc.dat`: read it, add a `TABLE DATA` entry for every table dr
    /// reads itself, and queue the new `toc.dat` and those tables' pieces (largest first)
    /// before pg_dump's other files.
    async fn add_own_tables(&mut self) -> Result<()> {
        let Some(own) = self.own.as_mut().filter(|o| !o.toc_added) else {
            return Ok(());
        };
        own.toc_added = true;
        self.emitted.insert(TOC_PIECE.to_owned());
        let path = self.dump_dir.join(TOC_PIECE);
        let toc = tokio::fs::read(&path)
            .await
            .map_err(|e| Error::io("cannot read pg_dump's toc.dat", e))?;
        let (toc, named) = own_copy::add_table_data(&toc, &own.tables)?;
        let _ = tokio::fs::remove_file(&path).await;

        let mut counter = PieceCounter::new(TOC_PIECE)?;
        counter.feed(&toc)?;
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counter
            .add(counter)?;
        let mut ready = vec![Piece {
            name: TOC_PIECE.to_owned(),
            size: Some(toc.len() as u64),
            stream: dr_core::stage::once_bytes(toc.into(), CHUNK_BYTES),
        }];
        for (table, file) in named {
            let shared = self.shared.clone();
            let done: own_copy::Done = Box::new(move |counter| {
                shared
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .counter
                    .add(counter)
            });
            ready.push(Piece {
                stream: own_copy::table_stream(
                    own.pool.clone(),
                    table,
                    PieceCounter::new(&file)?,
                    done,
                ),
                name: file,
                size: None,
            });
        }
        for piece in ready.into_iter().rev() {
            self.queue.push_front(Queued::Ready(piece));
        }
        Ok(())
    }

    /// Open and hand over the queued files the consumer has room for; `false` once it is
    /// gone.
    async fn offer(&mut self) -> bool {
        while !self.queue.is_empty() {
            let permit = match self.tx.try_reserve() {
                Ok(permit) => permit,
                Err(mpsc::error::TrySendError::Full(())) => return true,
                Err(mpsc::error::TrySendError::Closed(())) => return false,
            };
            let queued = self.queue.pop_front().expect("not empty");
            permit.send(self.open(queued).await);
        }
        true
    }

    /// The piece of a queued item.
    fn open(&self, queued: Queued) -> impl std::future::Future<Output = Result<Piece>> + Send {
        let (dir, shared) = (self.dump_dir.clone(), self.shared.clone());
        async move {
            match queued {
                Queued::File(name) => open_piece(&dir.join(&name), &name, shared).await,
                Queued::Ready(piece) => Ok(piece),
            }
        }
    }

    /// pg_dump has exited successfully: hand over every queued file, waiting for the
    /// consumer (every file is complete now); `false` once it is gone.
    async fn hand_over_queue(&mut self) -> bool {
        while let Some(queued) = self.queue.pop_front() {
            let piece = self.open(queued).await;
            if self.tx.send(piece).await.is_err() {
                return false;
            }
        }
        true
    }

    /// pg_dump has exited successfully: queue what inotify did not report.
    async fn remaining_files(&mut self) -> Result<()> {
        let mut names = Vec::new();
        let mut dir = tokio::fs::read_dir(&self.dump_dir)
            .await
            .map_err(|e| Error::io("cannot read the spool folder", e))?;
        while let Some(entry) = dir
            .next_entry()
            .await
            .map_err(|e| Error::io("cannot read the spool folder", e))?
        {
            if let Ok(name) = entry.file_name().into_string() {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            self.enqueue(name);
        }
        Ok(())
    }

    fn exited(&self, success: bool) {
        self.shared.lock().unwrap_or_else(|p| p.into_inner()).exited = Some(success);
    }

    fn fail(&self, e: &Error) {
        self.group.kill();
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.exited.get_or_insert(false);
        shared.outcome = Outcome::Failed {
            kind: e.kind(),
            report: e.report(),
        };
    }
}

async fn watch(mut w: Watch) {
    let result: Result<bool> = async {
        loop {
            w.spool_events().await?;
            if !w.offer().await {
                return Ok(false);
            }
            if let Some(status) = w
                .child
                .try_wait()
                .map_err(|e| Error::io("waiting for pg_dump", e))?
            {
                let tail = match w.stderr.take() {
                    Some(task) => tools::stderr_tail(task).await,
                    None => String::new(),
                };
                if !status.success() {
                    w.exited(false);
                    return Err(tools::program_failed("pg_dump", status, &tail));
                }
                w.exited(true);
                w.spool_events().await?;
                w.add_own_tables().await?;
                w.remaining_files().await?;
                if !w.hand_over_queue().await {
                    return Ok(false);
                }
                w.shared.lock().unwrap_or_else(|p| p.into_inner()).outcome = Outcome::Finished;
                return Ok(true);
            }
            tokio::time::sleep(POLL).await;
        }
    }
    .await;
    match result {
        // Every piece was opened before it was handed over, so the spool may go now: an
        // open file stays readable after its folder is removed.
        Ok(true) => {}
        Ok(false) => w.fail(&Error::new(
            ErrorKind::Cancelled,
            "the backup stopped reading the dump's pieces",
        )),
        Err(e) => {
            w.fail(&e);
            let _ = w.tx.send(Err(e)).await;
        }
    }
}

/// A spool file as a piece: read in chunks while pg_dump writes it, counted, deleted once
/// read to the end pg_dump closed it at.
async fn open_piece(path: &Path, name: &str, shared: Arc<Mutex<Shared>>) -> Result<Piece> {
    let file = std::fs::File::open(path)
        .map_err(|e| Error::io(format!("cannot open the spooled {name}"), e))?;
    let complete = shared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .complete(name)
        .unwrap_or(false);
    // The size of a finished file sizes the upload's parts; a growing one's is unknown.
    let size = if complete {
        Some(
            file.metadata()
                .map_err(|e| Error::io(format!("cannot read the spooled {name}"), e))?
                .len(),
        )
    } else {
        None
    };
    let state = PieceRead {
        file: Some(file),
        name: name.to_owned(),
        path: path.to_owned(),
        counter: Some(PieceCounter::new(name)?),
        shared,
        done: false,
    };
    let stream: ByteStream = futures::stream::unfold(state, |mut s| async move {
        if s.done {
            return None;
        }
        match s.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), s)),
            Ok(None) => None,
            Err(e) => {
                s.done = true;
                Some((Err(e), s))
            }
        }
    })
    .boxed();
    Ok(Piece {
        name: name.to_owned(),
        stream,
        size,
    })
}

struct PieceRead {
    /// A std file read on the blocking pool: tokio's own file reads go through a buffer of
    /// their own and cost one more copy of every byte.
    file: Option<std::fs::File>,
    name: String,
    path: PathBuf,
    counter: Option<PieceCounter>,
    shared: Arc<Mutex<Shared>>,
    done: bool,
}

/// Read from `file` into `buf` until `buf` holds [`CHUNK_BYTES`] or the file ends, on a
/// blocking thread, straight into `buf`'s spare room (no zeroing, no intermediate buffer).
/// Returns the bytes read.
async fn fill(
    file: std::fs::File,
    mut buf: Vec<u8>,
) -> Result<(std::fs::File, Vec<u8>, std::io::Result<usize>)> {
    use std::io::Read;
    tokio::task::spawn_blocking(move || {
        let want = CHUNK_BYTES.saturating_sub(buf.len()) as u64;
        let read = (&file).take(want).read_to_end(&mut buf);
        (file, buf, read)
    })
    .await
    .map_err(|e| {
        Error::new(
            ErrorKind::Cancelled,
            format!("reading a spool file stopped: {e}"),
        )
    })
}

impl PieceRead {
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        let mut buf = Vec::with_capacity(CHUNK_BYTES);
        while buf.len() < CHUNK_BYTES {
            // Asked before reading: a file closed before a read that finds its end is whole.
            let complete = self
                .shared
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .complete(&self.name)?;
            let file = self.file.take().expect("read after the end");
            let (file, filled, read) = fill(file, buf).await?;
            self.file = Some(file);
            buf = filled;
            read.map_err(|e| Error::io(format!("cannot read {}", self.path.display()), e))?;
            if buf.len() < CHUNK_BYTES {
                // The end of what pg_dump has written so far.
                if complete {
                    break;
                }
                tokio::time::sleep(GROW_WAIT).await;
            }
        }
        if !buf.is_empty() {
            let chunk = bytes::Bytes::from(buf);
            self.counter.as_mut().expect("counting").feed(&chunk)?;
            return Ok(Some(chunk));
        }
        self.done = true;
        self.file = None;
        let counter = self.counter.take().expect("counting");
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counter
            .add(counter)?;
        let _ = tokio::fs::remove_file(&self.path).await;
        Ok(None)
    }
}

/// Holds the snapshot transaction open until the dump is finished.
struct PiecesCompletion {
    conn: Conn,
    shared: Arc<Mutex<Shared>>,
    /// The connections that read table data, if dr read any.
    pool: Option<Arc<CopyPool>>,
}

#[async_trait]
impl DumpCompletion for PiecesCompletion {
    async fn finish(self: Box<Self>) -> Result<DumpStats> {
        let PiecesCompletion { conn, shared, pool } = *self;
        // Their transactions end first: their snapshot is the one the dump reflects.
        let copies = match &pool {
            Some(pool) => pool.close().await,
            None => Ok(()),
        };
        let (outcome, counter) = {
            let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
            let outcome = std::mem::replace(&mut shared.outcome, Outcome::Running);
            (outcome, std::mem::take(&mut shared.counter))
        };
        outcome
            .end_snapshot(conn, "the dump's pieces were not read to their end")
            .await?;
        copies?;
        counter.stats()
    }
}
