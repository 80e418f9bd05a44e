//! [`PgDumper`]: a consistent logical dump through `pg_dump --snapshot`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::BytesMut;
use dr_core::{
    ByteStream, ConsistentPoint, Dump, DumpCompletion, DumpStats, Dumper, Error, ErrorKind, Result,
    SourceInfo,
};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdout};
use tokio::task::JoinHandle;
use tokio_postgres::Config;

use crate::archive::ArchiveInspector;
use crate::conn::{apply_libpq_env, connect, db_error, Conn};
use crate::locale::DatabaseLocale;
use crate::tools;

/// [`SourceInfo::kind`] of a logical PostgreSQL dump, and so the kind of its backup series:
/// what `restore --db` and drills resolve `latest` among.
pub const SOURCE_KIND: &str = "postgres";

/// Size of the chunks the dump stream yields.
const CHUNK_BYTES: usize = 1 << 20;
/// The size asked for pg_dump's output pipe: one chunk.
const PIPE_BYTES: i32 = 1 << 20;

/// Dumps one PostgreSQL database with `pg_dump`'s custom format, uncompressed (`-Fc -Z0`:
/// dr's own codecs compress later, in parallel with the dump).
///
/// [`Dumper::start`] opens a connection of its own, begins a
/// `REPEATABLE READ, READ ONLY` transaction and exports its snapshot; `pg_dump` then dumps
/// exactly that snapshot (`--snapshot=…`), so the [`ConsistentPoint`] reported in
/// [`SourceInfo`] (snapshot time, WAL position, timeline) is the one the payload reflects.
/// The snapshot transaction stays open until `pg_dump` has exited.
///
/// The stream yields chunks of about 1 MiB read from `pg_dump`'s standard output; each chunk
/// passes through an [`ArchiveInspector`] on its way out, so the per-table row counts that
/// [`DumpCompletion::finish`] returns are read from the bytes that are stored, not from a
/// separate `COUNT(*)`. If `pg_dump` fails, the stream's last item is the error
/// ([`ErrorKind::Database`] with the tail of `pg_dump`'s stderr), so a pipeline never commits
/// a dump that did not complete.
///
/// Connection parameters and the password go to `pg_dump` only through its environment
/// (`PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, `PGPASSWORD`, `PGSSLMODE`, `PGAPPNAME=dr`),
/// never its arguments; see [`PgDumper::command`].
///
/// TLS follows `sslmode` as libpq does, for the snapshot connection and `pg_dump` alike
/// (see [`crate::tls`]). Limitation: with several hosts in the configuration, `pg_dump` must
/// reach the same server as the snapshot connection (it fails with "invalid snapshot
/// identifier" otherwise).
#[derive(Clone)]
pub struct PgDumper {
    pub(crate) config: Config,
    pub(crate) bin_dir: Option<PathBuf>,
    /// pg_dump's connections when dumping as pieces (`pg_dump -Fd -j N`).
    pub(crate) jobs: usize,
    /// Where pieces are spooled until uploaded; the system's temporary folder by default.
    pub(crate) spool_dir: Option<PathBuf>,
    /// Whether a dump as pieces reads the tables' data itself (`COPY … TO STDOUT` in the
    /// snapshot) instead of through pg_dump's spool files; see `own_copy`.
    pub(crate) read_table_data: bool,
}

impl fmt::Debug for PgDumper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio_postgres::Config's Debug already redacts the password.
        f.debug_struct("PgDumper")
            .field("config", &self.config)
            .field("bin_dir", &self.bin_dir)
            .field("jobs", &self.jobs)
            .field("spool_dir", &self.spool_dir)
            .field("read_table_data", &self.read_table_data)
            .finish()
    }
}

impl PgDumper {
    /// A dumper of the database `config` points at (its `dbname`, or the user name when
    /// none is set, like libpq).
    pub fn new(config: Config) -> Self {
        PgDumper {
            config,
            bin_dir: None,
            jobs: 1,
            spool_dir: None,
            read_table_data: true,
        }
    }

    /// Take `pg_dump` from `dir` instead of searching for it.
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// The database name, as libpq would choose it.
    fn dbname(&self) -> Result<String> {
        self.config
            .get_dbname()
            .or(self.config.get_user())
            .map(str::to_owned)
            .ok_or_else(|| Error::invalid("the connection configuration names no database"))
    }

