//! [`PgRestorer`]: a checked restore through `pg_restore`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use async_trait::async_trait;
use dr_core::{
    ByteStream, DumpStats, Error, ErrorKind, RestoreReport, Restorer, Result, SourceInfo,
};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_postgres::Config;

use crate::archive::{ArchiveInspector, TocEntry};
use crate::conn::{apply_libpq_env, connect, db_error, quote_ident};
use crate::fifo::{self, ProcessGroup};
use crate::locale::DatabaseLocale;
use crate::tables::{select_tables, TableName};
use crate::{tools, PAYLOAD_FORMAT};
use dr_core::pieces::PieceSource;

mod copy;
mod pieces;
mod target;
use copy::{Counted, TableLoad};
use target::{
    check_counts_on, clauses_of, create_error, describe_contents, drop_database, find_database,
    missing_database, scratch_name, ExistingDb, Maintenance,
};

/// Restores a `pg_dump-custom` payload into a PostgreSQL database with `pg_restore`, then
/// checks every table's row count against the dump's statistics.
///
/// What happens depends on the target database (the `dbname` of the configuration) and the
/// options:
///
/// | target | options | what happens |
/// |---|---|---|
/// | missing | [`create`](Self::create) | `CREATE DATABASE … TEMPLATE template0`, restore; on any failure the new database is dropped |
/// | missing | — | [`ErrorKind::NotFound`] |
/// | exists | [`create`](Self::create) without [`replace`](Self::replace) | [`ErrorKind::AlreadyExists`] |
/// | exists, empty | — | restore into it in one transaction (`--single-transaction`): a failure leaves it empty |
/// | exists, not empty | — | [`ErrorKind::NotEmpty`]; nothing is touched |
/// | exists, not empty | [`replace`](Self::replace) | restore into a scratch database, check it, then swap it in |
/// | any of the above | [`jobs`](Self::jobs) > 1 (a backup stored as pieces) | the same, except that the restore always goes into a scratch database renamed to the target's name once checked (parallel workers cannot share one transaction) |
///
/// **Replacing** never destroys the existing data before a complete, checked copy exists:
/// the payload is restored into a scratch database `<target>_dr_restore_<random hex>`
/// (created with the target's encoding, collation, ctype and, when allowed, owner); only
/// once `pg_restore` succeeded and the row counts match is the target dropped
/// (`DROP DATABASE … WITH (FORCE)`, which disconnects its sessions) and the scratch database
/// renamed to the target's name. If the restore or the checks fail, the scratch database is
/// dropped and the target is untouched. Database-level grants and `ALTER DATABASE … SET`
/// settings of the old target are not carried over (a custom-format dump does not hold
/// them).
///
/// **Empty** means: no user relations (tables, views, sequences, …) outside `pg_catalog`,
/// `information_schema` and `pg_toast*`, no schema other than `public`, no extension other
/// than `plpgsql`, no large object, no user function or type.
///
/// **Errors in the payload** (a truncated or tampered backup, a wrong key): `pg_restore` is
/// killed at once, without its input being closed cleanly, so its single transaction rolls
/// back; the payload's error is returned with its kind (e.g. [`ErrorKind::Corrupt`],
/// [`ErrorKind::WrongKey`]). A failing `pg_restore` gives [`ErrorKind::Database`] with the
/// tail of its stderr; a row-count mismatch gives [`ErrorKind::Corrupt`] naming the table
/// (a database created by this restore, or the scratch copy, is then dropped; data restored
/// into an existing empty target is committed by then and stays for inspection).
///
/// **Some tables only** ([`tables`](Self::tables)): the restore reads the archive's table of
/// contents first and gives `pg_restore` a list of the entries those tables need (see
/// [`crate::tables`]); only their row counts are checked. It restores into a new or empty
/// database (a scratch copy to take rows from), never by replacing one.
///
/// Connection parameters and the password reach `pg_restore` only through its environment.
/// CREATE/DROP/RENAME DATABASE run on a maintenance connection to the `postgres` database
/// (or `template1`) of the same server.
#[derive(Clone)]
pub struct PgRestorer {
    target: Config,
    create: bool,
    replace: bool,
    no_owner: bool,
    tables: Vec<TableName>,
    bin_dir: Option<PathBuf>,
    jobs: usize,
}

