//! Table data fed into `COPY … FROM STDIN` by dr itself, for `restore --jobs N` of a backup
//! stored as pieces.
//!
//! `pg_restore -j N` with FIFOs moves every byte of table data four more times than needed
//! (into the pipe, out of it, into libpq's buffer, into the socket) in a process competing
//! for the cores the server's backends need. Here each table's piece streams from the
//! repository straight into a `COPY` on one of N connections of dr's own, largest pieces
//! first (as pg_restore orders its data by size), and `COPY`'s command tag gives the rows
//! the server took: the table's row count is checked the moment its data is committed,
//! with no `count(*)` scan afterwards. pg_restore still restores everything else (the
//! schema before, sequences, large objects, indexes and constraints after, `-j N`).
//!
//! Each `COPY` runs in its own transaction on a scratch database that is dropped if
//! anything fails (see [`super::PgRestorer`]): a piece that fails its checks aborts its
//! `COPY` (the unfinished copy sends `CopyFail`), so no table ever holds a partial piece.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use bytes::Bytes;
use dr_core::pieces::PieceSource;
use dr_core::{DumpStats, Error, ErrorKind, Result};
use futures::{SinkExt, StreamExt};
use tokio_postgres::{Client, Config};

use crate::archive::{DataHolds, DirectoryToc, SESSION_ENTRIES};
use crate::conn::{connect, db_error, quote_ident};
use crate::tables::display_ident;

/// Session settings pg_restore gives every connection (`_doSetFixedOutputState`) that
/// matter to a `COPY`: no timeouts, and no row security (a policy must not filter rows
/// silently; the load fails instead, as pg_restore's does).
const SESSION_SETTINGS: &str = "SET statement_timeout = 0;\n\
     SET lock_timeout = 0;\n\
     SET idle_in_transaction_session_timeout = 0;\n\
     SET check_function_bodies = false;\n\
     SET xmloption = content;\n\
     SET client_min_messages = warning;\n\
     SET row_security = off;\n";

/// One table's data to load: its `TABLE DATA` entry, piece and `COPY` statement.
#[derive(Debug, Clone)]
pub(super) struct TableLoad {
    pub(super) dump_id: i64,
    pub(super) piece: String,
    copy_stmt: String,
    schema: String,
    name: String,
    stored: u64,
}

/// What the loads counted: the tables whose rows `COPY` reported (and that matched the
/// dump's statistics), and their rows.
#[derive(Debug, Default)]
pub(crate) struct Counted {
    pub(crate) tables: BTreeSet<(String, String)>,
    pub(crate) rows: u64,
}

/// The loads of a directory archive: every `TABLE DATA` entry with a `COPY` statement and a
/// piece (of `wanted` only, when some entries are restored), largest stored piece first.
pub(super) fn plan(
    toc: &DirectoryToc,
    pieces: &dyn PieceSource,
    wanted: Option<&BTreeSet<i64>>,
) -> Vec<TableLoad> {
    let names: BTreeSet<String> = pieces.names().into_iter().collect();
    let entries: HashMap<i64, &crate::archive::TocEntry> =
        toc.toc.iter().map(|e| (e.dump_id, e)).collect();
    let mut loads: Vec<TableLoad> = toc
        .layout
        .iter()
        .filter(|l| wanted.is_none_or(|w| w.contains(&l.dump_id)))
        .filter_map(|l| {
            let file = l.file.as_ref()?;
            let DataHolds::Table(_) = file.holds else {
                return None;
            };
            let entry = entries.get(&l.dump_id)?;
            let copy_stmt = entry.copy_stmt.trim();
            // `--inserts` archives carry SQL instead of COPY data: pg_restore's business.
            if !copy_stmt.starts_with("COPY ") || !names.contains(&file.name) {
                return None;
            }
            Some(TableLoad {
                dump_id: l.dump_id,
                piece: file.name.clone(),
                copy_stmt: copy_stmt.trim_end_matches(';').to_owned(),
                schema: entry.namespace.clone(),
                name: entry.tag.clone(),
                stored: pieces.stored_size(&file.name).unwrap_or(0),
            })
        })
        .collect();
    loads.sort_by(|a, b| b.stored.cmp(&a.stored).then(a.dump_id.cmp(&b.dump_id)));
    loads
}