    /// Where the database lives, for its backup series: the cluster's system identifier,
    /// which a failover to a replica keeps; `host:port` as the connection names it when the
    /// role may not read the control data.
    fn origin(&self, snapshot: &Snapshot) -> String {
        if let Some(id) = &snapshot.system_identifier {
            return id.clone();
        }
        let host = match self.config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            #[cfg(unix)]
            Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
            None => "localhost".into(),
        };
        let port = self.config.get_ports().first().copied().unwrap_or(5432);
        format!("{host}/{port}")
    }

    /// The `pg_dump` command that [`Dumper::start`] runs for the exported snapshot
    /// `snapshot_id`: program, arguments and environment. Public so that callers (and
    /// tests) can see that its arguments carry no connection parameter or credential: those
    /// are all in its environment.
    pub fn command(&self, snapshot_id: &str) -> Result<std::process::Command> {
        let program =
            tools::find_program(self.bin_dir.as_deref(), "pg_dump", tools::INSTALL_CLIENT)?;
        self.command_with(&program, snapshot_id)
    }

    fn command_with(&self, program: &Path, snapshot_id: &str) -> Result<std::process::Command> {
        self.command_with_args(program, pg_dump_args(snapshot_id))
    }

    /// `program` with `args` and the connection in its environment.
    pub(crate) fn command_with_args(
        &self,
        program: &Path,
        args: Vec<String>,
    ) -> Result<std::process::Command> {
        let dbname = self.dbname()?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        apply_libpq_env(&mut cmd, &self.config, &dbname);
        Ok(cmd)
    }
}

/// `pg_dump`'s arguments: format, compression, snapshot, never prompt. No connection
/// parameter appears here.
fn pg_dump_args(snapshot_id: &str) -> Vec<String> {
    vec![
        "--format=custom".into(),
        "--compress=0".into(),
        format!("--snapshot={snapshot_id}"),
        "--no-password".into(),
    ]
}

/// A snapshot exported and described, ready for `pg_dump --snapshot`.
pub(crate) struct Prepared {
    pub(crate) conn: Conn,
    pub(crate) snapshot_id: String,
    pub(crate) program: PathBuf,
    pub(crate) source: SourceInfo,
    pub(crate) database_size: u64,
    pub(crate) server_version_num: i32,
    pub(crate) pg_dump_major: u32,
}

impl PgDumper {
    /// Export a snapshot on a connection of our own, read what the manifest records about
    /// the source, and find a `pg_dump` that can dump the server.
    pub(crate) async fn prepare(&self) -> Result<Prepared> {
        let dbname = self.dbname()?;
        let program =
            tools::find_program(self.bin_dir.as_deref(), "pg_dump", tools::INSTALL_CLIENT)?;
        let conn = connect(&self.config, "snapshot").await?;
        let snapshot = match export_snapshot(&conn).await {
            Ok(s) => s,
            Err(e) => {
                let _ = conn.close().await;
                return Err(e.with_context("database", &dbname));
            }
        };

        let locale = match DatabaseLocale::of(
            &conn.client,
            snapshot.server_version_num,
            &snapshot.database,
        )
        .await
        {
            Ok(locale) => locale,
            Err(e) => {
                let _ = conn.close().await;
                return Err(e.with_context("database", &dbname));
            }
        };

        let client_major = tools::program_major_version(&program).await?;
        let server_major = tools::server_major(snapshot.server_version_num);
        if client_major < server_major {
            let _ = conn.close().await;
            return Err(Error::new(
                ErrorKind::MissingPrerequisite,
                format!(
                    "pg_dump {client_major} cannot dump a PostgreSQL {server_major} server; install pg_dump {server_major} or newer (`apt-get install -y postgresql-client-{server_major}`) and point the bin directory at it"
                ),
            )
            .with_context("program", program.display()));
        }

        let mut properties = BTreeMap::new();
        if let Some(locale) = &locale {
            locale.record(&mut properties);
        }
        let source = SourceInfo {
            properties,
            kind: SOURCE_KIND.into(),
            format: crate::PAYLOAD_FORMAT.into(),
            name: snapshot.database.clone(),
            origin: Some(self.origin(&snapshot)),
            server_version: Some(snapshot.server_version.clone()),
            consistent_point: Some(ConsistentPoint {
                snapshot_time: snapshot.time.clone(),
                lsn: snapshot.lsn.clone(),
                timeline: snapshot.timeline,
            }),
        };
        Ok(Prepared {
            conn,
            snapshot_id: snapshot.id,
            program,
            source,
            database_size: snapshot.database_size,
            server_version_num: snapshot.server_version_num,
            pg_dump_major: client_major,
        })
    }
}