impl fmt::Debug for PgRestorer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // tokio_postgres::Config's Debug already redacts the password.
        f.debug_struct("PgRestorer")
            .field("target", &self.target)
            .field("create", &self.create)
            .field("replace", &self.replace)
            .field("no_owner", &self.no_owner)
            .field("tables", &self.tables)
            .field("bin_dir", &self.bin_dir)
            .field("jobs", &self.jobs)
            .finish()
    }
}

/// How a restore proceeds, decided from the target's state and the options.
enum Plan {
    /// Restore into the existing, empty target.
    Into,
    /// Create the target with the source's locale (when the backup recorded it), restore
    /// into it.
    Create(Option<DatabaseLocale>),
    /// Restore into a scratch database, then swap it in for the target: the non-empty
    /// target (`replaces`), or one that is empty or missing when the restore cannot run in
    /// one transaction (a parallel restore), so a failure (or a killed dr) never leaves a
    /// half-restored database under the target's name.
    Beside {
        /// The scratch database's locale and owner (`CREATE DATABASE` clauses).
        clauses: String,
        /// Whether a target exists to be dropped before the rename.
        existing: bool,
        /// Whether it held data (the report's `replaced`).
        replaces: bool,
    },
}

/// What `pg_restore` reads: one stream on its standard input, or a directory archive whose
/// data files are FIFOs served from pieces, or (a parallel restore of pieces) the schema,
/// then table data that dr loads itself, then the rest.
enum Input<'a> {
    Stream(ByteStream),
    Pieces {
        dir: &'a Path,
        fifos: Vec<String>,
        pieces: &'a dyn PieceSource,
    },
    Split(Split<'a>),
}

/// A parallel restore of pieces in three steps: `pg_restore --section=pre-data`, the table
/// data through dr's own `COPY`s ([`copy`]), then `pg_restore --section=data
/// --section=post-data` of every other entry (sequences, large objects through `fifos`,
/// indexes, constraints), each step over `jobs` connections.
struct Split<'a> {
    dir: &'a Path,
    /// FIFOs of the pieces pg_restore reads itself (large objects).
    fifos: Vec<String>,
    pieces: &'a dyn PieceSource,
    loads: Vec<TableLoad>,
    /// The SQL that sets up a loading session.
    session: String,
    /// The entries of a restore of some tables (`None`: all).
    schema_list: Option<&'a Path>,
    /// Every entry to restore but the loaded tables' data.
    rest_list: &'a Path,
    /// Whether every FIFO must be read (a whole restore).
    all_read: bool,
}

impl PgRestorer {
    /// A restorer into the database `target` names (its `dbname`). By default it restores
    /// only into an existing, empty database.
    pub fn new(target: Config) -> Self {
        PgRestorer {
            target,
            create: false,
            replace: false,
            no_owner: false,
            tables: Vec::new(),
            bin_dir: None,
            jobs: 1,
        }
    }