/// The SQL that sets a loading session up as pg_restore's are: the archive's encoding,
/// `standard_conforming_strings` and search path (its session entries), then
/// [`SESSION_SETTINGS`].
pub(super) fn session_sql(toc: &DirectoryToc) -> String {
    let mut sql = String::from(SESSION_SETTINGS);
    for desc in SESSION_ENTRIES {
        for e in toc.toc.iter().filter(|e| e.desc == *desc) {
            sql.push_str(&e.defn);
            sql.push('\n');
        }
    }
    sql
}

/// Load `loads` over `jobs` connections of `config`, each session set up by `session`;
/// every table's rows (from `COPY`'s command tag) are checked against `expected` as soon
/// as its `COPY` ends. The first failure stops every load: the others abort their `COPY`
/// at their next chunk and close their connections, and that failure is returned.
pub(super) async fn load_tables(
    config: &Config,
    session: &str,
    loads: Vec<TableLoad>,
    pieces: &dyn PieceSource,
    jobs: usize,
    expected: &DumpStats,
) -> Result<Counted> {
    let want: HashMap<(&str, &str), u64> = expected
        .tables
        .iter()
        .map(|t| ((t.schema.as_str(), t.name.as_str()), t.rows))
        .collect();
    let workers = jobs.max(1).min(loads.len());
    let queue = Mutex::new(VecDeque::from(loads));
    let failed = AtomicBool::new(false);
    let work = Worker {
        config,
        session,
        queue: &queue,
        pieces,
        want: &want,
        failed: &failed,
    };
    let done = futures::future::join_all((0..workers).map(|_| work.run())).await;
    let mut counted = Counted::default();
    let mut first_error: Option<Error> = None;
    for part in done {
        match part {
            Ok(part) => {
                counted.tables.extend(part.tables);
                counted.rows += part.rows;
            }
            // A worker that stopped because another failed explains nothing.
            Err(e) if e.kind() == ErrorKind::Cancelled && first_error.is_some() => {}
            Err(e) => {
                if first_error
                    .as_ref()
                    .is_none_or(|f| f.kind() == ErrorKind::Cancelled)
                {
                    first_error = Some(e);
                }
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(counted),
    }
}

/// What every loading connection shares.
#[derive(Clone, Copy)]
struct Worker<'a> {
    config: &'a Config,
    session: &'a str,
    queue: &'a Mutex<VecDeque<TableLoad>>,
    pieces: &'a dyn PieceSource,
    want: &'a HashMap<(&'a str, &'a str), u64>,
    /// Set by the first worker that fails.
    failed: &'a AtomicBool,
}

impl Worker<'_> {
    /// One connection: load tables from the queue until it is empty.
    async fn run(self) -> Result<Counted> {
        let result = self.run_connection().await;
        if result.is_err() {
            self.failed.store(true, Ordering::SeqCst);
        }
        result
    }

    async fn run_connection(self) -> Result<Counted> {
        let conn = connect(self.config, "copy").await?;
        let result = async {
            conn.client
                .batch_execute(self.session)
                .await
                .map_err(|e| db_error("cannot set up a loading session", e))?;
            let mut counted = Counted::default();
            loop {
                let next = self
                    .queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pop_front();
                let Some(load) = next else {
                    return Ok(counted);
                };
                if self.failed.load(Ordering::SeqCst) {
                    return Ok(counted);
                }
                let rows = self.load(&conn.client, &load).await.map_err(|e| {
                    e.with_context("table", format!("{}.{}", load.schema, load.name))
                        .with_context("piece", &load.piece)
                })?;
                counted.rows += rows;
                counted.tables.insert((load.schema, load.name));
            }
        }
        .await;
        let closed = conn.close().await;
        let counted = result?;
        closed?;
        Ok(counted)
    }

    /// For a plain table that the `COPY` names itself: open a transaction and empty the
    /// table in it (`TRUNCATE ONLY`, as pg_restore does for a table it created, which lets
    /// a server with `wal_level = minimal` skip the WAL), so that the rows can be loaded
    /// `FREEZE`: written frozen and all-visible, the index builds that follow read them
    /// without setting hint bits, i.e. without dirtying (and writing again) every page just
    /// loaded. The table was created moments ago by this restore (in a new, empty or
    /// scratch database), and `TRUNCATE` locks it until the load commits: what FREEZE
    /// changes (the rows are visible to snapshots older than the load) concerns only
    /// snapshots taken before the table existed. Returns whether it did (`false`: a
    /// partitioned, foreign or otherwise named target is loaded as is).
    async fn begin_frozen(&self, client: &Client, load: &TableLoad) -> Result<bool> {
        // pg_dump names the table as `display_ident` does (a keyword it also quotes: such a
        // table is just loaded as is).
        let as_dumped = format!(
            "COPY {}.{} ",
            display_ident(&load.schema),
            display_ident(&load.name)
        );
        let names_itself = load.copy_stmt.starts_with(&as_dumped);
        if !names_itself {
            return Ok(false);
        }
        let plain = client
            .query_opt(
                "SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'r'",
                &[&load.schema, &load.name],
            )
            .await
            .map_err(|e| db_error("cannot look up the table", e))?
            .is_some();
        if !plain {
            return Ok(false);
        }
        let qualified = format!("{}.{}", quote_ident(&load.schema), quote_ident(&load.name));
        client
            .batch_execute(&format!("BEGIN; TRUNCATE ONLY {qualified}"))
            .await
            .map_err(|e| db_error("cannot empty the table before loading it", e))?;
        Ok(true)
    }

    /// Stream one piece into its table's `COPY`; the rows it loaded, once they match the
    /// dump's count.
    async fn load(&self, client: &Client, load: &TableLoad) -> Result<u64> {
        let expected = *self
            .want
            .get(&(load.schema.as_str(), load.name.as_str()))
            .ok_or_else(|| {
                Error::corrupt(format!(
                    "the backup's statistics do not list table \"{}\".\"{}\", whose data it holds",
                    load.schema, load.name
                ))
            })?;
        let mut data = self.pieces.open(&load.piece).await?;
        let frozen = self.begin_frozen(client, load).await?;
        let statement = if frozen {
            format!("{} WITH (FREEZE)", load.copy_stmt)
        } else {
            load.copy_stmt.clone()
        };
        let sink = client
            .copy_in::<_, Bytes>(statement.as_str())
            .await
            .map_err(|e| db_error("cannot start COPY", e))?;
        futures::pin_mut!(sink);
        while let Some(chunk) = data.next().await {
            // An error item drops the unfinished sink: the COPY is aborted, nothing commits.
            let chunk = chunk?;
            if self.failed.load(Ordering::SeqCst) {
                return Err(Error::new(
                    ErrorKind::Cancelled,
                    "stopped: another table's load failed",
                ));
            }
            sink.feed(chunk)
                .await
                .map_err(|e| db_error("COPY failed", e))?;
        }
        let rows = sink
            .as_mut()
            .finish()
            .await
            .map_err(|e| db_error("COPY failed", e))?;
        if frozen {
            client
                .batch_execute("COMMIT")
                .await
                .map_err(|e| db_error("cannot commit the COPY", e))?;
        }
        if rows != expected {
            return Err(Error::corrupt(format!(
                "table \"{}\".\"{}\" has {rows} rows after the restore, the dump recorded {expected}",
                load.schema, load.name
            )));
        }
        Ok(rows)
    }
}