#[async_trait]
impl Dumper for PgDumper {
    async fn start(&self) -> Result<Dump> {
        let Prepared {
            conn,
            snapshot_id,
            program,
            source,
            database_size,
            ..
        } = self.prepare().await?;
        let mut cmd = tokio::process::Command::from(self.command_with(&program, &snapshot_id)?);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| tools::spawn_failed("pg_dump", &program, e))?;
        let stdout = child.stdout.take().expect("stdout is piped");
        // pg_dump writes 4–8 KiB at a time; with Linux's default 64 KiB pipe dr woke up
        // for every few of its writes. A 1 MiB pipe lets each read take up to a whole
        // chunk (a refusal, above `/proc/sys/fs/pipe-max-size`, keeps the default).
        let _ = nix::fcntl::fcntl(&stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
        let stderr = child.stderr.take().expect("stderr is piped");
        let stderr = tools::spawn_stderr_tail(stderr, "pg_dump");

        let shared = Arc::new(Mutex::new(Shared {
            inspector: Some(ArchiveInspector::new()),
            outcome: Outcome::Running,
        }));
        let stream = dump_stream(StreamState {
            stdout,
            child: Some(child),
            stderr: Some(stderr),
            buf: BytesMut::new(),
            shared: shared.clone(),
            eof: false,
            done: false,
        });

        Ok(Dump {
            source,
            stream,
            size_hint: Some(dump_size_estimate(database_size)),
            completion: Box::new(PgDumpCompletion { conn, shared }),
        })
    }
}

/// A generous estimate of a custom-format dump of a database that takes `database_size`
/// bytes on disk. The dump leaves out indexes and dead rows but writes `bytea` as hex (two
/// characters a byte) and stores TOAST-compressed values uncompressed (`--compress=0`), so
/// it can outgrow the database; twice its size plus 1 MiB of catalog covers the usual cases.
fn dump_size_estimate(database_size: u64) -> u64 {
    database_size.saturating_mul(2).saturating_add(1 << 20)
}

/// What the snapshot transaction learned about the server.
struct Snapshot {
    id: String,
    time: String,
    server_version: String,
    server_version_num: i32,
    database: String,
    lsn: Option<String>,
    timeline: Option<u32>,
    /// `pg_database_size()`: bytes on disk, indexes and dead rows included.
    database_size: u64,
    /// `pg_control_system()`'s system identifier, if the role may read it.
    system_identifier: Option<String>,
}

async fn export_snapshot(conn: &Conn) -> Result<Snapshot> {
    let client = &conn.client;
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(|e| db_error("cannot begin the snapshot transaction", e))?;
    // statement_timestamp(): the start of the statement that takes the snapshot.
    let row = client
        .query_one(
            "SELECT pg_export_snapshot(), \
                    to_char(statement_timestamp() AT TIME ZONE 'UTC', \
                            'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), \
                    current_setting('server_version'), \
                    current_setting('server_version_num')::int4, \
                    current_database()::text, \
                    (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() \
                          ELSE pg_current_wal_lsn() END)::text, \
                    has_function_privilege('pg_control_checkpoint()', 'EXECUTE'), \
                    pg_database_size(current_database()), \
                    CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE') \
                         THEN (SELECT system_identifier::text FROM pg_control_system()) END",
            &[],
        )
        .await
        .map_err(|e| db_error("cannot export a snapshot", e))?;
    let may_read_control: bool = row.get(6);
    let timeline = if may_read_control {
        let t = client
            .query_one("SELECT timeline_id FROM pg_control_checkpoint()", &[])
            .await
            .map_err(|e| db_error("cannot read the timeline", e))?;
        t.get::<_, Option<i32>>(0).map(|t| t as u32)
    } else {
        None
    };
    Ok(Snapshot {
        id: row.get(0),
        time: row.get(1),
        server_version: row.get(2),
        server_version_num: row.get(3),
        database: row.get(4),
        lsn: row.get(5),
        timeline,
        database_size: u64::try_from(row.get::<_, i64>(7)).unwrap_or(0),
        system_identifier: row.get(8),
    })
}

/// State shared by the stream and the completion.
struct Shared {
    inspector: Option<ArchiveInspector>,
    outcome: Outcome,
}

pub(crate) enum Outcome {
    /// The stream has not reached its end.
    Running,
    /// pg_dump exited successfully and every byte passed the inspector.
    Finished,
    /// The stream ended with this error (already yielded to the stream's reader).
    Failed { kind: ErrorKind, report: String },
}