    /// Restore a payload stored as pieces (a directory archive, [`PieceRestorer`](dr_core::pieces::PieceRestorer)) over
    /// `jobs` connections: dr loads the tables itself (`COPY` over `jobs` connections, each
    /// table's rows checked as its `COPY` ends) between `pg_restore -Fd -j jobs` of the
    /// schema and of the rest, which builds indexes and constraints in parallel. Parallel
    /// restores cannot run in one transaction, so with `jobs > 1` every restore goes, like
    /// `replace`, through a scratch database renamed to the target's name once complete
    /// and checked (into a new database, an empty one or over a non-empty one alike): a
    /// failure, even of dr itself, never leaves a half-restored database under the
    /// target's name. A one-stream payload restores over one connection whatever `jobs`
    /// says (its parts cannot be read out of order).
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// Create the target database; fail with [`ErrorKind::AlreadyExists`] if it exists
    /// (unless [`replace`](Self::replace) is also set, which then applies).
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }

    /// Allow replacing a non-empty target (through a scratch database, see the type's docs).
    pub fn replace(mut self, replace: bool) -> Self {
        self.replace = replace;
        self
    }

    /// Do not restore object ownership (`pg_restore --no-owner`): everything is owned by
    /// the restoring user. Needed when the dump's roles do not exist on the target server.
    pub fn no_owner(mut self, no_owner: bool) -> Self {
        self.no_owner = no_owner;
        self
    }

    /// Restore only these tables, with what they depend on (see the type's docs); empty:
    /// everything.
    pub fn tables(mut self, tables: Vec<TableName>) -> Self {
        self.tables = tables;
        self
    }

    /// Take `pg_restore` from `dir` instead of searching for it.
    pub fn with_bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = Some(dir.into());
        self
    }

    /// The `pg_restore` command that restores into database `dbname`: program, arguments
    /// and environment. Public so that callers (and tests) can see that its arguments carry
    /// no connection parameter or credential: those are all in its environment.
    pub fn command(&self, dbname: &str) -> Result<std::process::Command> {
        let program =
            tools::find_program(self.bin_dir.as_deref(), "pg_restore", tools::INSTALL_CLIENT)?;
        Ok(self.command_with(&program, dbname, None))
    }

    fn command_with(
        &self,
        program: &Path,
        dbname: &str,
        list: Option<&Path>,
    ) -> std::process::Command {
        let mut cmd = std::process::Command::new(program);
        cmd.args(pg_restore_args(self.no_owner, 1));
        if let Some(list) = list {
            cmd.arg("--use-list").arg(list);
        }
        apply_libpq_env(&mut cmd, &self.target, dbname);
        cmd
    }

    fn target_name(&self) -> Result<String> {
        self.target
            .get_dbname()
            .map(str::to_owned)
            .ok_or_else(|| Error::invalid("the restore target's configuration names no database"))
    }

    /// Drop the target database, disconnecting its sessions: the end of a restore drill's
    /// scratch copy. Dropping a database that does not exist is not an error.
    pub async fn drop_target(&self) -> Result<()> {
        let target = self.target_name()?;
        let maint = self.maintenance().await?;
        let dropped = match find_database(&maint, &target).await {
            Ok(Some(_)) => drop_database(&maint, &target).await,
            Ok(None) => Ok(()),
            Err(e) => Err(e),
        };
        let _ = maint.conn.close().await;
        dropped.map_err(|e| e.with_context("database", &target))
    }

    fn config_for(&self, dbname: &str) -> Config {
        let mut c = self.target.clone();
        c.dbname(dbname);
        c
    }

    /// A connection to the server's `postgres` database, or `template1` if that is missing.
    async fn maintenance(&self) -> Result<Maintenance> {
        let conn = match connect(&self.config_for("postgres"), "maintenance").await {
            Ok(c) => c,
            Err(e) if missing_database(&e) => {
                connect(&self.config_for("template1"), "maintenance").await?
            }
            Err(e) => return Err(e),
        };
        let version = conn
            .client
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await;
        match version {
            Ok(row) => Ok(Maintenance {
                server_num: row.get(0),
                conn,
            }),
            Err(e) => {
                let _ = conn.close().await;
                Err(db_error("cannot read the server version", e))
            }
        }
    }

    /// Run `pg_restore` into `dbname`, feeding it `payload` (restricted to the entries of
    /// `list`, a `--use-list` file, when given).
    async fn run_pg_restore(
        &self,
        program: &Path,
        dbname: &str,
        list: Option<&Path>,
        mut payload: ByteStream,
    ) -> Result<()> {
        let mut cmd = tokio::process::Command::from(self.command_with(program, dbname, list));
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| tools::spawn_failed("pg_restore", program, e))?;
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let stderr =
            tools::spawn_stderr_tail(child.stderr.take().expect("stderr is piped"), "pg_restore");

        enum Fed {
            All,
            PayloadFailed(Error),
            WriteFailed(std::io::Error),
        }
        let fed = loop {
            match payload.next().await {
                Some(Ok(chunk)) => {
                    if let Err(e) = stdin.write_all(&chunk).await {
                        break Fed::WriteFailed(e);
                    }
                }
                Some(Err(e)) => break Fed::PayloadFailed(e),
                None => break Fed::All,
            }
        };
        match fed {
            Fed::PayloadFailed(e) => {
                // Kill before stdin closes: pg_restore must not see a clean end of input.
                let _ = child.start_kill();
                let _ = child.wait().await;
                drop(stdin);
                stderr.abort();
                Err(e.with_context(
                    "restore",
                    "stopped; pg_restore's transaction was rolled back",
                ))
            }
            Fed::WriteFailed(write_error) => {
                drop(stdin);
                let status = child
                    .wait()
                    .await
                    .map_err(|e| Error::io("waiting for pg_restore", e))?;
                let tail = tools::stderr_tail(stderr).await;
                if !status.success() {
                    Err(tools::program_failed("pg_restore", status, &tail))
                } else if list.is_some() && write_error.kind() == std::io::ErrorKind::BrokenPipe {
                    // Restoring some tables, pg_restore stops reading once it has read the
                    // last entry it needs. Read the rest anyway: the payload is checked to
                    // its end (a damaged backup still fails), and the reader is not cut off.
                    while let Some(chunk) = payload.next().await {
                        chunk?;
                    }
                    Ok(())
                } else {
                    Err(Error::io(
                        "pg_restore stopped reading its input",
                        write_error,
                    ))
                }
            }
            Fed::All => {
                drop(stdin);
                let status = child
                    .wait()
                    .await
                    .map_err(|e| Error::io("waiting for pg_restore", e))?;
                let tail = tools::stderr_tail(stderr).await;
                if status.success() {
                    Ok(())
                } else {
                    Err(tools::program_failed("pg_restore", status, &tail))
                }
            }
        }
    }

    /// Run `pg_restore -Fd` on the archive folder `dir` into `dbname` (only `sections`,
    /// when given), streaming the pieces into its FIFOs as pg_restore opens them; `all_read`:
    /// every FIFO must be read.
    #[allow(clippy::too_many_arguments)]
    async fn run_pg_restore_dir(
        &self,
        program: &Path,
        dbname: &str,
        list: Option<&Path>,
        sections: &[&str],
        dir: &Path,
        fifos: Vec<String>,
        pieces: &dyn PieceSource,
        all_read: bool,
    ) -> Result<()> {
        let mut std_cmd = std::process::Command::new(program);
        std_cmd.args(pg_restore_args(self.no_owner, self.jobs));
        std_cmd.arg("--format=directory");
        for section in sections {
            std_cmd.arg(format!("--section={section}"));
        }
        if let Some(list) = list {
            std_cmd.arg("--use-list").arg(list);
        }
        std_cmd.arg(dir);
        apply_libpq_env(&mut std_cmd, &self.target, dbname);
        let mut cmd = tokio::process::Command::from(std_cmd);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| tools::spawn_failed("pg_restore", program, e))?;
        let group = ProcessGroup::of(&child);
        let stderr =
            tools::spawn_stderr_tail(child.stderr.take().expect("stderr is piped"), "pg_restore");
        let reader = fifo::Reader {
            program: "pg_restore",
            child: &mut child,
            group: &group,
            stderr,
        };
        let served = fifo::serve(reader, dir, fifos, pieces, all_read).await;
        if served.is_err() {
            group.kill();
        }
        served
    }

    /// Restore `input` into `dbname`; returns the tables whose rows were counted on the way.
    async fn run_input(
        &self,
        program: &Path,
        dbname: &str,
        list: Option<&Path>,
        expected: &DumpStats,
        input: Input<'_>,
    ) -> Result<Counted> {
        match input {
            Input::Stream(payload) => {
                self.run_pg_restore(program, dbname, list, payload).await?;
            }
            Input::Pieces { dir, fifos, pieces } => {
                let all_read = list.is_none();
                self.run_pg_restore_dir(program, dbname, list, &[], dir, fifos, pieces, all_read)
                    .await?;
            }
            Input::Split(split) => return self.run_split(program, dbname, expected, split).await,
        }
        Ok(Counted::default())
    }

    /// The three steps of a [`Split`] restore.
    async fn run_split(
        &self,
        program: &Path,
        dbname: &str,
        expected: &DumpStats,
        split: Split<'_>,
    ) -> Result<Counted> {
        let Split {
            dir,
            fifos,
            pieces,
            loads,
            session,
            schema_list,
            rest_list,
            all_read,
        } = split;
        self.run_pg_restore_dir(
            program,
            dbname,
            schema_list,
            &["pre-data"],
            dir,
            Vec::new(),
            pieces,
            false,
        )
        .await?;
        let counted = copy::load_tables(
            &self.config_for(dbname),
            &session,
            loads,
            pieces,
            self.jobs,
            expected,
        )
        .await?;
        self.run_pg_restore_dir(
            program,
            dbname,
            Some(rest_list),
            &["data", "post-data"],
            dir,
            fifos,
            pieces,
            all_read,
        )
        .await?;
        Ok(counted)
    }

    /// Compare row counts in `dbname` with `expected`, except for the tables already
    /// `counted`; returns (entries checked, rows), the counted ones included.
    async fn check_counts(
        &self,
        dbname: &str,
        expected: &DumpStats,
        counted: Counted,
    ) -> Result<(usize, u64)> {
        let rest = DumpStats {
            tables: expected
                .tables
                .iter()
                .filter(|t| !counted.tables.contains(&(t.schema.clone(), t.name.clone())))
                .cloned()
                .collect(),
            ..Default::default()
        };
        let (tables, rows) = if rest.tables.is_empty() {
            (0, 0)
        } else {
            let conn = connect(&self.config_for(dbname), "check").await?;
            let result = check_counts_on(&conn, &rest).await;
            let closed = conn.close().await;
            let checked = result?;
            closed?;
            checked
        };
        Ok((tables + counted.tables.len(), rows + counted.rows))
    }

    #[allow(clippy::too_many_arguments)]
    async fn restore_plan(
        &self,
        plan: Plan,
        maint: &Maintenance,
        target: &str,
        program: &Path,
        list: Option<&Path>,
        expected: &DumpStats,
        payload: Input<'_>,
    ) -> Result<RestoreReport> {
        match plan {
            Plan::Into => {
                let counted = self
                    .run_input(program, target, list, expected, payload)
                    .await?;
                let (tables, rows) = self.check_counts(target, expected, counted).await?;
                Ok(report(target, tables, rows, false))
            }
            Plan::Create(locale) => {
                let locale = match locale {
                    Some(locale) => locale.create_clauses(maint.server_num)?,
                    None => String::new(),
                };
                let sql = format!(
                    "CREATE DATABASE {} TEMPLATE template0{locale}",
                    quote_ident(target)
                );
                maint
                    .conn
                    .client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| create_error(e, target))?;
                let outcome = async {
                    let counted = self
                        .run_input(program, target, list, expected, payload)
                        .await?;
                    self.check_counts(target, expected, counted).await
                }
                .await;
                match outcome {
                    Ok((tables, rows)) => Ok(report(target, tables, rows, false)),
                    Err(e) => {
                        if let Err(d) = drop_database(maint, target).await {
                            tracing::error!(database = target, error = %d.report(), "cannot drop the database created for a failed restore");
                            return Err(e.with_context(
                                "cleanup",
                                format!("could not drop {target}: {}", d.report()),
                            ));
                        }
                        Err(e)
                    }
                }
            }
            Plan::Beside {
                clauses,
                existing,
                replaces,
            } => {
                let scratch = scratch_name(target);
                let sql = format!(
                    "CREATE DATABASE {} TEMPLATE template0{clauses}",
                    quote_ident(&scratch),
                );
                maint
                    .conn
                    .client
                    .batch_execute(&sql)
                    .await
                    .map_err(|e| create_error(e, &scratch))?;
                let outcome = async {
                    let counted = self
                        .run_input(program, &scratch, list, expected, payload)
                        .await?;
                    self.check_counts(&scratch, expected, counted).await
                }
                .await;
                let (tables, rows) = match outcome {
                    Ok(counted) => counted,
                    Err(e) => {
                        if let Err(d) = drop_database(maint, &scratch).await {
                            return Err(e.with_context(
                                "cleanup",
                                format!("could not drop {scratch}: {}", d.report()),
                            ));
                        }
                        return Err(e);
                    }
                };
                if existing {
                    drop_database(maint, target)
                        .await
                        .map_err(|e| e.with_context("restored copy kept in", &scratch))?;
                }
                let sql = format!(
                    "ALTER DATABASE {} RENAME TO {}",
                    quote_ident(&scratch),
                    quote_ident(target)
                );
                maint.conn.client.batch_execute(&sql).await.map_err(|e| {
                    db_error(
                        "cannot rename the restored database to the target's name",
                        e,
                    )
                    .with_context("restored copy kept in", &scratch)
                    .with_context("database", target)
                })?;
                Ok(report(target, tables, rows, replaces))
            }
        }
    }
}

/// `pg_restore`'s arguments. `-d ''` selects "restore into a database" (without `-d`
/// pg_restore prints SQL) while libpq ignores the empty value and takes the database name
/// from `PGDATABASE`: no name, host or credential in argv.
fn pg_restore_args(no_owner: bool, jobs: usize) -> Vec<String> {
    let mut args: Vec<String> = vec!["--exit-on-error".into()];
    if jobs > 1 {
        // Parallel workers each have their own session; no single transaction.
        args.push(format!("--jobs={jobs}"));
    } else {
        args.push("--single-transaction".into());
    }
    args.extend(["--no-password".into(), "--dbname=".into()]);
    if no_owner {
        args.push("--no-owner".into());
    }
    args
}

/// Read `payload` up to the end of the archive's table of contents; returns the TOC and the
/// whole payload again (what was read, then the rest).
async fn read_toc(mut payload: ByteStream) -> Result<(Vec<TocEntry>, ByteStream)> {
    let mut inspector = ArchiveInspector::recording_toc();
    let mut head = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk?;
        inspector.feed(&chunk)?;
        head.push(Ok(chunk));
        if let Some(toc) = inspector.toc() {
            let toc = toc.to_vec();
            return Ok((toc, futures::stream::iter(head).chain(payload).boxed()));
        }
    }
    Err(Error::corrupt(
        "the archive ended before the end of its table of contents",
    ))
}