impl Outcome {
    /// End the snapshot session `conn` holds open for the dump: commit it when the dump
    /// finished (a failed commit or close is an error: the snapshot may not have held), close
    /// it otherwise and return why the dump is not complete (`unread` says what was left
    /// unread).
    pub(crate) async fn end_snapshot(self, conn: Conn, unread: &str) -> Result<()> {
        match self {
            Outcome::Running => {
                let _ = conn.close().await;
                Err(Error::new(
                    ErrorKind::Cancelled,
                    format!("{unread}; the dump is incomplete"),
                ))
            }
            Outcome::Failed { kind, report } => {
                let _ = conn.close().await;
                Err(Error::new(kind, format!("the dump failed: {report}")))
            }
            Outcome::Finished => {
                let commit = conn.client.batch_execute("COMMIT").await;
                let closed = conn.close().await;
                if let Err(e) = commit {
                    let mut err = db_error("cannot end the snapshot transaction", e);
                    if let Err(c) = closed {
                        err = err.with_context("connection", c.report());
                    }
                    return Err(err);
                }
                closed
            }
        }
    }
}

struct StreamState {
    stdout: ChildStdout,
    child: Option<Child>,
    stderr: Option<JoinHandle<String>>,
    buf: BytesMut,
    shared: Arc<Mutex<Shared>>,
    eof: bool,
    done: bool,
}

impl StreamState {
    fn fail(&mut self, e: Error) -> Error {
        self.done = true;
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
        }
        let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
        shared.outcome = Outcome::Failed {
            kind: e.kind(),
            report: e.report(),
        };
        e
    }

    /// Read the next chunk of about [`CHUNK_BYTES`]; `Ok(None)` at the end of a good dump.
    async fn next_chunk(&mut self) -> Result<Option<bytes::Bytes>> {
        if !self.eof {
            while self.buf.len() < CHUNK_BYTES {
                if self.buf.capacity() - self.buf.len() < CHUNK_BYTES / 4 {
                    self.buf.reserve(CHUNK_BYTES);
                }
                let n = self
                    .stdout
                    .read_buf(&mut self.buf)
                    .await
                    .map_err(|e| Error::io("reading pg_dump's output", e))?;
                if n == 0 {
                    self.eof = true;
                    break;
                }
            }
            if !self.buf.is_empty() {
                let chunk = self.buf.split().freeze();
                let mut shared = self.shared.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(inspector) = shared.inspector.as_mut() {
                    inspector.feed(&chunk)?;
                }
                return Ok(Some(chunk));
            }
        }
        // End of output: the dump is good only if pg_dump says so.
        let status: ExitStatus = match self.child.as_mut() {
            Some(child) => child
                .wait()
                .await
                .map_err(|e| Error::io("waiting for pg_dump", e))?,
            None => return Ok(None),
        };
        self.child = None;
        let tail = match self.stderr.take() {
            Some(task) => tools::stderr_tail(task).await,
            None => String::new(),
        };
        if !status.success() {
            return Err(tools::program_failed("pg_dump", status, &tail));
        }
        self.done = true;
        self.shared
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .outcome = Outcome::Finished;
        Ok(None)
    }
}

fn dump_stream(state: StreamState) -> ByteStream {
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        if state.done {
            return None;
        }
        match state.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), state)),
            Ok(None) => None,
            Err(e) => {
                let e = state.fail(e);
                Some((Err(e), state))
            }
        }
    }))
}

/// Holds the snapshot transaction open until the dump is finished.
struct PgDumpCompletion {
    conn: Conn,
    shared: Arc<Mutex<Shared>>,
}

#[async_trait]
impl DumpCompletion for PgDumpCompletion {
    async fn finish(self: Box<Self>) -> Result<DumpStats> {
        let PgDumpCompletion { conn, shared } = *self;
        let (outcome, inspector) = {
            let mut shared = shared.lock().unwrap_or_else(|p| p.into_inner());
            let outcome = std::mem::replace(&mut shared.outcome, Outcome::Running);
            (outcome, shared.inspector.take())
        };
        outcome
            .end_snapshot(conn, "the dump stream was not read to its end")
            .await?;
        let inspector = inspector
            .ok_or_else(|| Error::new(ErrorKind::Other, "the archive inspector is missing"))?;
        inspector.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_carry_no_connection_parameter() {
        let mut config: Config = "host=db.example port=6543 user=alice dbname=shop"
            .parse()
            .unwrap();
        config.password("hunter2");
        let dumper = PgDumper::new(config);
        let cmd = dumper
            .command_with(Path::new("/usr/bin/pg_dump"), "00000003-1")
            .unwrap();
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        for a in &args {
            for secret in ["hunter2", "alice", "db.example", "6543", "shop"] {
                assert!(!a.contains(secret), "{a} leaks {secret}");
            }
        }
        assert!(args.contains(&"--snapshot=00000003-1".to_string()));
        let env: Vec<_> = cmd.get_envs().collect();
        assert!(env
            .iter()
            .any(|(k, v)| *k == "PGPASSWORD" && v.map(|v| v == "hunter2").unwrap_or(false)));
    }
}