/// A `pg_restore --use-list` file holding `text` (one dump id a line: pg_restore reads the
/// number before the first `;` and ignores the rest).
fn write_list(text: &str) -> Result<tempfile::TempPath> {
    let mut list = tempfile::Builder::new()
        .prefix("dr-restore-list-")
        .tempfile()
        .map_err(|e| Error::io("cannot create pg_restore's list file", e))?;
    std::io::Write::write_all(&mut list, text.as_bytes())
        .map_err(|e| Error::io("cannot write pg_restore's list file", e))?;
    Ok(list.into_temp_path())
}

fn report(target: &str, tables: usize, rows: u64, replaced: bool) -> RestoreReport {
    RestoreReport {
        target: target.to_string(),
        tables_checked: tables,
        rows_checked: rows,
        replaced,
    }
}

#[async_trait]
impl Restorer for PgRestorer {
    async fn restore(
        &self,
        source: &SourceInfo,
        expected: &DumpStats,
        payload: ByteStream,
    ) -> Result<RestoreReport> {
        if source.format != PAYLOAD_FORMAT {
            return Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "the PostgreSQL restorer reads {PAYLOAD_FORMAT} payloads, not {:?}",
                    source.format
                ),
            ));
        }
        let target = self.target_name()?;
        let program =
            tools::find_program(self.bin_dir.as_deref(), "pg_restore", tools::INSTALL_CLIENT)?;
        // A partial restore: the list of entries to restore, and only their tables' counts.
        let (payload, list, expected) = if self.tables.is_empty() {
            (payload, None, expected.clone())
        } else {
            if self.replace {
                return Err(Error::invalid(
                    "restoring some tables replaces nothing: restore them into a new or empty database \
                     (a scratch copy), not with --replace, which would swap the whole database for \
                     one holding only those tables",
                ));
            }
            let (toc, payload) = read_toc(payload).await?;
            let (list, expected, _) = self.partial_list(&toc, expected)?;
            (payload, Some(list), expected)
        };
        let list = list.as_deref();
        self.restore_input(
            source,
            &target,
            &program,
            list,
            &expected,
            Input::Stream(payload),
            false,
        )
        .await
    }
}

impl PgRestorer {
    /// Decide the plan from the target's state, then restore `input` by it. `parallel`: the
    /// restore cannot run in one transaction, so an existing empty target is restored
    /// through a scratch database too.
    #[allow(clippy::too_many_arguments)]
    async fn restore_input(
        &self,
        source: &SourceInfo,
        target: &str,
        program: &Path,
        list: Option<&Path>,
        expected: &DumpStats,
        input: Input<'_>,
        parallel: bool,
    ) -> Result<RestoreReport> {
        let maint = self.maintenance().await?;
        let result = async {
            let beside = |existing: &ExistingDb, replaces: bool| -> Result<Plan> {
                Ok(Plan::Beside {
                    clauses: clauses_of(existing, maint.server_num)?,
                    existing: true,
                    replaces,
                })
            };
            let plan = match find_database(&maint, target).await? {
                // As the source was; dumps from before dr recorded it get the server's
                // defaults.
                None if self.create && parallel => Plan::Beside {
                    clauses: match DatabaseLocale::recorded(&source.properties) {
                        Some(locale) => locale.create_clauses(maint.server_num)?,
                        None => String::new(),
                    },
                    existing: false,
                    replaces: false,
                },
                None if self.create => Plan::Create(DatabaseLocale::recorded(&source.properties)),
                None => {
                    return Err(Error::new(
                        ErrorKind::NotFound,
                        format!("database \"{target}\" does not exist; pass --create to create it"),
                    ))
                }
                Some(_) if self.create && !self.replace => {
                    return Err(Error::new(
                        ErrorKind::AlreadyExists,
                        format!(
                            "database \"{target}\" already exists; restore without --create, or pass --replace to replace it"
                        ),
                    ))
                }
                Some(existing) => {
                    let conn = connect(&self.config_for(target), "target").await?;
                    let contents = describe_contents(&conn).await;
                    let _ = conn.close().await;
                    match contents? {
                        None if parallel => beside(&existing, false)?,
                        None => Plan::Into,
                        Some(_) if self.replace => beside(&existing, true)?,
                        Some(what) => {
                            return Err(Error::new(
                                ErrorKind::NotEmpty,
                                format!(
                                    "database \"{target}\" is not empty ({what}); pass --replace to replace it"
                                ),
                            ))
                        }
                    }
                }
            };
            self.restore_plan(plan, &maint, target, program, list, expected, input)
                .await
        }
        .await;
        let _ = maint.conn.close().await;
        result.map_err(|e| e.with_context("database", target))
    }

    /// For a restore of some tables: the `--use-list` file of the entries they need, the
    /// expected statistics of those tables only, and the entries' dump ids.
    fn partial_list(
        &self,
        toc: &[TocEntry],
        expected: &DumpStats,
    ) -> Result<(tempfile::TempPath, DumpStats, Vec<i64>)> {
        let selection = select_tables(toc, &self.tables)?;
        let list = write_list(&selection.list_file())?;
        let expected = DumpStats {
            tables: expected
                .tables
                .iter()
                .filter(|t| {
                    selection
                        .tables
                        .contains(&(t.schema.clone(), t.name.clone()))
                })
                .cloned()
                .collect(),
            ..Default::default()
        };
        Ok((list, expected, selection.dump_ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_carry_no_connection_parameter() {
        let mut config: Config = "host=db.example user=alice dbname=shop".parse().unwrap();
        config.password("hunter2");
        let cmd = PgRestorer::new(config).no_owner(true).command_with(
            Path::new("/usr/bin/pg_restore"),
            "shop",
            None,
        );
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            args,
            [
                "--exit-on-error",
                "--single-transaction",
                "--no-password",
                "--dbname=",
                "--no-owner"
            ]
        );
    }
}
